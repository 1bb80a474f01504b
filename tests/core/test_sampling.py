"""Review-queue ordering over a ScoreGrid."""

import numpy as np
import pytest

from mlcore.inference.postprocess import uncertainty
from mlcore.inference.scoring import ScoreGrid
from mlcore.sampling import (
    DEFAULT_STRATEGY,
    DIVERSE_STRATEGIES,
    STRATEGIES,
    batch_stats,
    priorities,
    rank_windows,
    select_batch,
    unlearnable_mask,
)

CLASSES = ["car", "boat", "negative"]


@pytest.fixture
def grid():
    probs = np.array(
        [
            [[0.98, 0.01, 0.01], [0.40, 0.35, 0.25], [0.05, 0.05, 0.90]],
            [[0.50, 0.10, 0.40], [0.34, 0.33, 0.33], [0.10, 0.85, 0.05]],
        ],
        dtype=np.float32,
    )
    return ScoreGrid([0, 16], [0, 16, 32], probs, CLASSES, 32, 16)


def origins(items):
    return [(it.y, it.x) for it in items]


def test_least_confidence_margin_entropy_orders(grid):
    lc = rank_windows(grid, "uncertainty", limit=3)
    assert origins(lc) == [(16, 16), (0, 16), (16, 0)]
    assert lc[0].label == "car" and lc[0].score == pytest.approx(0.34)
    assert origins(rank_windows(grid, "uncertainty", limit=3)) == origins(lc)
    # margin: (16,16) gap 0.01, (0,16) gap 0.05, (16,0) gap 0.10
    assert origins(rank_windows(grid, "margin", limit=3)) == [(16, 16), (0, 16), (16, 0)]
    ent = rank_windows(grid, "entropy", limit=None)
    assert len(ent) == 6 and origins(ent)[0] == (16, 16) and origins(ent)[-1] == (0, 0)


def test_top_score_puts_confident_positives_first(grid):
    top = rank_windows(grid, "top_score", limit=2)
    assert origins(top) == [(0, 0), (16, 32)]  # car 0.98, boat 0.85; negative 0.90 is not counted
    assert top[0].priority == pytest.approx(0.98)


def test_exclude_and_limit(grid):
    items = rank_windows(grid, "uncertainty", exclude={(16, 16), (0, 16)}, limit=2)
    assert origins(items) == [(16, 0), (16, 32)]
    assert len(rank_windows(grid, "margin", limit=None, exclude=[(0, 0)])) == 5


def test_random_is_seeded(grid):
    a = origins(rank_windows(grid, "random", limit=None, seed=1))
    b = origins(rank_windows(grid, "random", limit=None, seed=1))
    orders = {tuple(origins(rank_windows(grid, "random", limit=None, seed=s))) for s in range(6)}
    assert a == b and sorted(a) == sorted(origins(rank_windows(grid, "margin", limit=None)))
    assert len(orders) > 1


def test_unknown_strategy(grid):
    with pytest.raises(ValueError, match="strategy must be one of"):
        rank_windows(grid, "loudest")


# -- batch strategies: diversity, quotas, seeds --------------------------------------------------

BATCH = [s for s in STRATEGIES if s in DIVERSE_STRATEGIES]


