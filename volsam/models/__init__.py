"""Model packages, one per method: ``sam3d_adapter`` and ``sam2_3dmed``."""
