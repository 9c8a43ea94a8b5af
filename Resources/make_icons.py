"""Draw the extension's and the modules' 128x128 icons (numpy + Pillow, 4x supersampled).

    python Resources/make_icons.py

Writes Resources/Icons/VolumetricSAM.png, SAMAdapt3D/Resources/Icons/SAMAdapt3D.png and
SAM2Volume/Resources/Icons/SAM2Volume.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIZE = 128
SCALE = 4  # supersampling for smooth edges
BACKGROUND = np.array([22, 45, 80])
LESION = np.array([236, 128, 52])
POSITIVE = np.array([60, 210, 90])
SLICE = np.array([120, 170, 230])


def canvas() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = SIZE * SCALE
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / SCALE
    rgba = np.zeros((n, n, 4))
    corner = 18.0
    inside = _rounded_square(x, y, 2.0, SIZE - 2.0, corner)
    shade = 1.0 - 0.25 * (y / SIZE)
    rgba[inside, :3] = (BACKGROUND * shade[..., None])[inside]
    rgba[inside, 3] = 255
    return rgba, x, y


def _rounded_square(x, y, low, high, radius):
    cx = np.clip(x, low + radius, high - radius)
    cy = np.clip(y, low + radius, high - radius)
    return (x >= low) & (x <= high) & (y >= low) & (y <= high) & ((x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2)


def paint(rgba, mask, color, alpha=1.0) -> None:
    rgba[mask, :3] = rgba[mask, :3] * (1 - alpha) + np.asarray(color, float) * alpha
    rgba[mask, 3] = np.maximum(rgba[mask, 3], 255 * alpha)


def lesion(rgba, x, y, cx, cy, radius) -> None:
    """A lit sphere with a slightly irregular outline."""
    angle = np.arctan2(y - cy, x - cx)
    wobble = radius * (1 + 0.06 * np.sin(3 * angle) + 0.04 * np.cos(5 * angle))
    distance = np.hypot(x - cx, y - cy)
    inside = distance <= wobble
    depth = np.sqrt(np.clip(1 - (distance / wobble) ** 2, 0, 1))
    nx, ny = (x - cx) / wobble, (y - cy) / wobble
    light = np.clip(0.35 + 0.65 * (depth * 0.7 - nx * 0.35 - ny * 0.45), 0.2, 1.15)
    color = np.clip(LESION[None, None, :] * light[..., None], 0, 255)
    rgba[inside, :3] = color[inside]
    rgba[inside, 3] = 255


def click(rgba, x, y, cx, cy) -> None:
    """A positive click: a green dot with a white ring."""
    distance = np.hypot(x - cx, y - cy)
    paint(rgba, distance <= 9.5, (255, 255, 255))
    paint(rgba, distance <= 7.0, POSITIVE)


def slices(rgba, x, y, ys, left, right, alpha=0.85) -> None:
    """Slices seen edge-on as thin parallelograms."""
    for level in ys:
        band = (np.abs(y - level - 0.18 * (x - SIZE / 2)) <= 1.6) & (x >= left) & (x <= right)
        paint(rgba, band, SLICE, alpha)


def arrow(rgba, x, y, cx, top, bottom) -> None:
    """A double-headed vertical arrow (propagation both ways)."""
    shaft = (np.abs(x - cx) <= 2.2) & (y >= top + 8) & (y <= bottom - 8)
    up = (y >= top) & (y <= top + 12) & (np.abs(x - cx) <= (y - top) * 0.75)
    down = (y <= bottom) & (y >= bottom - 12) & (np.abs(x - cx) <= (bottom - y) * 0.75)
    paint(rgba, shaft | up | down, (255, 255, 255))


def save(rgba, path: Path) -> None:
    n = SIZE
    small = rgba.reshape(n, SCALE, n, SCALE, 4).mean(axis=(1, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(small, 0, 255).astype(np.uint8), "RGBA").save(path, optimize=True)
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> None:
    rgba, x, y = canvas()
    slices(rgba, x, y, (34, 64, 94), 14, 114, alpha=0.35)
    lesion(rgba, x, y, 60, 66, 30)
    slices(rgba, x, y, (64,), 26, 100, alpha=0.55)
    click(rgba, x, y, 70, 58)
    save(rgba, ROOT / "Resources" / "Icons" / "VolumetricSAM.png")

    rgba, x, y = canvas()
    lesion(rgba, x, y, 62, 68, 36)
    click(rgba, x, y, 74, 58)
    save(rgba, ROOT / "SAMAdapt3D" / "Resources" / "Icons" / "SAMAdapt3D.png")

    rgba, x, y = canvas()
    slices(rgba, x, y, (24, 42, 60, 78, 96), 14, 92, alpha=0.9)
    lesion(rgba, x, y, 52, 60, 18)
    arrow(rgba, x, y, 108, 18, 110)
    save(rgba, ROOT / "SAM2Volume" / "Resources" / "Icons" / "SAM2Volume.png")


if __name__ == "__main__":
    main()
