"""From a probability grid to detections: thresholds, window hits, non-maximum suppression.

A hit is a window whose best positive class reaches that class's threshold (default 0.9). One
object is hit by several overlapping windows (at step 16 a 32 px object is typically covered by
2-4 windows), so hits are merged:

- greedy NMS per class: take the highest-scoring remaining hit, and gather every remaining hit of
  the same class whose IoU with it is >= ``iou`` into its cluster. The default ``iou`` follows
  from the window and the step (:func:`default_nms_iou`): every pair of windows that can hold the
  same object centre must merge, or one object yields several boxes (at step 16 the diagonal
  neighbours overlap with IoU 1/7, so the old constant 0.3 left a perfect classifier at F1 0.80);
- the cluster becomes one box (``merge``): ``"none"`` (default) keeps the top hit's window, a
  box the model really scored, which holds the object's centre whenever that window's centre is
  on the object; ``"weighted"`` is the score-weighted mean of the member boxes (between the
  windows; with the IoU low enough to merge every window of an object it also drifts towards
  same-class neighbours: a perfect classifier lost 3-6 points of precision with it, see
  ``python -m mlcore ceiling``); ``"union"`` is their bounding box. The score is the cluster's
  top score.

A model may also refine each window (ARCHITECTURE.md, "probability grid"): a box of its object
and a centredness (the predicted IoU of the window with its object). Then a hit still needs its
class probability to reach the threshold, but it is ranked (NMS order, AP) by probability x
centredness, so the best-centred window of an object wins, and its box is the refined one.
Clusters are still formed on the windows (the geometry the NMS IoU follows from), so a grid
without refinements gives exactly the detections it always did.

numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# The published pipeline's threshold; calibrated per-class thresholds (stored with the model,
# see mlcore.inference.calibration) replace it by default, and it stays available as a choice.
DEFAULT_THRESHOLD = 0.9
PUBLISHED_THRESHOLD = DEFAULT_THRESHOLD
# Margin below the IoU of the farthest pair of windows that share a point (see default_nms_iou).
NMS_IOU_MARGIN = 0.9
MERGES = ("weighted", "union", "none")
DEFAULT_MERGE = "none"
UNCERTAINTY_KINDS = ("least_confidence", "margin", "entropy")


@dataclass
class Detection:
    x: float
    y: float
    w: float
    h: float
    label: str
    score: float
    kind: str = "window"  # "window" (raw hit) or "merged" (after NMS)

    def to_dict(self) -> dict:
        return asdict(self)


def default_negative(classes) -> str | None:
    """The negative class: one called "negative" (or "background"), else none."""
    for name in ("negative", "background"):
        if name in classes:
            return name
    return None


def resolve_thresholds(classes, thresholds=None, negative: str | None = None) -> np.ndarray:
    """Per-class thresholds as an array aligned with ``classes``; the negative class gets +inf
    (it never produces a hit). ``thresholds``: a number, a dict class -> number, or None."""
    classes = list(classes)
    if negative is not None and negative not in classes:
        raise ValueError(f"negative class {negative!r} is not one of {classes}")
    if isinstance(thresholds, dict):
        unknown = sorted(set(thresholds) - set(classes))
        if unknown:
            raise ValueError(f"thresholds given for unknown classes {unknown}; classes: {classes}")
        values = [float(thresholds.get(c, DEFAULT_THRESHOLD)) for c in classes]
    else:
        value = DEFAULT_THRESHOLD if thresholds is None else float(thresholds)
        values = [value] * len(classes)
    out = np.array(values, dtype=np.float64)
    if np.any((out < 0) | (out > 1)):
        raise ValueError(f"thresholds must lie in [0, 1], got {dict(zip(classes, values))}")
    if negative is not None:
        out[classes.index(negative)] = np.inf
    return out


@dataclass
class Hits:
    """Window hits as arrays (x, y, w, h: the box in scene pixels; label = class index; score:
    the rank). From a grid with refinements also ``prob`` (the class probability the threshold
    applies to) and ``windows`` ((N, 4) x, y, w, h of the window each hit comes from); None: the
    score is the probability and the box is the window."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    h: np.ndarray
    label: np.ndarray
    score: np.ndarray
    classes: list[str]
    prob: np.ndarray | None = None
    windows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def probability(self) -> np.ndarray:
        return self.score if self.prob is None else self.prob

    def window_boxes(self) -> np.ndarray:
        """(N, 4) x, y, w, h of each hit's window."""
        if self.windows is not None:
            return self.windows
        return np.column_stack([self.x, self.y, self.w, self.h]).reshape(-1, 4)

    def take(self, index) -> Hits:
        """The hits at ``index`` (an index array or a boolean mask)."""
        pick = [a[index] for a in (self.x, self.y, self.w, self.h, self.label, self.score)]
        prob = None if self.prob is None else self.prob[index]
        windows = None if self.windows is None else self.windows[index]
        return Hits(*pick, list(self.classes), prob, windows)

    def to_detections(self, kind: str = "window") -> list[Detection]:
        return [
            Detection(float(x), float(y), float(w), float(h), self.classes[int(c)], float(s), kind)
            for x, y, w, h, c, s in zip(self.x, self.y, self.w, self.h, self.label, self.score)
        ]


