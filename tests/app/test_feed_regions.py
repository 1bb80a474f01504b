"""The raw-window feed of a region is read from the database for that region alone (a gigapixel
run's million windows are never cached whole for it) and holds exactly the windows of the whole
feed that overlap the region, in the same order, with the same probabilities."""

from __future__ import annotations

import pytest
from review_helpers import make_scored_scene

pytestmark = pytest.mark.django_db


def test_a_region_of_raw_windows_is_the_whole_feed_cut_to_the_region(alice_client, project,
                                                                    storage_dir):  # fmt: skip
    from labeling.review import cache

    scene, run = make_scored_scene(project, 384, 512, seed=3)
    url = f"/api/scenes/{scene.pk}/detections?kind=window"
    x0, y0, x1, y1 = 100, 60, 300, 200
    cache._cache.clear()
    part = alice_client.get(f"{url}&region={x0},{y0},{x1},{y1}").json()
    columns = ("feed", run.pk, "window", run.finished_at.isoformat())
    assert cache._cache.get(columns) is None  # the run's windows were not all read for it
    whole = alice_client.get(url).json()
    assert cache._cache.get(columns) is not None
    keep = [i for i in range(whole["count"])
            if whole["x"][i] < x1 and whole["x"][i] + whole["w"][i] > x0
            and whole["y"][i] < y1 and whole["y"][i] + whole["h"][i] > y0]  # fmt: skip
    assert 0 < len(keep) < whole["count"] and part["count"] == len(keep)
    for column in ("id", "x", "y", "w", "h", "label", "score", "probs"):
        assert part[column] == [whole[column][i] for i in keep], column
    assert part["classes"] == whole["classes"]
