"""volsam: the Slicer-free engine of the VolumetricSAM extension.

Click-to-3D tumour segmentation with Segment-Anything models adapted to volumes:
3DSAM-adapter (``volsam.models.sam3d_adapter``) and SAM2-3dMed (``volsam.models.sam2_3dmed``).
Heavy packages (torch, sam2, segment-anything) are imported only when a model is used.
"""

__version__ = "0.1.0"
