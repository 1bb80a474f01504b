"""Review-queue ordering over a ScoreGrid."""

import numpy as np
import pytest

from mlcore.sampling import rank_windows
from mlcore.scoring import ScoreGrid

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
    lc = rank_windows(grid, "least_confidence", limit=3)
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
    items = rank_windows(grid, "least_confidence", exclude={(16, 16), (0, 16)}, limit=2)
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
