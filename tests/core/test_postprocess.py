"""Thresholds, window hits, NMS with merging, uncertainty: hand-made grids."""

import numpy as np
import pytest

from mlcore.inference.postprocess import (
    Detection,
    detections,
    nms,
    resolve_thresholds,
    uncertainty,
    window_hits,
)
from mlcore.inference.scoring import ScoreGrid

CLASSES = ["car", "boat", "negative"]


def grid_with(hits: dict, shape=(6, 6), step=16) -> ScoreGrid:
    """A grid that is confidently negative everywhere except ``hits[(row, col)] = (class, p)``."""
    probs = np.zeros(shape + (3,), dtype=np.float32)
    probs[..., 2] = 0.98
    probs[..., 0] = 0.01
    probs[..., 1] = 0.01
    for (r, c), (cls, p) in hits.items():
        k = CLASSES.index(cls)
        probs[r, c] = (1 - p) / 2
        probs[r, c, k] = p
    ys = np.arange(shape[0]) * step
    xs = np.arange(shape[1]) * step
    return ScoreGrid(ys, xs, probs, CLASSES, 32, step)


def test_window_hits_apply_per_class_thresholds_and_skip_negative():
    grid = grid_with({(0, 0): ("car", 0.95), (2, 3): ("boat", 0.85), (4, 4): ("car", 0.8)})
    hits = window_hits(grid)  # default threshold 0.9, negative class "negative"
    assert (
        len(hits) == 1 and (hits.x[0], hits.y[0]) == (0, 0) and hits.classes[hits.label[0]] == "car"
    )
    hits = window_hits(grid, {"boat": 0.8})
    found = sorted((int(x), int(y), hits.classes[c]) for x, y, c in zip(hits.x, hits.y, hits.label))
    assert found == [(0, 0, "car"), (48, 32, "boat")]
    assert window_hits(grid, 0.5, negative=None).label.tolist().count(2) == 36 - 3
    with pytest.raises(ValueError, match="unknown classes"):
        resolve_thresholds(CLASSES, {"plane": 0.5}, "negative")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        resolve_thresholds(CLASSES, 1.5, "negative")


def test_nms_merges_the_overlapping_hits_of_one_object():
    # one car hit by 3 overlapping windows (IoU 1/3 side by side at step 16), one far away boat
    grid = grid_with(
        {
            (1, 1): ("car", 0.99),
            (1, 2): ("car", 0.95),
            (2, 1): ("car", 0.93),
            (4, 4): ("boat", 0.97),
        }
    )
    dets = detections(grid, iou=0.3, merge="weighted")
    assert [d.label for d in dets] == ["car", "boat"]
    assert all(d.kind == "merged" for d in dets)
    car = dets[0]
    assert car.score == pytest.approx(0.99)
    w = np.array([0.99, 0.95, 0.93])
    assert car.x == pytest.approx((w * [16, 32, 16]).sum() / w.sum())
    assert car.y == pytest.approx((w * [16, 16, 32]).sum() / w.sum())
    assert (car.w, car.h) == (32, 32)
    boat = dets[1]
    assert (boat.x, boat.y, boat.w, boat.h) == (64, 64, 32, 32)


def test_nms_merge_modes_and_iou_threshold():
    grid = grid_with({(1, 1): ("car", 0.99), (1, 2): ("car", 0.95)})
    hits = window_hits(grid)
    union = nms(hits, 0.3, "union").to_detections()
    assert [(d.x, d.y, d.w, d.h) for d in union] == [(16, 16, 48, 32)]
    top = nms(hits, 0.3, "none").to_detections()
    assert [(d.x, d.y, d.w, d.h, d.score) for d in top] == [(16, 16, 32, 32, pytest.approx(0.99))]
    # IoU of side-by-side windows at step 16 is 1/3: a stricter IoU keeps both
    assert len(nms(hits, 0.5)) == 2
    with pytest.raises(ValueError, match="merge must be"):
        nms(hits, 0.3, "average")


