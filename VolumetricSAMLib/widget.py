"""The Qt widget that SAMAdapt3DWidget and SAM2VolumeWidget derive from: it only wires UI events.

What both modules share lives here once: the parameter node and its GUI binding, the embedded
Segment Editor, placing positive and negative points, running jobs on the model thread with a
wait cursor at once and a progress dialog only after about 2 s, the first-run setup (packages,
then weights after the user agreed to their licence), undo/redo/reset, the CPU warning, and the
keyboard shortcuts, which exist only while the module is shown. Everything that touches MRML is
in the logic and in :mod:`volsam.mrml`.

Widget names the code looks up are listed in :data:`SHARED_WIDGET_NAMES`; each module's ``.ui``
file must have them all (the test suite checks this).
"""

from __future__ import annotations

import logging

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from volsam.mrml.nodes import PROMPT_ROLE_ATTRIBUTE
from volsam.weights.download import DownloadCancelled, DownloadError, cache_dir

from .models import CPU_WARNING, WeightsNeeded, is_cpu
from .worker import DelayedProgress, JobProgress

SHARED_WIDGET_NAMES = (
    "inputVolumeSelector", "segmentationSelector", "modelComboBox", "weightsPathLineEdit", "deviceComboBox",
    "deviceWarningLabel", "weightsNoticeLabel", "autoRunCheckBox", "initializeButton", "statusLabel",
    "positiveButton", "negativeButton", "runButton", "undoButton", "redoButton", "resetButton",
    "nextSegmentButton", "segmentEditorWidget",
)

#: (keys, what, method name). Active only while the module is shown.
SHORTCUTS = (
    ("P", "place positive points", "placePositive"),
    ("N", "place negative points", "placeNegative"),
    ("S", "next segment (a new one after the last)", "onNextSegment"),
    ("R", "reset: clear the prompts and the segment", "onReset"),
    ("Ctrl+Z", "undo the last prompt", "onUndo"),
    ("Ctrl+Y", "redo", "onRedo"),
    ("Ctrl+Shift+Z", "redo", "onRedo"),
)

logger = logging.getLogger(__name__)


def shortcutsHelp() -> str:
    return "<br>".join(f"<b>{keys}</b>: {what}" for keys, what, _ in SHORTCUTS)


def _callFirst(obj, names, *args):
    """Call the first method of ``names`` that ``obj`` has (Slicer renamed "master" to "source"
    volume in 5.2; both spellings are supported)."""
    for name in names:
        method = getattr(obj, name, None)
        if method is not None:
            return method(*args)
    raise AttributeError(f"{type(obj).__name__} has none of {names}")


class PromptSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Subclasses set :attr:`moduleName`, create their logic in :meth:`createLogic` and
    implement :meth:`modelChoice` and :meth:`promptJob`."""

    moduleName = ""
    #: Markups the user places as prompts (SAM2Volume adds "box").
    promptRoles = ("positive", "negative")

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._delayedProgress = DelayedProgress()
        self._progressDialog = None
        self._shortcuts = []
        self._pendingPrompts = []
        self._restoringPrompts = False

    # --- to implement -------------------------------------------------------------------------
    def createLogic(self):
        raise NotImplementedError

    def modelChoice(self):
        raise NotImplementedError

    def promptJob(self, prompts):
        """``prompts``: list of (role, markups node, control point index) placed since the last
        run. Returns (function of the session -> changed box, label, write limit or None)."""
        raise NotImplementedError

    def sliceDirection(self):
        return None

    def setupModule(self) -> None:
        """Connect the module's own widgets (called once at the end of setup)."""

    def afterPrompt(self) -> None:
        """Refresh module-specific state after a prompt or an undo."""

    # --- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.createLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(50)
        self._pollTimer.connect("timeout()", self._pollJob)

        editor = self.ui.segmentEditorWidget
        editor.setMRMLScene(slicer.mrmlScene)
        editor.setMRMLSegmentEditorNode(self._segmentEditorNode())
        _callFirst(editor, ["setSourceVolumeNodeSelectorVisible", "setMasterVolumeNodeSelectorVisible"], False)
        editor.setSegmentationNodeSelectorVisible(False)
        editor.connect("currentSegmentIDChanged(QString)", self._onCurrentSegmentChanged)

        self.ui.positiveButton.connect("clicked()", self.placePositive)
        self.ui.negativeButton.connect("clicked()", self.placeNegative)
        self.ui.runButton.connect("clicked()", self.onRun)
        self.ui.initializeButton.connect("clicked()", self.onInitialize)
        self.ui.undoButton.connect("clicked()", self.onUndo)
        self.ui.redoButton.connect("clicked()", self.onRedo)
        self.ui.resetButton.connect("clicked()", self.onReset)
        self.ui.nextSegmentButton.connect("clicked()", self.onNextSegment)
        for keys, what, method in SHORTCUTS:
            button = {"placePositive": self.ui.positiveButton, "placeNegative": self.ui.negativeButton,
                      "onNextSegment": self.ui.nextSegmentButton, "onReset": self.ui.resetButton,
                      "onUndo": self.ui.undoButton}.get(method)
            if button is not None:
                button.toolTip = f"{button.toolTip} ({keys})".strip()
        self.ui.deviceWarningLabel.setStyleSheet("color: #d62728; font-weight: bold")
        self.ui.deviceWarningLabel.text = CPU_WARNING
        self.ui.deviceWarningLabel.visible = False

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        self.addObserver(interactionNode, interactionNode.InteractionModeChangedEvent, self._updateButtons)
        self.setupModule()
        self.initializeParameterNode()

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
        self.removeObservers()
        self._removeShortcuts()
        if self.logic is not None:
            self.logic.cleanup()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._installShortcuts()
        if self.logic.interaction is not None:
            self._observePromptNodes()

    def exit(self) -> None:
        self._removeShortcuts()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

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
        loaded = self.logic.loaded
        self.ui.deviceWarningLabel.visible = self._parameterNode.device == "CPU" or (
            loaded is not None and loaded.choice.device == self._parameterNode.device and is_cpu(loaded.device))
        self.updateModelSection()
        self._updateButtons()

    def updateModelSection(self) -> None:
        """Show what the chosen model needs (licence, files) under the model choice."""

    # --- status and buttons -------------------------------------------------------------------
    def setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text
        logger.info(f"{self.moduleName}: {text}")

    @property
    def busy(self) -> bool:
        return self._job is not None

    def _updateButtons(self, caller=None, event=None) -> None:
        ready = self.logic is not None and self.logic.interaction is not None
        interaction = self.logic.interaction if ready else None
        hasVolume = self._parameterNode is not None and self._parameterNode.inputVolume is not None
        self.ui.initializeButton.enabled = hasVolume and not self.busy
        for button in (self.ui.positiveButton, self.ui.negativeButton):
            button.enabled = ready
        self.ui.runButton.enabled = ready and not self.busy and bool(self._pendingPrompts)
        self.ui.undoButton.enabled = ready and not self.busy and interaction.can_undo
        self.ui.redoButton.enabled = ready and not self.busy and interaction.can_redo
        self.ui.resetButton.enabled = ready and not self.busy
        self.ui.nextSegmentButton.enabled = ready and not self.busy
        placing = self._placingRole()
        self.ui.positiveButton.checked = placing == "positive"
        self.ui.negativeButton.checked = placing == "negative"

    def _placingRole(self) -> str | None:
        """The prompt role being placed now, if any (read from the active node's tag, so that no
        prompt node is created just to compare)."""
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        if interactionNode.GetCurrentInteractionMode() != interactionNode.Place:
            return None
        activeId = slicer.app.applicationLogic().GetSelectionNode().GetActivePlaceNodeID()
        active = slicer.mrmlScene.GetNodeByID(activeId) if activeId else None
        tag = active.GetAttribute(PROMPT_ROLE_ATTRIBUTE) if active is not None else None
        owner, _, role = (tag or "").partition(".")
        return role if owner == self.moduleName else None

    # --- first run: packages, weights, model ---------------------------------------------------
    def onInitialize(self) -> None:
        with slicer.util.tryWithErrorDisplay(f"{self.moduleName} could not start.", waitCursor=True):
            if self.logic.missingDependencies() and not self.logic.installDependencies():
                self.setStatus("Setup cancelled: the Python packages are needed first.")
                return
            parameters = self._parameterNode
            if parameters.inputVolume is None:
                raise ValueError("choose a volume first")
            parameters.segmentation = self.logic.segmentationFor(parameters.inputVolume, parameters.segmentation)
            self._startLoading()

    def _startLoading(self) -> None:
        parameters = self._parameterNode
        choice = self.modelChoice()
        self.setStatus("Loading the model and the volume...")
        future = self.logic.startLoading(choice, parameters.inputVolume, self.sliceDirection())
        self._runJob(future, "Loading the model and the volume", self._onLoaded)

    def _onLoaded(self, future) -> None:
        try:
            future.result()
        except WeightsNeeded as needed:
            self._askAndDownload(needed)
            return
        parameters = self._parameterNode
        editor = self.ui.segmentEditorWidget
        segmentId = self.logic.segmentFor(parameters.segmentation, editor.currentSegmentID())
        loaded = self.logic.finishLoading(future, parameters.inputVolume, parameters.segmentation, segmentId)
        editor.setCurrentSegmentID(segmentId)
        self.ui.deviceWarningLabel.visible = is_cpu(loaded.device)
        self.setStatus(f"Ready: {loaded.description}. Place points with P (positive) and N (negative).")
        self._observePromptNodes()

    def _askAndDownload(self, needed: WeightsNeeded) -> None:
        entry = needed.entry
        if not slicer.util.confirmOkCancelDisplay(
                f"{entry.description} is needed ({needed.reason}).\n\nDownload {entry.filename} "
                f"({entry.size_text}) from {entry.url}?\nLicence: {entry.licence} ({entry.licence_url})",
                f"{self.moduleName}: download model weights",
                detailedText=f"The file is checked with SHA256 and kept in {cache_dir()} (set VOLSAM_CACHE_DIR to "
                             "use another folder). Nothing is downloaded without your consent."):
            self.setStatus(f"{entry.filename} was not downloaded; choose another model.")
            return
        progress = JobProgress(f"Downloading {entry.filename}")
        self._runJob(self.logic.startDownload(entry, progress), f"Downloading {entry.filename}",
                     self._onDownloaded, progress)

    def _onDownloaded(self, future) -> None:
        try:
            result = future.result()
        except DownloadCancelled as error:
            self.setStatus(str(error))
            return
        except DownloadError as error:
            slicer.util.errorDisplay(str(error), windowTitle=f"{self.moduleName}: download failed")
            self.setStatus("Download failed.")
            return
        if result.recorded_now:
            slicer.util.infoDisplay(f"{result.path.name} has no published checksum. Its SHA256 was recorded now and "
                                    f"will be checked from now on:\n{result.sha256}\n({result.size_bytes} bytes)",
                                    windowTitle=f"{self.moduleName}: checksum recorded")
        self._startLoading()

    # --- jobs on the model thread --------------------------------------------------------------
    def _runJob(self, future, title: str, onDone, progress: JobProgress | None = None,
                progressInPanel: bool = False) -> None:
        """Poll ``future`` from the main thread; ``onDone(future)`` runs there when it is done.
        Progress shows in a dialog after about 2 s, or at once in the module's own progress bar
        (``progressInPanel``, for propagations that the user watches)."""
        self._job = (future, title, onDone, progress, progressInPanel)
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        self._delayedProgress.start()
        self._pollTimer.start()
        self._updateButtons()

    def _pollJob(self) -> None:
        if self._job is None:
            self._pollTimer.stop()
            return
        future, title, onDone, progress, progressInPanel = self._job
        if not future.done():
            if progressInPanel:
                self.showPanelProgress(title, progress)
            elif self._delayedProgress.dialog_due():
                self._showProgress(title, progress)
            return
        self._pollTimer.stop()
        self._delayedProgress.stop()
        qt.QApplication.restoreOverrideCursor()
        if self._progressDialog is not None:
            self._progressDialog.close()
            self._progressDialog = None
        if progressInPanel:
            self.hidePanelProgress()
        self._job = None
        try:
            onDone(future)
        except Exception as error:  # one line for the user, the traceback in the log
            logger.exception(f"{self.moduleName}: {title} failed")
            slicer.util.errorDisplay(f"{title} failed: {error}", windowTitle=self.moduleName)
            self.setStatus(f"{title} failed: {error}")
        self._updateButtons()
        self.afterPrompt()
        if self._pendingPrompts and self._parameterNode is not None and self._parameterNode.autoRun:
            self.onRun()

    def _showProgress(self, title: str, progress: JobProgress | None) -> None:
        if self._progressDialog is None:
            dialog = qt.QProgressDialog(title, "Cancel", 0, 0, slicer.util.mainWindow())
            dialog.setWindowTitle(self.moduleName)
            dialog.setWindowModality(qt.Qt.WindowModal)
            dialog.minimumDuration = 0
            dialog.connect("canceled()", lambda: self.cancelJob(progress))
            dialog.show()
            self._progressDialog = dialog
        if progress is not None:
            message, done, total = progress.snapshot()
            self._progressDialog.labelText = message or title
            self._progressDialog.maximum = max(total, 0)
            self._progressDialog.value = min(done, total) if total else 0

    def showPanelProgress(self, title: str, progress: JobProgress | None) -> None:
        """Show progress in the module's panel (modules with a progress bar override this)."""

    def hidePanelProgress(self) -> None:
        """Hide the panel's progress display."""

    def cancelJob(self, progress: JobProgress | None) -> None:
        """Cancel asks the job to stop at its next step; a single model call cannot be cut short."""
        if progress is not None:
            progress.cancel.set()
        self.setStatus("Cancelling after the current step...")

    # --- prompts ------------------------------------------------------------------------------
    def placePositive(self) -> None:
        self._startPlacing("positive")

    def placeNegative(self) -> None:
        self._startPlacing("negative")

    def _startPlacing(self, role: str) -> None:
        if self.logic.interaction is None:
            self.setStatus("Press Initialize first.")
            return
        node = self.logic.promptNode(role)
        self._observePromptNodes()
        if role == "box":
            node.RemoveAllControlPoints()  # one box at a time: a new box replaces the old one
        selectionNode = slicer.app.applicationLogic().GetSelectionNode()
        selectionNode.SetReferenceActivePlaceNodeClassName(node.GetClassName())
        selectionNode.SetActivePlaceNodeID(node.GetID())
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        interactionNode.SetPlaceModePersistence(0 if role == "box" else 1)
        interactionNode.SetCurrentInteractionMode(interactionNode.Place)
        self._updateButtons()

    def _observePromptNodes(self) -> None:
        for role in self.promptRoles:
            node = self.logic.promptNode(role)
            if not self.hasObserver(node, node.PointPositionDefinedEvent, self._onPointPlaced):
                self.addObserver(node, node.PointPositionDefinedEvent, self._onPointPlaced)

    @vtk.calldata_type(vtk.VTK_INT)
    def _onPointPlaced(self, caller, event, index) -> None:
        if self._restoringPrompts or self.logic.interaction is None:
            return
        role = next(r for r in self.promptRoles if self.logic.promptNode(r).GetID() == caller.GetID())
        if role == "box" and sum(size > 0 for size in caller.GetSize()) < 2:
            return  # the box is still being drawn (its first corner is placed)
        self._pendingPrompts.append((role, caller, index))
        if self._parameterNode.autoRun and not self.busy:
            self.onRun()
        self._updateButtons()

    def onRun(self) -> None:
        """Run the prompts placed since the last run as one step."""
        if self.busy or not self._pendingPrompts:
            return
        prompts, self._pendingPrompts = self._pendingPrompts, []
        with slicer.util.tryWithErrorDisplay(f"{self.moduleName}: the prompt could not run.", waitCursor=False):
            self._checkVolumeUnchanged()
            tags = [self.logic.promptTag(node, index, role == "positive") for role, node, index in prompts]
            job, label, writeLimit = self.promptJob(prompts)
            future = self.logic.startPrompt(job)
            self._runJob(future, label, lambda done: self._onPromptDone(done, label, tags, writeLimit))

    def _onPromptDone(self, future, label, tags, writeLimit) -> None:
        box = self.logic.finishPrompt(future, label, tags, writeLimit)
        self.setStatus(f"{label}: {'segment updated' if box is not None else 'no change'}.")

    def _checkVolumeUnchanged(self) -> None:
        if not self.logic.isReady(self.modelChoice(), self._parameterNode.inputVolume):
            raise ValueError("the volume or the model settings changed since Initialize; press Initialize again")

    # --- segments -----------------------------------------------------------------------------
    def _onCurrentSegmentChanged(self, segmentId) -> None:
        if self.logic.interaction is None or not segmentId or self.busy:
            return
        with slicer.util.tryWithErrorDisplay(f"{self.moduleName}: cannot use this segment.", waitCursor=True):
            self._clearPromptPoints()
            self.logic.selectSegment(self._parameterNode.segmentation, segmentId)
            self.setStatus(f"Working on segment '{self.logic.interaction.target.name}'.")
        self._updateButtons()

    def onNextSegment(self) -> None:
        if self.logic.interaction is None or self.busy:
            return
        segmentation = self._parameterNode.segmentation
        ids = list(segmentation.GetSegmentation().GetSegmentIDs())
        current = self.ui.segmentEditorWidget.currentSegmentID()
        position = ids.index(current) if current in ids else len(ids) - 1
        nextId = ids[position + 1] if position + 1 < len(ids) else self.logic.segmentFor(segmentation, None)
        self.ui.segmentEditorWidget.setCurrentSegmentID(nextId)

    def _clearPromptPoints(self) -> None:
        self._pendingPrompts = []
        for role in self.promptRoles:
            self.logic.promptNode(role).RemoveAllControlPoints()

    # --- undo / redo / reset --------------------------------------------------------------------
    def onUndo(self) -> None:
        self._undoRedo(self.logic.undo, "undo")

    def onRedo(self) -> None:
        self._undoRedo(self.logic.redo, "redo")

    def _undoRedo(self, action, what: str) -> None:
        if self.logic.interaction is None or self.busy:
            return
        with slicer.util.tryWithErrorDisplay(f"{self.moduleName}: {what} failed.", waitCursor=True):
            self._restoringPrompts = True  # points put back by redo must not run the model again
            try:
                step = action()
            finally:
                self._restoringPrompts = False
            self.setStatus(f"{what.capitalize()}: {step.label}." if step is not None else f"Nothing to {what}.")
        self._updateButtons()
        self.afterPrompt()

    def onReset(self) -> None:
        if self.logic.interaction is None or self.busy:
            return
        with slicer.util.tryWithErrorDisplay(f"{self.moduleName}: reset failed.", waitCursor=True):
            self._pendingPrompts = []
            self.logic.reset()
            self.setStatus("Reset: prompts and segment cleared (Ctrl+Z brings the segment back).")
        self._updateButtons()
        self.afterPrompt()

    # --- shortcuts ------------------------------------------------------------------------------
    def _installShortcuts(self) -> None:
        self._removeShortcuts()
        for keys, _, method in SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(keys), slicer.util.mainWindow())
            shortcut.connect("activated()", getattr(self, method))
            self._shortcuts.append(shortcut)

    def _removeShortcuts(self) -> None:
        for shortcut in self._shortcuts:
            shortcut.disconnect("activated()")
            shortcut.setParent(None)
        self._shortcuts = []
