"""The logic that SAMAdapt3DLogic and SAM2VolumeLogic derive from: the scripted-module logic
class around the qt-free interaction controller (:mod:`volsam.mrml.controller`), which does all
the work. No GUI here: scripts and the self-tests use it as they are.

It owns one :class:`~volsam.mrml.controller.InteractionController` on ``slicer.mrmlScene`` for
the module's method (chosen through the registry), turns the parameter node into what
:meth:`~volsam.mrml.controller.InteractionController.initialize` takes, and installs the Python
packages on first use (behind one confirmation, on the main thread).
"""

import logging

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from volsam.methods import SessionSettings, method_for_module
from volsam.mrml.choices import device_name
from volsam.mrml.controller import InteractionController

from .dependencies import ensure_installed, install_plan

logger = logging.getLogger(__name__)


class PromptSegmentationLogic(ScriptedLoadableModuleLogic):
    """Subclasses set :attr:`moduleName` and implement :meth:`weightsChoice` (and may extend
    :meth:`sessionSettings` and :meth:`configure`) from their parameter node."""

    moduleName = ""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.method = method_for_module(self.moduleName)
        self.controller = InteractionController(slicer.mrmlScene, self.method)

    # --- dependencies (main thread) -----------------------------------------------------------
    def missingDependencies(self):
        return install_plan(self.moduleName).lines()

    def installDependencies(self) -> bool:
        """One confirmation, then PyTorch and the packages; False if the user declined."""
        return ensure_installed(self.moduleName)

    # --- parameter node -> controller -----------------------------------------------------------
    def weightsChoice(self, parameters):
        raise NotImplementedError

    def sessionSettings(self, parameters) -> SessionSettings:
        return SessionSettings()

    def configure(self, parameters) -> None:
        """Settings the controller reads at each step (auto-run; slice range and view following)."""
        self.controller.auto_run = bool(parameters.autoRun)

    def initialize(self, parameters, segmentId=None) -> None:
        """Queue loading the model and the volume the parameter node names; the controller's
        ``poll`` (or ``wait_idle`` in scripts) finishes it."""
        if parameters.inputVolume is None:
            raise ValueError("choose a volume first")
        self.configure(parameters)
        self.controller.initialize(parameters.inputVolume, parameters.segmentation, segmentId or None,
                                   weights=self.weightsChoice(parameters), settings=self.sessionSettings(parameters),
                                   device=device_name(parameters.device))

    def cleanup(self) -> None:
        self.controller.close()


def runSelfTest(testCase, logic, test) -> None:
    """Run ``test(logic)`` for a module's self-test and release the logic afterwards. Without the
    Python packages it shows a note and returns: ``skipTest`` inside ``runTest`` shows as an error
    under "Reload and Test"."""
    try:
        if logic.missingDependencies():
            testCase.delayDisplay("Not run: the Python packages are not installed (press Initialize once).")
            return
        test(logic)
    finally:
        logic.cleanup()
