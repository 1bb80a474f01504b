"""bench/bench_scene_only.py's plumbing on two tiny synthetic collages and a tiny starting model
(a few training steps): the reviewer's marks are truth boxes of their class, background clicks
hold no object, the held-out share never becomes a training sample, every trained sample is the
scene's pixels under its mark, and each collage is scored against its own truth. No figure is
checked: the tiny model only has to run."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from bench import bench_scene_only as bench  # noqa: E402
from mlcore.data.canvases import calibration_scene  # noqa: E402
from mlcore.data.collage import ground_truth_objects  # noqa: E402
from mlcore.data.datasets import LabelledImages  # noqa: E402
from mlcore.data.scene_marks import CALIBRATION_MARK_SHARE  # noqa: E402

COLOURS = {"own-horse": (200, 30, 30), "own-deer": (30, 40, 200), "negative": (60, 160, 60)}
TINY = {"steps": 2, "batch_size": 16, "val_windows": 16, "threads": 1}


def _scene(seed: int, per_class: int = 14):
    rng = np.random.default_rng(seed)
    images, labels, ids = [], [], []
    for k, colour in enumerate(COLOURS.values()):
        noise = rng.integers(-40, 40, (per_class, 32, 32, 3))
        images.append(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8))
        labels += [k] * per_class
        ids += [f"s{seed}-{k}-{i}" for i in range(per_class)]
    tiles = LabelledImages(np.concatenate(images), np.array(labels), list(COLOURS), ids)
    return calibration_scene(tiles, seed=seed, copies=2)


@pytest.fixture
def start(tmp_path, monkeypatch):
    from helpers_starting import make_starting_model

    from mlcore.model import starting_model

    monkeypatch.setenv(starting_model.STARTING_MODEL_ENV, str(make_starting_model(tmp_path / "s")))


def _key(box) -> tuple:
    return (box["label"], box["x"], box["y"], box["w"], box["h"])


def test_marks_are_truth_boxes_and_clicks_hold_no_object():
    image, truth = _scene(0)
    marks = bench.choose_marks(truth, 5, np.random.default_rng(3))
    countable = {_key(b) for b in ground_truth_objects(truth, list(bench.RENAME.values()))}
    assert len(marks) == 10 and len({_key(m) for m in marks}) == 10
    assert all(_key(m) in countable for m in marks)  # never outside the truth's objects
    for label in bench.RENAME.values():
        assert sum(m["label"] == label for m in marks) == 5
    again = bench.choose_marks(truth, 5, np.random.default_rng(3))
    assert [_key(m) for m in again] == [_key(m) for m in marks]  # seeded
    other = bench.choose_marks(truth, 5, np.random.default_rng(4))
    assert [_key(m) for m in other] != [_key(m) for m in marks]

    clicks = bench.background_clicks(truth, image.shape, 10, np.random.default_rng(3))
    own = np.array([[b["x"], b["y"], b["w"], b["h"]] for b in truth
                    if b["label"] in bench.RENAME.values()], dtype=np.float64)  # fmt: skip
    assert len(clicks) == 10
    for c in clicks:
        assert c["label"] == bench.NEGATIVE
        assert 0 <= c["x"] <= image.shape[1] - 32 and 0 <= c["y"] <= image.shape[0] - 32
        assert bench.iou_with((c["x"], c["y"], 32, 32), own).max() < bench.BACKGROUND_MAX_IOU


def test_held_out_marks_are_never_trained_on():
    image, truth = _scene(0)
    rng = np.random.default_rng(1)
    marks = bench.choose_marks(truth, 5, rng) + bench.background_clicks(truth, image.shape, 10, rng)
    cset, held, by_id = bench.marked_set(image, marks)
    trained = {p[0]: (c, p) for c in cset.canvases for p in c.placements}
    held_ids = {b["id"] for b in cset.calibration[1]}
    assert held_ids and not held_ids & set(trained)
    assert held_ids | set(trained) == set(by_id)  # every mark is one or the other
    assert held == {"own-horse": 1, "own-deer": 1, "negative": int(10 * CALIBRATION_MARK_SHARE)}
    assert all(b["label"] == by_id[b["id"]]["label"] for b in cset.calibration[1])
    assert all(c.layout == "exact" and c.kind == "correction" for c in cset.canvases)
    for image_id, (canvas, (_, y, x, _)) in trained.items():
        mark = by_id[image_id]
        assert canvas.class_name == mark["label"]
        window = image[mark["y"] : mark["y"] + 32, mark["x"] : mark["x"] + 32]
        assert np.array_equal(canvas.array[y : y + 32, x : x + 32], window)


def test_a_run_scores_each_collage_against_its_own_truth(start, tmp_path):
    marked, unmarked = _scene(0), _scene(1, per_class=9)
    scenes = {"marked": marked, "unmarked": unmarked}
    row = bench.run_one(scenes, 4, seed=0, profile="quick", out=tmp_path / "run", overrides=TINY)
    for name, (_, truth) in scenes.items():
        objects = len(ground_truth_objects(truth, list(bench.RENAME.values())))
        assert row[name]["objects"] == objects  # what the metrics counted: this scene's truth
        assert 0.0 <= row[name]["f1"] <= 1.0
    assert row["marked"]["objects"] != row["unmarked"]["objects"]
    assert row["object_marks"] == 8 and row["background_marks"] == 8
    assert row["trained_samples"] + sum(row["held_out"].values()) == 16
    assert set(row["thresholds"]) == set(bench.RENAME.values())  # calibrated on held-out marks
