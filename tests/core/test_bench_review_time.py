"""bench/bench_review_time.py: on a hand-made scene the reviewer's actions, their seconds and the
scene-label F1 after each are exactly the ones worked out by hand; boxing by hand and the stop
rule are exact; and the bench runs end to end (every mode, the loop with a real fine-tune) on a
tiny demo folder, every mode ending with correct labels. Nothing here is a figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from tiny_demo_helpers import build_tiny_demo  # noqa: E402

from bench import bench_loop  # noqa: E402
from bench.bench_review_time import (  # noqa: E402
    COSTS,
    ReviewedScene,
    final_pass,
    hand_boxing,
    main,
    stop_cycle,
)
from mlcore.inference.postprocess import Detection  # noqa: E402

CLASSES = ["car", "boat", "negative"]


def box(label, x, y, visible=1.0):
    return {"label": label, "x": x, "y": y, "w": 32, "h": 32, "visible": visible}


# Five counted objects and a car mostly hidden (the metric's "don't care").
TRUTH = [box("car", 0, 0), box("car", 64, 0), box("car", 128, 0), box("car", 192, 0),
         box("boat", 0, 64), box("car", 64, 64, visible=0.3)]  # fmt: skip


def det(label, x, y, score):
    return Detection(x, y, 32, 32, label, score, "merged")


def test_the_final_pass_costs_and_scores_each_action_as_worked_out_by_hand():
    state = ReviewedScene(TRUTH, CLASSES)
    state.use_model(
        [
            det("boat", 192, 64, 0.97),  # confident and wrong: nothing there
            det("car", 0, 0, 0.95),  # confident and right
            det("car", 64, 0, 0.60),  # right
            det("boat", 128, 64, 0.55),  # wrong: nothing there
            det("car", 84, 0, 0.50),  # wrong: beside car 1, not on it
        ],
        version=0,
    )
    result = final_pass(state, accept={"car": 0.9, "boat": 0.9})
    # 2 right of 5 boxes, 2 of 5 objects found: F1 0.4. The three boxes below 0.9, least sure
    # first: two rejections (F1 0.444, 0.5), one confirmation (unchanged); the three missed
    # objects clicked (0.667, 0.8, 0.909): where a reviewer who accepts confident boxes stops.
    # Then the two confident boxes: one confirmed, one rejected: correct.
    assert [t[2] for t in state.trace] == [0.4, 0.4444, 0.5, 0.6667, 0.8, 0.9091, 0.9091, 1.0, 1.0]
    assert [t[3] for t in state.trace] == ["pass", "verify", "verify", "click", "click", "click",
                                           "accepted", "verify", "done"]  # fmt: skip
    v, c = COSTS["verify"], COSTS["click"]
    assert result["accepted"] == {"seconds": round(3 * v + 3 * c, 1), "actions": 6, "f1": 0.9091}
    assert result["done"] == {"seconds": round(5 * v + 3 * c, 1), "actions": 8, "f1": 1.0,
                              "by_kind": {"verify": 5, "click": 3},
                              "largest_local_drift": 0.0}  # fmt: skip
    assert result["to"]["0.95"] == result["to"]["0.99"] == {"seconds": 13.7, "actions": 8}
    # The labels now: every counted object once, reviewed; the hidden car neither found nor
    # missed.
    labels, metrics = state.score()
    assert {b["source"] for b in labels} == {"reviewed"}
    assert (metrics["overall"]["tp"], metrics["overall"]["fp"], metrics["overall"]["fn"]) == (
        5, 0, 0)  # fmt: skip


def test_a_click_on_an_object_replaces_the_wrong_class_box_on_it():
    state = ReviewedScene(TRUTH[:1], CLASSES)
    state.use_model([det("boat", 0, 0, 0.97)], version=0)
    result = final_pass(state, accept={"car": 0.9, "boat": 0.9})
    # Accepted unreviewed, the wrong class box is a false positive and the car a miss; the click
    # on the car covers the box (its centre), so the labels are right without a rejection.
    assert [t[2] for t in state.trace] == [0.0, 1.0, 1.0, 1.0]
    assert result["done"]["by_kind"] == {"click": 1}
    assert result["done"]["seconds"] == COSTS["click"]


def test_boxing_by_hand_is_one_true_positive_a_box():
    result = hand_boxing(TRUTH, cost=35.0)
    assert result["objects"] == 5  # the hidden car is not counted
    # 4 of 5: F1 8/9 = 0.889 < 0.95; 5 of 5: 1.0.
    assert result["to"]["0.95"] == {"seconds": 175.0, "actions": 5}
    assert result["done"] == {"seconds": 175.0, "actions": 5, "f1": 1.0}


def test_the_reviewer_stops_after_the_first_cycle_that_saved_less_than_it_cost():
    assert stop_cycle([100.0, 50.0, 45.0], cycle_seconds=10.0) == 2
    assert stop_cycle([100.0, 95.0, 10.0], cycle_seconds=10.0) == 1
    assert stop_cycle([300.0, 200.0, 100.0], cycle_seconds=10.0) == 2  # the last cycle run


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory) -> Path:
    return build_tiny_demo(tmp_path_factory.mktemp("demo"), bench_loop.SCENES.values())


@pytest.mark.slow  # real fine-tunes
def test_every_mode_runs_on_the_tiny_demo_and_ends_with_correct_labels(tiny_demo, tmp_path):
    out = tmp_path / "review_time.json"
    code = main(["--demo", str(tiny_demo), "--scenes", "mona_lisa", "--seeds", "1",
                 "--cycles", "1", "--per-cycle", "12", "--steps", "2", "--threads", "1",
                 "--json", str(out), "--chart", str(tmp_path / "chart.png")])  # fmt: skip
    assert code == 0
    scene = json.loads(out.read_text())["scenes"]["mona_lisa"]
    assert scene["a"]["done"]["f1"] == 1.0
    for mode in ("b", "c", "d"):
        (run,) = scene[f"{mode}_runs"]
        assert run["done"]["f1"] == 1.0, mode
        spent = sum(COSTS[kind] * n for kind, n in run["done"]["by_kind"].items())
        assert run["done"]["seconds"] == pytest.approx(spent, abs=0.05)
        assert run["to"]["0.99"]["seconds"] <= run["done"]["seconds"]
    for mode in ("c", "d"):
        (run,) = scene[f"{mode}_runs"]
        assert run["done"]["by_kind"]["answer"] == 12 and run["stop_cycle"] == 1
        phases = [t[3] for t in run["trace"]]
        assert phases[:3] == ["first model", "answers 1", "cycle 1"]
        assert run["trace"][1][0] == round(12 * COSTS["answer"], 1)
    assert (tmp_path / "chart.png").stat().st_size > 0


def test_the_accept_score_is_where_the_boxes_from_the_top_stop_being_right_often_enough():
    import numpy as np

    from mlcore.inference.calibration import accept_scores
    from mlcore.inference.scoring import ScoreGrid

    # One row of six windows that do not overlap; cars under the first four. The car
    # probabilities, best first: 0.99 right, 0.97 wrong, 0.95, 0.9, 0.8 right, 0.6 wrong.
    car = np.array([0.99, 0.95, 0.9, 0.8, 0.97, 0.6])
    probs = np.stack([car, np.zeros(6), 1.0 - car], -1)[None].astype(np.float32)
    grid = ScoreGrid(np.array([0]), np.arange(6) * 32, probs, CLASSES, 32, 32)
    truth = [box("car", 32 * k, 0) for k in range(4)]
    # Precision of the top 1..6: 1, 1/2, 2/3, 3/4, 4/5, 4/6.
    strict = accept_scores(grid, truth, {"car": 0.5, "boat": 0.5})
    assert strict["car"] == pytest.approx(0.99) and strict["boat"] is None  # only the top box
    loose = accept_scores(grid, truth, {"car": 0.5, "boat": 0.5}, precision=0.75)
    assert loose["car"] == pytest.approx(0.8)  # the deepest prefix at 0.75 or better: top 5
