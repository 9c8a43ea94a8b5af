"""SAMAdapt3D: clicks on a lesion become a 3D segment, with the 3DSAM-adapter model.

The widget only wires UI events (VolumetricSAMLib); every behaviour is in the qt-free
interaction controller (volsam.mrml.controller), the model in volsam.
"""

from VolumetricSAMLib.compatibility import require_supported_slicer

require_supported_slicer("SAMAdapt3D")  # before anything that needs a newer Python

import pathlib  # noqa: E402
from typing import Annotated  # noqa: E402

import slicer  # noqa: E402
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode  # noqa: E402
from slicer.i18n import tr as _  # noqa: E402
from slicer.i18n import translate  # noqa: E402
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import (  # noqa: E402
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
)

from volsam.methods import SessionSettings  # noqa: E402
from volsam.mrml.choices import (  # noqa: E402
    ADAPTER_DEMO,
    ADAPTER_MODELS,
    ADAPTER_OWN,
    ADAPTER_PRESETS,
    ADAPTER_RELEASED,
    DEVICE_CHOICES,
    adapter_weights,
)
from volsam.mrml.shortcuts import shortcuts_help  # noqa: E402
from volsam.weights.download import CATALOG, SAM3D_ADAPTER_RELEASE_NOTICE  # noqa: E402
from VolumetricSAMLib.logic import PromptSegmentationLogic, runSelfTest  # noqa: E402
from VolumetricSAMLib.widget import PromptSegmentationWidget  # noqa: E402

HOMEPAGE = "https://github.com/volumetric-sam/SlicerVolumetricSAM"


class SAMAdapt3D(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SAMAdapt3D")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["VolumetricSAM developers"]
        self.parent.helpText = _(
            "Click on a tumour in a slice or 3D view: 3DSAM-adapter (Gong et al., Medical Image Analysis 2024) "
            "segments it in 3D into the segment selected in the Segment Editor below. Negative points remove "
            "what should not be there; undo gives the segment back exactly as it was, including your own "
            "painting.<br><br>Keyboard shortcuts (while this module is shown):<br>{shortcuts}<br><br>"
            'See the <a href="{homepage}#slicer">documentation</a>.').format(shortcuts=shortcuts_help(),
                                                                               homepage=HOMEPAGE)
        self.parent.acknowledgementText = _(
            "3DSAM-adapter: S. Gong et al., \"3DSAM-adapter: Holistic adaptation of SAM from 2D to 3D for "
            "promptable tumor segmentation\", Medical Image Analysis 2024. Segment Anything: Kirillov et al., "
            "Meta AI (Apache-2.0).")


@parameterNodeWrapper
class SAMAdapt3DParameterNode:
    """The module's settings, saved with the scene.

    inputVolume - the volume to segment.
    segmentation - where results go (the Segment Editor's selected segment).
    autoRun - run the model as soon as a point is placed.
    model - the demo model, a released 3DSAM-adapter file, or an own checkpoint.
    weightsFile - the checkpoint file for the last two.
    preset - intensity normalisation (the released weights' dataset, or generic CT).
    device - Auto, CUDA, MPS or CPU.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    autoRun: bool = True
    model: Annotated[str, Choice(ADAPTER_MODELS)] = ADAPTER_DEMO
    weightsFile: pathlib.Path
    preset: Annotated[str, Choice(ADAPTER_PRESETS)] = "ct"
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "Auto"


class SAMAdapt3DWidget(PromptSegmentationWidget):
    moduleName = "SAMAdapt3D"

    def createLogic(self):
        return SAMAdapt3DLogic()

    def updateModelSection(self) -> None:
        model = self._parameterNode.model
        self.ui.weightsPathLineEdit.enabled = model != ADAPTER_DEMO
        if model == ADAPTER_RELEASED:
            notice = SAM3D_ADAPTER_RELEASE_NOTICE + " Set the intensity preset to the file's dataset."
        elif model == ADAPTER_OWN:
            sam = CATALOG["sam-vit-b"]
            notice = (f"A checkpoint saved without SAM's frozen encoder also needs {sam.filename} ({sam.size_text}, "
                      f"{sam.licence}); you will be asked before it is downloaded.")
        else:
            notice = ("The demo model was trained on synthetic phantoms by this project: for trying the module, "
                      "not for patients.")
        self.ui.weightsNoticeLabel.text = notice


class SAMAdapt3DLogic(PromptSegmentationLogic):
    """GUI-free: usable from scripts and the self-test (through ``self.controller``)."""

    moduleName = "SAMAdapt3D"

    def getParameterNode(self):
        return SAMAdapt3DParameterNode(super().getParameterNode())

    def weightsChoice(self, parameters):
        return adapter_weights(parameters.model, parameters.weightsFile)

    def sessionSettings(self, parameters) -> SessionSettings:
        return SessionSettings(preset=parameters.preset)


class SAMAdapt3DTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: a phantom with the demo model, through the module's controller."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        runSelfTest(self, SAMAdapt3DLogic(), self.test_clicks_segment_the_lesion_and_undo_restores_painting)

    def test_clicks_segment_the_lesion_and_undo_restores_painting(self, logic):
        import numpy as np
        import vtk

        from volsam.geometry import Box
        from volsam.methods import WeightsChoice
        from volsam.mrml import volume_node_from_volume
        from volsam.phantoms import TUMOR_LABEL, PhantomConfig, make_phantom

        self.delayDisplay("Phantom: oblique, flipped, anisotropic")
        image, labels, info = make_phantom(7, PhantomConfig(rotation_deg_ras=(10, -15, 20), flip_ijk=(True, False, False),
                                                            spacing_ijk=(1.2, 1.4, 2.5), lesions_per_case=(1, 1)))
        volumeNode = volume_node_from_volume(slicer.mrmlScene, image, "phantom")
        controller = logic.controller
        controller.initialize(volumeNode, weights=WeightsChoice("demo"), device="auto")
        controller.wait_idle()
        self.assertTrue(controller.state.ready, controller.state.message)

        stroke = Box((1, 1, 1), (3, 4, 5))  # painted before clicking, away from the lesion
        controller.record_edit(np.ones(stroke.shape, np.uint8), stroke)
        before = controller.interaction.current_mask()

        self.delayDisplay("Click on the lesion")
        lesionRas = image.ijk_to_ras_points(np.array(info.lesions[0].center_ijk, float))
        controller.prompt_node("positive").AddControlPointWorld(vtk.vtkVector3d(*lesionRas))
        controller.wait_idle()
        mask = controller.interaction.current_mask().astype(bool)
        truth = labels.array == TUMOR_LABEL
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        self.assertGreater(dice, 0.5, f"Dice {dice:.2f} of the demo model on the phantom lesion")

        self.delayDisplay("Undo gives the painted segment back")
        controller.undo()
        self.assertTrue(np.array_equal(controller.interaction.current_mask(), before))
        self.assertEqual(controller.prompt_node("positive").GetNumberOfControlPoints(), 0)
        self.delayDisplay("Test passed")
