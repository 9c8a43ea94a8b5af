"""SAM2Volume: prompt one slice, propagate through the volume, correct and propagate again.

The widget only wires UI events; the shared behaviour (model thread, setup, undo, shortcuts,
Segment Editor) is in VolumetricSAMLib, the MRML handling in volsam.mrml, the model in volsam.
"""

import pathlib
from typing import Annotated

import numpy as np
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, Minimum, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from volsam.geometry import closest_voxel_axis
from volsam.models.sam2_3dmed.slicing import SlicePlane
from volsam.mrml import (
    box_prompt_from_roi,
    control_point_ras,
    slice_index_in_view,
    slice_normal_ras,
    slice_views_containing,
)
from VolumetricSAMLib.logic import PromptSegmentationLogic
from VolumetricSAMLib.models import (
    DEVICE_CHOICES,
    FOLLOW_VIEW,
    SAM2_DEMO,
    SAM2_MODELS,
    SAM2_OWN,
    SAM2_SIZES,
    SAM2_STOCK,
    SLICE_DIRECTIONS,
    ModelChoice,
    range_boundary_slices,
    sam2_entry,
)
from VolumetricSAMLib.widget import PromptSegmentationWidget, shortcutsHelp
from VolumetricSAMLib.worker import JobProgress

HOMEPAGE = "https://github.com/volumetric-sam/SlicerVolumetricSAM"
SLICE_VIEW_ORDER = ("Red", "Yellow", "Green")


