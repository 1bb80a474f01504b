"""Training for dense scoring (TrainConfig.dense_crop, issue 37): crops run through the trunk once,
every window of a crop pooled from its feature map. The crops' windows carry their own targets
(flips move them along), a tiny run trains, and what the trained model computes on a crop is
what dense scoring of its exported file computes; the export says it can be scored densely."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mlcore.data.windows import WindowSampler
from mlcore.inference.dense_scoring import DenseScorer, export_dense_sibling, score_scene_dense
from mlcore.inference.scoring import OnnxScorer, score_scene
from mlcore.model.export import export_onnx
from mlcore.model.network import build_model
from mlcore.train.training import (
    DenseCrops,
    TorchWindowGather,
    TrainConfig,
    augment_crops,
    load_checkpoint,
    load_init_state,
    save_checkpoint,
    train,
)

W = 32
CLASSES = ["car", "negative"]
CROP, STEP = 64, 8
GRID = (CROP - W) // STEP + 1  # windows per side of a crop


def car_canvas(size=256, seed=0, pitch=48):
    """Bright 'car' tiles (value >= 90) on a dark background (< 40), placed on a jittered grid,
    as a mixed canvas: a window's class is 'car' exactly where its centre pixel is bright."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
    label_map = np.ones((size, size), dtype=np.uint8)
    placements = [("bg", 0, 0, 0)]
    for order, (y, x) in enumerate(
        ((y, x) for y in range(4, size - W - 4, pitch) for x in range(4, size - W - 4, pitch)), 1
    ):
        y, x = y + int(rng.integers(-4, 5)), x + int(rng.integers(-4, 5))
        tile = np.full((W, W, 3), 90, dtype=np.uint8)
        tile[:3], tile[-3:], tile[:, :3], tile[:, -3:] = 250, 250, 250, 250
        image[y : y + W, x : x + W] = tile
        label_map[y : y + W, x : x + W] = 0
        placements.append((f"t{order}", y, x, order))
    canvas = SimpleNamespace(class_name="mixed", array=image, weight=1.0, layout="mixed",
                             label_map=label_map, source_map=None,
                             placements=placements)  # fmt: skip
    return SimpleNamespace(canvases=[canvas], classes=CLASSES, heads=None, tile_size=(W, W))


def _centre_class(images: torch.Tensor) -> torch.Tensor:
    """(n * GRID * GRID,) the class of each crop window from its centre 2x2 pixels (a flip moves
    the centre pixel by one): 0 car, 1 negative, -1 where they disagree (a tile's edge)."""
    centres = torch.arange(GRID) * STEP + W // 2
    bright = [images[:, centres + dy][:, :, centres + dx, 0] >= 90
              for dy in (-1, 0) for dx in (-1, 0)]  # fmt: skip
    car = bright[0] & bright[1] & bright[2] & bright[3]
    dark = ~(bright[0] | bright[1] | bright[2] | bright[3])
    return torch.where(car, 0, torch.where(dark, 1, -1)).reshape(-1)


def test_each_crop_window_has_the_class_under_its_centre_also_when_flipped():
    sampler = WindowSampler(car_canvas(), CLASSES, W, STEP, val_fraction=0.1, coverage="none")
    gather = TorchWindowGather(sampler, torch.device("cpu"))
    batch = gather.sample_crops(40, CROP, torch.Generator().manual_seed(0), "train", jitter=4)
    assert batch.images.shape == (40, CROP, CROP, 3) and batch.labels.shape == (40 * GRID**2,)
    used = batch.weights > 0
    assert used.sum() > 500 and (batch.labels[used] == 0).sum() > 50  # both classes seen
    seen = _centre_class(batch.images)
    sure = used & (seen >= 0)
    assert sure.sum() > 0.9 * used.sum()
    assert torch.equal(seen[sure], batch.labels[sure])
    config = TrainConfig(hflip=True, vflip=True, brightness=0.0, contrast=0.0)
    images, flipped = augment_crops(batch, config, torch.Generator().manual_seed(3))
    assert not torch.equal(images, batch.images.float())  # some crops flipped
    seen = _centre_class(images)
    sure = (flipped.weights > 0) & (seen >= 0)
    assert sure.sum() > 0.9 * used.sum()
    assert torch.equal(seen[sure], flipped.labels[sure])


