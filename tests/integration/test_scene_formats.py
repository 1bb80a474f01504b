"""Big scenes streamed, never held (issue 24): a tiled BigTIFF and a pyramidal TIFF of 8k x 8k
(192 MiB of pixels) become the scoring .npy and the deep-zoom pyramid in a subprocess whose peak
memory grows by well under the scene's size; codecs libvips cannot read (LERC, Zstandard) still
import; a truncated or corrupt TIFF is refused with its reason and leaves nothing; a bomb is
refused from its header; a GeoTIFF keeps its georeferencing through the import job and its
detections and annotations export as GeoJSON in its coordinates."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from django.core.files.uploadedfile import SimpleUploadedFile
from helpers_data import run_worker_burst, storage_files
from tiff_helpers import (
    GEO_EPSG,
    GEO_ORIGIN,
    GEO_PIXEL,
    pattern,
    write_geotiff,
    write_pyramidal_tiff,
    write_tiled_bigtiff,
)

from labeling.ingest.uploads import UploadError, check_scene_image
from labeling.models import JobRecord, Scene
from mlcore.ingest.deepzoom import level_count, read_dzi
from mlcore.ingest.disk_space import DiskSpaceError, check_free_space
from mlcore.ingest.scenes import NpyScene, SceneError, image_to_npy

REPO = Path(__file__).resolve().parents[2]
SIDE = 8192  # 8k x 8k: 192 MiB of RGB, plain to see in a process's peak memory
PROBE = """
import json, resource, sys
from mlcore.ingest.deepzoom import generate_dzi
from mlcore.ingest.scenes import image_to_npy
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
src, npy, out = sys.argv[1:4]
base = peak()
image_to_npy(src, npy)
imported = peak()
info = generate_dzi(npy, out, name="scene")
print(json.dumps({"import": imported - base, "pyramid": peak() - base, "tiles": info.n_tiles}))
"""


def probe(src: Path, tmp_path: Path) -> dict:
    """Import ``src`` and make its pyramid in a fresh Python; the growth of its peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(src), str(tmp_path / "pixels.npy"), str(tmp_path / "dz")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["tiled BigTIFF", "pyramidal TIFF"])
def test_an_8k_tiff_streams_into_the_scene_and_its_pyramid_in_bounded_memory(tmp_path, kind):
    src = tmp_path / "scene.tif"
    if kind == "tiled BigTIFF":
        write_tiled_bigtiff(src, SIDE, SIDE, compression="deflate")
    else:
        write_pyramidal_tiff(src, SIDE, SIDE)
    with tifffile.TiffFile(src) as tif:
        assert tif.is_bigtiff == (kind == "tiled BigTIFF") and tif.pages[0].is_tiled
        if kind == "pyramidal TIFF":
            assert len(tif.series[0].levels) > 3  # a real pyramid; the base level is imported
    grown = probe(src, tmp_path)
    scene_bytes = SIDE * SIDE * 3
    # A full decode would hold at least the scene's 192 MiB at once; bands hold a few MiB.
    assert grown["import"] < 0.5 * scene_bytes, grown
    assert grown["pyramid"] < 0.5 * scene_bytes, grown

    scene = NpyScene(tmp_path / "pixels.npy")
    assert (scene.width, scene.height) == (SIDE, SIDE)
    for y0 in (0, 4000, SIDE - 300):
        got, want = scene.read_rows(y0, y0 + 300), pattern(y0, y0 + 300, 0, SIDE)
        if kind == "tiled BigTIFF":  # deflate: exact
            np.testing.assert_array_equal(got, want)
        else:  # JPEG tiles
            assert np.abs(got.astype(int) - want).mean() < 4
    info = read_dzi((tmp_path / "dz" / "scene.dzi").read_bytes())
    assert (info["width"], info["height"], info["format"]) == (SIDE, SIDE, "jpg")
    levels = sorted(int(p.name) for p in (tmp_path / "dz" / "scene_files").iterdir())
    assert levels == list(range(level_count(SIDE, SIDE)))
    assert grown["tiles"] == sum(1 for _ in (tmp_path / "dz").rglob("*.jpg"))


@pytest.mark.parametrize("compression", ["lerc", "zstd", "lzw", "jpegxl"])
def test_codecs_beyond_libvips_import_exactly(tmp_path, compression):
    """libvips' libtiff returns black for LERC or JPEG-XL; tifffile's codecs decode them."""
    src = write_tiled_bigtiff(tmp_path / "c.tif", 300, 500, tile=128, compression=compression,
                              **({"compressionargs": {"lossless": True}}
                                 if compression == "jpegxl" else {}))  # fmt: skip
    assert image_to_npy(src, tmp_path / "c.npy") == (500, 300)
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), pattern(0, 300, 0, 500))


