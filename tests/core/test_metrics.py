"""Window truth (centre rule), window metrics and object matching on hand-made cases."""

import numpy as np
import pytest

from mlcore.eval.metrics import grid_window_metrics, object_metrics, window_metrics, window_truth
from mlcore.inference.postprocess import Detection
from mlcore.inference.scoring import ScoreGrid

CLASSES = ["car", "boat", "negative"]
CAR, BOAT, NEG = 0, 1, 2


def box(label, x, y, w=32, h=32, order=0, visible=1.0, id_=None):
    return {"id": id_, "label": label, "x": x, "y": y, "w": w, "h": h, "order": order,
            "visible": visible}  # fmt: skip


GT = [
    box("car", 10, 10, 20, 20, order=1),
    box("car", 40, 40, 20, 20, order=0),  # hidden below the boat where they overlap
    box("boat", 30, 0, 32, 60, order=2),
    box("plane", 0, 40, 20, 20, order=3),  # not a project class: negative
]


def test_window_truth_centre_rule_with_paste_order():
    ys = xs = np.array([0, 16, 32])  # centres 16, 32, 48
    truth = window_truth(ys, xs, 32, GT, CLASSES, "negative")
    np.testing.assert_array_equal(truth, [[CAR, BOAT, BOAT], [NEG, BOAT, BOAT], [NEG, BOAT, BOAT]])
    no_negative = window_truth(ys, xs, 32, GT[:1], ["car", "boat"], None)
    assert no_negative[0, 0] == CAR and (no_negative.ravel()[1:] == -1).all()


def test_window_metrics_on_a_hand_made_confusion():
    truth = np.array([CAR, CAR, BOAT, BOAT, NEG, NEG, -1])
    pred = np.array([CAR, BOAT, BOAT, BOAT, NEG, CAR, BOAT])  # the -1 entry is ignored
    m = window_metrics(truth, pred, CLASSES)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6) and m["windows"] == 6
    car = m["per_class"]["car"]
    assert (car["precision"], car["recall"], car["f1"]) == (0.5, 0.5, 0.5)
    boat = m["per_class"]["boat"]
    assert boat["precision"] == pytest.approx(2 / 3) and boat["recall"] == 1.0
    assert boat["support"] == 2


def test_grid_window_metrics_argmax_and_thresholded():
    ys = xs = np.array([0, 16, 32])
    truth = window_truth(ys, xs, 32, GT, CLASSES, "negative")
    probs = np.eye(3, dtype=np.float32)[truth] * 0.8 + 0.2 / 3  # right class with p = 0.867
    grid = ScoreGrid(ys, xs, probs, CLASSES, 32, 16)
    assert grid_window_metrics(grid, GT)["accuracy"] == 1.0
    # at threshold 0.9 every positive window falls back to negative
    m = grid_window_metrics(grid, GT, thresholds=0.9)
    assert m["per_class"]["car"]["tp"] == 0 and m["per_class"]["negative"]["fp"] == 7


def test_a_perfect_model_off_the_window_grid_scores_one():
    gt = [box("car", 40, 40, id_="a"), box("boat", 200, 8, id_="b")]
    dets = [
        Detection(32, 32, 32, 32, "car", 0.99, "merged"),  # IoU 0.39 with the car
        Detection(176, 0, 64, 64, "boat", 0.95, "merged"),  # IoU 0.25, but holds its centre
    ]
    m = object_metrics(dets, gt, CLASSES, "negative")
    assert m["overall"] == {"tp": 2, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert sorted(m["matches"]) == [(0, 0), (1, 1)]


def test_false_positives_misses_duplicates_and_dont_care():
    gt = [
        box("car", 0, 0),
        box("car", 100, 100),
        box("boat", 300, 300, visible=0.2),  # mostly hidden: don't care
    ]
    dets = [
        {"x": 0, "y": 0, "w": 32, "h": 32, "label": "car", "score": 0.99},  # TP
        {"x": 4, "y": 0, "w": 32, "h": 32, "label": "car", "score": 0.90},  # duplicate: FP
        {"x": 500, "y": 500, "w": 32, "h": 32, "label": "car", "score": 0.95},  # FP
        {"x": 100, "y": 100, "w": 32, "h": 32, "label": "boat", "score": 0.97},  # wrong class: FP
        {"x": 300, "y": 300, "w": 32, "h": 32, "label": "boat", "score": 0.96},  # don't care
    ]
    m = object_metrics(dets, gt, CLASSES, "negative", iou=0.3, min_visible=0.5)
    car, boat = m["per_class"]["car"], m["per_class"]["boat"]
    assert (car["tp"], car["fp"], car["fn"]) == (1, 2, 1)
    assert car["precision"] == pytest.approx(1 / 3) and car["recall"] == 0.5
    assert (boat["tp"], boat["fp"], boat["fn"]) == (0, 1, 0)
    assert m["overall"]["tp"] == 1 and m["overall"]["fp"] == 3 and m["overall"]["fn"] == 1
    # with everything visible the hidden boat counts: the detection on it is a TP
    m2 = object_metrics(dets, gt, CLASSES, "negative", min_visible=0.0)
    assert m2["per_class"]["boat"]["tp"] == 1


def test_empty_cases():
    m = object_metrics([], [], CLASSES, "negative")
    assert m["overall"]["precision"] == 1.0 and m["overall"]["f1"] == 1.0
    m = object_metrics([], [box("car", 0, 0)], CLASSES, "negative")
    assert m["overall"]["recall"] == 0.0 and m["overall"]["f1"] == 0.0