@pytest.mark.parametrize("box_pool", ["mean", "quadrants", "grid4"])
def test_dense_training_trains_and_computes_what_dense_scoring_computes(tmp_path, box_pool):
    config = {"depth": 8, "width": 16, "box_head": True, "dense_crop": CROP, "step": STEP,
              "steps": 20, "batch_size": 64, "lr": 0.05, "log_every": 5, "val_windows": 64,
              "threads": 1, "box_pool": box_pool}  # fmt: skip
    # Width 16: torch 2.13's CPU backward of a width-8 net on 64 px inputs crashes (segfault).
    cset = car_canvas()
    result = train(cset, CLASSES, config)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    model = result.model.eval()

    per_window = export_onnx(model, tmp_path / "model.onnx", CLASSES)
    dense_path = export_dense_sibling(model, CLASSES, result.config, per_window)
    assert dense_path == tmp_path / "model.dense.onnx"  # the model file says: dense

    crop = np.ascontiguousarray(cset.canvases[0].array[44:108, 20:84])
    with torch.no_grad():
        out = DenseCrops(model, CROP, STEP, W)(torch.from_numpy(crop)[None])
        probs = model.class_probs(out["logits"]).numpy().reshape(GRID, GRID, -1)

    class Reader:
        height, width = crop.shape[:2]

        def read_rows(self, y0, y1):
            return crop[y0:y1]

    dense = score_scene_dense(DenseScorer(dense_path), Reader(), STEP)
    assert dense.probs.shape == (GRID, GRID, 2)
    np.testing.assert_allclose(probs, dense.probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["boxes"].numpy().reshape(GRID, GRID, 4), dense.boxes,
                               rtol=1e-5, atol=1e-4)  # fmt: skip
    np.testing.assert_allclose(out["centredness"].numpy().reshape(GRID, GRID),
                               dense.centredness, rtol=1e-5, atol=1e-6)  # fmt: skip
    # ... which is not what per-window scoring computes (the test could fail)
    per = score_scene(OnnxScorer(per_window), Reader(), STEP)
    assert np.abs(per.probs - dense.probs).max() > 1e-3


def test_a_model_trained_on_isolated_windows_stays_per_window(tmp_path):
    config = {"depth": 8, "width": 8, "steps": 2, "batch_size": 16, "val_windows": 0,
              "threads": 1}  # fmt: skip
    result = train(car_canvas(), CLASSES, config)
    per_window = export_onnx(result.model, tmp_path / "model.onnx", CLASSES)
    assert export_dense_sibling(result.model, CLASSES, result.config, per_window) is None
    assert not (tmp_path / "model.dense.onnx").exists()


@pytest.mark.parametrize("box_pool", ["quadrants", "grid4"])
def test_a_box_head_of_parts_starts_where_the_start_s_mean_head_was(tmp_path, box_pool):
    # A fine-tune from a start with a one-mean box head (the shipped starting model's) into a
    # head of parts: the same outputs before the first step, then its own checkpoint keeps it.
    torch.manual_seed(0)
    start = build_model(2, depth=8, width=8, box_head=True).eval()
    with torch.no_grad():
        torch.nn.init.normal_(start.box.weight, std=0.1)
        torch.nn.init.normal_(start.box.bias, std=0.1)
    path = save_checkpoint(tmp_path / "start.pt", start, CLASSES, TrainConfig(box_head=True))
    logs = []
    quad = build_model(2, depth=8, width=8, box_head=True, box_pool=box_pool)
    quad.heads = list(CLASSES)
    load_init_state(quad, str(path), logs.append)
    quad.eval()
    assert quad.box.weight.shape == (5, quad.box.parts**2 * start.box.weight.shape[1])
    assert any("widened" in line for line in logs)
    windows = torch.randint(0, 256, (6, W, W, 3), dtype=torch.uint8)
    with torch.no_grad():
        before, after = start(windows), quad(windows)
    torch.testing.assert_close(after["logits"], before["logits"])
    torch.testing.assert_close(after["boxes"], before["boxes"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(after["centredness"], before["centredness"])

    saved = save_checkpoint(tmp_path / "quad.pt", quad, CLASSES, TrainConfig(box_head=True))
    reloaded, payload = load_checkpoint(saved)
    assert payload["architecture"]["box_pool"] == box_pool
    assert reloaded.box_pool == box_pool and reloaded.box.weight.shape == quad.box.weight.shape


def test_a_network_too_narrow_for_dense_training_on_the_cpu_is_refused_in_words():
    config = TrainConfig.from_dict({"depth": 8, "width": 8, "box_head": True, "dense_crop": CROP,
                                    "step": STEP, "steps": 1, "device": "cpu"})  # fmt: skip
    with pytest.raises(ValueError, match="at least 16 channels wide, this one is 8"):
        train(car_canvas(), CLASSES, config)
