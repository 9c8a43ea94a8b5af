"""The Qt widget that SAMAdapt3DWidget and SAM2VolumeWidget derive from: Qt wiring only.

Every behaviour is in the qt-free controller (:mod:`volsam.mrml.controller`, through the logic),
which the test suite drives on real MRML nodes. This class connects buttons, shortcuts, the
parameter node and the embedded Segment Editor to it, and shows its state:

* **Waiting for jobs** releases the GIL (Slicer's main thread holds it whenever it is in C++, so
  a 50 ms timer polling ``future.done()`` starved the model thread): while the controller is
  busy, a zero-interval timer calls ``controller.poll(WAIT_SLICE_S)``, which waits for the job in
  a GIL-releasing call, and the event loop processes events between two calls (the controller
  ignores re-entrant polls; nothing blocks, so quitting Slicer never waits). A wait cursor shows
  at once, a progress dialog only after about 2 s (deleted afterwards), with a Cancel button
  that cancels.
* **One history**: the embedded Segment Editor's own undo and redo are hidden
  (``setUndoEnabled(False)``); the module's Undo and Redo undo every step, Segment Editor strokes
  included (the controller takes each stroke in as a step of its own).
* **Leaving the module** deactivates the embedded Segment Editor's effect and its view
  observations, as Slicer's Segment Editor module does (``Modules/Scripted/SegmentEditor/
  SegmentEditor.py`` lines 134-142: ``exit`` calls ``setActiveEffect(None)``,
  ``uninstallKeyboardShortcuts()`` and ``removeViewObservations()``; ``onSceneStartClose`` calls
  ``setSegmentationNode(None)`` and ``removeViewObservations()``; ``enter`` and
  ``onSceneEndClose`` call ``updateWidgetFromMRML()``), so Paint stops painting.
* **Shortcuts** (:mod:`volsam.mrml.shortcuts`) exist only while the module is shown.

Widget names the code looks up are listed in :data:`SHARED_WIDGET_NAMES`; each module's ``.ui``
file must have them all (the test suite checks this).
"""

import logging

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from volsam.mrml.controller import CPU_WARNING
from volsam.mrml.shortcuts import SHORTCUTS
from volsam.mrml.worker import WAIT_SLICE_S, DelayedProgress
from volsam.weights.download import cache_dir

SHARED_WIDGET_NAMES = (
    "inputVolumeSelector", "segmentationSelector", "modelComboBox", "weightsPathLineEdit", "deviceComboBox",
    "deviceWarningLabel", "weightsNoticeLabel", "autoRunCheckBox", "initializeButton", "statusLabel",
    "positiveButton", "negativeButton", "runButton", "undoButton", "redoButton", "resetButton",
    "nextSegmentButton", "segmentEditorWidget",
)

logger = logging.getLogger(__name__)


def _callFirst(obj, names, *args):
    """Call the first method of ``names`` that ``obj`` has (Slicer renamed "master" to "source"
    volume in 5.2; both spellings are supported)."""
    for name in names:
        method = getattr(obj, name, None)
        if method is not None:
            return method(*args)
    raise AttributeError(f"{type(obj).__name__} has none of {names}")


class PromptSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Subclasses set :attr:`moduleName`, create their logic in :meth:`createLogic`, and may
    connect their own widgets (:meth:`setupModule`) and show more state (:meth:`showState`)."""

    moduleName = ""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._shortcuts = []
        self._pollTimer = None
        self._askedAbout = None
        self._progressDialog = None
        self._delayedProgress = DelayedProgress()
        self._showingState = False

    # --- to implement -------------------------------------------------------------------------
    def createLogic(self):
        raise NotImplementedError

    def setupModule(self) -> None:
        """Connect the module's own widgets (called once at the end of setup)."""

    def showState(self, state) -> None:
        """Show module-specific state (called after every change of the controller's state)."""

    def updateModelSection(self) -> None:
        """Show what the chosen model needs (licence, files) under the model choice."""

    @property
    def controller(self):
        return self.logic.controller

    # --- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.createLogic()
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(0)  # as soon as the event loop is idle: the wait is in poll()
        self._pollTimer.connect("timeout()", self._pollJobs)

        editor = self.ui.segmentEditorWidget
        editor.setMRMLScene(slicer.mrmlScene)
        editor.setMRMLSegmentEditorNode(self._segmentEditorNode())
        _callFirst(editor, ["setSourceVolumeNodeSelectorVisible", "setMasterVolumeNodeSelectorVisible"], False)
        editor.setSegmentationNodeSelectorVisible(False)
        # One history: the module's Undo/Redo cover Segment Editor strokes too, so the editor's own
        # undo/redo group box is hidden (qMRMLSegmentEditorWidget::setUndoEnabled does
        # d->UndoRedoGroupBox->setVisible(enabled): Modules/Loadable/Segmentations/Widgets/
        # qMRMLSegmentEditorWidget.cxx line 2235, Slicer commit 583e9b3).
        editor.setUndoEnabled(False)
        editor.connect("currentSegmentIDChanged(QString)", self._onCurrentSegmentChanged)

        self.ui.positiveButton.connect("clicked()", self.placePositive)
        self.ui.negativeButton.connect("clicked()", self.placeNegative)
        self.ui.runButton.connect("clicked()", lambda: self._act(self.controller.run_pending))
        self.ui.initializeButton.connect("clicked()", self.onInitialize)
        self.ui.undoButton.connect("clicked()", self.onUndo)
        self.ui.redoButton.connect("clicked()", self.onRedo)
        self.ui.resetButton.connect("clicked()", self.onReset)
        self.ui.nextSegmentButton.connect("clicked()", self.onNextSegment)
        buttons = {"placePositive": self.ui.positiveButton, "placeNegative": self.ui.negativeButton,
                   "onNextSegment": self.ui.nextSegmentButton, "onReset": self.ui.resetButton,
                   "onUndo": self.ui.undoButton, "onRedo": self.ui.redoButton}
        for keys, _, action in SHORTCUTS:
            button = buttons.get(action)
            if button is not None and keys not in button.toolTip:
                button.toolTip = f"{button.toolTip} ({keys})".strip()
        self.ui.deviceWarningLabel.setStyleSheet("color: #d62728; font-weight: bold")
        self.ui.deviceWarningLabel.text = CPU_WARNING

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.controller.add_listener(self._onStateChanged)
        self.setupModule()
        self.initializeParameterNode()
        self._onStateChanged(self.controller.state)

    def _segmentEditorNode(self):
        """The module's own Segment Editor node (its effect settings stay apart from the Segment
        Editor module's)."""
        tag = f"{self.moduleName}SegmentEditor"
        node = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(tag)
            node = slicer.mrmlScene.AddNode(node)
        return node

    def cleanup(self) -> None:
        if self._pollTimer is not None:
            self._pollTimer.stop()
        self.removeObservers()
        self._removeShortcuts()
        self._closeProgressDialog()
        if self.logic is not None:
            self.logic.cleanup()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._installShortcuts()
        self.ui.segmentEditorWidget.updateWidgetFromMRML()

    def exit(self) -> None:
        # As Slicer's Segment Editor module does on exit (Modules/Scripted/SegmentEditor/
        # SegmentEditor.py lines 134-142: setActiveEffect(None), uninstallKeyboardShortcuts(),
        # removeViewObservations()): no effect stays active (Paint would keep painting in the views
        # after leaving the module). The embedded editor never installs its keyboard shortcuts (only
        # the Segment Editor module does, on enter), so ours are what is removed here.
        editor = self.ui.segmentEditorWidget
        editor.setActiveEffect(None)
        editor.removeViewObservations()
        self._removeShortcuts()
        if self.controller.state.placing is not None:  # ours only: another module's placement stays
            self.controller.stop_placing()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        # As Slicer's Segment Editor module does on scene close (Modules/Scripted/SegmentEditor/
        # SegmentEditor.py lines 134-142: setSegmentationNode(None), removeViewObservations()).
        editor = self.ui.segmentEditorWidget
        editor.setSegmentationNode(None)
        editor.removeViewObservations()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.ui.segmentEditorWidget.updateWidgetFromMRML()

    # --- parameter node -----------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode is None:
            return
        editor = self.ui.segmentEditorWidget
        editor.setSegmentationNode(self._parameterNode.segmentation)
        _callFirst(editor, ["setSourceVolumeNode", "setMasterVolumeNode"], self._parameterNode.inputVolume)
        with slicer.util.tryWithErrorDisplay(f"{self.moduleName}: invalid setting.", waitCursor=False):
            self.logic.configure(self._parameterNode)
        self.updateModelSection()
        self._onStateChanged(self.controller.state)

    # --- the controller's state -----------------------------------------------------------------
    def _onStateChanged(self, state) -> None:
        if self._showingState:
            return
        self._showingState = True
        try:
            self._showState(state)
            self.showState(state)
        finally:
            self._showingState = False
        if state.busy and self._pollTimer is not None and not self._pollTimer.isActive():
            qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
            self._delayedProgress.start()
            self._pollTimer.start()
        if state.weights_needed is not None and state.weights_needed is not self._askedAbout:
            self._askedAbout = state.weights_needed  # ask once per request
            qt.QTimer.singleShot(0, self._askAndDownload)  # not inside the event that reported it

    def _showState(self, state) -> None:
        ready, idle = state.ready, not state.busy
        hasVolume = self._parameterNode is not None and self._parameterNode.inputVolume is not None
        self.ui.statusLabel.text = state.message
        self.ui.initializeButton.enabled = hasVolume and idle
        for button in (self.ui.positiveButton, self.ui.negativeButton):
            button.enabled = ready
        self.ui.positiveButton.checked = state.placing == "positive"
        self.ui.negativeButton.checked = state.placing == "negative"
        self.ui.runButton.enabled = ready and idle and state.pending_prompts > 0
        self.ui.undoButton.enabled = ready and state.can_undo
        self.ui.redoButton.enabled = ready and state.can_redo
        self.ui.resetButton.enabled = ready
        self.ui.nextSegmentButton.enabled = ready
        self.ui.deviceWarningLabel.visible = state.cpu_warning or (
            not ready and self._parameterNode is not None and self._parameterNode.device == "CPU")
        editor = self.ui.segmentEditorWidget
        segmentation = self.controller.segmentation_node
        if ready and self._parameterNode is not None and self._parameterNode.segmentation is not segmentation:
            self._parameterNode.segmentation = segmentation
        if ready and state.segment_id and editor.currentSegmentID() != state.segment_id:
            editor.setCurrentSegmentID(state.segment_id)

    # --- waiting for jobs -------------------------------------------------------------------------
    def _pollJobs(self) -> None:
        """Zero-interval timer while the controller is busy: wait for the job in a GIL-releasing
        call, then return to the event loop, which processes events until the next call."""
        self.controller.poll(WAIT_SLICE_S)
        if self.controller.busy:
            if self._delayedProgress.dialog_due() and not self.showsProgressInPanel():
                self._showProgressDialog(self.controller.state)
            return
        self._pollTimer.stop()
        self._delayedProgress.stop()
        qt.QApplication.restoreOverrideCursor()
        self._closeProgressDialog()

    def showsProgressInPanel(self) -> bool:
        """Whether the module shows the running job's progress in its own panel (SAM2Volume's
        propagation) rather than in a dialog."""
        return False

    def _showProgressDialog(self, state) -> None:
        if self._progressDialog is None:
            dialog = qt.QProgressDialog(state.message, "Cancel", 0, 0, slicer.util.mainWindow())
            dialog.setWindowTitle(self.moduleName)
            dialog.setWindowModality(qt.Qt.WindowModal)
            dialog.minimumDuration = 0
            dialog.connect("canceled()", self.controller.cancel)
            dialog.show()
            self._progressDialog = dialog
        self._progressDialog.labelText = state.message
        done, total = state.progress or (0, 0)
        self._progressDialog.maximum = max(total, 0)
        self._progressDialog.value = min(done, total) if total else 0

    def _closeProgressDialog(self) -> None:
        if self._progressDialog is not None:
            self._progressDialog.close()
            self._progressDialog.deleteLater()  # close() only hides it; its parent is the main window
            self._progressDialog = None

    # --- actions --------------------------------------------------------------------------------
    def _act(self, action, *args) -> None:
        with slicer.util.tryWithErrorDisplay(f"{self.moduleName}: the action failed.", waitCursor=False):
            action(*args)

    def onInitialize(self) -> None:
        with slicer.util.tryWithErrorDisplay(f"{self.moduleName} could not start.", waitCursor=True):
            if self.logic.missingDependencies() and not self.logic.installDependencies():
                self.controller.report("Setup cancelled: the Python packages are needed first.")
                return
            self.logic.initialize(self._parameterNode, self.ui.segmentEditorWidget.currentSegmentID())

    def _askAndDownload(self) -> None:
        needed = self.controller.state.weights_needed
        if needed is None:
            return
        entry = needed.entry
        if slicer.util.confirmOkCancelDisplay(
                f"{entry.description} is needed ({needed.reason}).\n\nDownload {entry.filename} "
                f"({entry.size_text}) from {entry.url}?\nLicence: {entry.licence} ({entry.licence_url})",
                f"{self.moduleName}: download model weights",
                detailedText=f"The file is checked with SHA256 and kept in {cache_dir()} (set VOLSAM_CACHE_DIR to "
                             "use another folder). Nothing is downloaded without your consent."):
            self.controller.download_weights()
        else:
            self.controller.decline_weights()

    def placePositive(self) -> None:
        self._act(self.controller.start_placing, "positive")

    def placeNegative(self) -> None:
        self._act(self.controller.start_placing, "negative")

    def onUndo(self) -> None:
        self._act(self.controller.undo)

    def onRedo(self) -> None:
        self._act(self.controller.redo)

    def onReset(self) -> None:
        self._act(self.controller.reset)

    def onNextSegment(self) -> None:
        self._act(self.controller.next_segment)

    def _onCurrentSegmentChanged(self, segmentId) -> None:
        if segmentId and self.controller.state.ready and segmentId != self.controller.state.segment_id:
            self._act(self.controller.select_segment, self._parameterNode.segmentation, segmentId)

    # --- shortcuts ------------------------------------------------------------------------------
    def _installShortcuts(self) -> None:
        self._removeShortcuts()
        for keys, _, action in SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(keys), slicer.util.mainWindow())
            shortcut.connect("activated()", getattr(self, action))
            self._shortcuts.append(shortcut)

    def _removeShortcuts(self) -> None:
        for shortcut in self._shortcuts:
            shortcut.disconnect("activated()")
            shortcut.setParent(None)
        self._shortcuts = []