def test_nms_keeps_classes_apart():
    grid = grid_with({(1, 1): ("car", 0.99), (1, 2): ("boat", 0.95)})
    dets = detections(grid)
    assert sorted(d.label for d in dets) == ["boat", "car"]
    assert isinstance(dets[0], Detection) and dets[0].to_dict()["kind"] == "merged"


def test_no_hits_gives_no_detections():
    assert detections(grid_with({})) == []


def test_uncertainty_kinds():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]])
    np.testing.assert_allclose(uncertainty(probs, "least_confidence"), [0, 0.5, 2 / 3, 0.4])
    np.testing.assert_allclose(uncertainty(probs, "margin"), [0, 1, 1, 0.7])
    ent = uncertainty(probs, "entropy")
    assert ent[0] == pytest.approx(0) and ent[2] == pytest.approx(1)
    assert 0 < ent[3] < ent[2]
    assert uncertainty(probs.reshape(2, 2, 3), "margin").shape == (2, 2)
    with pytest.raises(ValueError, match="uncertainty kind"):
        uncertainty(probs, "variance")


def _greedy_nms_against_every_hit(hits, iou, merge):
    """The reference: each kept hit compared with every hit of its class (quadratic)."""
    from mlcore.inference.postprocess import iou_one_to_many

    out = []
    windows = hits.window_boxes()
    for c in np.unique(hits.label):
        idx = np.flatnonzero(hits.label == c)
        idx = idx[np.argsort(-hits.score[idx], kind="stable")]
        x, y, w, h, s = (a[idx] for a in (hits.x, hits.y, hits.w, hits.h, hits.score))
        wx, wy, ww, wh = windows[idx].T
        alive = np.ones(len(idx), dtype=bool)
        for i in range(len(idx)):
            if not alive[i]:
                continue
            overlap = iou_one_to_many((wx[i], wy[i], ww[i], wh[i]), wx, wy, ww, wh)
            members = np.union1d(np.flatnonzero(alive & (overlap >= iou)), [i])
            alive[members] = False
            if merge == "weighted":
                wt = s[members] / s[members].sum()
                box = [float((a[members] * wt).sum()) for a in (x, y, w, h)]
            elif merge == "union":
                box = [x[members].min(), y[members].min(), (x + w)[members].max(),
                       (y + h)[members].max()]  # fmt: skip
                box = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            else:
                box = [x[i], y[i], w[i], h[i]]
            out.append((*[float(v) for v in box], int(c), float(s[i])))
    return sorted(out, key=lambda r: -r[5])


@pytest.mark.parametrize("step", [16, 8])
@pytest.mark.parametrize("merge", ["weighted", "union", "none"])
def test_nms_finds_the_clusters_of_comparing_every_hit(step, merge):
    # Dense hits with refined boxes on a grid (the clusters a large scene gives): the bucketed
    # NMS compares a hit only with windows that can overlap it, and gives the same boxes.
    rng = np.random.default_rng(step)
    rows, cols = 40, 50
    probs = rng.dirichlet([1.0, 1.0, 0.6], size=(rows, cols)).astype(np.float32)
    boxes = (rng.normal(0, 6, (rows, cols, 4)) + [0, 0, 32, 32]).astype(np.float32)
    centred = rng.uniform(0.2, 1.0, (rows, cols)).astype(np.float32)
    grid = ScoreGrid(np.arange(rows) * step, np.arange(cols) * step, probs, CLASSES, 32, step,
                     boxes=boxes, centredness=centred)  # fmt: skip
    hits = window_hits(grid, 0.3)
    assert len(hits) > 500  # clusters of many overlapping windows
    for iou in (0.129, 0.029, 0.5):
        kept = nms(hits, iou, merge)
        columns = (kept.x, kept.y, kept.w, kept.h, kept.label, kept.score)
        got = [(*[float(v) for v in row[:4]], int(row[4]), float(row[5])) for row in zip(*columns)]
        assert got == _greedy_nms_against_every_hit(hits, iou, merge)
