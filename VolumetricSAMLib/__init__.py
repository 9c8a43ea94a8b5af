"""Code shared by the SAMAdapt3D and SAM2Volume Slicer modules, installed next to them.

* :mod:`.dependencies`: which Python packages are needed and their one-time installation
  (on the first Apply, behind one confirmation; never at import);
* :mod:`.worker`: the one persistent model thread and the "progress dialog only after 2 s" rule;
* :mod:`.models`: the model and weights choices and building a session from them (qt-free);
* :mod:`.logic`: the GUI-free logic base class both modules' logic classes derive from;
* :mod:`.widget`: the Qt widget base class both modules' widgets derive from.

Only :mod:`.widget` and :mod:`.logic` need the Slicer application; the rest is plain Python
and is exercised by the test suite. MRML handling lives in :mod:`volsam.mrml`.
"""
