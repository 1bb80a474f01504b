"""The figures an active-learning loop is judged by, beside object F1.

- **Corrections stick**: of the windows reviewers answered before a model version was trained,
  the share that version now decides the way the reviewer answered (its hit rule at its
  thresholds: ``mlcore.inference.postprocess.decided_labels``). A version that forgets what it was
  taught shows it here first.
- **Labels saved**: how many answers one strategy needs to reach another's F1 at a budget, read
  off its learning curve by linear interpolation.
- **Paired differences**: runs that share a seed (the same first model, fine-tune seed and random
  stream) compared run by run, with the mean difference per cycle and its 95% t-interval.

No Django here: the app (labeling/loop) and bench/bench_loop.py both use these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Two-sided 95% Student t quantiles by degrees of freedom (more: the normal's 1.96 is within 2%).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
       17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042}  # fmt: skip


def t95(dof: int) -> float:
    """The two-sided 95% t quantile for ``dof`` degrees of freedom (the next tabled lower dof:
    slightly wide, never narrow)."""
    if dof < 1:
        return math.nan
    return T95[max(k for k in T95 if k <= dof)] if dof <= 30 else 1.96


def mean_interval(values: Sequence[float]) -> dict:
    """``{"mean", "ci95": [lo, hi], "n"}`` of ``values`` (a t-interval; NaN bounds for n < 2)."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    half = t95(n - 1) * float(v.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def corrections_stick(decided: np.ndarray, answered: np.ndarray) -> dict:
    """How many answered windows a model now decides as answered.

    ``decided``: the model's class index per window; ``answered``: the reviewer's class index
    per window, -1 where none was answered (same shape). Returns ``{"answered": n, "kept": k,
    "share": k / n or None}``."""
    decided, answered = np.asarray(decided), np.asarray(answered)
    if decided.shape != answered.shape:
        raise ValueError(f"decided {decided.shape} and answered {answered.shape} differ in shape")
    mask = answered >= 0
    n = int(mask.sum())
    kept = int((decided[mask] == answered[mask]).sum())
    return {"answered": n, "kept": kept, "share": (kept / n) if n else None}


def stick_by_coverage(
    decided: np.ndarray, answered: np.ndarray, coverage: np.ndarray, edges=(0.4, 0.7)
) -> list[dict]:
    """Corrections stick split by how much of each answered window its answer's class covers
    (``mlcore.eval.metrics.centre_class_coverage``), in bins ``[0, e1), [e1, e2), ..., [ek, 1]``:
    the windows the centre rule answers from a sliver are the ones a smooth model cannot keep."""
    decided, answered, coverage = np.asarray(decided), np.asarray(answered), np.asarray(coverage)
    if not decided.shape == answered.shape == coverage.shape:
        raise ValueError("decided, answered and coverage must have the same shape")
    bounds = [0.0, *edges, math.inf]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        inside = (coverage >= lo) & (coverage < hi)
        figures = corrections_stick(decided, np.where(inside, answered, -1))
        out.append({"coverage": [lo, min(hi, 1.0)]} | figures)
    return out


def labels_needed(labels: Sequence[float], curve: Sequence[float], target: float) -> float | None:
    """The answers a learning curve (F1 at ``labels`` answers, increasing) needs to first reach
    ``target``, linearly interpolated between its points; None if it never does."""
    x = np.asarray(labels, dtype=np.float64)
    y = np.asarray(curve, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or not len(x):
        raise ValueError("labels and curve must be equal-length, non-empty 1-d sequences")
    if np.any(np.diff(x) <= 0):
        raise ValueError("labels must be strictly increasing")
    if y[0] >= target:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] >= target:
            # y[i-1] < target <= y[i]: where the segment crosses the target.
            return float(x[i - 1] + (target - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1]))
    return None


def labels_saved(
    labels: Sequence[float], baseline_curve: Sequence[float], budget: float, reached: float
) -> dict:
    """What a strategy that reached F1 ``reached`` after ``budget`` answers saves against a
    baseline curve: ``{"baseline_needs": answers or None, "ratio": baseline_needs / budget,
    "reached_within": bool}`` (None / False: the baseline never got there within its curve, so
    it needs more than its last point)."""
    needs = labels_needed(labels, baseline_curve, reached)
    return {
        "target_f1": round(float(reached), 4),
        "budget": float(budget),
        "baseline_needs": None if needs is None else round(needs, 1),
        "ratio": None if needs is None else round(needs / budget, 3),
        "reached_within": needs is not None,
        "baseline_max_labels": float(labels[-1]),
    }


def paired_differences(
    runs_a: Sequence[Sequence[float]], runs_b: Sequence[Sequence[float]]
) -> dict:
    """Run-by-run differences a - b of two strategies' curves over the same seeds (row k of
    each is seed k; the shorter curve sets the length). Per point: mean, 95% t-interval, the
    number of seeds where a is ahead, behind or level."""
    a = [list(r) for r in runs_a]
    b = [list(r) for r in runs_b]
    if len(a) != len(b) or not a:
        raise ValueError(f"paired runs need the same seeds on both sides ({len(a)} vs {len(b)})")
    length = min(min(len(r) for r in a), min(len(r) for r in b))
    diffs = np.array([ra[:length] for ra in a], dtype=np.float64) - np.array(
        [rb[:length] for rb in b], dtype=np.float64
    )
    out = {"mean": [], "ci95": [], "ahead": [], "behind": [], "level": [], "seeds": len(a)}
    for j in range(length):
        col = diffs[:, j]
        summary = mean_interval(col)
        out["mean"].append(round(summary["mean"], 4))
        out["ci95"].append([round(v, 4) for v in summary["ci95"]])
        out["ahead"].append(int((col > 0).sum()))
        out["behind"].append(int((col < 0).sum()))
        out["level"].append(int((col == 0).sum()))
    out["runs"] = diffs.round(4).tolist()
    return out
