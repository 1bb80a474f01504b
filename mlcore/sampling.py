"""Review-queue ordering over a ScoreGrid: which windows a reviewer should look at first.

Strategies (every one returns the most useful windows first):

- ``least_confidence`` (alias ``uncertainty``): lowest top-class probability first;
- ``margin``: smallest gap between the two most probable classes first;
- ``entropy``: highest normalised entropy first;
- ``random``: a seeded shuffle (the baseline every strategy should beat);
- ``top_score``: highest positive-class probability first (check the confident detections).

numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mlcore.postprocess import default_negative, uncertainty

STRATEGIES = ("least_confidence", "uncertainty", "margin", "entropy", "random", "top_score")


@dataclass
class ReviewItem:
    y: int
    x: int
    label: str  # the most probable class
    score: float  # its probability
    priority: float  # the strategy's key; higher = reviewed earlier

    def to_dict(self) -> dict:
        return asdict(self)


def priorities(grid, strategy: str, seed: int = 0, negative: str | None = "auto") -> np.ndarray:
    """Priority (R, K) of every window under ``strategy``; higher = review first."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    probs = grid.probs
    if strategy in ("least_confidence", "uncertainty"):
        return uncertainty(probs, "least_confidence")
    if strategy in ("margin", "entropy"):
        return uncertainty(probs, strategy)
    if strategy == "random":
        return np.random.default_rng(seed).random(probs.shape[:2])
    negative = default_negative(grid.classes) if negative == "auto" else negative
    positive = [k for k, c in enumerate(grid.classes) if c != negative]
    return probs[..., positive].max(-1).astype(np.float64)


def rank_windows(
    grid,
    strategy: str = "least_confidence",
    exclude=(),
    limit: int | None = 100,
    seed: int = 0,
    negative: str | None = "auto",
) -> list[ReviewItem]:
    """The ``limit`` best windows to review, skipping origins in ``exclude`` (a set of (y, x),
    e.g. windows already reviewed). Ties keep row-major order (stable)."""
    key = priorities(grid, strategy, seed, negative).ravel()
    k = len(grid.xs)
    order = np.argsort(-key, kind="stable")
    excluded = {(int(y), int(x)) for y, x in exclude}
    top = grid.probs.reshape(-1, len(grid.classes))
    items: list[ReviewItem] = []
    for flat in order:
        y, x = int(grid.ys[flat // k]), int(grid.xs[flat % k])
        if (y, x) in excluded:
            continue
        best = int(top[flat].argmax())
        items.append(ReviewItem(y, x, grid.classes[best], float(top[flat, best]), float(key[flat])))
        if limit is not None and len(items) >= limit:
            break
    return items
