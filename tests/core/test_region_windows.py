"""A background region as training samples (mlcore.data.regions.background_windows), on
hand-made regions: the object-size windows on the scoring grid wholly inside the region, none
overlapping an object box (objects win), at most the cap, spread over the whole region."""

from __future__ import annotations

import pytest

from mlcore.data.regions import REGION_SAMPLE_CAP, background_windows


def test_the_grid_windows_inside_the_region():
    # Region x 10..110, y 0..64; windows of 32 at step 16: x origins 16, 32, 48, 64 (80 + 32 >
    # 110), y origins 0, 16, 32.
    got = background_windows((10, 0, 100, 64), [], window=32, step=16)
    assert got == [(x, y) for y in (0, 16, 32) for x in (16, 32, 48, 64)]


def test_objects_inside_win():
    # One object box at (40, 20) 10x10: every window touching it by a pixel is left out.
    got = background_windows((0, 0, 96, 64), [(40, 20, 10, 10)], window=32, step=16)
    every = [(x, y) for y in (0, 16, 32) for x in (0, 16, 32, 48, 64)]
    # The box spans x 40..50, y 20..30: windows at x 16, 32, 48 and y 0, 16 share pixels with it.
    touching = {(x, y) for x in (16, 32, 48) for y in (0, 16)}
    assert got == [w for w in every if w not in touching]
    assert len(got) == 15 - 6
    # A box just outside a window (touching its edge, no shared pixel) leaves it in.
    assert (0, 0) in background_windows((0, 0, 64, 64), [(32, 0, 8, 8)], window=32, step=32)
    # An object covering the region: nothing to teach.
    assert background_windows((0, 0, 64, 64), [(0, 0, 64, 64)], window=32, step=16) == []


def test_the_cap_is_honoured_and_spread_over_the_region():
    # 1024 x 1024 at 32 / 16: 63 x 63 = 3969 windows, capped.
    got = background_windows((0, 0, 1024, 1024), [], window=32, step=16)
    assert len(got) == REGION_SAMPLE_CAP == 32
    assert len(set(got)) == len(got)
    assert got[0] == (0, 0) and got[-1] == (992, 992)  # first and last window of the region
    ys = [y for _, y in got]
    assert max(ys) - min(ys) == 992  # the whole region's height, not its top rows
    assert background_windows((0, 0, 1024, 1024), [], window=32, step=16, cap=5)[:1] == [(0, 0)]
    assert len(background_windows((0, 0, 1024, 1024), [], window=32, step=16, cap=5)) == 5


def test_a_region_smaller_than_a_window_teaches_nothing():
    assert background_windows((0, 0, 31, 100), [], window=32, step=16) == []
    # Off the grid: 5..40 holds no window at a multiple of 16 (16 + 32 > 40).
    assert background_windows((5, 5, 35, 35), [], window=32, step=16) == []
    with pytest.raises(ValueError):
        background_windows((0, 0, 64, 64), [], window=0, step=16)
