"""The loop's figures on hand-made cases: labels saved read off a curve, corrections stick, paired
differences, the hit rule that decides a window, and the calibration scene's copies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlcore.data.canvases import calibration_scene
from mlcore.data.datasets import LabelledImages
from mlcore.eval.loop_figures import (
    corrections_stick,
    labels_needed,
    labels_saved,
    mean_interval,
    paired_differences,
    stick_by_coverage,
    t95,
)
from mlcore.eval.metrics import centre_class_coverage
from mlcore.inference.postprocess import decided_labels


def test_labels_needed_interpolates_on_the_segment_that_first_crosses():
    labels = [0, 200, 400, 600, 800, 1000, 1200]
    curve = [0.50, 0.56, 0.60, 0.62, 0.66, 0.64, 0.70]
    # 0.64 is crossed between 600 (0.62) and 800 (0.66): half way.
    assert labels_needed(labels, curve, 0.64) == pytest.approx(700.0)
    assert labels_needed(labels, curve, 0.50) == 0.0  # reached at the start
    assert labels_needed(labels, curve, 0.70) == pytest.approx(1200.0)
    assert labels_needed(labels, curve, 0.71) is None  # never within the curve


def test_labels_saved_reports_the_ratio_and_when_the_baseline_never_gets_there():
    labels = [0, 200, 400, 600, 800, 1000, 1200]
    random_curve = [0.50, 0.53, 0.56, 0.59, 0.61, 0.63, 0.65]
    saved = labels_saved(labels, random_curve, 600, 0.62)
    # 0.62 between 800 (0.61) and 1000 (0.63): 900 answers, 1.5 times the budget.
    assert saved["baseline_needs"] == pytest.approx(900.0)
    assert saved["ratio"] == pytest.approx(1.5)
    assert saved["reached_within"] is True
    never = labels_saved(labels, random_curve, 600, 0.70)
    assert never["baseline_needs"] is None and never["ratio"] is None
    assert never["reached_within"] is False and never["baseline_max_labels"] == 1200


def test_labels_needed_refuses_curves_it_cannot_read():
    with pytest.raises(ValueError, match="increasing"):
        labels_needed([0, 200, 200], [0.1, 0.2, 0.3], 0.2)
    with pytest.raises(ValueError, match="equal-length"):
        labels_needed([0, 200], [0.1], 0.2)


def test_corrections_stick_counts_only_answered_windows():
    decided = np.array([[0, 1, 2], [2, 2, 1]])
    answered = np.array([[0, -1, 1], [2, -1, 1]])  # 4 answered; the one at (0, 2) is not kept
    stick = corrections_stick(decided, answered)
    assert stick == {"answered": 4, "kept": 3, "share": 0.75}
    assert corrections_stick(decided, np.full_like(answered, -1))["share"] is None
    with pytest.raises(ValueError, match="shape"):
        corrections_stick(decided, answered[:1])


def test_decided_labels_is_the_hit_rule_with_per_class_thresholds():
    classes = ["car", "boat", "negative"]
    probs = np.array(
        [
            [0.70, 0.20, 0.10],  # car reaches 0.6
            [0.55, 0.40, 0.05],  # car below 0.6, boat 0.4 reaches 0.35: boat
            [0.50, 0.30, 0.20],  # neither: negative
            [0.65, 0.80, 0.00],  # both reach: the more probable, boat
        ]
    )
    got = decided_labels(probs, classes, {"car": 0.6, "boat": 0.35})
    assert got.tolist() == [0, 1, 2, 1]
    with pytest.raises(ValueError, match="negative class"):
        decided_labels(probs, ["a", "b", "c"], 0.5, negative=None)


def test_paired_differences_per_cycle_with_t_interval_and_counts():
    a = [[0.5, 0.60, 0.65], [0.5, 0.58, 0.66], [0.5, 0.61, 0.62]]
    b = [[0.5, 0.56, 0.60], [0.5, 0.57, 0.61], [0.5, 0.62, 0.58]]
    d = paired_differences(a, b)
    assert d["mean"][0] == 0.0 and d["level"][0] == 3
    diffs = np.array([0.04, 0.01, -0.01])
    assert d["mean"][1] == pytest.approx(diffs.mean(), abs=1e-4)
    half = 4.303 * diffs.std(ddof=1) / math.sqrt(3)
    assert d["ci95"][1] == pytest.approx([diffs.mean() - half, diffs.mean() + half], abs=1e-4)
    assert (d["ahead"][1], d["behind"][1]) == (2, 1)
    assert d["ahead"][2] == 3 and d["ci95"][2][0] > 0
    with pytest.raises(ValueError, match="same seeds"):
        paired_differences(a, b[:2])


def test_t_quantiles_and_mean_interval():
    assert t95(9) == pytest.approx(2.262)
    assert t95(27) == pytest.approx(2.060)  # the next tabled lower dof: wider, never narrower
    assert t95(100) == 1.96
    summary = mean_interval([1.0, 2.0, 3.0])
    assert summary["mean"] == 2.0 and summary["n"] == 3
    assert summary["ci95"] == pytest.approx([2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)])
    assert math.isnan(mean_interval([1.0])["ci95"][0])


def test_the_calibration_scene_holds_each_image_about_copies_times():
    rng = np.random.default_rng(0)
    n = 60
    images = LabelledImages(
        rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 3,
        ["car", "boat", "negative"], [f"img{i}" for i in range(n)],
    )  # fmt: skip
    one_image, one = calibration_scene(images, seed=0, copies=1)
    four_image, four = calibration_scene(images, seed=0, copies=4)
    assert len(four) >= 4 * n and len(one) < 2 * n
    assert four_image.shape[0] * four_image.shape[1] > 3 * one_image.shape[0] * one_image.shape[1]
    pasted = {}
    for box in four:
        pasted[box["id"]] = pasted.get(box["id"], 0) + 1
    assert set(pasted) == set(images.ids) and min(pasted.values()) >= 4
    with pytest.raises(ValueError, match="copies"):
        calibration_scene(images, copies=0)


def test_centre_class_coverage_counts_the_visible_pixels_of_the_centre_class():
    # A 32 px car at (0, 0) under a 16 x 32 px boat pasted later at (16, 0), on a 64 x 64 scene.
    boxes = [{"label": "car", "x": 0, "y": 0, "w": 32, "h": 32, "order": 0},
             {"label": "boat", "x": 16, "y": 0, "w": 16, "h": 32, "order": 1}]  # fmt: skip
    cover = centre_class_coverage([0, 16, 32], [0, 16, 32], 32, boxes, (64, 64, 3),
                                  ["car", "boat", "negative"], "negative")  # fmt: skip
    assert cover.shape == (3, 3)
    # Window (0, 0): centre (16, 16) on the boat, which fills half of it.
    assert cover[0, 0] == pytest.approx(0.5, abs=1 / 255)
    # Window (0, 16): centre (16, 32) on the background: x 32-47 of 16-47 is empty, all rows.
    assert cover[0, 1] == pytest.approx(0.5, abs=1 / 255)
    # Window (32, 32): nothing anywhere, the background fills it.
    assert cover[2, 2] == pytest.approx(1.0)
    # Window (16, 0): centre (32, 16) below both boxes: background on rows 32-47 of 16-47.
    assert cover[1, 0] == pytest.approx(0.5, abs=1 / 255)


def test_stick_by_coverage_splits_the_kept_answers_by_bin():
    answered = np.array([0, 0, 1, 1, -1, 2])
    decided = np.array([0, 1, 1, 2, 0, 2])
    coverage = np.array([0.2, 0.3, 0.5, 0.6, 0.1, 1.0])
    bins = stick_by_coverage(decided, answered, coverage, edges=(0.4, 0.7))
    assert [b["coverage"] for b in bins] == [[0.0, 0.4], [0.4, 0.7], [0.7, 1.0]]
    assert [(b["answered"], b["kept"]) for b in bins] == [(2, 1), (2, 1), (1, 1)]
    assert bins[2]["share"] == 1.0
    with pytest.raises(ValueError):
        stick_by_coverage(decided, answered, coverage[:3])
