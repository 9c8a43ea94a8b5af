"""Where the clicks are, as maps the decoder reads (an option of the from-scratch configurations).

The official prompt path gives each click a token: the image feature sampled at the click,
plus (with a label embedding) its label. The token carries no position, and it reaches the
image only through learned global tokens, so a click can only say "things that look like
this". A negative click on tissue that looks like the lesion (which is where a mask leaks) can
therefore not remove it: the demo model, trained that way, moved its probability by at most
0.001 for a negative click. With ``MaskDecoderConfig.click_maps`` the decoder's classifier also
reads three maps of the clicks on its own grid, as interactive segmentation networks encode
clicks (Gaussian and distance maps):

0. positive clicks: ``exp(-d^2 / (2 sigma^2))`` of the distance to the nearest one;
1. negative clicks: the same, 0 everywhere without one;
2. the negative side: ``sigmoid((d_positive - d_negative) / softness)``, near 1 where a voxel is
   nearer a negative click than every positive one (the geometric rule the released model
   uses, here as an input the network learns to weigh against the image), 0 without one.

Crops are 1 mm isotropic, so crop voxels are millimetres. The maps depend on the clicks only,
so they join the decoder after the crop's embedding ("embed once, prompt many times" holds).
"""

from __future__ import annotations

import torch

CLICK_MAP_CHANNELS = 3
CLICK_SIGMA_MM = 5.0
NEGATIVE_SIDE_SOFTNESS_MM = 3.0


def lower_to_nearest_squared(squared: torch.Tensor, points, axes) -> torch.Tensor:
    """``squared`` lowered in place to the squared distance from each grid voxel to the nearest
    of ``points`` ((N, 3), coordinates in the grid's axis order; ``axes[a]``: the voxels'
    coordinates along axis a). Summed per axis by broadcasting: no coordinate grid is built."""
    for a, b, c in points:
        torch.minimum(squared, ((axes[0] - a) ** 2)[:, None, None] + ((axes[1] - b) ** 2)[None, :, None]
                      + ((axes[2] - c) ** 2), out=squared)
    return squared


def click_maps(points_dwh: torch.Tensor, labels: torch.Tensor | None, grid_size: int, crop_size: int) -> torch.Tensor:
    """(1, 3, G, G, G) click maps in the decoder's (H, W, D) order, G = ``grid_size``.

    points_dwh: (N, 3) or (1, N, 3) crop voxel coordinates [d, w, h]; labels: (N,) 1 positive /
    0 negative, or None (all positive). Decoder voxel n covers crop voxels n * s .. (n + 1) * s
    - 1 (s = crop_size / G), so its centre lies at crop coordinate (n + 0.5) s - 0.5.
    """
    points = points_dwh.reshape(-1, 3).to(torch.float32)
    device = points.device
    positive = torch.ones(len(points), dtype=torch.bool, device=device) if labels is None else labels.reshape(-1) > 0
    step = crop_size / grid_size
    centres = (torch.arange(grid_size, dtype=torch.float32, device=device) + 0.5) * step - 0.5

    def nearest_squared(chosen: torch.Tensor) -> torch.Tensor | None:
        if not bool(chosen.any()):
            return None
        squared = torch.full((grid_size,) * 3, float("inf"), dtype=torch.float32, device=device)
        # [d, w, h] -> the grid's (H, W, D) order
        return lower_to_nearest_squared(squared, points[chosen][:, [2, 1, 0]], (centres,) * 3)

    to_positive, to_negative = nearest_squared(positive), nearest_squared(~positive)
    maps = torch.zeros((1, CLICK_MAP_CHANNELS, grid_size, grid_size, grid_size), dtype=torch.float32, device=device)
    two_sigma_squared = 2 * CLICK_SIGMA_MM ** 2
    if to_positive is not None:
        maps[0, 0] = torch.exp(-to_positive / two_sigma_squared)
    if to_negative is not None:
        maps[0, 1] = torch.exp(-to_negative / two_sigma_squared)
        if to_positive is not None:
            maps[0, 2] = torch.sigmoid((to_positive.sqrt() - to_negative.sqrt()) / NEGATIVE_SIDE_SOFTNESS_MM)
        else:
            maps[0, 2] = 1.0
    return maps
