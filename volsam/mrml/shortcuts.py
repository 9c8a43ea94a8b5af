"""The modules' keyboard shortcuts, and the keys Slicer keeps for itself.

The shortcuts exist only while a module is shown (main-window shortcuts win over a view's own
keys, so a key Slicer binds in its views must never be one of ours: the first version used ``R``
for reset, and Slicer users press ``r`` in a slice view to reset its field of view).

:data:`SLICER_VIEW_KEYS` lists what Slicer binds, from its sources as far as we know them
(``vtkMRMLSliceIntersectionWidget`` and ``vtkSliceViewInteractorStyle``: slice views;
``vtkMRMLCameraWidget``: the 3D view; the markups widgets; ``qMRMLSegmentEditorWidget::
installKeyboardShortcuts``: the Segment Editor). Our keys are plain letters Slicer leaves free
for the two point tools (used every few seconds), and Ctrl+Shift chords for the actions that
change the segment wholesale. Undo and redo use the keys Slicer's own Segment Editor installs.
"""

from __future__ import annotations

#: (keys, what, action): the action names a method of the modules' widgets.
SHORTCUTS = (
    ("P", "place positive points", "placePositive"),
    ("N", "place negative points", "placeNegative"),
    ("Ctrl+Shift+N", "next segment (a new one after the last)", "onNextSegment"),
    ("Ctrl+Shift+X", "reset: clear the prompts and the segment", "onReset"),
    ("Ctrl+Z", "undo the last step", "onUndo"),
    ("Ctrl+Y", "redo", "onRedo"),
    ("Ctrl+Shift+Z", "redo", "onRedo"),
)

#: Keys Slicer binds in its views and its Segment Editor (lower case: unmodified keys).
SLICER_VIEW_KEYS = frozenset({
    # slice views: reset field of view, previous/next slice, slice visibility in 3D, label and
    # foreground opacity, background/foreground volume cycling, zoom, crosshair
    "r", "b", "f", "v", "V", "g", "t", "[", "]", "{", "}", "Left", "Right", "Up", "Down", "PageUp", "PageDown",
    "+", "-", "Shift", "Escape", "x", "X",
    # 3D view camera: reset focal point, orientation and zoom keys
    "1", "2", "3", "4", "5", "6", "Home", "End",
    # markups: delete the point under the mouse, leave place mode
    "Delete", "BackSpace",
    # Segment Editor: effects 1..0 (with and without Shift), deselect, toggle, undo and redo
    "0", "7", "8", "9", "Space", "Ctrl+Z", "Ctrl+Y", "Ctrl+Shift+Z",
})

#: Undo and redo deliberately share Segment Editor's keys: they act on the same segment.
SHARED_WITH_SEGMENT_EDITOR = frozenset({"Ctrl+Z", "Ctrl+Y", "Ctrl+Shift+Z"})


def shortcuts_help() -> str:
    return "<br>".join(f"<b>{keys}</b>: {what}" for keys, what, _ in SHORTCUTS)
