"""COCO AP on hand-made scenes (mlcore.eval.coco_eval), through faster-coco-eval (the default) and
pycocotools (the reference): every case must give the same figures with both."""

import math

import numpy as np
import pytest

from mlcore.eval.coco_eval import LIBRARIES, category_ids, coco_ap, coco_results

CLASSES = ["car", "boat", "negative"]


def box(i, label, x, y, w=32, h=32, order=0, visible=1.0):
    return {"id": i, "label": label, "x": x, "y": y, "w": w, "h": h, "order": order,
            "visible": visible}  # fmt: skip


def det(label, x, y, score, w=32, h=32):
    return {"label": label, "x": x, "y": y, "w": w, "h": h, "score": score}


TRUTH = [
    box(1, "car", 0, 0),
    box(2, "car", 100, 0),
    box(3, "boat", 0, 100),
    box(4, "negative", 100, 100),
]


def test_perfect_detector_scores_one(library):
    dets = [det(b["label"], b["x"], b["y"], 0.9) for b in TRUTH if b["label"] != "negative"]
    result = coco_ap(dets, TRUTH, CLASSES, library=library)
    assert result["ap50"] == pytest.approx(1.0)
    assert result["ap"] == pytest.approx(1.0)
    assert result["per_class"]["car"] == {"ap50": pytest.approx(1.0), "ap": pytest.approx(1.0)}
    assert result["per_class"]["boat"]["ap"] == pytest.approx(1.0)
    assert result["counted"] == 3 and result["ignored"] == 0
    assert result["library"] == library


@pytest.fixture(params=LIBRARIES)
def library(request):
    return request.param


def shift_for_iou(target, size=32):
    """Horizontal shift of a size x size box whose IoU with the original is ``target``."""
    # IoU = (s - d) s / ((s + d) s) -> d = s (1 - t) / (1 + t)
    return size * (1 - target) / (1 + target)


def test_iou_06_counts_at_050_but_not_at_075(library):
    truth = [box(1, "car", 0, 0)]
    dx = shift_for_iou(0.6)
    result = coco_ap([det("car", dx, 0, 0.9)], truth, CLASSES, library=library)
    assert result["ap50"] == pytest.approx(1.0)
    # Matched at IoU 0.50, 0.55, 0.60 (3 of the 10 thresholds): AP@[.5:.95] = 0.3
    assert result["ap"] == pytest.approx(0.3)
    assert math.isclose(result["per_class"]["car"]["ap50"], 1.0)
    assert result["per_class"]["boat"] == {"ap50": None, "ap": None}  # no boat: undefined


def test_ignored_box_costs_nothing(library):
    truth = [box(1, "car", 0, 0), box(2, "car", 100, 0, visible=0.3)]
    found = [det("car", 0, 0, 0.9)]
    # Missing the covered car costs nothing...
    assert coco_ap(found, truth, CLASSES, library=library)["ap"] == pytest.approx(1.0)
    # ...and a detection on it, even with the highest score, is not a false positive.
    on_covered = found + [det("car", 100, 0, 0.99)]
    result = coco_ap(on_covered, truth, CLASSES, library=library)
    assert result["ap"] == pytest.approx(1.0)
    assert result["ignored"] == 1 and result["counted"] == 1
    # Counted when the threshold says it is visible enough: then it is a miss.
    assert coco_ap(found, truth, CLASSES, min_visible=0.2, library=library)[
        "ap50"
    ] == pytest.approx(0.5, abs=0.01)


def test_a_detection_on_a_negative_tile_is_a_false_positive(library):
    truth = [box(1, "car", 0, 0), box(2, "negative", 100, 0)]
    dets = [det("car", 100, 0, 0.99), det("car", 0, 0, 0.5)]
    result = coco_ap(dets, truth, CLASSES, library=library)
    # Recall 1 is only reached at precision 1/2.
    assert result["ap50"] == pytest.approx(0.5, abs=0.01)


def test_no_detections_scores_zero(library):
    result = coco_ap([], TRUTH, CLASSES, library=library)
    assert result["ap50"] == 0.0 and result["ap"] == 0.0
    assert result["per_class"]["car"]["ap"] == 0.0 and result["detections"] == 0


def test_more_than_100_detections_are_all_evaluated(library):
    truth = [box(i + 1, "car", 40 * (i % 20), 40 * (i // 20)) for i in range(300)]
    dets = [det("car", b["x"], b["y"], 0.5 + i / 1000) for i, b in enumerate(truth)]
    assert coco_ap(dets, truth, CLASSES, library=library)["ap"] == pytest.approx(1.0)


def test_objects_work_like_dicts(library):
    class D:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    dets = [D(x=0, y=0, w=32, h=32, label="car", score=0.8)]
    assert coco_ap(dets, [box(1, "car", 0, 0)], CLASSES, library=library)["ap"] == pytest.approx(
        1.0
    )


def test_coco_results_format():
    cats = category_ids(CLASSES)
    assert cats == {"car": 1, "boat": 2}
    rows = coco_results(
        [det("boat", 1.5, 2, 0.7), det("car", 3, 4, 0.9), det("negative", 0, 0, 1.0)], 7, cats
    )
    assert rows == [
        {"image_id": 7, "category_id": 1, "bbox": [3.0, 4.0, 32.0, 32.0], "score": 0.9},
        {"image_id": 7, "category_id": 2, "bbox": [1.5, 2.0, 32.0, 32.0], "score": 0.7},
    ]


def test_a_detection_grazing_a_covered_box_is_still_a_false_positive(library):
    truth = [box(1, "car", 0, 0), box(2, "car", 100, 0, visible=0.3)]
    # Overlaps the covered car by a quarter of its own area: below 0.5 crowd IoU.
    dets = [det("car", 124, 0, 0.99), det("car", 0, 0, 0.5)]
    assert coco_ap(dets, truth, CLASSES, library=library)["ap50"] == pytest.approx(0.5, abs=0.01)


def test_both_libraries_agree_on_a_random_scene():
    rng = np.random.default_rng(3)
    truth = [
        box(i + 1, ["car", "boat", "negative"][i % 3], int(x), int(y), visible=float(v))
        for i, (x, y, v) in enumerate(
            zip(rng.integers(0, 600, 90), rng.integers(0, 600, 90), rng.uniform(0, 1, 90))
        )
    ]
    dets = [
        det(["car", "boat"][int(rng.integers(0, 2))], b["x"] + rng.normal(0, 6),
            b["y"] + rng.normal(0, 6), float(rng.uniform(0.05, 1)))
        for b in truth + truth[:40]
    ]  # fmt: skip
    fast = coco_ap(dets, truth, CLASSES, library="faster-coco-eval")
    reference = coco_ap(dets, truth, CLASSES, library="pycocotools")
    assert 0 < fast["ap"] < 1
    for key in ("ap50", "ap"):
        assert fast[key] == pytest.approx(reference[key], abs=1e-9)
        for cls in ("car", "boat"):
            assert fast["per_class"][cls][key] == pytest.approx(reference["per_class"][cls][key])


def test_unknown_library():
    with pytest.raises(ValueError, match="library must be one of"):
        coco_ap([], TRUTH, CLASSES, library="mine")