def decided_labels(probs: np.ndarray, classes, thresholds=None, negative: str | None = "auto"):
    """Class index per window (``probs``: (..., C)) by the hit rule: the most probable class whose
    probability reaches its threshold, else the negative class (what a reviewer sees: a box, or
    none). Needs a negative class."""
    classes = list(classes)
    negative = default_negative(classes) if negative == "auto" else negative
    if negative is None:
        raise ValueError("deciding windows by threshold needs a negative class")
    thr = resolve_thresholds(classes, thresholds, negative)
    passing = np.where(probs >= thr, probs, -1.0)  # negative class: threshold inf, never passes
    return np.where(passing.max(-1) >= 0, passing.argmax(-1), classes.index(negative)).astype(
        np.int64
    )


def window_hits(grid, thresholds=None, negative: str | None = "auto") -> Hits:
    """Every window whose best positive class reaches its threshold."""
    negative = default_negative(grid.classes) if negative == "auto" else negative
    thr = resolve_thresholds(grid.classes, thresholds, negative)
    probs = grid.probs.reshape(-1, len(grid.classes))
    passing = np.where(probs >= thr, probs, -1.0)  # negative class: threshold inf, never passes
    label = passing.argmax(1)
    score = passing[np.arange(len(passing)), label]
    keep = np.flatnonzero(score >= 0)
    rows, cols = np.divmod(keep, len(grid.xs))
    x, y = grid.xs[cols].astype(np.float64), grid.ys[rows].astype(np.float64)
    size = np.full(len(keep), float(grid.window))
    prob = score[keep].astype(np.float64)
    boxes, centredness = getattr(grid, "boxes", None), getattr(grid, "centredness", None)
    if boxes is None and centredness is None:
        return Hits(x, y, size, size.copy(), label[keep], prob, list(grid.classes))
    windows = np.column_stack([x, y, size, size])
    rank = prob
    if centredness is not None:
        rank = prob * np.clip(centredness.reshape(-1)[keep].astype(np.float64), 0.0, 1.0)
    w, h = size, size.copy()
    if boxes is not None:
        b = boxes.reshape(-1, 4)[keep].astype(np.float64)  # x0, y0, x1, y1 from the origin
        # At least a pixel: an inverted box from a model has no area, and IoU would divide by 0.
        x, y = x + b[:, 0], y + b[:, 1]
        w, h = np.maximum(b[:, 2] - b[:, 0], 1.0), np.maximum(b[:, 3] - b[:, 1], 1.0)
    return Hits(x, y, w, h, label[keep], rank, list(grid.classes), prob, windows)


