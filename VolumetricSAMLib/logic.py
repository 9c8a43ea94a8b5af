"""The GUI-free logic that SAMAdapt3DLogic and SAM2VolumeLogic derive from.

It owns the model thread, the loaded session and the :class:`volsam.mrml.SegmentInteraction`
that binds the session to a segment. Work is split so that MRML is touched on the main thread
only: ``start*`` methods read MRML and hand a job to the model thread (returning its
:class:`~concurrent.futures.Future`); ``finish*`` methods take the finished future and write
MRML. Scripts and self-tests wait for a future with ``future.result()`` in between.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future

import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from volsam.geometry import Box
from volsam.mrml import (
    SegmentInteraction,
    SegmentStep,
    control_point_ras,
    ensure_segment,
    prompt_markups_node,
    volume_from_node,
)
from volsam.mrml.nodes import matrix_from_vtk, node_to_world_matrix
from volsam.mrml.segments import set_reference_geometry
from volsam.weights.download import WeightsFile, download

from .dependencies import ensure_installed, install_plan
from .models import LoadedModel, ModelChoice, build_session, open_volume
from .worker import JobProgress, ModelWorker

logger = logging.getLogger(__name__)


class PromptSegmentationLogic(ScriptedLoadableModuleLogic):
    """Shared logic of the two modules. Subclasses set :attr:`moduleName` and build their
    :class:`~VolumetricSAMLib.models.ModelChoice` from their parameter node."""

    moduleName = ""
    promptRoles = ("positive", "negative")

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.worker = ModelWorker(f"{self.moduleName}-model")
        self.loaded: LoadedModel | None = None
        self.interaction: SegmentInteraction | None = None
        self._volumeState = None

    # --- dependencies (main thread) -----------------------------------------------------------
    def missingDependencies(self) -> list[str]:
        return install_plan(self.moduleName).lines()

    def installDependencies(self) -> bool:
        """One confirmation, then PyTorch and the packages; False if the user declined."""
        return ensure_installed(self.moduleName)

    # --- nodes --------------------------------------------------------------------------------
    def promptNode(self, role: str):
        return prompt_markups_node(slicer.mrmlScene, self.moduleName, role)

    def segmentationFor(self, volumeNode, segmentationNode=None):
        """The segmentation to write into: the given one, else a new one on the volume's grid."""
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} lesions"))
            segmentationNode.CreateDefaultDisplayNodes()
            set_reference_geometry(segmentationNode, volume_from_node(volumeNode))
        return segmentationNode

    def segmentFor(self, segmentationNode, segmentId: str | None) -> str:
        """The segment to write into: the selected one, else a new empty one."""
        return ensure_segment(segmentationNode, segmentId or None, "Lesion")

    # --- loading the model and the volume -------------------------------------------------------
    @staticmethod
    def _volumeStateOf(volumeNode):
        """What the session depends on: the voxels and where they are in the world (not display
        settings, which also modify the node)."""
        image = volumeNode.GetImageData()
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        return (volumeNode.GetID(), image.GetMTime() if image is not None else 0,
                tuple(matrix_from_vtk(ijkToRas).ravel()), tuple(node_to_world_matrix(volumeNode).ravel()))

    def isReady(self, choice: ModelChoice, volumeNode) -> bool:
        """Whether the session holds this model and this volume as it is now (the image is sent
        to the model again only when the node or its modification time changed)."""
        return (self.loaded is not None and self.interaction is not None and self.loaded.choice == choice
                and volumeNode is not None and self._volumeState == self._volumeStateOf(volumeNode))

    def engineVolume(self, volumeNode):
        return volume_from_node(volumeNode)

    def startLoading(self, choice: ModelChoice, volumeNode, sliceDirection: str | None = None) -> Future:
        """Read the volume now; build the model (unless it is loaded already) and open the
        volume on the model thread. The result is ``(LoadedModel, Volume)``."""
        volume = self.engineVolume(volumeNode)
        reusable = self.loaded if self.loaded is not None and self.loaded.choice == choice else None
        self.interaction = None

        def load():
            loaded = reusable or build_session(choice)
            open_volume(loaded, volume, sliceDirection)
            return loaded, volume

        return self.worker.submit(load)

    def finishLoading(self, future: Future, volumeNode, segmentationNode, segmentId: str) -> LoadedModel:
        loaded, volume = future.result()
        self.loaded = loaded
        self._volumeState = self._volumeStateOf(volumeNode)
        self.interaction = SegmentInteraction(loaded.session, volume, loaded.undo_rules)
        self.interaction.set_segment(segmentationNode, segmentId)
        logger.info(f"{self.moduleName}: {loaded.description}")
        return loaded

    def startDownload(self, entry: WeightsFile, progress: JobProgress) -> Future:
        """Download a catalog file on the model thread (only after the user agreed)."""
        def report(done, total):
            progress.update(done, total or 0, f"Downloading {entry.filename}")
        return self.worker.submit(download, entry, None, report, progress.cancel)

    def selectSegment(self, segmentationNode, segmentId: str) -> None:
        if self.interaction is not None and (self.interaction.target is None
                                             or self.interaction.target.node is not segmentationNode
                                             or self.interaction.segment_id != segmentId):
            self.interaction.set_segment(segmentationNode, segmentId)

    # --- prompts --------------------------------------------------------------------------------
    def requireInteraction(self) -> SegmentInteraction:
        if self.interaction is None:
            raise ValueError("press Initialize first")
        return self.interaction

    def startPrompt(self, prompt) -> Future:
        """Run ``prompt(session)`` on the model thread (after syncing the user's edits)."""
        interaction = self.requireInteraction()
        interaction.begin_step()
        return self.worker.submit(prompt, interaction.session)

    def finishPrompt(self, future: Future, label: str, tag=None, writeLimit: Box | None = None) -> Box | None:
        interaction = self.requireInteraction()
        try:
            box = future.result()
        except BaseException:
            interaction.abort_step()
            raise
        return interaction.finish_step(box, label, tag, writeLimit)

    # --- undo / redo / reset, and the prompts' markups -----------------------------------------
    @staticmethod
    def promptTag(markupsNode, index: int, positive: bool) -> dict:
        """What undo needs to take a prompt's point away and redo to put it back."""
        return {"node": markupsNode.GetID(), "id": markupsNode.GetNthControlPointID(index),
                "ras": control_point_ras(markupsNode, index).tolist(), "positive": positive}

    def undo(self) -> SegmentStep | None:
        step = self.requireInteraction().undo()
        if step is not None:
            for tag in _tags(step):
                node = slicer.mrmlScene.GetNodeByID(tag["node"])
                index = node.GetNthControlPointIndexByID(tag["id"]) if node is not None else -1
                if index >= 0:
                    node.RemoveNthControlPoint(index)
        return step

    def redo(self) -> SegmentStep | None:
        """Redo; the prompts' points come back (callers ignore their placement events meanwhile)."""
        step = self.requireInteraction().redo()
        if step is not None:
            for tag in _tags(step):
                node = slicer.mrmlScene.GetNodeByID(tag["node"])
                if node is not None:
                    index = node.AddControlPointWorld(vtk.vtkVector3d(*tag["ras"]))
                    tag["id"] = node.GetNthControlPointID(index)
        return step

    def reset(self) -> SegmentStep | None:
        for role in self.promptRoles:
            self.promptNode(role).RemoveAllControlPoints()
        return self.requireInteraction().reset()

    def cleanup(self) -> None:
        self.worker.shutdown()


def _tags(step: SegmentStep) -> list[dict]:
    if step.tag is None:
        return []
    return step.tag if isinstance(step.tag, list) else [step.tag]

