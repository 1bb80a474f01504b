"""A reviewed or marked window keeps its scene context on its exact canvas (so training for dense
scoring sees it among its real neighbours, as dense scoring does): ``crop_mark`` cuts the window
with a margin (zeros beyond the scene's edges), the canvas places the window at the sampler's
origin with the context around it (saved, loaded and rebuilt as such), calibration hold-outs
take the window alone, and a dense crop around the window shows the context while its only
labelled window stays the reviewed one; per-window sampling cuts the window as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlcore.data.canvases import CanvasError, CanvasSet, rebuild_from_manifest
from mlcore.data.scene_marks import add_marked_windows, crop_mark, window_of
from mlcore.data.windows import WindowSampler
from mlcore.ingest.scenes import ArrayScene
from mlcore.train.training import TorchWindowGather

W, MARGIN = 32, 40
CLASSES = ["car", "negative"]


def scene(seed=0, shape=(200, 260)):
    return np.random.default_rng(seed).integers(1, 256, (*shape, 3), dtype=np.uint8)


def test_crop_mark_cuts_the_window_with_its_context_and_zeros_beyond_the_edges():
    image = scene()
    reader = ArrayScene(image)
    inside = crop_mark(reader, (100, 80, W, W), W, context=MARGIN)
    assert inside.shape == (W + 2 * MARGIN, W + 2 * MARGIN, 3)
    np.testing.assert_array_equal(inside, image[80 - MARGIN : 80 + W + MARGIN, 60:172])
    np.testing.assert_array_equal(window_of(inside, W), crop_mark(reader, (100, 80, W, W), W))
    corner = crop_mark(reader, (0, 10, W, W), W, context=MARGIN)
    assert not corner[:30].any() and not corner[:, :MARGIN].any()  # beyond the top and left
    np.testing.assert_array_equal(corner[30:, MARGIN:], image[: W + MARGIN + 10, : W + MARGIN])


def test_an_exact_canvas_keeps_the_context_and_places_the_window_where_it_is_cut(tmp_path):
    image = scene(1)
    reader = ArrayScene(image)
    boxes = [(16, 24, W, W), (150, 100, W, W), (200, 150, W, W)]
    tiles = [crop_mark(reader, box, W, context=MARGIN) for box in boxes]
    cset = CanvasSet(CLASSES, tile_size=(W, W), canvas_size=(256, 256))
    samples = add_marked_windows(cset, {"car": [(f"m{k}", t) for k, t in enumerate(tiles)]})
    (canvas,) = [c for c in cset.canvases if c.kind == "correction"]
    assert canvas.layout == "exact" and canvas.context == MARGIN
    for k, box in enumerate(boxes):
        _, y, x = samples[f"m{k}"]
        np.testing.assert_array_equal(canvas.array[y : y + W, x : x + W],
                                      crop_mark(reader, box, W))  # fmt: skip
        np.testing.assert_array_equal(
            canvas.array[y - MARGIN : y + W + MARGIN, x - MARGIN : x + W + MARGIN], tiles[k]
        )
    cset.save(tmp_path / "set")
    again = CanvasSet.load(tmp_path / "set")
    loaded = next(c for c in again.canvases if c.kind == "correction")
    assert loaded.context == MARGIN and loaded.placements == canvas.placements
    entry = next(e for e in cset.manifest()["canvases"] if e["name"] == canvas.name)
    rebuilt = rebuild_from_manifest(entry, dict(zip(*canvas.tiles)))
    np.testing.assert_array_equal(rebuilt, canvas.array)
    with pytest.raises(CanvasError, match="plus 40 px of context"):
        cset.append("car", np.stack(tiles)[:, 1:, 1:], ["x", "y", "z"], layout="exact",
                    context=MARGIN)  # fmt: skip
    with pytest.raises(CanvasError, match="exact tiles only"):
        cset.append("car", np.stack(tiles), ["x", "y", "z"], context=MARGIN)


def test_a_dense_crop_sees_the_context_and_learns_only_the_reviewed_window():
    image = scene(2)
    tile = crop_mark(ArrayScene(image), (120, 90, W, W), W, context=MARGIN)
    cset = CanvasSet(CLASSES, tile_size=(W, W), canvas_size=(256, 256))
    cset.append("car", tile[None], ["m"], layout="exact", context=MARGIN)
    sampler = WindowSampler(cset, CLASSES, W, 8, val_fraction=0.0, coverage="none")
    gather = TorchWindowGather(sampler, torch.device("cpu"))
    crop, step = 96, 8  # the sampler's step
    batch = gather.sample_crops(12, crop, torch.Generator().manual_seed(0), "train")
    grid = (crop - W) // step + 1
    images = batch.images.numpy()
    labelled = (batch.weights.reshape(12, grid, grid) > 0).numpy()
    assert (labelled.sum(axis=(1, 2)) == 1).all()  # the reviewed window, and nothing else
    for n in range(12):
        ((gy, gx),) = np.argwhere(labelled[n])
        y0, x0 = gy * step, gx * step  # the window's place in the crop
        np.testing.assert_array_equal(images[n, y0 : y0 + W, x0 : x0 + W], tile[MARGIN:-MARGIN,
                                      MARGIN:-MARGIN])  # fmt: skip
        # Its context as the scene has it, up to MARGIN px a side; zeros only beyond that.
        top, left = max(0, y0 - MARGIN), max(0, x0 - MARGIN)
        bottom, right = min(crop, y0 + W + MARGIN), min(crop, x0 + W + MARGIN)
        seen = tile[
            top - y0 + MARGIN : bottom - y0 + MARGIN, left - x0 + MARGIN : right - x0 + MARGIN
        ]
        np.testing.assert_array_equal(images[n, top:bottom, left:right], seen)
        outside = np.ones((crop, crop), dtype=bool)
        outside[top:bottom, left:right] = False
        assert not images[n][outside].any()
    windows, labels, _ = gather.sample(8, torch.Generator().manual_seed(1))
    for window in windows.numpy():  # per window: the reviewed window alone, as before
        np.testing.assert_array_equal(window, tile[MARGIN:-MARGIN, MARGIN:-MARGIN])
