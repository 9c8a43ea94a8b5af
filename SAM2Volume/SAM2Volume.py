"""SAM2Volume: prompt one slice, propagate through the volume, correct and propagate again.

The widget only wires UI events (VolumetricSAMLib); every behaviour is in the qt-free
interaction controller (volsam.mrml.controller), the model in volsam.
"""

from VolumetricSAMLib.compatibility import require_supported_slicer

require_supported_slicer("SAM2Volume")  # before anything that needs a newer Python

import pathlib  # noqa: E402
from typing import Annotated  # noqa: E402

import slicer  # noqa: E402
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode  # noqa: E402
from slicer.i18n import tr as _  # noqa: E402
from slicer.i18n import translate  # noqa: E402
from slicer.parameterNodeWrapper import Choice, Minimum, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import (  # noqa: E402
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
)

from volsam.methods import SessionSettings  # noqa: E402
from volsam.mrml.choices import (  # noqa: E402
    DEVICE_CHOICES,
    FOLLOW_VIEW,
    SAM2_DEMO,
    SAM2_MODELS,
    SAM2_OWN,
    SAM2_SIZES,
    SAM2_STOCK,
    SLICE_DIRECTIONS,
    sam2_entry,
    sam2_weights,
    slice_direction,
)
from volsam.mrml.shortcuts import shortcuts_help  # noqa: E402
from VolumetricSAMLib.logic import PromptSegmentationLogic, runSelfTest  # noqa: E402
from VolumetricSAMLib.widget import PromptSegmentationWidget  # noqa: E402

PANEL_PROGRESS_JOBS = ("Propagation", "Propagated correction")

HOMEPAGE = "https://github.com/volumetric-sam/SlicerVolumetricSAM"


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
                shortcuts=shortcuts_help(), homepage=HOMEPAGE)
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

    def createLogic(self):
        return SAM2VolumeLogic()

    def setupModule(self) -> None:
        self.ui.boxButton.connect("clicked()", lambda: self._act(self.controller.start_placing, "box"))
        self.ui.propagateButton.connect("clicked()", lambda: self._act(self.controller.propagate))
        self.ui.propagateCorrectionButton.connect("clicked()", lambda: self._act(self.controller.propagate_correction))
        self.ui.confirmSliceButton.connect("clicked()", self.onConfirmSlice)
        self.ui.cancelPropagationButton.connect("clicked()", self.controller.cancel)

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

    def onConfirmSlice(self) -> None:
        """Confirm the slice shown in the view across the session's slicing axis."""
        def confirm():
            controller = self.controller
            controller.confirm_slice(controller.slice_index_in_view(controller.view_across_slicing_axis()))
        self._act(confirm)

    def showsProgressInPanel(self) -> bool:
        return self.controller.state.running in PANEL_PROGRESS_JOBS

    def showState(self, state) -> None:
        ready = state.ready
        self.ui.boxButton.enabled = ready
        self.ui.boxButton.checked = state.placing == "box"
        self.ui.propagateButton.enabled = ready and not state.busy
        self.ui.confirmSliceButton.enabled = ready and not state.busy
        self.ui.propagateCorrectionButton.enabled = ready and not state.busy and bool(state.pending_slices)
        self.ui.confirmedSlicesList.clear()
        for index in state.confirmed_slices:
            note = "  (not propagated yet)" if index in state.pending_slices else ""
            self.ui.confirmedSlicesList.addItem(f"Slice {index}{note}")
        inPanel = state.running in PANEL_PROGRESS_JOBS
        self.ui.propagationProgressBar.visible = inPanel
        self.ui.cancelPropagationButton.visible = inPanel
        if inPanel:
            done, total = state.progress or (0, 0)
            self.ui.propagationProgressBar.maximum = max(total, 1)
            self.ui.propagationProgressBar.value = done
            self.ui.propagationProgressBar.format = f"{state.running}: %v of %m slices"


class SAM2VolumeLogic(PromptSegmentationLogic):
    """GUI-free: usable from scripts and the self-test (through ``self.controller``)."""

    moduleName = "SAM2Volume"

    def getParameterNode(self):
        return SAM2VolumeParameterNode(super().getParameterNode())

    def weightsChoice(self, parameters):
        return sam2_weights(parameters.model, parameters.weightsFile, parameters.sam2Size)

    def sessionSettings(self, parameters) -> SessionSettings:
        return SessionSettings(slice_direction=slice_direction(parameters.sliceDirection)[0])

    def configure(self, parameters) -> None:
        super().configure(parameters)
        self.controller.follow_view = slice_direction(parameters.sliceDirection)[1]
        self.controller.slice_range = ((parameters.firstSlice, parameters.lastSlice) if parameters.useSliceRange
                                       else None)


class SAM2VolumeTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: a phantom with the demo model, through the module's controller."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        runSelfTest(self, SAM2VolumeLogic(), self.test_prompt_propagate_correct)

    def test_prompt_propagate_correct(self, logic):
        import numpy as np
        import vtk

        from volsam.methods import WeightsChoice
        from volsam.mrml import volume_node_from_volume
        from volsam.phantoms import TUMOR_LABEL, PhantomConfig, make_phantom

        image, labels, info = make_phantom(9, PhantomConfig(rotation_deg_ras=(0, 0, 12), spacing_ijk=(1.0, 1.0, 2.0),
                                                            lesions_per_case=(1, 1)))
        volumeNode = volume_node_from_volume(slicer.mrmlScene, image, "phantom")
        controller = logic.controller
        controller.initialize(volumeNode, weights=WeightsChoice("demo"), settings=SessionSettings(), device="auto")
        controller.wait_idle()
        self.assertTrue(controller.state.ready, controller.state.message)

        self.delayDisplay("Click on the lesion's middle slice")
        lesionRas = image.ijk_to_ras_points(np.array(info.lesions[0].center_ijk, float))
        controller.prompt_node("positive").AddControlPointWorld(vtk.vtkVector3d(*lesionRas))
        controller.wait_idle()
        prompted = info.lesions[0].center_ijk[2]
        self.assertEqual(controller.state.confirmed_slices, (prompted,))

        self.delayDisplay("Propagate both ways")
        controller.propagate()
        controller.wait_idle()
        mask = controller.interaction.current_mask().astype(bool)
        truth = labels.array == TUMOR_LABEL
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        self.assertGreater(dice, 0.5, f"Dice {dice:.2f} of the demo model's propagation on the phantom lesion")

        self.delayDisplay("Undo the propagation, then the click")
        controller.undo()
        after = controller.interaction.current_mask()
        self.assertTrue(after[prompted].any())
        self.assertFalse(np.delete(after, prompted, axis=0).any())
        controller.undo()
        self.assertFalse(controller.interaction.current_mask().any())
        self.delayDisplay("Test passed")
