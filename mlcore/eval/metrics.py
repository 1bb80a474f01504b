"""Window-level and object-level quality of a scored scene against ground truth. numpy only.

Ground truth is the list of boxes of ARCHITECTURE.md: ``{id, label, x, y, w, h, order, visible}``
(``order``: paste order, later on top; ``visible``: fraction of the box not covered by later
boxes; both optional, default 0 and 1.0). Labels that are not project classes count as negative.

**Window truth (centre rule).** A window's true label is the class of the top-most box (highest
``order``) that contains the window's centre; a window whose centre no box covers is negative.
The centre pixel is what the window is "about": with windows the size of objects, the window whose
centre lies on an object overlaps it by at least a quarter, and a paste covering the centre hides
what lay below it.

**Object matching.** Detections are taken per class, highest score first; each is matched to the
still unmatched ground-truth box of its class with the highest IoU among those with
``IoU >= iou`` *or* whose centre lies inside the detection. The centre clause lets a perfect model
match an object off the window grid (at step 16 a 32 px object can have IoU ~0.39 with the best
window). Matching is one to one. Boxes with ``visible < min_visible`` are "don't care": neither
found nor missed, and a detection on one is not a false positive.

Undefined ratios: precision with no detections is 1 if nothing was missed, else 0; recall with no
objects is 1 if nothing was falsely detected, else 0 (a perfect empty result scores 1).
"""

from __future__ import annotations

import numpy as np

from mlcore.inference.postprocess import iou_one_to_many


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num / den) if den else empty


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = _ratio(tp, tp + fp, 1.0 if fn == 0 else 0.0)
    recall = _ratio(tp, tp + fn, 1.0 if fp == 0 else 0.0)
    f1 = _ratio(2 * precision * recall, precision + recall, 0.0)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def _box(gt) -> tuple[float, float, float, float]:
    return float(gt["x"]), float(gt["y"]), float(gt["w"]), float(gt["h"])


def centre_tiles(ys, xs, window: int, gt_boxes) -> np.ndarray:
    """Index into ``gt_boxes`` of the top-most box (highest ``order``) holding each window's
    centre, (R, K); -1 where no box does."""
    gt_boxes = list(gt_boxes)
    ys, xs = np.asarray(ys), np.asarray(xs)
    # Sorted origins make each box one slice; any order is accepted and given back as asked.
    oy, ox = np.argsort(ys, kind="stable"), np.argsort(xs, kind="stable")
    cy, cx = ys[oy] + window / 2.0, xs[ox] + window / 2.0
    ordered = np.full((len(ys), len(xs)), -1, dtype=np.int64)
    for k in sorted(range(len(gt_boxes)), key=lambda i: gt_boxes[i].get("order", 0)):
        x, y, w, h = _box(gt_boxes[k])
        r0, r1 = np.searchsorted(cy, [y, y + h], side="left")
        c0, c1 = np.searchsorted(cx, [x, x + w], side="left")
        ordered[r0:r1, c0:c1] = k
    tiles = np.empty_like(ordered)
    tiles[np.ix_(oy, ox)] = ordered
    return tiles


def window_truth(ys, xs, window: int, gt_boxes, classes, negative: str | None) -> np.ndarray:
    """True class index of every window (R, K) by the centre rule; -1 where unknown (a window on
    no box when there is no negative class)."""
    gt_boxes = list(gt_boxes)
    index = {c: i for i, c in enumerate(classes)}
    neg = index[negative] if negative is not None else -1
    # The class of each box, then of "no box" (index -1 picks the last entry).
    label_of = np.array([index.get(g["label"], neg) for g in gt_boxes] + [neg], dtype=np.int64)
    return label_of[centre_tiles(ys, xs, window, gt_boxes)]


def centre_class_coverage(ys, xs, window: int, gt_boxes, shape, classes, negative) -> np.ndarray:
    """Share (0..1) of each window (R, K) that shows the class of its centre pixel (the centre
    rule's answer), the visible pixels of later pastes on top: how ambiguous the answer is. A
    window whose centre class covers a sliver of it is one the training leaves out
    (``TrainConfig.min_coverage``)."""
    from mlcore.data.windows import FULL_COVERAGE, coverage_map

    index = {c: i for i, c in enumerate(classes)}
    neg = index[negative] if negative is not None else len(index)
    label_map = np.full(tuple(shape[:2]), neg, dtype=np.uint8)
    for g in sorted(gt_boxes, key=lambda b: b.get("order", 0)):
        x, y, w, h = (int(round(v)) for v in _box(g))
        label_map[max(y, 0) : y + h, max(x, 0) : x + w] = index.get(g["label"], neg)
    cover = coverage_map(label_map, window)
    half = window // 2
    ys, xs = np.asarray(ys, dtype=np.int64), np.asarray(xs, dtype=np.int64)
    return cover[np.ix_(ys + half, xs + half)] / float(FULL_COVERAGE)