class SAM2Volume(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SAM2Volume")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["VolumetricSAM developers"]
        self.parent.helpText = _(
            "Prompt one slice with points or a box, in whichever slice view you work; SAM2-3dMed (Yang et al., "
            "2025) segments it and propagates the mask through the volume in both directions. Correct any slice "
            "with the Segment Editor or with points, confirm it, and propagate the correction: it spreads only "
            "up to the neighbouring confirmed slices.<br><br>Keyboard shortcuts (while this module is shown):"
            '<br>{shortcuts}<br><br>See the <a href="{homepage}#slicer">documentation</a>.').format(
                shortcuts=shortcutsHelp(), homepage=HOMEPAGE)
        self.parent.acknowledgementText = _(
            "SAM2-3dMed: Yang et al., 2025. SAM 2: Ravi et al., Meta AI (Apache-2.0).")


@parameterNodeWrapper
class SAM2VolumeParameterNode:
    """The module's settings, saved with the scene.

    inputVolume - the volume to segment.
    segmentation - where results go (the Segment Editor's selected segment).
    autoRun - segment the prompted slice as soon as a point or box is placed.
    model - the demo model, an own SAM2-3dMed checkpoint, or stock SAM 2.1.
    weightsFile - the checkpoint file for an own checkpoint.
    sam2Size - the SAM 2.1 size for stock SAM 2.1.
    device - Auto, CUDA, MPS or CPU.
    sliceDirection - the slice direction, or follow the view the user prompts in.
    useSliceRange, firstSlice, lastSlice - propagate only within these slices.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    autoRun: bool = True
    model: Annotated[str, Choice(SAM2_MODELS)] = SAM2_DEMO
    weightsFile: pathlib.Path
    sam2Size: Annotated[str, Choice(SAM2_SIZES)] = "tiny"
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "Auto"
    sliceDirection: Annotated[str, Choice(SLICE_DIRECTIONS)] = FOLLOW_VIEW
    useSliceRange: bool = False
    firstSlice: Annotated[int, Minimum(0)] = 0
    lastSlice: Annotated[int, Minimum(0)] = 0


class SAM2VolumeWidget(PromptSegmentationWidget):
    moduleName = "SAM2Volume"
    promptRoles = ("positive", "negative", "box")

    def createLogic(self):
        return SAM2VolumeLogic()

    def setupModule(self) -> None:
        self.ui.boxButton.connect("clicked()", lambda: self._startPlacing("box"))
        self.ui.propagateButton.connect("clicked()", lambda: self.onPropagate("propagation"))
        self.ui.propagateCorrectionButton.connect("clicked()", lambda: self.onPropagate("propagated correction"))
        self.ui.confirmSliceButton.connect("clicked()", self.onConfirmSlice)
        self.ui.cancelPropagationButton.connect("clicked()", lambda: self.cancelJob(self._propagationProgress))
        self._propagationProgress = None
        self.hidePanelProgress()

    def modelChoice(self) -> ModelChoice:
        return self.logic.modelChoice(self._parameterNode)

    def sliceDirection(self):
        return self._parameterNode.sliceDirection

    def updateModelSection(self) -> None:
        model = self._parameterNode.model
        self.ui.weightsPathLineEdit.enabled = model == SAM2_OWN
        self.ui.sam2SizeComboBox.enabled = model == SAM2_STOCK
        if model == SAM2_STOCK:
            entry = sam2_entry(self._parameterNode.sam2Size)
            notice = (f"Downloads {entry.filename} ({entry.size_text}) from Meta after you agree; licence "
                      f'<a href="{entry.licence_url}">{entry.licence}</a>. No checksum is published: its SHA256 is '
                      "recorded on the first download and checked afterwards.")
        elif model == SAM2_OWN:
            notice = ("A checkpoint holding only the trained parts also needs the SAM 2.1 image encoder of its size; "
                      "you will be asked before it is downloaded.")
        else:
            notice = ("The demo model was trained on synthetic phantoms by this project: for trying the module, "
                      "not for patients.")
        self.ui.weightsNoticeLabel.text = notice

    # --- prompts --------------------------------------------------------------------------------
    def promptJob(self, prompts):
        boxes = [(node, index) for role, node, index in prompts if role == "box"]
        points = [(control_point_ras(node, index), role == "positive") for role, node, index in prompts
                  if role != "box"]
        normal = self._viewNormalOf(prompts)
        if boxes:
            node, _ = boxes[-1]
            return self.logic.boxJob(node, normal, points)
        return self.logic.pointsJob(points, normal)

    def _viewNormalOf(self, prompts):
        """The normal of the slice view the user prompted in (None: keep the session's direction)."""
        if self._parameterNode.sliceDirection != FOLLOW_VIEW or not prompts:
            return None
        role, node, index = prompts[-1]
        position = control_point_ras(node, index) if role != "box" else np.array(node.GetCenterWorld())
        volume = self.logic.requireInteraction().volume
        views = slice_views_containing(position, self.logic.sliceNodes(), float(volume.spacing.min()) / 2)
        return slice_normal_ras(views[0]) if views else None

    def onConfirmSlice(self) -> None:
        if self.logic.interaction is None or self.busy:
            return
        with slicer.util.tryWithErrorDisplay("SAM2Volume: the slice could not be confirmed.", waitCursor=True):
            job, label, limit = self.logic.confirmSliceJob(self._rangeLimit())
            self._runJob(self.logic.startPrompt(job), label,
                         lambda done: self._onPromptDone(done, label, [], limit))

    def onPropagate(self, label: str) -> None:
        if self.logic.interaction is None or self.busy:
            return
        with slicer.util.tryWithErrorDisplay("SAM2Volume: propagation could not start.", waitCursor=False):
            steps = self.logic.rangeBoundaryJobs(self._rangeSlices()) if self._parameterNode.useSliceRange else []
            self._propagationProgress = JobProgress("Propagating")
            steps.append(self.logic.propagateJob(self._propagationProgress, label))
            self._runSteps(steps, self._rangeLimit())

    def _runSteps(self, steps, limit) -> None:
        """Run prompt jobs one after another, each its own undo step."""
        if not steps:
            return
        job, label = steps[0]
        progress = self._propagationProgress if len(steps) == 1 else None

        def done(future):
            self._onPromptDone(future, label, [], limit)
            self._runSteps(steps[1:], limit)

        self._runJob(self.logic.startPrompt(job), label, done, progress, progressInPanel=progress is not None)

    def _rangeSlices(self):
        return self._parameterNode.firstSlice, self._parameterNode.lastSlice

    def _rangeLimit(self):
        if not self._parameterNode.useSliceRange:
            return None
        return self.logic.rangeBox(*self._rangeSlices())

    # --- progress in the panel, confirmed slices --------------------------------------------------
    def showPanelProgress(self, title, progress) -> None:
        message, done, total = progress.snapshot() if progress is not None else (title, 0, 0)
        self.ui.propagationProgressBar.visible = True
        self.ui.cancelPropagationButton.visible = True
        self.ui.propagationProgressBar.maximum = max(total, 1)
        self.ui.propagationProgressBar.value = done
        self.ui.propagationProgressBar.format = f"{message or title}: %v of %m slices"

    def hidePanelProgress(self) -> None:
        self.ui.propagationProgressBar.visible = False
        self.ui.cancelPropagationButton.visible = False

    def afterPrompt(self) -> None:
        ready = self.logic.interaction is not None and not self.busy
        self.ui.propagateButton.enabled = ready
        self.ui.confirmSliceButton.enabled = ready
        self.ui.boxButton.enabled = self.logic.interaction is not None
        confirmed, pending = self.logic.confirmedSlices()
        self.ui.propagateCorrectionButton.enabled = ready and bool(pending)
        self.ui.confirmedSlicesList.clear()
        for index in confirmed:
            note = "  (not propagated yet)" if index in pending else ""
            self.ui.confirmedSlicesList.addItem(f"Slice {index}{note}")


class SAM2VolumeLogic(PromptSegmentationLogic):
    """GUI-free: usable from scripts and the self-test."""

    moduleName = "SAM2Volume"
    promptRoles = ("positive", "negative", "box")

    def getParameterNode(self):
        return SAM2VolumeParameterNode(super().getParameterNode())

    @staticmethod
    def modelChoice(parameters) -> ModelChoice:
        weights = str(parameters.weightsFile) if parameters.weightsFile else ""
        return ModelChoice("sam2-3dmed", parameters.model, weights, sam2_size=parameters.sam2Size,
                           device=parameters.device)

    # --- geometry of slices -------------------------------------------------------------------
    def plane(self) -> SlicePlane:
        interaction = self.requireInteraction()
        return SlicePlane(interaction.volume.shape_kji, interaction.session.slice_axis)

    @staticmethod
    def sliceNodes():
        """The slice views' nodes, Red, Yellow, Green first."""
        nodes = slicer.util.getNodesByClass("vtkMRMLSliceNode")
        order = {name: position for position, name in enumerate(SLICE_VIEW_ORDER)}
        return sorted(nodes, key=lambda node: order.get(node.GetLayoutName(), len(order)))

    def viewAcrossSessionAxis(self):
        """The first slice view that shows slices across the session's axis."""
        volume = self.requireInteraction().volume
        axis = self.plane().index_axis
        for node in self.sliceNodes():
            if closest_voxel_axis(volume, slice_normal_ras(node)) == axis:
                return node
        raise ValueError(f"no slice view shows slices across voxel axis {'ijk'[axis]}; set a view's orientation")

    def rangeBox(self, first: int, last: int):
        plane = self.plane()
        range_boundary_slices(plane.num_slices, (), first, last)  # checks the range
        return plane.slab_box(first, last + 1)

    def confirmedSlices(self):
        if self.interaction is None:
            return (), ()
        session = self.interaction.session
        return session.confirmed_slices, session.pending_slices

    # --- jobs for the model thread (each returns (job, label[, write limit])) -------------------
    @staticmethod
    def pointsJob(points, viewNormal):
        """Clicks ``[(ras, positive), ...]`` on one slice."""
        rases = [ras for ras, _ in points]
        flags = [positive for _, positive in points]
        label = f"{len(points)} point{'s' if len(points) != 1 else ''} on a slice"
        return (lambda session: session.add_prompt(points=rases, positive=flags, view_normal=viewNormal)), label, None

    def boxJob(self, roiNode, viewNormal, points=()):
        """A box (markups ROI) on the slice through its centre, with any clicks on that slice."""
        interaction = self.requireInteraction()
        axis = (closest_voxel_axis(interaction.volume, viewNormal) if viewNormal is not None
                else interaction.session.slice_axis)
        box = box_prompt_from_roi(interaction.volume, roiNode, axis)
        corners = np.array([box.min_ijk, box.max_ijk])
        volume = interaction.volume
        rases = [ras for ras, _ in points]
        flags = [positive for _, positive in points]

        def run(session):
            return session.add_prompt(points=[volume.ras_to_ijk_points(np.asarray(r)) for r in rases],
                                      positive=flags, box=corners, space="ijk", view_normal=viewNormal)

        return run, "box on a slice", None

    def confirmSliceJob(self, writeLimit=None):
        """The slice shown across the session's axis, as the user left it (Segment Editor or
        clicks), becomes a confirmed slice."""
        interaction = self.requireInteraction()
        plane = self.plane()
        index = slice_index_in_view(interaction.volume, self.viewAcrossSessionAxis(), plane.index_axis)
        mask = plane.take(interaction.current_mask(plane.slab_box(index, index + 1)), 0).copy()
        return (lambda session: session.add_mask(mask, index)), f"confirmed slice {index}", writeLimit

    def propagateJob(self, progress: JobProgress, label: str = "propagation"):
        def run(session):
            def report(done, total):
                progress.update(done, total, "Propagating")
                if progress.cancel.is_set():
                    session.cancel()
            outcome = session.run(progress=report)
            if not outcome.completed:
                progress.update(outcome.units_done, outcome.units_total, "Propagation cancelled")
            return outcome.changed
        return run, label

    def rangeBoundaryJobs(self, slices):
        """Jobs confirming empty slices just outside the range, which stop the propagation there."""
        plane = self.plane()
        confirmed, _ = self.confirmedSlices()
        empty = np.zeros(plane.slice_shape, np.uint8)
        return [((lambda session, index=index: session.add_mask(empty, index)), f"range limit at slice {index}")
                for index in range_boundary_slices(plane.num_slices, confirmed, *slices)]


class SAM2VolumeTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: a phantom with the demo model, through the module's logic."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_prompt_propagate_correct()

    def test_prompt_propagate_correct(self):
        import vtk

        from volsam.mrml import volume_node_from_volume
        from volsam.phantoms import TUMOR_LABEL, PhantomConfig, make_phantom

        logic = SAM2VolumeLogic()
        if logic.missingDependencies():
            self.skipTest("the Python packages are not installed (press Initialize once in the module)")
        image, labels, info = make_phantom(9, PhantomConfig(rotation_deg_ras=(0, 0, 12), spacing_ijk=(1.0, 1.0, 2.0),
                                                            lesions_per_case=(1, 1)))
        volumeNode = volume_node_from_volume(slicer.mrmlScene, image, "phantom")
        segmentation = logic.segmentationFor(volumeNode)
        segmentId = logic.segmentFor(segmentation, None)
        choice = ModelChoice("sam2-3dmed", SAM2_DEMO, device="Auto")
        logic.finishLoading(logic.startLoading(choice, volumeNode, "Axial"), volumeNode, segmentation, segmentId)

        self.delayDisplay("Click on the lesion's middle slice")
        positive = logic.promptNode("positive")
        lesionRas = image.ijk_to_ras_points(np.array(info.lesions[0].center_ijk, float))
        index = positive.AddControlPointWorld(vtk.vtkVector3d(*lesionRas))
        job, label, _ = logic.pointsJob([(control_point_ras(positive, index), True)], None)
        logic.finishPrompt(logic.startPrompt(job), label, logic.promptTag(positive, index, True))
        prompted = info.lesions[0].center_ijk[2]
        self.assertEqual(logic.confirmedSlices()[0], (prompted,))

        self.delayDisplay("Propagate both ways")
        progress = JobProgress()
        job, label = logic.propagateJob(progress)
        logic.finishPrompt(logic.startPrompt(job), label)
        mask = logic.interaction.current_mask().astype(bool)
        truth = labels.array == TUMOR_LABEL
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        self.assertGreater(dice, 0.5, f"Dice {dice:.2f} of the demo model's propagation on the phantom lesion")
        self.assertEqual(progress.done, progress.total)

        self.delayDisplay("Undo the propagation, then the click")
        logic.undo()
        after = logic.interaction.current_mask()
        self.assertTrue(after[prompted].any())
        self.assertFalse(np.delete(after, prompted, axis=0).any())
        logic.undo()
        self.assertFalse(logic.interaction.current_mask().any())
        self.delayDisplay("Test passed")
