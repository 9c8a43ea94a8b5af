"""Interactive sessions: one object per open volume, the API that the Slicer modules, the CLI,
the browser app and a future remote server all call.

Both methods' sessions implement one protocol, :class:`.protocol.Session`: ``open_volume``,
``set_target_buffer`` (a caller-owned uint8 (k, j, i) array written in place, only inside the
changed box), ``add_points`` / ``add_box`` / ``add_mask``, ``run`` (a propagation where the
method has one) with progress and ``cancel``, ``undo`` / ``redo`` / ``reset`` (each returning the
changed :class:`volsam.geometry.Box`), ``result`` and ``close``. A session is opened through the
method registry (:mod:`volsam.methods`). Undo and redo are multi-level and keep compressed
changed boxes (:mod:`.history`).
"""
