"""A first model from a scene alone (issue 34.2): the training material a project without a tile
dataset gets from what its reviewers mark on its scenes.

Only the marked windows become training samples: the canvas set starts empty
(:func:`scene_only_set`), each mark's window is cut from the scene as scoring shows it
(:func:`crop_mark`) and joins the set as one exact sample (:func:`add_marked_windows`), so no
unmarked pixel ever teaches "negative". A share of the first marks of each class is held out to
calibrate the thresholds (:func:`hold_out_marks`) and never trained on; a project whose tile
dataset is too small to hold images out calibrates on its reviewers' marks the same way.

The app's cycle (workers.loop_jobs) and bench/bench_scene_only.py both call these functions, so
the bench measures the recipe the app runs."""

from __future__ import annotations

import numpy as np

from mlcore.data.canvases import CORRECTION_WEIGHT, CanvasSet, calibration_scene
from mlcore.data.datasets import LabelledImages
from mlcore.data.windows import resize_windows

# A scene-only project calibrates on this share of its first marks (per class, at least one of a
# class with 3 or more), held out of training; they stay its calibration scene for later cycles.
CALIBRATION_MARK_SHARE = 0.2
# A marked or reviewed window keeps this much of its scene a side on its exact canvas (model px):
# the ResNet-20 trunk's halo (its receptive-field radius, mlcore.inference.dense_scoring), all of
# its neighbours that dense scoring lets into a window's features. Training for dense scoring
# sees the window among them; per-window training cuts the window alone, as before.
MARK_CONTEXT_PX = 40
SCENE_MARKS_SOURCE = "scene marks"


def scene_only_set(classes, window: int) -> CanvasSet:
    """The empty canvas set of a project that starts from its scenes alone: only the reviewers'
    marks join it (exact samples, each trained at its own window)."""
    return CanvasSet(list(classes), tile_size=(window, window),
                     meta={"datasets": [], "source": SCENE_MARKS_SOURCE})  # fmt: skip


def crop_mark(reader, box, window: int, scene_window: int | None = None,
              context: int = 0) -> np.ndarray:  # fmt: skip
    """The window-size tile centred on a mark's box ``(x, y, w, h)`` in scene pixels (the window
    the scorer saw when the box is a window), clamped into the scene. ``scene_window`` (the
    project's object size, default ``window``): the square cut from the scene, resized to
    ``window`` as scoring resizes it (mlcore.inference.scoring), so the model learns what
    scoring shows it. ``context``: also that many (model) px of the scene a side, zeros beyond
    its edges as dense scoring pads them: a (window + 2 context) square, the window at its
    centre. ``reader``: anything with ``height``, ``width`` and ``read_rows``."""
    x, y, w, h = box
    size = int(scene_window or window)
    margin = int(round(context * size / window))  # in scene px
    cy, cx = y + h / 2.0, x + w / 2.0
    y0 = int(min(max(round(cy - size / 2.0), 0), reader.height - size))
    x0 = int(min(max(round(cx - size / 2.0), 0), reader.width - size))
    side = size + 2 * margin
    oy, ox = y0 - margin, x0 - margin  # the tile's origin on the scene (maybe outside it)
    top, bottom = max(0, oy), min(reader.height, oy + side)
    left, right = max(0, ox), min(reader.width, ox + side)
    tile = np.zeros((side, side, 3), dtype=np.uint8)
    rows = reader.read_rows(top, bottom)
    tile[top - oy : bottom - oy, left - ox : right - ox] = rows[:, left:right]
    return np.ascontiguousarray(resize_windows(tile[None], window + 2 * context)[0])


def window_of(tile: np.ndarray, window: int) -> np.ndarray:
    """The window at the centre of a tile cut with context (:func:`crop_mark`)."""
    margin = (tile.shape[0] - window) // 2
    return np.ascontiguousarray(tile[margin : margin + window, margin : margin + window])


def hold_out_marks(cset: CanvasSet, by_class: dict[str, list]) -> dict[str, int]:
    """For a set without a calibration scene (a project starting from its scenes alone, or one
    whose tile dataset is too small to hold images out): take a share of each class's new marked
    tiles (``by_class``: class -> [(image id, tile)], the last ones of each list are taken) out of
    ``by_class`` and make them the set's calibration scene, so thresholds are chosen, and a new
    version is compared with the current one (no silent regressions, labeling.loop.cycle), on
    marks the model never trained on. Returns {class: tiles held out} ({} when nothing was)."""
    if cset.calibration is not None:
        return {}
    held: dict[str, list] = {}
    for label, items in by_class.items():
        n = int(len(items) * CALIBRATION_MARK_SHARE) or (1 if len(items) >= 3 else 0)
        if n:
            held[label], by_class[label] = items[-n:], items[:-n]
    if len(held) < 2:  # a calibration scene of one class calibrates nothing: train on all
        for label, items in held.items():
            by_class[label] = by_class[label] + items
        return {}
    items = [(i, t, label) for label, rows in held.items() for i, t in rows]
    images = LabelledImages(  # the windows alone (a tile may carry its context)
        images=np.stack([window_of(t, cset.tile_size[0]) for _, t, _ in items]),
        labels=np.array([cset.classes.index(label) for _, _, label in items], dtype=np.int64),
        class_names=list(cset.classes),
        ids=[i for i, _, _ in items],
    )
    cset.calibration = calibration_scene(images, seed=0)
    return {label: len(rows) for label, rows in held.items()}


def add_marked_windows(cset: CanvasSet, by_class: dict[str, list]) -> dict[str, list]:
    """Add every marked tile (``by_class``: class -> [(image id, tile)], each the window or the
    window with its context, :func:`crop_mark`) to its class's correction canvases in the exact
    layout, at the correction weight: each one is one training
    sample as it was marked (its pixels, its label), never re-scattered, jittered or held out.
    Returns {image id: [canvas name, y, x]}: which mark became which training sample."""
    samples: dict[str, list] = {}
    for label, items in by_class.items():
        if not items:
            continue
        ids = [i for i, _ in items]
        tiles = np.stack([t for _, t in items])
        context = (tiles.shape[1] - cset.tile_size[0]) // 2  # cut with context (crop_mark)
        for canvas in cset.append(label, tiles, ids, weight=CORRECTION_WEIGHT,
                                  kind="correction", layout="exact", context=context):  # fmt: skip
            for p in canvas.placements:
                samples[p[0]] = [canvas.name, int(p[1]), int(p[2])]
    return samples
