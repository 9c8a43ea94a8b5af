"""What ``volsam app`` is started with (plain data, no trame import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: The layout the app opens with, as trame-slicer names it (four views: coronal and sagittal
#: on the left, 3D and axial on the right).
DEFAULT_LAYOUT = "Quad View"
#: Seed of the demo phantom (the one ``volsam demo`` uses, held out from the demo models' training).
DEMO_SEED = 2025


@dataclass(frozen=True)
class AppConfig:
    """``image``: a NIfTI/NRRD/MHA file or a DICOM folder; None opens the demo phantom.

    ``weights``: method name -> weights file or "demo" (every method defaults to its demo
    model); ``sam_checkpoint`` / ``sam2_checkpoint``: Meta's files for frozen parts a checkpoint
    leaves out. ``save_dir``: where *Save* writes on the server. ``volume_rendering``: show the
    image rendered in the 3D view (off: the 3D view shows the slice planes and segment surfaces;
    volume rendering needs a GPU to be usable).
    """

    image: Path | None = None
    method: str = "sam3d-adapter"
    weights: dict[str, str] = field(default_factory=dict)
    sam_checkpoint: str | None = None
    sam2_checkpoint: str | None = None
    preset: str | None = None
    device: str = "auto"
    save_dir: Path = Path(".")
    layout: str = DEFAULT_LAYOUT
    volume_rendering: bool = False
    demo_seed: int = DEMO_SEED

    def weights_for(self, method_name: str) -> str:
        return self.weights.get(method_name, "demo")
