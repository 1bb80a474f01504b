"""Detections from a grid with refinements (a box head's boxes and centredness): thresholds on
the class probability, NMS ranked by probability x centredness, the kept window's refined box;
a grid without them gives the detections it always did. And the three oracles of
``mlcore ceiling`` on hand-made scenes (issue 22)."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore.eval.coco_eval import coco_ap
from mlcore.eval.evaluation import ceiling, oracle_grid
from mlcore.inference.postprocess import detections, ranked_detections, window_hits
from mlcore.inference.scoring import ScoreGrid

CLASSES = ["car", "boat", "negative"]
STEP = 16


def grid_with(probs_car, centredness=None, boxes=None):
    """A 3 x 3 grid of 32 px windows at step 16 whose car probability is ``probs_car`` (3, 3)."""
    car = np.asarray(probs_car, dtype=np.float32)
    probs = np.stack([car, np.zeros_like(car), 1 - car], -1)
    origins = np.array([0, 16, 32])
    return ScoreGrid(origins, origins, probs, CLASSES, 32, STEP, boxes, centredness)


ONE_OBJECT = [[0.95, 0.97, 0.0], [0.96, 0.99, 0.0], [0.0, 0.0, 0.0]]


def test_the_best_centred_window_wins_and_gives_its_refined_box():
    centred = np.full((3, 3), 0.2, dtype=np.float32)
    centred[0, 0] = 0.9  # probability 0.95, but the best-centred window of the object
    boxes = np.tile(np.array([0, 0, 32, 32], np.float32), (3, 3, 1))
    boxes[0, 0] = [4, 6, 30, 34]  # the object seen from window (0, 0): x 4..30, y 6..34
    (only,) = detections(grid_with(ONE_OBJECT, centred, boxes), thresholds=0.9)
    assert (only.x, only.y, only.w, only.h) == (4.0, 6.0, 26.0, 28.0)
    assert only.score == pytest.approx(0.95 * 0.9)
    # Without a centredness the most probable window is kept, as before.
    (plain,) = detections(grid_with(ONE_OBJECT), thresholds=0.9)
    assert (plain.x, plain.y, plain.score) == (16.0, 16.0, pytest.approx(0.99))


def test_the_threshold_applies_to_the_probability_not_to_the_ranking_score():
    car = [[0.95, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.85]]
    centred = np.full((3, 3), 1.0, dtype=np.float32)
    centred[0, 0] = 0.05
    hits = window_hits(grid_with(car, centred), thresholds=0.9, negative="negative")
    assert len(hits) == 1 and (hits.x[0], hits.y[0]) == (0.0, 0.0)  # 0.85 at c 1 does not pass
    assert hits.prob[0] == pytest.approx(0.95) and hits.score[0] == pytest.approx(0.95 * 0.05)


def test_neutral_refinements_give_exactly_the_detections_of_a_plain_grid():
    rng = np.random.default_rng(0)
    car = rng.random((3, 3)).astype(np.float32)
    neutral_boxes = np.tile(np.array([0, 0, 32, 32], np.float32), (3, 3, 1))
    neutral = grid_with(car, np.ones((3, 3), np.float32), neutral_boxes)
    for merge in ("none", "weighted", "union"):
        assert detections(neutral, 0.3, merge=merge) == detections(grid_with(car), 0.3, merge=merge)
    assert (
        ranked_detections(neutral).to_detections()
        == ranked_detections(grid_with(car)).to_detections()
    )
    plain = window_hits(grid_with(car), 0.3)
    assert plain.prob is None and plain.windows is None  # the untouched path of an old model


def test_clusters_are_formed_on_the_windows_and_merged_from_the_refined_boxes():
    boxes = np.tile(np.array([0, 0, 32, 32], np.float32), (3, 3, 1))
    boxes[..., :2] += 10  # every window sees its object 10 px further right and down
    boxes[..., 2:] += 10
    grid = grid_with(ONE_OBJECT, np.ones((3, 3), np.float32), boxes)
    weighted = detections(grid, 0.9, merge="weighted")
    assert len(weighted) == 1 == len(detections(grid, 0.9))  # the same one cluster as windows
    expected_x = 10 + (0.95 * 0 + 0.97 * 16 + 0.96 * 0 + 0.99 * 16) / (0.95 + 0.97 + 0.96 + 0.99)
    assert weighted[0].x == pytest.approx(expected_x)


def tile(label, x, y, order=0):
    return {"id": f"{label}{x},{y}", "label": label, "x": x, "y": y, "w": 32, "h": 32,
            "order": order, "visible": 1.0}  # fmt: skip


def test_the_ranked_oracle_keeps_the_best_centred_window():
    # Windows holding the car's centre (26, 22): origins x 0 or 16, y 0 or 16. Their IoU with
    # the car (x 10..42, y 6..38): (16, 0) overlaps 26 x 26 px, the others 22 x 26 or less.
    truth = [tile("car", 10, 6)]
    kept = {}
    for oracle in ("one_hot", "ranked", "regressed"):
        grid = oracle_grid(truth, CLASSES, "negative", STEP, size=(96, 96), oracle=oracle)
        (kept[oracle],) = detections(grid, 0.5, "negative")
    assert (kept["one_hot"].x, kept["one_hot"].y) == (0.0, 0.0)  # the first in raster order
    assert (kept["ranked"].x, kept["ranked"].y, kept["ranked"].w) == (16.0, 0.0, 32.0)
    assert kept["ranked"].score == pytest.approx(26 * 26 / (2 * 32 * 32 - 26 * 26), rel=1e-6)
    regressed = kept["regressed"]
    assert (regressed.x, regressed.y, regressed.w, regressed.h) == (10.0, 6.0, 32.0, 32.0)


def test_perfect_box_regression_scores_ap_one_on_separated_objects():
    truth = [tile("car", 10, 6), tile("boat", 75, 3), tile("car", 140, 70), tile("boat", 7, 90),
             tile("car", 90, 140), tile("negative", 150, 150)]  # fmt: skip
    result = ceiling(truth, STEP, size=(200, 200))
    regressed, ranked = result["oracles"]["regressed"], result["oracles"]["ranked"]
    assert regressed["coco"]["ap50"] == 1.0 and regressed["coco"]["ap"] == 1.0
    assert regressed["object"]["overall"]["f1"] == 1.0
    # The window boxes of the other oracles are off the objects by up to half a step.
    assert ranked["coco"]["ap"] < 1.0 and result["oracles"]["one_hot"]["coco"]["ap"] < 1.0
    # The top level is the one-hot oracle's full metrics, as the demo reads them.
    assert result["coco"] == result["oracles"]["one_hot"]["coco"]
    grid = oracle_grid(truth, CLASSES, "negative", STEP, size=(200, 200), oracle="regressed")
    ranked_boxes = ranked_detections(grid, "negative").to_detections()
    assert coco_ap(ranked_boxes, truth, CLASSES)["ap"] == 1.0