def test_striped_grey_16_bit_and_palette_tiffs_become_rgb(tmp_path):
    grey = pattern(0, 200, 0, 300)[..., 0].astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "g.tif", grey, rowsperstrip=7, compression="deflate")
    out = image_to_npy(tmp_path / "g.tif", tmp_path / "g.npy")
    assert out == (300, 200)
    pixels = np.load(tmp_path / "g.npy")
    np.testing.assert_array_equal(pixels[..., 0], grey >> 8)
    assert (pixels[..., 0] == pixels[..., 2]).all()

    index = (pattern(0, 64, 0, 64)[..., 0] // 16).astype(np.uint8)
    colormap = np.zeros((3, 256), np.uint16)
    colormap[0, :16] = np.arange(16) * 4096
    tifffile.imwrite(tmp_path / "p.tif", index, photometric="palette", colormap=colormap)
    image_to_npy(tmp_path / "p.tif", tmp_path / "p.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy")[..., 0], index * 16)


def test_a_truncated_tiled_tiff_is_refused_with_its_reason_before_decoding(tmp_path):
    src = write_tiled_bigtiff(tmp_path / "full.tif", 1024, 1024, compression="deflate")
    data = src.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(UploadError, match=r"cut.tif is truncated: its tile \d+ ends at byte"):
        check_scene_image(cut, "cut.tif")
    with pytest.raises(SceneError, match="truncated: its tile"):
        image_to_npy(cut, tmp_path / "cut.npy")
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob(".*"))