def random_grid(rows=40, cols=50, step=16, window=32, seed=0, clamp=True):
    """A grid whose uncertain windows come in blobs (as on a real scene: an ambiguous object is
    covered by several overlapping windows), with the last origin clamped like score_scene's."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([0.4, 0.4, 3.0], size=(rows, cols))
    for _ in range(12):  # blobs of near-uniform windows
        r, c = rng.integers(rows - 3), rng.integers(cols - 3)
        probs[r : r + 3, c : c + 3] = rng.dirichlet([20, 20, 20], size=(3, 3))
    ys, xs = np.arange(rows) * step, np.arange(cols) * step
    if clamp:
        ys[-1] -= step // 2
        xs[-1] -= step // 2
    return ScoreGrid(ys, xs, probs.astype(np.float32), CLASSES, window, step)


def overlapping_pairs(items, window):
    pts = origins(items)
    return [(a, b) for i, a in enumerate(pts) for b in pts[:i]
            if abs(a[0] - b[0]) < window and abs(a[1] - b[1]) < window]  # fmt: skip


def test_strategy_lists():
    assert DEFAULT_STRATEGY in STRATEGIES
    for name in ("uncertainty", "margin", "entropy", "random", "top_score"):
        assert name in STRATEGIES
    assert set(DIVERSE_STRATEGIES) <= set(STRATEGIES) and len(BATCH) >= 5


@pytest.mark.parametrize("step", [8, 16])
@pytest.mark.parametrize("strategy", BATCH)
def test_diverse_strategies_never_hand_out_overlapping_windows(strategy, step):
    grid = random_grid(step=step, seed=step)
    plain = select_batch(grid, "uncertainty", 60)
    assert overlapping_pairs(plain, 32)  # the blobs make plain least confidence overlap
    for seed in (0, 1):
        batch = select_batch(grid, strategy, 60, seed=seed)
        assert len(batch) == 60 and len(set(origins(batch))) == 60
        assert overlapping_pairs(batch, 32) == []


def test_diverse_uncertainty_is_greedy_least_confidence(grid):
    # (16,16) is the least confident; (0,16), (16,0) and (16,32) overlap it; (0,0) and (0,32)
    # overlap it too (|dy| = 16 < 32, |dx| <= 16): only one window fits in the first round.
    items = select_batch(grid, "diverse_uncertainty", 6)
    assert origins(items)[0] == (16, 16)
    big = random_grid(step=16, clamp=False)
    batch = select_batch(big, "diverse_uncertainty", 30)
    lc = uncertainty(big.probs, "least_confidence")
    k = len(big.xs)
    flat = [(y // 16) * k + x // 16 for y, x in origins(batch)]
    assert lc.ravel()[flat[0]] == lc.max()
    # each pick is the least confident window not overlapping the earlier picks
    taken = []
    for y, x in origins(batch):
        free = [
            (lc[r, c], -(r * k + c))
            for r in range(len(big.ys))
            for c in range(k)
            if all(abs(r * 16 - ty) >= 32 or abs(c * 16 - tx) >= 32 for ty, tx in taken)
        ]
        best = max(free)
        assert (y, x) == ((-best[1]) // k * 16, (-best[1]) % k * 16)
        taken.append((y, x))


def test_balanced_quotas_hold():
    grid = random_grid(rows=60, cols=60)
    predicted = grid.probs.argmax(-1)
    assert (predicted == 2).mean() > 0.6  # mostly "negative" predictions
    for n in (30, 90):
        batch = select_batch(grid, "balanced", n)
        counts = {c: sum(it.label == c for it in batch) for c in CLASSES}
        assert counts == {c: n // 3 for c in CLASSES}
        assert overlapping_pairs(batch, 32) == []
    # within a class, least confident first (among the windows that fit)
    cars = [it for it in select_batch(grid, "balanced", 30) if it.label == "car"]
    car_scores = grid.probs[..., 0][predicted == 0]
    assert cars[0].score == pytest.approx(float(car_scores.min()))


def test_balanced_gives_the_turns_of_a_missing_class_to_the_others(grid):
    probs = grid.probs.copy()
    probs[..., 1] = 0.0  # nothing predicted as boat
    g = ScoreGrid(grid.ys, grid.xs, probs, CLASSES, 8, 16)  # window 8 < step: nothing overlaps
    batch = select_batch(g, "balanced", 6)
    assert len(batch) == 6 and {it.label for it in batch} == {"car", "negative"}


def test_mixed_takes_a_share_of_random_picks():
    grid = random_grid(rows=60, cols=60)
    mixed = origins(select_batch(grid, "mixed", 60, seed=3))
    ranked = set(origins(select_batch(grid, "diverse_uncertainty", 200)))
    from_random = [o for o in mixed if o not in ranked]
    assert 10 <= len(from_random) <= 25  # about one in three
    assert mixed != origins(select_batch(grid, "mixed", 60, seed=4))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_is_deterministic_for_a_seed(strategy):
    grid = random_grid(step=8, seed=5)
    a = origins(select_batch(grid, strategy, 50, seed=7))
    b = origins(select_batch(grid, strategy, 50, seed=7))
    assert a == b and len(a) == 50
    np.testing.assert_array_equal(
        priorities(grid, strategy, seed=7), priorities(grid, strategy, seed=7)
    )


@pytest.mark.parametrize("strategy", ["random", "mixed"])
def test_random_streams_differ_by_seed(strategy):
    grid = random_grid(seed=2)
    batches = {tuple(origins(select_batch(grid, strategy, 40, seed=s))) for s in range(4)}
    assert len(batches) == 4


def test_batch_priorities_follow_the_handed_out_order():
    grid = random_grid()
    for strategy in BATCH:
        prio = priorities(grid, strategy, seed=1)
        assert prio.shape == grid.probs.shape[:2] and prio.max() == 1.0
        assert len(np.unique(prio)) == prio.size  # a strict order: queue merges stay stable
        items = rank_windows(grid, strategy, limit=20, seed=1)
        assert [it.priority for it in items] == sorted((it.priority for it in items), reverse=True)
        assert items[0].priority == 1.0


def test_exclude_keeps_the_first_round_clear_of_labelled_windows():
    grid = random_grid(clamp=False)
    first = select_batch(grid, "diverse_uncertainty", 20)
    labelled = set(origins(first))
    nxt = select_batch(grid, "diverse_uncertainty", 20, exclude=labelled)
    assert not labelled & set(origins(nxt))
    for y, x in origins(nxt):
        assert all(abs(y - ly) >= 32 or abs(x - lx) >= 32 for ly, lx in labelled)
    # the plain strategies only skip them
    plain = select_batch(grid, "uncertainty", 20, exclude=labelled)
    assert not labelled & set(origins(plain))


def test_unlearnable_mask_flags_unsure_windows_between_two_recognised_classes():
    car, boat, neg, unsure = (
        [0.9, 0.05, 0.05],
        [0.05, 0.9, 0.05],
        [0.05, 0.05, 0.9],
        [0.4, 0.3, 0.3],
    )
    probs = np.array(
        [
            [car, car, unsure, boat, boat],
            [car, unsure, unsure, neg, boat],
            [neg, neg, neg, neg, neg],
        ],
        dtype=np.float32,
    )
    grid = ScoreGrid([0, 16, 32], [0, 16, 32, 48, 64], probs, CLASSES, 32, 16)
    mask = unlearnable_mask(grid)
    assert mask.tolist() == [
        [False, False, True, False, False],
        [False, True, True, False, False],
        [False, False, False, False, False],
    ]
    # diverse_learnable hands those windows out last
    order = origins(rank_windows(grid, "diverse_learnable", limit=None))
    assert set(order[-3:]) == {(0, 32), (16, 16), (16, 32)}
    # a window whose confident neighbours all say one class is not flagged
    probs[...] = car
    probs[1, 1] = unsure
    assert not unlearnable_mask(ScoreGrid(grid.ys, grid.xs, probs, CLASSES, 32, 16)).any()


def test_batch_stats_counts_overlaps_classes_and_agreement(grid):
    items = rank_windows(grid, "uncertainty", limit=3)  # (16,16), (0,16), (16,0)
    truth = np.array([[0, 2, 2], [0, 1, 1]])
    stats = batch_stats(grid, items, truth)
    assert stats["n"] == 3 and stats["overlapping_pairs"] == 3
    assert stats["predicted"] == {"car": 3, "boat": 0, "negative": 0}
    assert stats["truth"] == {"car": 1, "boat": 1, "negative": 1}
    assert stats["model_agreed"] == pytest.approx(1 / 3, abs=1e-4)
    diverse = batch_stats(grid, select_batch(grid, "diverse_uncertainty", 1))
    assert diverse["overlapping_pairs"] == 0 and "truth" not in diverse
    with pytest.raises(ValueError, match="not window origins"):
        batch_stats(grid, [(5, 5)])
