"""The modules' keyboard shortcuts, and the keys Slicer keeps for itself.

The shortcuts exist only while a module is shown (main-window shortcuts win over a view's own
keys, so a key Slicer binds in its views must never be one of ours: the first version used ``R``
for reset, and Slicer users press ``r`` in a slice view to reset its field of view).

:data:`SLICER_VIEW_KEYS` lists what Slicer binds, from its sources (Slicer commit 583e9b3; key
names in Qt's ``QKeySequence`` spelling, the VTK key symbol in the comments where it differs):

* slice views: ``Libs/MRML/DisplayableManager/vtkMRMLSliceIntersectionWidget.cxx`` lines
  168-196;
* the 3D view: ``Libs/MRML/DisplayableManager/vtkMRMLCameraWidget.cxx`` lines 59-111;
* the Segment Editor: ``Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.cxx``,
  ``installKeyboardShortcuts``, lines 2314-2390. Only the Segment Editor module installs them, on
  enter, and removes them on exit (``Modules/Scripted/SegmentEditor/SegmentEditor.py``); the
  editor embedded in our modules never installs them, but users switch between the modules and
  keep their habits, so ours avoid them too;
* the markups toolbar: ``Modules/Loadable/Markups/Widgets/qMRMLMarkupsToolBar.cxx`` lines 84-86.

The main window (``Base/QTApp/Resources/UI/qSlicerMainWindow.ui`` lines 459-486) defines
``EditUndoAction`` (Ctrl+Z) and ``EditRedoAction`` (Ctrl+Y) but adds them to no menu, so they are
inactive: in our modules Ctrl+Z and Ctrl+Y are ours alone.

Our keys are plain letters Slicer leaves free for the two point tools (used every few seconds),
and Ctrl+Shift chords for the actions that change the segment wholesale. Undo and redo use the
keys Slicer's own Segment Editor installs (they act on the same segment).
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

#: Keys Slicer binds in its views, its Segment Editor and its markups toolbar (lower case: an
#: unmodified key; see the module docstring for the sources).
SLICER_VIEW_KEYS = frozenset({
    # slice views (vtkMRMLSliceIntersectionWidget.cxx lines 168-196; [ ] { } are bracketleft/right
    # and braceleft/right there; r resets the view's field of view)
    "g", "t", "Right", "Left", "Up", "Down", "f", "b", "v", "V", "[", "]", "{", "}", "r",
    # the 3D view (vtkMRMLCameraWidget.cxx lines 59-111; PgDown is Next there, Ins is Insert,
    # + and - are plus and minus; the arrows and r are listed above)
    "End", "Shift+End", "PgDown", "Shift+PgDown", "Home", "Shift+Home",
    "Shift+Left", "Shift+Right", "Shift+Up", "Shift+Down", "+", "-", "Ctrl+B", "Ins", "Clear", "Shift+Clear",
    # the Segment Editor (qMRMLSegmentEditorWidget.cxx installKeyboardShortcuts, lines 2314-2390):
    # 0-9 and Shift+0-9, Escape, Space, z, y, QKeySequence::Undo (Ctrl+Z), QKeySequence::Redo
    # (Ctrl+Y, Ctrl+Shift+Z), q, w, slash, asterisk, comma, period, greater, less, i
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
    "Shift+0", "Shift+1", "Shift+2", "Shift+3", "Shift+4", "Shift+5", "Shift+6", "Shift+7", "Shift+8", "Shift+9",
    "Escape", "Space", "z", "y", "Ctrl+Z", "Ctrl+Y", "Ctrl+Shift+Z", "q", "w", "/", "*", ",", ".", ">", "<", "i",
    # the markups toolbar (qMRMLMarkupsToolBar.cxx lines 84-86)
    "Ctrl+Shift+A", "Ctrl+Shift+T", "Ctrl+Shift+Space",
})

#: Undo and redo deliberately share Segment Editor's keys: they act on the same segment.
SHARED_WITH_SEGMENT_EDITOR = frozenset({"Ctrl+Z", "Ctrl+Y", "Ctrl+Shift+Z"})


def shortcuts_help() -> str:
    return "<br>".join(f"<b>{keys}</b>: {what}" for keys, what, _ in SHORTCUTS)
