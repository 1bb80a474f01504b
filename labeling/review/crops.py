"""Window crops for the review queue: a window and its context read from the scene's pixels a
band of rows at a time, outlined, scaled, as PNG."""

from __future__ import annotations

import io

import numpy as np

from labeling.review.common import ReviewError, pixel_int

CROP_MAX = 2048
# What one crop request may cost: the output image (window + context, times scale) has at most
# this many pixels (12 MB as RGB), and the scene is read a band of rows at a time, so neither
# memory nor PNG encoding time grows with what a request asks for.
CROP_OUTPUT_MAX_PIXELS = 2048 * 2048
CROP_READ_BYTES = 16 * 1024 * 1024
OUTLINE = (255, 221, 0)


def window_crop(
    scene, x, y, size=None, context=None, scale=1, outline=True, storage=None
) -> np.ndarray:
    """The window at (x, y) of ``size`` pixels with ``context`` pixels around it, as uint8
    (H, W, 3) of side (size + 2 * context) * scale; outside the scene is grey. Reads only the
    rows it needs from the scene's pixels. ``outline`` draws a 1-pixel frame just outside the
    window (in the context) so the reviewer sees which window is asked about."""
    from labeling.projects.storage_keys import get_storage
    from mlcore.ingest.scenes import NpyScene, SceneError

    if not scene.pixels_key:
        raise ReviewError(f"scene {scene.name!r} has no pixels yet: wait for its import to finish")
    size = scene.project.scene_window if size in (None, "") else pixel_int("size", size)
    context = size // 2 if context in (None, "") else pixel_int("context", context)
    scale = pixel_int("scale", scale)
    x, y = pixel_int("x", x), pixel_int("y", y)
    if not 1 <= size <= CROP_MAX:
        raise ReviewError(f"size must be between 1 and {CROP_MAX} pixels, got {size}")
    if not 0 <= context <= CROP_MAX:
        raise ReviewError(f"context must be between 0 and {CROP_MAX} pixels, got {context}")
    if not 1 <= scale <= 8:
        raise ReviewError(f"scale must be between 1 and 8, got {scale}")
    if not (0 <= x < scene.width and 0 <= y < scene.height):
        raise ReviewError(
            f"x={x}, y={y} is outside scene {scene.name!r} ({scene.width}x{scene.height})"
        )
    side = size + 2 * context
    if (side * scale) ** 2 > CROP_OUTPUT_MAX_PIXELS:
        raise ReviewError(
            f"the crop would be {side * scale}x{side * scale} pixels ((size + 2 * context) * "
            f"scale), above the limit of {CROP_OUTPUT_MAX_PIXELS:,} pixels: ask for a smaller "
            "size, context or scale"
        )
    out = np.full((side, side, 3), 128, dtype=np.uint8)
    x0, y0 = x - context, y - context
    sy0, sy1 = max(y0, 0), min(y0 + side, scene.height)
    sx0, sx1 = max(x0, 0), min(x0 + side, scene.width)
    try:
        reader = NpyScene(storage or get_storage(), scene.pixels_key)
        # A band of whole rows at a time: a wide scene's rows can be far bigger than the crop.
        band = max(1, CROP_READ_BYTES // max(1, reader.width * 3))
        for b0 in range(sy0, sy1, band):
            b1 = min(b0 + band, sy1)
            out[b0 - y0 : b1 - y0, sx0 - x0 : sx1 - x0] = reader.read_rows(b0, b1)[:, sx0:sx1]
    except (SceneError, FileNotFoundError, OSError) as exc:
        raise ReviewError(f"the pixels of scene {scene.name!r} cannot be read: {exc}") from None
    if outline and context > 0:
        a, b = context - 1, context + size  # frame rows/cols just outside the window
        out[a, a : b + 1] = OUTLINE
        out[b, a : b + 1] = OUTLINE
        out[a : b + 1, a] = OUTLINE
        out[a : b + 1, b] = OUTLINE
    if scale > 1:
        out = np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)
    return out


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
