"""Review-queue ordering over a ScoreGrid: which windows a reviewer should look at first.

Strategies (every one returns the most useful windows first):

- ``uncertainty`` (least confidence): lowest top-class probability first;
- ``margin``: smallest gap between the two most probable classes first;
- ``entropy``: highest normalised entropy first;
- ``random``: a seeded shuffle (the baseline every strategy should beat);
- ``top_score``: highest positive-class probability first (check the confident detections).

Batch strategies: they hand out windows in *rounds*. Inside a round no two windows overlap
(``|dy| < window`` and ``|dx| < window``), so a batch of answers never spends two labels on one
spot (least-confidence picks cluster: 15% of them sat next to another pick on the demo). Each
round is greedy: walk the candidates in the strategy's order and take a window unless it overlaps
one already taken in this round. A round ends when no candidate fits; the next round starts from
what is left.

- ``diverse_uncertainty``: least-confidence order, spatially diverse;
- ``diverse_margin``: margin order, spatially diverse;
- ``balanced``: class-balanced quotas over the *predicted* class: the classes take turns (each
  project class, negative included, gets an equal share of every batch while it has windows
  left; a class that runs out gives its turns to the others); within a class the least confident
  first; spatially diverse across all classes. Least confidence alone answered 72% negatives;
- ``mixed``: diverse uncertainty with a share of seeded random picks (:data:`MIXED_RANDOM_SHARE`,
  one pick in three): random picks cover what the model is confidently wrong about, which an
  uncertainty ranking never reaches; also spatially diverse;
- ``cluster_margin``: Cluster-Margin (Citovsky et al., NeurIPS 2021) in a cheap embedding: the
  :data:`POOL` smallest-margin windows are clustered by k-means on their probability vectors
  (seeded), and the clusters take turns, smallest cluster first, each handing out its
  smallest-margin window; spatially diverse. The paper clusters a network embedding; a scoring
  run only keeps the probabilities, so the clusters here are the kinds of confusion (car vs
  negative, boat vs car, ...), which is what the round-robin balances;
- ``diverse_learnable``: ``diverse_uncertainty`` without the windows :func:`unlearnable_mask`
  flags (they go to the end of the order).

Why these: the published evidence says that at small budgets pure uncertainty batches are
redundant and can lose to random (the "cold start" of TypiClust, Hacohen et al. ICML 2022), that
diversity within a batch pays (BADGE, Ash et al. ICLR 2020; Cluster-Margin), and that
windows no model can learn ("collective outliers", Karamcheti et al. ACL 2021) waste an
uncertainty queue. TypiClust itself picks *typical* points in a representation; in a
probability-only embedding the typical windows are the confident ones, which random already
over-samples (85% of its answers were negatives the model already got right), so it is not here.

Unlearnable rule (cheap, from the grid alone, see :func:`unlearnable_mask`): a window the model is
unsure about whose neighbours (one grid step away) are confidently predicted as two or more
different classes straddles a border between two recognised things; its answer hinges on the few
pixels under its centre (17% of the least-confidence picks on the demo had under half their
pixels in the answered class).

For batch strategies the priority is ``1 / (1 + position)`` in the handed-out order (higher =
earlier), so orders of several scenes merge evenly. Only the best :data:`POOL` candidates (per
class for ``balanced``) go through the rounds; the rest follow in the base order.

numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mlcore.inference.postprocess import default_negative, uncertainty

# The strategy the review queue, the API and manage.py simulate_review use when none is named:
# chosen by the rule fixed before the measurement (the best calibration-scene F1 after 600
# answers; bench/bench_loop.py, 10 paired seeds, 3 x 200 answers; docs/loop.md#measured-loop).
DEFAULT_STRATEGY = "diverse_margin"
# Strategies that promise no two overlapping windows within a round (a batch).
DIVERSE_STRATEGIES = (
    "diverse_uncertainty",
    "diverse_margin",
    "balanced",
    "mixed",
    "cluster_margin",
    "diverse_learnable",
)
STRATEGIES = ("uncertainty", "margin", "entropy", "random", "top_score", *DIVERSE_STRATEGIES)
MIXED_RANDOM_SHARE = 1 / 3
POOL = 16384  # candidates that go through the diversity rounds (per class for "balanced")
CLUSTERS = 20  # k of cluster_margin's k-means
UNLEARNABLE_CONFIDENT = 0.6  # a neighbour "confidently" predicts a class at this probability


@dataclass
class ReviewItem:
    y: int
    x: int
    label: str  # the most probable class
    score: float  # its probability
    priority: float  # the strategy's key; higher = reviewed earlier

    def to_dict(self) -> dict:
        return asdict(self)


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    return strategy


def priorities(
    grid, strategy: str, seed: int = 0, negative: str | None = "auto", avoid=()
) -> np.ndarray:
    """Priority (R, K) of every window under ``strategy``; higher = review first.

    ``avoid``: (y, x) origins (windows already labelled); batch strategies put them last and keep
    the first round clear of windows overlapping them. The other strategies ignore it."""
    check_strategy(strategy)
    probs = grid.probs
    if strategy == "uncertainty":
        return uncertainty(probs, "least_confidence")
    if strategy in ("margin", "entropy"):
        return uncertainty(probs, strategy)
    if strategy == "random":
        return np.random.default_rng(seed).random(probs.shape[:2])
    if strategy == "top_score":
        negative = default_negative(grid.classes) if negative == "auto" else negative
        positive = [k for k, c in enumerate(grid.classes) if c != negative]
        return probs[..., positive].max(-1).astype(np.float64)
    order = batch_order(grid, strategy, seed=seed, avoid=avoid)
    prio = np.zeros(probs.shape[0] * probs.shape[1], dtype=np.float64)
    prio[order] = 1.0 / (1.0 + np.arange(len(order), dtype=np.float64))
    return prio.reshape(probs.shape[:2])


def rank_windows(
    grid,
    strategy: str = DEFAULT_STRATEGY,
    exclude=(),
    limit: int | None = 100,
    seed: int = 0,
    negative: str | None = "auto",
) -> list[ReviewItem]:
    """The ``limit`` best windows to review, skipping origins in ``exclude`` (a set of (y, x),
    e.g. windows already reviewed; batch strategies also keep their first round clear of windows
    overlapping them). Ties keep row-major order (stable)."""
    excluded = {(int(y), int(x)) for y, x in exclude}
    key = priorities(grid, strategy, seed, negative, avoid=excluded).ravel()
    k = len(grid.xs)
    order = np.argsort(-key, kind="stable")
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


def select_batch(grid, strategy: str = DEFAULT_STRATEGY, n: int = 200, exclude=(), seed: int = 0,
                 negative: str | None = "auto") -> list[ReviewItem]:  # fmt: skip
    """The next batch of ``n`` windows to label under ``strategy`` (a simulator's or a
    notebook's entry point; the review queue walks the same order one window at a time)."""
    return rank_windows(grid, strategy, exclude=exclude, limit=n, seed=seed, negative=negative)


# -- batch strategies ------------------------------------------------------------------------------


def batch_order(grid, strategy: str, seed: int = 0, avoid=()) -> np.ndarray:
    """Flat window indices (row-major over the grid) of every window, in the order ``strategy``
    hands them out (see the module docstring)."""
    check_strategy(strategy)
    if strategy not in DIVERSE_STRATEGIES:
        key = priorities(grid, strategy, seed).ravel()
        return np.argsort(-key, kind="stable")
    probs = np.asarray(grid.probs, dtype=np.float64)
    rows, cols, c = probs.shape
    flat_probs = probs.reshape(-1, c)
    n = rows * cols
    avoid_flat = _flat_indices(grid, avoid)
    kind = "margin" if strategy in ("diverse_margin", "cluster_margin") else "least_confidence"
    base_key = uncertainty(flat_probs, kind)
    last = np.zeros(n, dtype=bool)  # windows that go after every other one
    last[avoid_flat] = True
    if strategy == "diverse_learnable":
        last |= unlearnable_mask(grid).ravel()
    # Base order: most uncertain first, the "last" windows after all others (stable).
    base = np.lexsort((np.arange(n), -base_key, last))
    eligible = base[~last[base]]
    rng = np.random.default_rng(seed)
    if strategy == "balanced":
        pred = flat_probs.argmax(-1)
        streams = [eligible[pred[eligible] == k][:POOL] for k in range(c)]
        schedule = list(range(c))
    elif strategy == "mixed":
        pool = eligible[:POOL]
        shuffled = rng.permutation(eligible)[:POOL]
        streams = [pool, shuffled]
        schedule = _share_schedule(MIXED_RANDOM_SHARE)
    elif strategy == "cluster_margin":
        pool = eligible[:POOL]
        labels = _kmeans(flat_probs[pool], min(CLUSTERS, len(pool)), rng)
        sizes = np.bincount(labels, minlength=labels.max() + 1 if len(labels) else 0)
        clusters = sorted((int(s), k) for k, s in enumerate(sizes) if s)
        streams = [pool[labels == k] for _, k in clusters]  # pool order = margin order within
        schedule = list(range(len(streams)))
    else:  # diverse_uncertainty, diverse_margin, diverse_learnable
        streams = [eligible[:POOL]]
        schedule = [0]
    picked = _diverse_rounds(grid, streams, schedule, pre_blocked=avoid_flat)
    done = np.zeros(n, dtype=bool)
    done[picked] = True
    return np.concatenate([picked, base[~done[base]]]).astype(np.int64)


def _share_schedule(share: float, length: int = 60) -> list[int]:
    """Which stream (0 = the ranked one, 1 = random) fills each slot of a repeating schedule
    so that stream 1 gets ``share`` of the slots, spread evenly."""
    return [int(np.floor((i + 1) * share) > np.floor(i * share)) for i in range(length)]


def _flat_indices(grid, places) -> np.ndarray:
    row_of = {int(v): i for i, v in enumerate(grid.ys)}
    col_of = {int(v): i for i, v in enumerate(grid.xs)}
    k = len(grid.xs)
    out = [row_of[int(y)] * k + col_of[int(x)] for y, x in places
           if int(y) in row_of and int(x) in col_of]  # fmt: skip
    return np.asarray(sorted(out), dtype=np.int64)


def _overlap_spans(origins: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """For each origin, the index range [lo, hi) of sorted ``origins`` within less than
    ``window`` of it (the windows that overlap it along this axis)."""
    origins = np.asarray(origins, dtype=np.int64)
    lo = np.searchsorted(origins, origins - window, side="right")
    hi = np.searchsorted(origins, origins + window, side="left")
    return lo, hi


def _diverse_rounds(grid, streams, schedule, pre_blocked=()) -> np.ndarray:
    """Greedy rounds over candidate ``streams`` (flat indices, each in preference order): the
    streams take the slots of ``schedule`` in turn, each taking its best candidate that is
    neither taken nor overlapping a window taken in this round; a stream with no such candidate
    sits the round out. ``pre_blocked`` windows block their neighbours in the first round."""
    rows, cols = len(grid.ys), len(grid.xs)
    window = int(grid.window)
    rlo, rhi = _overlap_spans(grid.ys, window)
    clo, chi = _overlap_spans(grid.xs, window)
    taken = np.zeros(rows * cols, dtype=bool)
    blocked = np.zeros((rows, cols), dtype=bool)
    flat_blocked = blocked.reshape(-1)
    lists = [np.asarray(s, dtype=np.int64).tolist() for s in streams]
    order: list[int] = []

    def block(f: int) -> None:
        r, q = divmod(f, cols)
        blocked[rlo[r] : rhi[r], clo[q] : chi[q]] = True

    first = True
    while any(lists):
        blocked[:] = False
        if first:
            for f in np.asarray(pre_blocked, dtype=np.int64).tolist():
                block(f)
        ptr = [0] * len(lists)
        active = [bool(lst) for lst in lists]
        picked = 0
        slot = 0
        while any(active):
            s = schedule[slot % len(schedule)]
            slot += 1
            if not active[s]:
                continue
            lst, p = lists[s], ptr[s]
            while p < len(lst) and (taken[lst[p]] or flat_blocked[lst[p]]):
                p += 1
            if p == len(lst):
                active[s] = False
                ptr[s] = p
                continue
            f = lst[p]
            ptr[s] = p + 1
            taken[f] = True
            order.append(f)
            picked += 1
            block(f)
        if picked == 0 and not first:
            break
        first = False
        lists = [[f for f in lst if not taken[f]] for lst in lists]
    return np.asarray(order, dtype=np.int64)


def _kmeans(points: np.ndarray, k: int, rng, iters: int = 20) -> np.ndarray:
    """Cluster labels of ``points`` (n, d) by k-means with k-means++ seeding (numpy, seeded)."""
    n = len(points)
    if n == 0 or k <= 1:
        return np.zeros(n, dtype=np.int64)
    centres = [points[int(rng.integers(n))]]
    d2 = ((points - centres[0]) ** 2).sum(-1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:
            break
        i = int(rng.choice(n, p=d2 / total))
        centres.append(points[i])
        d2 = np.minimum(d2, ((points - points[i]) ** 2).sum(-1))
    centres = np.stack(centres)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        dist = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        new = dist.argmin(1)
        if _ > 0 and np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(centres)):
            members = points[labels == j]
            if len(members):
                centres[j] = members.mean(0)
    return labels


def unlearnable_mask(grid, confident: float = UNLEARNABLE_CONFIDENT) -> np.ndarray:
    """(R, K) bool: windows the model is unsure about (top probability below ``confident``)
    whose eight grid neighbours hold confident predictions of two or more different classes.
    Such a window straddles the border between two things the model already recognises; what
    it should be called depends on the few pixels under its centre, and one label teaches
    little that transfers (the collective-outlier effect on uncertainty queues)."""
    probs = np.asarray(grid.probs)
    rows, cols, c = probs.shape
    top = probs.max(-1)
    arg = probs.argmax(-1)
    sure = top >= confident
    seen = np.zeros((rows, cols), dtype=np.int64)
    for k in range(c):
        mine = np.pad(sure & (arg == k), 1)
        near = np.zeros((rows, cols), dtype=bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    near |= mine[1 + dy : 1 + dy + rows, 1 + dx : 1 + dx + cols]
        seen += near
    return ~sure & (seen >= 2)


def batch_stats(grid, picks, truth: np.ndarray | None = None) -> dict:
    """What a batch of picks (ReviewItems or (y, x) origins) holds, for comparing strategies
    offline: how many, overlapping pairs, the predicted classes, the windows flagged by
    :func:`unlearnable_mask`, and with ``truth`` (R, K) class indices (e.g.
    mlcore.eval.metrics.window_truth) the true classes and how often the model's guess was right."""
    places = [(it.y, it.x) if isinstance(it, ReviewItem) else (int(it[0]), int(it[1]))
              for it in picks]  # fmt: skip
    flat = _flat_indices(grid, places)
    if len(flat) != len(set(places)):
        raise ValueError("some picks are not window origins of this grid")
    classes = list(grid.classes)
    probs = np.asarray(grid.probs).reshape(-1, len(classes))
    pred = probs[flat].argmax(-1)
    window = int(grid.window)
    ys = np.array([p[0] for p in places])
    xs = np.array([p[1] for p in places])
    close = (np.abs(ys[:, None] - ys[None, :]) < window) & (
        np.abs(xs[:, None] - xs[None, :]) < window
    )
    out = {
        "n": len(places),
        "overlapping_pairs": int((close.sum() - len(places)) // 2),
        "predicted": {c: int((pred == k).sum()) for k, c in enumerate(classes)},
        "unlearnable": int(unlearnable_mask(grid).ravel()[flat].sum()),
    }
    if truth is not None:
        true = np.asarray(truth).ravel()[flat]
        out["truth"] = {c: int((true == k).sum()) for k, c in enumerate(classes)}
        out["model_agreed"] = round(float((true == pred).mean()), 4) if len(flat) else None
    return out
