"""The box head: its targets are the top tile's box on hand-made canvases (flips move them along),
a tiny model learns a known offset on synthetic canvases, and the exported file's extra outputs
are what the model computes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from mlcore.data.windows import WindowSampler
from mlcore.inference.scoring import OnnxScorer
from mlcore.model.export import export_onnx
from mlcore.train.training import (
    TorchWindowGather,
    TrainConfig,
    augment_batch,
    load_checkpoint,
    save_checkpoint,
    train,
)

W = 32
CLASSES = ["car", "negative"]


def tile_canvas(size=256, seed=0, pitch=48):
    """Bright 'car' tiles (a distinct frame, so their edges are visible) on a dark background
    tile, placed on a jittered grid; placements in paste order, like a mixed canvas."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
    label_map = np.ones((size, size), dtype=np.uint8)
    placements = [("bg", 0, 0, 0)]  # a background paste under everything (the negative)
    order = 1
    for y in range(4, size - W - 4, pitch):
        for x in range(4, size - W - 4, pitch):
            y2, x2 = y + int(rng.integers(-4, 5)), x + int(rng.integers(-4, 5))
            tile = np.full((W, W, 3), 90, dtype=np.uint8)
            tile[:3], tile[-3:], tile[:, :3], tile[:, -3:] = 250, 250, 250, 250
            image[y2 : y2 + W, x2 : x2 + W] = tile
            label_map[y2 : y2 + W, x2 : x2 + W] = 0
            placements.append((f"t{order}", y2, x2, order))
            order += 1
    canvas = SimpleNamespace(class_name="mixed", array=image, weight=1.0, layout="mixed",
                             label_map=label_map, source_map=None,
                             placements=placements)  # fmt: skip
    return SimpleNamespace(
        canvases=[canvas], classes=CLASSES, heads=None, tile_size=(size, size)
    ), canvas


def test_box_targets_are_the_top_tile_relative_to_the_window():
    cset, canvas = tile_canvas()
    cset.tile_size = (W, W)
    sampler = WindowSampler(cset, CLASSES, W, 8, val_fraction=0.0, coverage="none")
    gather = TorchWindowGather(sampler, torch.device("cpu"))
    batch = gather.sample_batch(500, torch.Generator().manual_seed(0), "train", jitter=6)
    tiles = {(p[1], p[2]) for p in canvas.placements[1:]}
    checked = 0
    for label, target, weight in zip(batch.labels, batch.box_target, batch.box_weight):
        if label != 0:
            continue
        assert weight == 1
        x0, y0, x1, y1, iou = target.tolist()
        # the target box is a tile box, W x W, and the IoU is that of the window with it
        assert abs((x1 + 1 - x0) - 1) < 1e-6 and abs((y1 + 1 - y0) - 1) < 1e-6
        dx, dy = round(x0 * W), round(y0 * W)
        inter = (W - abs(dx)) * (W - abs(dy))
        assert abs(iou - inter / (2 * W * W - inter)) < 1e-6
        checked += 1
    assert checked > 50 and len(tiles) > 10


def test_flips_move_the_box_targets_with_the_pixels():
    cset, _ = tile_canvas()
    cset.tile_size = (W, W)
    sampler = WindowSampler(cset, CLASSES, W, 8, val_fraction=0.0, coverage="none")
    gather = TorchWindowGather(sampler, torch.device("cpu"))
    batch = gather.sample_batch(300, torch.Generator().manual_seed(1), "train", jitter=6)
    config = TrainConfig(hflip=True, vflip=True, brightness=0, contrast=0)
    x, flipped = augment_batch(batch, config, torch.Generator().manual_seed(2))
    for img, before, after in zip(x.numpy(), batch.box_target, flipped.box_target):
        x0, y0, x1, y1 = (after[:4] * W).round().int().tolist()
        bright = img.mean(-1) > 200  # the tile's frame, where it lies in the flipped window
        if after[4] < 0.6 or not bright.any():
            continue
        ys, xs = np.nonzero(bright)
        assert abs(xs.min() - max(0, x0)) <= 1 and abs(ys.min() - max(0, y0)) <= 1
        assert abs(after[4] - before[4]) < 1e-6  # the IoU does not change


def test_a_tiny_model_learns_a_known_offset_and_exports_it(tmp_path):
    cset, _ = tile_canvas(size=384, seed=3)
    cset.tile_size = (W, W)
    config = TrainConfig(depth=8, width=8, batch_size=64, steps=150, lr=0.05, box_head=True,
                         jitter=8, val_fraction=0.2, val_windows=128, threads=1, device="cpu",
                         coverage="none", log_every=25, brightness=0, contrast=0)  # fmt: skip
    model = train(cset, CLASSES, config).model.eval()
    # windows shifted by a known offset from a tile: the head must say where the tile is
    canvas = cset.canvases[0]
    ys, xs, want = [], [], []
    for _, ty, tx, _ in canvas.placements[1:]:
        for dy, dx in ((-6, -6), (6, 0), (0, 6), (5, -5)):
            y, x = ty + dy, tx + dx
            if 0 <= y <= canvas.array.shape[0] - W and 0 <= x <= canvas.array.shape[1] - W:
                ys.append(y), xs.append(x), want.append([-dx, -dy, W - dx, W - dy])
    windows = np.stack([canvas.array[y : y + W, x : x + W] for y, x in zip(ys, xs)])
    with torch.no_grad():
        out = model(torch.from_numpy(windows))
    error = np.abs(out["boxes"].numpy() - np.array(want)).mean()
    baseline = np.abs(np.array([[0, 0, W, W]]) - np.array(want)).mean()
    assert error < 0.75 * baseline, (error, baseline)  # 150 steps: about 0.6 measured
    centred = out["centredness"].numpy()
    assert centred.min() >= 0 and centred.max() <= 1

    path = export_onnx(model, tmp_path / "model.onnx", CLASSES, W)
    scored = OnnxScorer(path).predict_all(windows)
    np.testing.assert_allclose(scored["boxes"], out["boxes"].numpy(), atol=1e-3)
    np.testing.assert_allclose(scored["centredness"], out["centredness"].numpy(), atol=1e-4)
    # and the checkpoint keeps the head
    checkpoint = save_checkpoint(tmp_path / "c.pt", model, CLASSES, config)
    again, payload = load_checkpoint(checkpoint)
    assert payload["architecture"]["box_head"] is True
    with torch.no_grad():
        torch.testing.assert_close(again(torch.from_numpy(windows))["boxes"], out["boxes"])