def iou_one_to_many(box, x, y, w, h) -> np.ndarray:
    """IoU of one (x, y, w, h) box with arrays of boxes."""
    bx, by, bw, bh = box
    ix = np.clip(np.minimum(bx + bw, x + w) - np.maximum(bx, x), 0, None)
    iy = np.clip(np.minimum(by + bh, y + h) - np.maximum(by, y), 0, None)
    inter = ix * iy
    return inter / (bw * bh + w * h - inter)


def default_nms_iou(window: int, step: int) -> float:
    """NMS IoU for windows of ``window`` px on a ``step`` grid: just below the IoU of the two
    farthest windows that can contain the same point (diagonal neighbours ``d`` apart on both
    axes, ``d`` the largest multiple of ``step`` below ``window``). 32 px windows: 0.129 at step
    16 (that pair has IoU 1/7), 0.029 at step 8 (IoU 1/31). A step >= window: windows never
    share a point, and any overlap merges."""
    window, step = int(window), int(step)
    if window <= 0 or step <= 0:
        raise ValueError(f"window and step must be positive, got window={window}, step={step}")
    d = step * ((window - 1) // step)
    if d == 0:
        return 1e-6
    inter = float(window - d) ** 2
    farthest = inter / (2.0 * window * window - inter)
    return NMS_IOU_MARGIN * farthest


class _Neighbours:
    """The windows that can overlap a given one: windows bucketed on a grid of the largest
    window's side, so two overlapping windows lie in the same or adjacent buckets."""

    def __init__(self, x, y, w, h):
        side = float(max(np.max(w, initial=1.0), np.max(h, initial=1.0)))
        bx = np.floor(x / side).astype(np.int64)
        by = np.floor(y / side).astype(np.int64)
        bx, by = bx - bx.min(initial=0) + 1, by - by.min(initial=0) + 1  # >= 1: room for -1
        self.stride = int(bx.max(initial=0)) + 2
        keys = by * self.stride + bx
        self.order = np.argsort(keys, kind="stable")
        bucket_keys, starts = np.unique(keys[self.order], return_index=True)
        ends = np.append(starts[1:], len(keys))
        self.spans = dict(zip(bucket_keys.tolist(), zip(starts.tolist(), ends.tolist())))
        self.keys = keys

    def of(self, i: int) -> np.ndarray:
        """Positions of the windows in window i's bucket and the eight around it."""
        key = int(self.keys[i])
        parts = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                span = self.spans.get(key + dy * self.stride + dx)
                if span is not None:
                    parts.append(self.order[span[0] : span[1]])
        return np.concatenate(parts)


def nms(hits: Hits, iou: float, merge: str = DEFAULT_MERGE) -> Hits:
    """Greedy per-class NMS that merges each cluster into one box (see module docstring):
    ranked by score, clustered on the windows, merged from the boxes."""
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    out: list[tuple] = []
    kept: list[int] = []  # index into hits of each cluster's top hit
    all_windows = hits.window_boxes()
    for c in np.unique(hits.label):
        idx = np.flatnonzero(hits.label == c)
        idx = idx[np.argsort(-hits.score[idx], kind="stable")]
        x, y, w, h, s = (a[idx] for a in (hits.x, hits.y, hits.w, hits.h, hits.score))
        wx, wy, ww, wh = all_windows[idx].T
        alive = np.ones(len(idx), dtype=bool)
        near = _Neighbours(wx, wy, ww, wh)
        for i in range(len(idx)):
            if not alive[i]:
                continue
            # Only windows that can overlap window i (IoU > 0 needs it; iou > 0): the same
            # clusters as comparing with every hit, in time linear in the hits, not quadratic.
            cand = near.of(i)
            overlap = iou_one_to_many((wx[i], wy[i], ww[i], wh[i]), wx[cand], wy[cand],
                                      ww[cand], wh[cand])  # fmt: skip
            members = cand[alive[cand] & (overlap >= iou)]
            members = np.union1d(members, [i])
            alive[members] = False
            if merge == "weighted":
                wt = s[members] / s[members].sum()
                box = [float((a[members] * wt).sum()) for a in (x, y, w, h)]
            elif merge == "union":
                x0, y0 = x[members].min(), y[members].min()
                x1, y1 = (x + w)[members].max(), (y + h)[members].max()
                box = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            else:
                box = [float(x[i]), float(y[i]), float(w[i]), float(h[i])]
            out.append((*box, int(c), float(s[i])))
            kept.append(int(idx[i]))
    order = sorted(range(len(out)), key=lambda r: -out[r][5])
    cols = np.array([out[r] for r in order], dtype=np.float64).reshape(-1, 6)
    top = np.array([kept[r] for r in order], dtype=np.int64)
    return Hits(
        cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3], cols[:, 4].astype(np.int64), cols[:, 5],
        list(hits.classes),
        None if hits.prob is None else hits.prob[top],
        None if hits.windows is None else hits.windows[top],
    )  # fmt: skip


