"""Raw windows of a big scene come by region (headless Chromium): above
VIEWER_RAW_WINDOWS_WHOLE_PIXELS the viewer loads no raw window while the view is wide (a hint
says to zoom in), and once zoomed in only the blocks in view, each by a region query; the
windows it holds are exactly the run's windows overlapping those blocks."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from browser_helpers import add_dzi, login
from review_helpers import make_scored_scene

from labeling.models import Detection

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_raw_windows_load_by_region_once_zoomed_in(page, alice, project, storage_dir, settings):
    from playwright.sync_api import expect

    settings.VIEWER_RAW_WINDOWS_WHOLE_PIXELS = 100_000  # this 1024 x 768 scene counts as big
    settings.VIEWER_RAW_WINDOWS_BLOCK = 256  # loads once the view is at most 768 px wide
    scene, run = make_scored_scene(project, 768, 1024, seed=11, name="big scene")
    add_dzi(scene)
    requests = []
    page.on("request", lambda r: requests.append(r.url) if "kind=window" in r.url else None)

    login(page, "alice", "pw-alice")
    page.goto(f"/scenes/{scene.pk}/")
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")
    page.wait_for_function("Number(document.body.dataset.firstBoxesMs) > 0")
    page.wait_for_timeout(1000)
    assert page.evaluate("sceneViewer.loaded('window')") is None and requests == []
    page.evaluate("sceneViewer.setKind('window')")
    expect(page.locator("#raw-hint")).to_be_visible()

    page.evaluate("sceneViewer.zoomTo(300, 200, 200, 150)")
    page.wait_for_function("sceneViewer.loaded('window') > 0")
    expect(page.locator("#raw-hint")).to_be_hidden()
    regions = [
        tuple(map(int, parse_qs(urlparse(u).query)["region"][0].split(","))) for u in requests
    ]
    assert regions and all(x1 - x0 <= 256 and y1 - y0 <= 256 for x0, y0, x1, y1 in regions)
    assert len(regions) < (1024 // 256) * (768 // 256)  # not every block of the scene
    windows = Detection.objects.filter(run=run, kind="window").values_list("id", "x", "y", "w", "h")
    expected = {i for i, x, y, w, h in windows
                if any(x < x1 and x + w > x0 and y < y1 and y + h > y0
                       for x0, y0, x1, y1 in regions)}  # fmt: skip
    assert 0 < len(expected) < len(windows)
    assert page.evaluate("sceneViewer.loaded('window')") == len(expected)

    # Back out to the whole scene: nothing more is fetched, the hint is back.
    seen = len(requests)
    page.evaluate("sceneViewer.zoomTo(0, 0, 1024, 768)")
    page.wait_for_timeout(1500)
    assert len(requests) == seen
    expect(page.locator("#raw-hint")).to_be_visible()
