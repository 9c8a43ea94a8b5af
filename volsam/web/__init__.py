"""VolumetricSAM in the browser: ``volsam app`` on trame-slicer (optional extra ``volsam[web]``).

Importing this package imports no trame: :mod:`.app` and :mod:`.page` import trame and
trame-slicer inside their functions, so the CLI's help works without the extra.
"""