def test_a_corrupt_tile_fails_the_conversion_and_leaves_nothing(tmp_path):
    src = write_tiled_bigtiff(tmp_path / "bad.tif", 1024, 1024, compression="deflate")
    with tifffile.TiffFile(src) as tif:
        offset = int(tif.pages[0].dataoffsets[9])
    data = bytearray(src.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64  # tile 9's deflate stream broken, sizes intact
    src.write_bytes(bytes(data))
    assert check_scene_image(src, "bad.tif") == (1024, 1024, "TIFF")  # the structure is fine
    with pytest.raises(SceneError, match="bad.tif is corrupt or truncated"):
        image_to_npy(src, tmp_path / "bad.npy", progress=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tif"]


def bomb_tiff(path: Path, width: int, height: int) -> Path:
    """A 64 x 64 tiled TIFF whose tags are rewritten to declare width x height."""
    write_tiled_bigtiff(path, 64, 64, tile=64)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(width)
        tif.pages[0].tags["ImageLength"].overwrite(height)
    return path


@pytest.mark.django_db
def test_a_tiff_bomb_is_refused_from_its_header(alice_client, project, storage_dir, settings):
    bomb = bomb_tiff(storage_dir.parent / "bomb.tif", 100_000, 100_000)
    assert bomb.stat().st_size < 100_000
    started = time.perf_counter()
    with pytest.raises(UploadError, match="100000x100000 = 10,000,000,000 pixels, above the lim"):
        check_scene_image(bomb, "bomb.tif")
    assert time.perf_counter() - started < 5  # refused from the tags: nothing was decoded
    r = alice_client.post(
        f"/api/projects/{project.pk}/scenes",
        {"image": SimpleUploadedFile("bomb.tif", bomb.read_bytes(), "image/tiff")},
    )
    assert r.status_code == 400 and "above the limit of 2,500,000,000" in r.json()["error"]
    # Within the limit its few bytes cannot hold the pixels it declares: refused as truncated.
    small = bomb_tiff(storage_dir.parent / "small.tif", 20_000, 20_000)
    with pytest.raises(UploadError, match="small.tif is truncated"):
        check_scene_image(small, "small.tif")
    assert not Scene.objects.exists() and not JobRecord.objects.exists()
    assert storage_files(storage_dir) == []


def test_the_disk_space_check_refuses_with_the_figures(tmp_path):
    needs = check_free_space(1000, 1000, tmp_path, tmp_path)
    assert sum(needs.values()) > 2 * 3_000_000  # the .npy twice (scratch and storage) + tiles
    with pytest.raises(DiskSpaceError, match=r"needs about .* GB on the disk of .* GB are free"):
        check_free_space(10_000_000, 10_000_000, tmp_path, None)


@pytest.mark.django_db(transaction=True)
def test_a_tiled_bigtiff_upload_becomes_a_scene_with_tiles(alice_client, project, storage_dir):
    src = write_tiled_bigtiff(storage_dir.parent / "big.tif", 1536, 2048, compression="zstd")
    r = alice_client.post(
        f"/api/projects/{project.pk}/scenes",
        {"image": SimpleUploadedFile("big.tif", src.read_bytes(), "image/tiff")},
    )
    assert r.status_code == 202, r.content
    run_worker_burst()
    scene = Scene.objects.get(pk=r.json()["id"])
    assert (scene.width, scene.height, scene.georef) == (2048, 1536, None)
    pixels = NpyScene(storage_dir / scene.pixels_key)
    np.testing.assert_array_equal(pixels.read_rows(700, 900), pattern(700, 900, 0, 2048))
    assert scene.dzi_key.endswith("dzi/scene.dzi")
    tile = alice_client.get(
        f"/scenes/{scene.pk}/dzi/scene_files/{level_count(2048, 1536) - 1}/3_2.jpg"
    )
    assert tile.status_code == 200 and b"".join(tile.streaming_content)[:2] == b"\xff\xd8"
    assert not [f for f in storage_files(storage_dir) if "tmp" in f or f.startswith(".")]


@pytest.mark.django_db(transaction=True)
def test_a_geotiff_keeps_its_georeferencing_and_exports_geojson(alice_client, project, storage_dir):
    from labeling.models import Detection, ModelVersion, ScoringRun

    src = write_geotiff(storage_dir.parent / "geo.tif", 384, 512)
    r = alice_client.post(
        f"/api/projects/{project.pk}/scenes",
        {"image": SimpleUploadedFile("geo.tif", src.read_bytes(), "image/tiff")},
    )
    assert r.status_code == 202, r.content
    run_worker_burst()
    scene = Scene.objects.get(pk=r.json()["id"])
    x0, y0 = GEO_ORIGIN
    assert scene.georef == {
        "geotransform": [x0, GEO_PIXEL, 0.0, y0, 0.0, -GEO_PIXEL],
        "crs": f"EPSG:{GEO_EPSG}", "citation": None, "raster_type": "area",
    }  # fmt: skip

    # A finished run with one merged box, and a reviewer's missed object.
    version = ModelVersion.objects.create(project=project, number=1, status="ready",
                                          is_current=True, classes=project.class_names)  # fmt: skip
    run = ScoringRun.objects.create(scene=scene, model_version=version, status="done")
    Detection.objects.create(run=run, kind="merged", label="car", score=0.9, x=64, y=32, w=32,
                             h=32)  # fmt: skip
    Detection.objects.create(run=run, kind="window", label="car", score=0.9, x=0, y=0, w=32, h=32)
    posted = alice_client.post(
        f"/api/scenes/{scene.pk}/annotations",
        json.dumps({"kind": "false_negative", "label": "boat", "x": 100, "y": 200, "w": 40,
                    "h": 20}),
        content_type="application/json",
    )  # fmt: skip
    assert posted.status_code in (200, 201), posted.content

    # The scene's own CRS on request (the default is WGS84: test_geojson_export_is_strict_rfc7946).
    r = alice_client.get(f"/api/scenes/{scene.pk}/geojson?crs=native")
    assert r.status_code == 200 and r["Content-Type"] == "application/geo+json"
    data = r.json()
    assert data["type"] == "FeatureCollection"
    assert data["crs"]["properties"]["name"] == f"urn:ogc:def:crs:EPSG::{GEO_EPSG}"
    by_source = {f["properties"]["source"]: f for f in data["features"]}
    assert len(data["features"]) == 2  # the merged box and the annotation, no raw window
    box = by_source["detection"]
    assert box["properties"]["label"] == "car" and box["properties"]["pixel_box"] == [
        64,
        32,
        32,
        32,
    ]
    # Pixel (64, 32) is 32 m east and 16 m south of the corner; the box is 16 m on each side
    # (counter-clockwise, as RFC 7946 wants exterior rings).
    assert box["geometry"]["coordinates"][0] == [
        [x0 + 32, y0 - 16], [x0 + 32, y0 - 32], [x0 + 48, y0 - 32], [x0 + 48, y0 - 16],
        [x0 + 32, y0 - 16],
    ]  # fmt: skip
    missed = by_source["annotation"]
    assert (
        missed["properties"]["label"] == "boat" and missed["properties"]["kind"] == "false_negative"
    )
    assert [x0 + 70, y0 - 110] in missed["geometry"]["coordinates"][0]  # pixel (140, 220)

    # The same route on a scene without georeferencing: scene pixels, only when asked.
    scene.georef = None
    scene.save(update_fields=["georef"])
    assert alice_client.get(f"/api/scenes/{scene.pk}/geojson").status_code == 409
    data = alice_client.get(f"/api/scenes/{scene.pk}/geojson?crs=pixels").json()
    assert "scene pixels" in data["crs"]["properties"]["name"]
    pixels = {f["properties"]["source"]: f["geometry"]["coordinates"][0] for f in data["features"]}
    assert [96, 64] in pixels["detection"]
    assert alice_client.get(f"/api/scenes/{scene.pk}/geojson?run=999999").status_code == 404
