"""Interactive sessions: one object per open volume, the API that the Slicer modules, the CLI
and a remote server all call.

Every session follows the same shape (see ``adapter_session`` and ``propagation_session``):

* ``set_volume(volume)``: open a :class:`volsam.geometry.Volume` (embedding work is cached);
* ``set_target_buffer(buffer)``: a caller-owned uint8 (k, j, i) array that results are written
  into, in place, only inside the changed box;
* prompt methods (``add_point`` ...) that run the model and return the changed
  :class:`volsam.geometry.Box` (or None when nothing changed);
* ``undo()``, ``redo()``, ``reset()``, each returning the changed box;
* ``result``: the current mask.

Undo and redo are multi-level and keep compressed changed boxes (:mod:`.history`).
"""
