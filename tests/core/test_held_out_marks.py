"""Which reviewed marks are held out of training to calibrate on (mlcore.data.scene_marks
.hold_out_marks): a set without a calibration scene, with or without dataset canvases, takes a
share of each class's new marks as its calibration scene, so a retrain is compared with the
current model on answers neither trained on (issue 35.2); a set that has one keeps it."""

from __future__ import annotations

import numpy as np

from mlcore.data.canvases import CanvasSet, calibration_scene
from mlcore.data.datasets import LabelledImages
from mlcore.data.scene_marks import hold_out_marks, scene_only_set

CLASSES = ["car", "boat", "negative"]


def _marks(label: str, n: int) -> list:
    rng = np.random.default_rng(len(label) + n)
    return [(f"{label}-{i}", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for i in range(n)]


def _by_class(n: int = 10) -> dict:
    return {"car": _marks("car", n), "boat": _marks("boat", n), "negative": _marks("negative", n)}


def _dataset_set() -> CanvasSet:
    cset = CanvasSet(list(CLASSES), tile_size=(32, 32))
    for label in CLASSES:
        tiles = np.stack([t for _, t in _marks(label, 4)])
        ids = [f"d-{label}-{i}" for i in range(4)]
        cset.append(label, tiles, ids, kind="original", seed=0)
    return cset


def _held_ids(cset) -> set:
    return {str(box["id"]) for box in cset.calibration[1]}


def test_a_scene_only_set_holds_out_a_fifth_of_each_class():
    cset, by_class = scene_only_set(CLASSES, 32), _by_class(10)
    held = hold_out_marks(cset, by_class)
    assert held == {"car": 2, "boat": 2, "negative": 2}
    assert _held_ids(cset) == {f"{c}-{i}" for c in CLASSES for i in (8, 9)}
    trained = {i for items in by_class.values() for i, _ in items}
    assert not trained & _held_ids(cset) and len(trained) == 24


def test_a_dataset_set_without_a_calibration_scene_holds_marks_out_too():
    cset, by_class = _dataset_set(), _by_class(5)
    assert cset.calibration is None and any(c.kind == "original" for c in cset.canvases)
    held = hold_out_marks(cset, by_class)
    assert held == {"car": 1, "boat": 1, "negative": 1}
    assert _held_ids(cset) == {"car-4", "boat-4", "negative-4"}
    assert all(len(items) == 4 for items in by_class.values())


def test_a_set_with_a_calibration_scene_keeps_it_and_trains_on_every_mark():
    cset, by_class = _dataset_set(), _by_class(10)
    images = LabelledImages(
        images=np.zeros((3, 32, 32, 3), np.uint8),
        labels=np.array([0, 1, 2]),
        class_names=CLASSES,
        ids=["a", "b", "c"],
    )
    cset.calibration = calibration_scene(images, seed=0, copies=1)
    assert hold_out_marks(cset, by_class) == {}
    assert _held_ids(cset) == {"a", "b", "c"} and all(len(v) == 10 for v in by_class.values())


def test_marks_of_one_class_are_all_trained_on():
    cset, by_class = scene_only_set(CLASSES, 32), {"car": _marks("car", 10)}
    assert hold_out_marks(cset, by_class) == {} and cset.calibration is None
    assert len(by_class["car"]) == 10
