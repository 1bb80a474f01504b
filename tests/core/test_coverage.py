"""Training asks the question the metrics ask: a window whose centre class covers only a small
part of it (under ``min_coverage``) never reaches the loss; reviewed windows keep their label.
Checked on hand-made canvases against a brute-force count of each window's pixels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mlcore.data.windows import WindowSampler, coverage_map
from mlcore.train.training import TorchWindowGather, TrainConfig, train, weighted_mean

W = 32
CLASSES = ["car", "boat", "negative"]


def hand_made_canvas(height=160, width=192, seed=0):
    """A negative canvas with a few car and boat tiles pasted at odd places (some overlapping)
    and its label map; the image encodes the label so a window's content is its truth."""
    label_map = np.full((height, width), 2, dtype=np.uint8)
    for label, y, x in [(0, 10, 12), (1, 40, 30), (0, 64, 100), (1, 90, 120), (0, 100, 20)]:
        label_map[y : y + W, x : x + W] = label
    colours = np.array([[220, 30, 30], [30, 30, 220], [90, 150, 90]], dtype=np.uint8)
    rng = np.random.default_rng(seed)
    image = np.clip(colours[label_map].astype(int) + rng.integers(-20, 20, (height, width, 3)),
                    0, 255).astype(np.uint8)  # fmt: skip
    return image, label_map


def canvas_set(image, label_map, exact=None):
    mixed = SimpleNamespace(class_name="mixed", array=image, weight=1.0, layout="mixed",
                            label_map=label_map, source_map=None, placements=[])  # fmt: skip
    canvases = [mixed]
    if exact is not None:
        canvases.append(exact)
    return SimpleNamespace(canvases=canvases, classes=CLASSES, heads=None)


def brute_coverage(label_map, y, x):
    window = label_map[y : y + W, x : x + W]
    return float((window == window[W // 2, W // 2]).mean())


def test_coverage_map_counts_the_centre_class_share_of_each_window():
    _, label_map = hand_made_canvas()
    cov = coverage_map(label_map, W)
    rng = np.random.default_rng(1)
    for _ in range(300):
        y, x = (
            rng.integers(0, label_map.shape[0] - W + 1),
            rng.integers(0, label_map.shape[1] - W + 1),
        )
        expected = brute_coverage(label_map, y, x)
        assert 0 <= expected - cov[y + W // 2, x + W // 2] / 255 < 1 / 255
    # a window exactly on the first tile is all car but the rows the boat at (40, 30) covers
    assert cov[10 + 16, 12 + 16] == int(255 * (1 - 2 * 14 / W**2))


def test_ambiguous_windows_are_not_in_the_tables():
    image, label_map = hand_made_canvas()
    sampler = WindowSampler(canvas_set(image, label_map), CLASSES, W, 8, val_fraction=0.0,
                            min_coverage=0.4, coverage="drop")  # fmt: skip
    everything = WindowSampler(canvas_set(image, label_map), CLASSES, W, 8, val_fraction=0.0,
                               coverage="none")  # fmt: skip
    table, full = sampler.tables["train"], everything.tables["train"]
    kept = {(int(y), int(x)) for y, x in zip(table.y, table.x)}
    dropped = 0
    for y, x in zip(full.y.tolist(), full.x.tolist()):
        ambiguous = brute_coverage(label_map, y, x) < 0.4
        assert ((y, x) in kept) == (not ambiguous)
        dropped += ambiguous
    assert dropped > 10  # the canvas has ambiguous windows to drop


def test_jittered_windows_that_become_ambiguous_get_weight_zero():
    image, label_map = hand_made_canvas()
    sampler = WindowSampler(canvas_set(image, label_map), CLASSES, W, 8, val_fraction=0.0,
                            min_coverage=0.4, coverage="drop")  # fmt: skip
    gather = TorchWindowGather(sampler, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    batch = gather.sample_batch(2000, generator, "train", jitter=8)
    images, labels, weights = batch.images, batch.labels, batch.weights
    colours = np.array([[220, 30, 30], [30, 30, 220], [90, 150, 90]])
    zero = 0
    for img, label, weight in zip(images.numpy(), labels.numpy(), weights.numpy()):
        # read each window's labels back from its pixels (nearest class colour)
        pix = np.abs(img[..., None, :].astype(int) - colours).sum(-1).argmin(-1)
        assert pix[W // 2, W // 2] == label
        share = float((pix == label).mean())
        assert weight == (1.0 if share >= 0.4 else 0.0), share
        zero += weight == 0
    assert zero > 0  # jitter did move some windows off their tiles


def test_linear_mode_weights_by_coverage_and_keeps_every_window():
    image, label_map = hand_made_canvas()
    sampler = WindowSampler(canvas_set(image, label_map), CLASSES, W, 8, val_fraction=0.0,
                            min_coverage=0.4, coverage="linear")  # fmt: skip
    t = sampler.tables["train"]
    assert t.n_windows == len(range(0, 160 - W + 1, 8)) * len(range(0, 192 - W + 1, 8))
    w = sampler.loss_weights(t.canvas, t.y, t.x)
    expected = [brute_coverage(label_map, y, x) for y, x in zip(t.y.tolist(), t.x.tolist())]
    np.testing.assert_allclose(w, expected, atol=1 / 255)


def test_reviewed_windows_keep_full_weight():
    image, label_map = hand_made_canvas()
    exact_image = np.zeros((W, 2 * W, 3), dtype=np.uint8)
    exact = SimpleNamespace(class_name="boat", array=exact_image, weight=50.0, layout="exact",
                            label_map=None, source_map=None,
                            placements=[("a", 0, 0, 0), ("b", 0, W, 1)])  # fmt: skip
    sampler = WindowSampler(canvas_set(image, label_map, exact), CLASSES, W, 8, val_fraction=0.0,
                            min_coverage=0.9, coverage="drop")  # fmt: skip
    t = sampler.tables["train"]
    on_exact = t.canvas == 1
    assert on_exact.sum() == 2
    assert (sampler.loss_weights(t.canvas[on_exact], t.y[on_exact], t.x[on_exact]) == 1).all()


def test_zero_weight_windows_do_not_move_the_loss():
    losses = torch.tensor([0.5, 100.0, 1.5, -7.0])
    weights = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert float(weighted_mean(losses, weights)) == pytest.approx(1.0)


def test_training_with_the_rule_still_learns():
    image, label_map = hand_made_canvas(320, 320)
    config = TrainConfig(depth=8, width=8, batch_size=32, steps=40, lr=0.05, val_windows=128,
                         val_fraction=0.2, threads=1, device="cpu", log_every=5)  # fmt: skip
    result = train(canvas_set(image, label_map), CLASSES, config)
    assert result.val_accuracy > 0.6  # chance 1/3; windows of colour blocks are easy