def window_metrics(truth, predicted, classes) -> dict:
    """Accuracy, confusion matrix (rows: truth, columns: prediction) and per-class
    precision/recall/F1 over windows; entries with truth -1 are ignored."""
    classes = list(classes)
    truth = np.asarray(truth).ravel()
    predicted = np.asarray(predicted).ravel()
    keep = truth >= 0
    truth, predicted = truth[keep], predicted[keep]
    n = len(classes)
    confusion = np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)
    per_class = {}
    for k, name in enumerate(classes):
        tp = int(confusion[k, k])
        fp = int(confusion[:, k].sum()) - tp
        fn = int(confusion[k, :].sum()) - tp
        per_class[name] = _prf(tp, fp, fn) | {"support": int(confusion[k, :].sum())}
    return {
        "accuracy": _ratio(np.trace(confusion), confusion.sum(), 0.0),
        "windows": int(confusion.sum()),
        "confusion": confusion.tolist(),
        "classes": classes,
        "per_class": per_class,
    }


def grid_window_metrics(grid, gt_boxes, negative: str | None = "auto", thresholds=None) -> dict:
    """Window metrics of a ScoreGrid. Prediction = argmax class, or with ``thresholds`` the hit rule
    of :func:`mlcore.inference.postprocess.window_hits` (below threshold: negative)."""
    from mlcore.inference.postprocess import decided_labels, default_negative

    negative = default_negative(grid.classes) if negative == "auto" else negative
    truth = window_truth(grid.ys, grid.xs, grid.window, gt_boxes, grid.classes, negative)
    if thresholds is None:
        predicted = grid.probs.argmax(-1)
    else:
        predicted = decided_labels(grid.probs, grid.classes, thresholds, negative)
    return window_metrics(truth, predicted, grid.classes)


def _as_det(d) -> dict:
    if isinstance(d, dict):
        return d
    return {k: getattr(d, k) for k in ("x", "y", "w", "h", "label", "score")}


def object_metrics(
    detections,
    gt_boxes,
    classes,
    negative: str | None = None,
    iou: float = 0.3,
    min_visible: float = 0.5,
) -> dict:
    """Object-level precision/recall/F1 per positive class and overall (micro-averaged).

    ``detections``: Detection objects or dicts (x, y, w, h, label, score). Returns
    ``{"per_class": {c: {tp, fp, fn, precision, recall, f1}}, "overall": {...},
    "matches": [(detection index, ground-truth index)]}``.
    """
    positives = [c for c in classes if c != negative]
    dets = [_as_det(d) for d in detections]
    per_class, matches = {}, []
    for cls in positives:
        gt_idx = [i for i, g in enumerate(gt_boxes) if g["label"] == cls]
        gts = np.array([_box(gt_boxes[i]) for i in gt_idx], dtype=np.float64).reshape(-1, 4)
        care = np.array([float(gt_boxes[i].get("visible", 1.0)) >= min_visible for i in gt_idx])
        care = care.astype(bool).reshape(-1)
        matched = np.zeros(len(gt_idx), dtype=bool)
        centre_x, centre_y = gts[:, 0] + gts[:, 2] / 2, gts[:, 1] + gts[:, 3] / 2
        order = sorted(
            (i for i, d in enumerate(dets) if d["label"] == cls), key=lambda i: -dets[i]["score"]
        )
        tp = fp = 0
        for di in order:
            d = dets[di]
            dx, dy, dw, dh = _box(d)
            overlap = iou_one_to_many((dx, dy, dw, dh), *gts.T) if len(gts) else np.zeros(0)
            inside = (centre_x >= dx) & (centre_x <= dx + dw) & (centre_y >= dy)
            inside &= centre_y <= dy + dh
            hit = (overlap >= iou) | inside
            candidates = hit & care & ~matched
            if candidates.any():
                best = np.flatnonzero(candidates)[np.argmax(overlap[candidates])]
                matched[best] = True
                matches.append((di, gt_idx[best]))
                tp += 1
            elif (hit & ~care).any():
                continue  # on a don't-care object: neither right nor wrong
            else:
                fp += 1
        fn = int((care & ~matched).sum())
        per_class[cls] = _prf(tp, fp, fn)
    totals = {k: sum(v[k] for v in per_class.values()) for k in ("tp", "fp", "fn")}
    return {"per_class": per_class, "overall": _prf(**totals), "matches": matches}
