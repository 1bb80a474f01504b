"""An 8k x 8k tiled BigTIFF and pyramidal TIFF brought by a user open in the viewer (headless
Chromium): named by their storage key through the API, streamed into the scene by the import job,
their pyramid written by libvips dzsave, and OpenSeadragon draws the scene's own pixels from
those tiles at the home view and zoomed in to the full-resolution level."""

from __future__ import annotations

import pytest
from browser_helpers import login, screenshot
from helpers_data import run_worker_burst
from tiff_helpers import pattern, write_pyramidal_tiff, write_tiled_bigtiff

from labeling.models import Scene
from mlcore.ingest.deepzoom import level_count

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH = HEIGHT = 8192
OSD_PIXEL = """([x, y]) => {
  const p = sceneViewer.pageXY(x, y);
  const c = document.querySelector('#osd .openseadragon-canvas canvas');
  const r = c.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
  return Array.from(c.getContext('2d')
    .getImageData(Math.round((p.x - r.left) * dpr), Math.round((p.y - r.top) * dpr), 1, 1).data);
}"""


def shows(page, x: int, y: int, tolerance: int = 14) -> bool:
    """Whether the deep-zoom canvas shows the scene's colour at scene pixel (x, y)."""
    want = pattern(y, y + 1, x, x + 1)[0, 0].tolist()
    got = page.evaluate(OSD_PIXEL, [x, y])
    return all(abs(a - b) <= tolerance for a, b in zip(got[:3], want, strict=True))


@pytest.mark.parametrize("kind", ["tiled BigTIFF", "pyramidal TIFF"])
def test_a_big_tiff_opens_in_the_viewer(page, alice, project, storage_dir, client, kind):
    (storage_dir / "incoming").mkdir()
    src = storage_dir / "incoming" / "scene.tif"
    if kind == "tiled BigTIFF":
        write_tiled_bigtiff(src, HEIGHT, WIDTH, compression="jpeg")
    else:
        write_pyramidal_tiff(src, HEIGHT, WIDTH)
    client.force_login(alice)
    r = client.post(
        f"/api/projects/{project.pk}/scenes",
        {"storage_key": "incoming/scene.tif"},
        content_type="application/json",
    )
    assert r.status_code == 202, r.content
    run_worker_burst()
    scene = Scene.objects.get(pk=r.json()["id"])
    assert (scene.width, scene.height) == (WIDTH, HEIGHT) and scene.dzi_key

    tiles, failed = [], []
    page.on("response", lambda resp: (tiles if resp.ok else failed).append(resp.url)
            if "/dzi/" in resp.url else None)  # fmt: skip
    login(page, "alice", "pw-alice")
    page.goto(f"/scenes/{scene.pk}/")
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")
    x, y = 1100, 600  # a smooth spot of the pattern (no sawtooth edge near it)
    page.wait_for_function(
        f"() => ({OSD_PIXEL})([{x}, {y}]).slice(0, 3).some(v => v > 0)", timeout=30_000
    )
    assert any(".dzi" in url for url in tiles) and not failed
    # Zoomed in: tiles of the full-resolution level, the pixels the scene was scored on.
    top = f"/scene_files/{level_count(WIDTH, HEIGHT) - 1}/"
    with page.expect_response(lambda resp: top in resp.url and resp.ok, timeout=30_000):
        page.evaluate(f"sceneViewer.zoomTo({x - 100}, {y - 60}, 200, 120)")
    page.wait_for_function(
        "([x, y, want, tol]) => { const got = (" + OSD_PIXEL + ")([x, y]);"
        " return want.every((v, i) => Math.abs(v - got[i]) <= tol); }",
        arg=[x, y, pattern(y, y + 1, x, x + 1)[0, 0].tolist(), 14],
        timeout=30_000,
    )
    assert shows(page, x, y) and shows(page, x + 40, y + 30)
    assert any(top in url for url in tiles) and not failed
    screenshot(page, f"viewer-{kind.replace(' ', '-').lower()}.png")