def detections(
    grid,
    thresholds=None,
    negative: str | None = "auto",
    iou: float | None = None,
    merge: str = DEFAULT_MERGE,
) -> list[Detection]:
    """Merged detections (kind "merged") of a ScoreGrid, highest score first (the probability,
    times the centredness where the grid has one). ``iou`` None: the IoU that follows from the
    grid's window and step (:func:`default_nms_iou`)."""
    if iou is None:
        iou = default_nms_iou(grid.window, grid.step)
    return nms(window_hits(grid, thresholds, negative), iou, merge).to_detections("merged")


# COCO AP integrates over every threshold, so it ranks low-scoring boxes too: every window whose
# best positive class reaches AP_FLOOR, at most AP_MAX_WINDOWS per class (NMS is quadratic).
AP_FLOOR = 0.05
AP_MAX_WINDOWS = 20_000


def ranked_detections(
    grid,
    negative: str | None = "auto",
    iou: float | None = None,
    floor: float = AP_FLOOR,
    max_windows: int = AP_MAX_WINDOWS,
) -> Hits:
    """Merged boxes of every window scoring at least ``floor`` (the best ``max_windows`` per
    class; the same NMS as the detections): the ranked list COCO AP is computed on. The
    detections at any threshold are the top of this list."""
    negative = default_negative(grid.classes) if negative == "auto" else negative
    hits = window_hits(grid, float(floor), negative)
    keep = []
    for c in np.unique(hits.label):
        idx = np.flatnonzero(hits.label == c)
        keep.append(idx[np.argsort(-hits.score[idx], kind="stable")[:max_windows]])
    keep = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    hits = hits.take(keep)
    return nms(hits, default_nms_iou(grid.window, grid.step) if iou is None else iou)


def uncertainty(probs: np.ndarray, kind: str = "least_confidence") -> np.ndarray:
    """Per-window uncertainty, higher = less certain; shape ``probs.shape[:-1]``.

    least_confidence: 1 - max p. margin: 1 - (p_top1 - p_top2). entropy: -sum p ln p / ln C
    (0 for a one-hot, 1 for uniform).
    """
    p = np.asarray(probs, dtype=np.float64)
    if kind == "least_confidence":
        return 1.0 - p.max(-1)
    if kind == "margin":
        top2 = np.partition(p, -2, axis=-1)[..., -2:]
        return 1.0 - (top2[..., 1] - top2[..., 0])
    if kind == "entropy":
        safe = np.clip(p, 1e-12, 1.0)
        return -(p * np.log(safe)).sum(-1) / np.log(p.shape[-1])
    raise ValueError(f"uncertainty kind must be one of {UNCERTAINTY_KINDS}, got {kind!r}")
