"""Helpers of the training tests (tests/core): a synthetic canvas set of red squares (car), blue
disks (boat) and plain noise (negative), and a tiny training config that runs in seconds."""

import numpy as np

from mlcore.data.canvases import Canvas, CanvasSet


def shapes_canvas(kind: str, seed: int, size=(128, 128)) -> np.ndarray:
    """Gray noise with many small shapes: red squares (car), blue disks (boat), none (negative)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(120, 25, size + (3,))
    yy, xx = np.mgrid[: size[0], : size[1]]
    if kind != "negative":
        for cy in range(6, size[0], 14):
            for cx in range(6, size[1], 14):
                cy2, cx2 = cy + rng.integers(-2, 3), cx + rng.integers(-2, 3)
                if kind == "car":
                    mask = (abs(yy - cy2) <= 4) & (abs(xx - cx2) <= 4)
                    img[mask] = (220, 40, 40)
                else:
                    mask = (yy - cy2) ** 2 + (xx - cx2) ** 2 <= 20
                    img[mask] = (40, 60, 220)
    return np.clip(img, 0, 255).astype(np.uint8)


CLASSES = ["car", "boat", "negative"]


def synthetic_set(seed=0) -> CanvasSet:
    return CanvasSet(
        CLASSES, [Canvas(c, shapes_canvas(c, seed + i)) for i, c in enumerate(CLASSES)]
    )


TINY = dict(depth=8, width=8, batch_size=32, steps=24, lr=0.05, log_every=1, val_windows=256)
