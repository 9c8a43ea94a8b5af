"""What the SAMAdapt3D and SAM2Volume Slicer modules share and what needs the Slicer application,
installed next to them. Everything qt-free is in the engine (``volsam.mrml``: the interaction
controller, the model thread, the model choices, the shortcuts), where the test suite runs it.

* :mod:`.compatibility`: the oldest Slicer the modules run on, checked when a module loads;
* :mod:`.dependencies`: which Python packages are needed and their one-time installation
  (on the first Initialize, behind one confirmation; never at import);
* :mod:`.logic`: the scripted-module logic base class, around the interaction controller;
* :mod:`.widget`: the Qt widget base class, which only wires the UI to the controller.
"""
