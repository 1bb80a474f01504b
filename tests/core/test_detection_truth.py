"""The truth, the ceiling and the thresholds behind the detection figures (issue 12): window
truth on hand-made overlapping tiles, the NMS IoU that follows from window and step, the oracle
classifier through the shipped post-processing, threshold calibration and its trip through the
model file, aligned-tile accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlcore.data.collage import make_collage, save_ground_truth
from mlcore.data.datasets import LabelledImages
from mlcore.eval.evaluation import ceiling, evaluate_grid, oracle_grid
from mlcore.eval.metrics import window_truth
from mlcore.inference.calibration import calibrate_thresholds
from mlcore.inference.postprocess import default_nms_iou, iou_one_to_many
from mlcore.inference.scoring import ScoreGrid

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["car", "boat", "negative"]


def box(label, x, y, order, visible=1.0):
    return {"id": f"{label}{order}", "label": label, "x": x, "y": y, "w": 32, "h": 32,
            "order": order, "visible": visible}  # fmt: skip


def test_a_negative_tile_on_top_hides_the_car_below_it():
    truth = [box("car", 0, 0, 0), box("negative", 16, 16, 1), box("boat", 40, 0, 2)]
    ys = xs = np.array([0, 8, 16, 24, 32])
    full = window_truth(ys, xs, 32, truth, CLASSES, "negative")
    # Window (0, 0) has its centre at (16, 16): the negative pasted later covers that pixel.
    assert full[0, 0] == 2
    assert full[0, 4] == 1  # centre x 48 is on the boat (x 40..72), pasted last
    # Given only the car/boat boxes (the old callers), the same window was called a car.
    only_positive = [b for b in truth if b["label"] != "negative"]
    assert window_truth(ys, xs, 32, only_positive, CLASSES, "negative")[0, 0] == 0


def test_window_truth_takes_origins_in_any_order():
    truth = [box("car", 0, 0, 0), box("negative", 16, 16, 1), box("boat", 40, 0, 2)]
    ys, xs = np.array([0, 8, 16, 24, 32]), np.array([0, 8, 16, 24, 32])
    full = window_truth(ys, xs, 32, truth, CLASSES, "negative")
    order = np.array([3, 0, 4, 1, 2])
    shuffled = window_truth(ys[order], xs[order[::-1]], 32, truth, CLASSES, "negative")
    np.testing.assert_array_equal(shuffled, full[np.ix_(order, order[::-1])])


def test_a_car_on_top_of_a_negative_is_a_car():
    truth = [box("negative", 0, 0, 0), box("car", 8, 8, 1)]
    label = window_truth(np.array([0]), np.array([0]), 32, truth, CLASSES, "negative")
    assert label[0, 0] == 0


@pytest.mark.parametrize("window,step,pair_iou", [(32, 16, 1 / 7), (32, 8, 1 / 31), (32, 32, 0)])
def test_nms_iou_lies_below_the_farthest_pair_that_can_share_a_point(window, step, pair_iou):
    iou = default_nms_iou(window, step)
    assert 0 < iou < pair_iou or (pair_iou == 0 and iou < 1e-3)
    # every two grid windows that contain a common point overlap at least that much
    origins = np.arange(0, 4 * window, step)
    yy, xx = np.meshgrid(origins, origins, indexing="ij")
    x, y = xx.ravel().astype(float), yy.ravel().astype(float)
    size = np.full(len(x), float(window))
    for k in range(len(x)):
        share = (np.abs(x - x[k]) < window) & (np.abs(y - y[k]) < window)
        overlap = iou_one_to_many((x[k], y[k], window, window), x, y, size, size)
        assert (overlap[share] >= iou).all()


def small_collage(seed=0, cols=24):
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, 600, p=[0.15, 0.15, 0.7])
    images = rng.integers(0, 256, (600, 32, 32, 3), dtype=np.uint8)
    tiles = LabelledImages(images, labels, CLASSES, [f"t{i}" for i in range(600)])
    target = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    return make_collage(target, tiles, cols=cols, seed=seed)


@pytest.mark.parametrize("step", [16, 8])
def test_the_oracle_through_the_shipped_post_processing_finds_almost_every_object(step):
    collage = small_collage()
    result = ceiling(collage.ground_truth, step)
    assert result["object"]["overall"]["f1"] >= 0.95
    assert result["window"]["accuracy"] == 1.0  # the oracle is the truth, window by window
    # The old constant 0.3 cannot merge diagonal neighbours: the design capped itself.
    capped = ceiling(collage.ground_truth, step, iou=0.3)
    assert capped["object"]["overall"]["f1"] < result["object"]["overall"]["f1"]


def test_ceiling_command_prints_and_writes_the_oracle_figures(tmp_path):
    save_ground_truth(small_collage(1).ground_truth, tmp_path / "gt.json")
    for step in (16, 8):
        done = subprocess.run(
            [sys.executable, "-m", "mlcore", "ceiling", tmp_path / "gt.json", "--step", str(step),
             "--json", tmp_path / f"c{step}.json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "object overall" in done.stdout and "COCO AP@0.5" in done.stdout
        figures = json.loads((tmp_path / f"c{step}.json").read_text())
        assert figures["object"]["overall"]["f1"] >= 0.95 and figures["step"] == step
        assert 0 <= figures["coco"]["ap"] <= figures["coco"]["ap50"] <= 1


def test_calibration_picks_the_threshold_that_separates_hits_from_false_alarms():
    collage = small_collage(2)
    truth = collage.ground_truth
    grid = oracle_grid(truth, CLASSES, "negative", 16)
    # A timid model: right everywhere, but at most 0.62 sure of a car; a few negatives at 0.4.
    probs = grid.probs.copy()
    car = probs[..., 0] == 1
    probs[car] = [0.62, 0.0, 0.38]
    noisy = ~car & (np.random.default_rng(0).random(car.shape) < 0.05)
    probs[noisy] = [0.4, 0.0, 0.6]
    timid = ScoreGrid(grid.ys, grid.xs, probs, CLASSES, 32, 16)
    result = calibrate_thresholds(timid, truth)
    assert 0.4 < result["thresholds"]["car"] <= 0.62
    at_published = evaluate_grid(timid, truth, 0.9)["object"]["per_class"]["car"]["f1"]
    calibrated = evaluate_grid(timid, truth, result["thresholds"])["object"]["per_class"]["car"]
    assert at_published == 0.0 and calibrated["f1"] > 0.9


class ColourScorer:
    """A hand-made window classifier: red-dominant windows are cars, blue ones boats."""

    classes = CLASSES
    window = 32

    def predict(self, images):
        mean = images.reshape(len(images), -1, 3).mean(1)
        out = np.zeros((len(images), 3), np.float32)
        out[
            np.arange(len(images)), np.where(mean[:, 0] > 150, 0, np.where(mean[:, 2] > 150, 1, 2))
        ] = 1
        return out


def test_aligned_accuracy_counts_per_source_class():
    from mlcore.data.datasets import ClassMapping
    from mlcore.eval.aligned_tiles import aligned_accuracy

    images = np.zeros((6, 32, 32, 3), np.uint8)
    images[0:2, ..., 0] = 255  # automobiles: red
    images[2, ..., 2] = 255  # a ship: blue
    images[3, ..., 0] = 255  # a truck that looks red: called car
    source = LabelledImages(images, [0, 0, 1, 2, 2, 3], ["automobile", "ship", "truck", "frog"],
                            [str(i) for i in range(6)])  # fmt: skip
    result = aligned_accuracy(ColourScorer(), source, ClassMapping.cifar_default())
    assert result["recall"] == {"car": 1.0, "boat": 1.0, "negative": round(2 / 3, 4)}
    assert result["called_as"]["truck"]["car"] == 0.5
    assert result["balanced_accuracy"] == pytest.approx((1 + 1 + 2 / 3) / 3)
