"""Background regions: a rectangle a reviewer marked as holding no object of any class, as
training samples (issue 34.2: negatives made cheap).

A region teaches "negative" only at windows the scorer would look at and nobody said hold an
object: the windows of the object size on the scoring grid (origins on multiples of the step, as
mlcore.inference.scoring lays them) that lie wholly inside the region and overlap no object box
(objects inside a region win, by any pixel). At most ``cap`` of them are kept, spread evenly over
the region (not its top rows), so one huge drag cannot flood the negative class's draws."""

from __future__ import annotations

import numpy as np

# Why 32: a scene-only first model learns from tens of marks a class (the bench marks 10-100
# objects a class); a region worth more than one class's marks would make one area (a sea, a
# field) most of what "negative" means, and most of the negatives held out to calibrate.
REGION_SAMPLE_CAP = 32


def _origins(start: int, length: int, window: int, step: int) -> np.ndarray:
    """Grid origins (multiples of ``step``) of windows wholly inside [start, start + length)."""
    first = -(-start // step) * step  # the first multiple of step at or after start
    last = start + length - window
    return np.arange(first, last + 1, step, dtype=np.int64) if last >= first else np.empty(0, int)


def background_windows(
    region, objects, window: int, step: int, cap: int = REGION_SAMPLE_CAP
) -> list[tuple[int, int]]:
    """The origins ``(x, y)`` of the windows a background ``region`` ``(x, y, w, h)`` teaches as
    negative: ``window``-pixel squares on the ``step`` grid wholly inside it, none overlapping a
    box of ``objects`` (``(x, y, w, h)`` each), at most ``cap``, evenly spread in row-major
    order. All in scene pixels; deterministic."""
    if window < 1 or step < 1 or cap < 0:
        raise ValueError(
            f"window and step must be positive and cap >= 0, got {window}, {step}, {cap}"
        )
    rx, ry, rw, rh = (int(v) for v in region)
    xs, ys = _origins(rx, rw, window, step), _origins(ry, rh, window, step)
    if not len(xs) or not len(ys) or cap == 0:
        return []
    gx, gy = np.meshgrid(xs, ys)  # row-major: y outer, x inner
    gx, gy = gx.ravel(), gy.ravel()
    free = np.ones(gx.shape, dtype=bool)
    for ox, oy, ow, oh in objects:
        free &= (gx >= ox + ow) | (gx + window <= ox) | (gy >= oy + oh) | (gy + window <= oy)
    gx, gy = gx[free], gy[free]
    if len(gx) > cap:
        keep = np.unique(np.linspace(0, len(gx) - 1, cap).round().astype(np.int64))
        gx, gy = gx[keep], gy[keep]
    return [(int(x), int(y)) for x, y in zip(gx, gy, strict=True)]
