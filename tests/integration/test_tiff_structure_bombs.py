"""A few bytes never become gigabytes through a file's own structure (issue 38, point 4): the
upload check bounds what a picture may be stored as (24-bit RGB) by the data the file really
holds, so a BigTIFF of empty tiles, tiles sharing or overlapping one deflate stream, or a 1-bit
PNG is refused in the request and stores nothing; JPEG tiles whose data runs out fail their
import as padded, like a plain JPEG; and the import of a TIFF far wider than the memory bound
holds a tile at a time, never a row of tiles (peak memory measured in a subprocess). Genuine
tiled TIFFs (4096 px tiles, a tifffile GeoTIFF, JPEG tiles, strips) still import exactly."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from django.core.files.uploadedfile import SimpleUploadedFile
from helpers_data import run_worker_burst, storage_files
from PIL import Image
from tiff_helpers import pattern, write_geotiff, write_raw_bigtiff, write_tiled_bigtiff

from labeling.ingest.image_checks import check_picture
from labeling.ingest.uploads import UploadError, check_scene_image
from labeling.models import JobRecord, Scene
from mlcore.ingest import tiff_bands
from mlcore.ingest.scenes import NpyScene, SceneError, image_to_npy

REPO = Path(__file__).resolve().parents[2]
GB = 1024**3


def zero_tile(side: int) -> bytes:
    """A deflate stream of one side x side RGB tile of zeros: deflate's best, ~1032:1."""
    return zlib.compress(bytes(side * side * 3), 9)


def sparse_tiff(path: Path, with_data: bool) -> Path:
    """20000 x 20000 in 25 tiles of 4096 px: every byte count 0 (652 bytes), or one real tile."""
    blobs = [zero_tile(4096)] if with_data else []
    first = (0, 0, len(blobs[0])) if with_data else None
    return write_raw_bigtiff(path, 20000, 20000, 4096, blobs, [first] + [None] * 24)


def shared_tiff(path: Path, overlapping: bool) -> Path:
    """4096 x 4096 in 16 deflate tiles of 1024 px that all point at one 3 kB stream (or at
    ranges of it that overlap: each a byte longer than the one before)."""
    blob = zero_tile(1024)
    tail = 16 if overlapping else 0
    table = [(0, 0, len(blob) + (i if overlapping else 0)) for i in range(16)]
    return write_raw_bigtiff(path, 4096, 4096, 1024, [blob + bytes(tail)], table)


def one_bit_png(width: int, height: int) -> bytes:
    """A black 1-bit PNG: deflate at its best over 1-bit rows (109 kB for 30000 x 30000)."""
    row = bytes(1 + -(-width // 8))  # filter byte 0, then the row's bits
    packer = zlib.compressobj(9)
    rows = row * 1000  # (height is a multiple of 1000)
    body = b"".join(packer.compress(rows) for _ in range(height // 1000)) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def assert_refused_in_the_request(client, project, storage_dir, name: str, data: bytes, *words):
    r = client.post(
        f"/api/projects/{project.pk}/scenes",
        {"image": SimpleUploadedFile(name, data, "image/tiff")},
    )
    assert r.status_code == 400, (r.status_code, r.content[:300])
    error = r.json()["error"]
    for word in words:
        assert word in error, error
    assert str(storage_dir) not in error and "/tmp" not in error
    assert not Scene.objects.exists() and not JobRecord.objects.exists()
    assert storage_files(storage_dir) == []
    return error


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kind, words",
    [
        (
            "every tile empty",
            ["20000x20000", "1,200 MB", "from only 0 bytes", "25 of its 25 tiles"],
        ),
        ("one tile of 25 with data", ["20000x20000", "24 of its 25 tiles are empty"]),
        ("16 tiles share one stream", ["4096x4096", "15 tiles reuse bytes of other tiles"]),
        ("16 tiles overlap", ["4096x4096", "15 tiles reuse bytes of other tiles"]),
    ],
)
def test_empty_and_shared_tiles_are_refused_in_the_request(
    alice_client, project, storage_dir, kind, words
):
    path = storage_dir.parent / "bomb.tif"
    if "25" in kind or "empty" in kind:
        sparse_tiff(path, with_data=kind != "every tile empty")
    else:
        shared_tiff(path, overlapping="overlap" in kind)
    data = path.read_bytes()
    assert len(data) < 60_000  # 652 bytes for the empty one
    error = assert_refused_in_the_request(
        alice_client, project, storage_dir, "bomb.tif", data, "bomb.tif cannot be a scene", *words
    )
    assert "at most 3,096 times the data" in error


@pytest.mark.django_db(transaction=True)
def test_an_empty_tiled_tiff_named_in_the_storage_fails_its_import(
    alice_client, project, storage_dir
):
    (storage_dir / "incoming").mkdir()
    sparse_tiff(storage_dir / "incoming" / "empty.tif", with_data=False)
    r = alice_client.post(
        f"/api/projects/{project.pk}/scenes",
        {"storage_key": "incoming/empty.tif"},
        content_type="application/json",
    )
    assert r.status_code == 202, r.content
    run_worker_burst()
    r = alice_client.get(f"/api/projects/{project.pk}/scenes/{r.json()['id']}/import")
    error = r.json()["job"]["error"]
    assert r.status_code == 410 and "empty.tif cannot be a scene" in error, error
    assert str(storage_dir) not in error
    assert not Scene.objects.exists()
    assert storage_files(storage_dir) == ["incoming/empty.tif"]


@pytest.mark.django_db
def test_a_one_bit_png_that_would_be_stored_as_gigabytes_is_refused(
    alice_client, project, storage_dir, tmp_path
):
    data = one_bit_png(30000, 30000)
    assert len(data) < 120_000  # inflates within deflate's 1032:1 to its 1-bit rows
    assert_refused_in_the_request(
        alice_client, project, storage_dir, "page.png", data,
        "page.png cannot be a scene", "30000x30000 1-bit pixels", "2,700 MB of RGB",
    )  # fmt: skip
    # Pictures whose data can hold them as stored still pass: flat 8-bit grey (stored three
    # times over, deflate at its best), a palette picture, and a detailed 1-bit picture.
    rng = np.random.default_rng(0)
    for mode, pixels in [
        ("L", np.full((3000, 3000), 90, np.uint8)),
        ("P", rng.integers(0, 4, (2000, 2000), dtype=np.uint8)),
        ("1", rng.integers(0, 2, (2000, 2000), dtype=np.uint8) * 255),
    ]:
        picture = Image.fromarray(pixels).convert(mode) if mode == "1" else Image.fromarray(pixels)
        if mode == "P":
            picture.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 200, 30, 40])
        picture.save(tmp_path / "ok.png", optimize=True)
        check_picture(tmp_path / "ok.png", "ok.png")


def random_scan_jpeg_tiff(path: Path, side: int, tile: int, junk: int) -> Path:
    """JPEG tiles whose headers are genuine and whose scans are ``junk`` random bytes (byte-
    stuffed, then the end-of-image marker): libjpeg fills what they do not cover with grey."""
    rng = np.random.default_rng(3)
    blobs = []
    for y in range(0, side, tile):
        for x in range(0, side, tile):
            real = imagecodecs.jpeg8_encode(pattern(y, y + tile, x, x + tile), level=80)
            sos = real.find(b"\xff\xda")
            scan = sos + 2 + int.from_bytes(real[sos + 2 : sos + 4], "big")
            noise = rng.integers(0, 256, junk, dtype=np.uint8).tobytes()
            blobs.append(real[:scan] + noise.replace(b"\xff", b"\xff\x00") + b"\xff\xd9")
    table = [(i, 0, len(blob)) for i, blob in enumerate(blobs)]
    return write_raw_bigtiff(path, side, side, tile, blobs, table, compression=7, photometric=6)


@pytest.mark.django_db(transaction=True)
def test_jpeg_tiles_of_random_scan_data_fail_their_import_as_padded(
    alice_client, project, storage_dir
):
    """190 kB that would decode to 50 MB, mostly the decoder's grey: the request passes (its
    structure is sound), the import job refuses it with the reason and leaves nothing."""
    path = random_scan_jpeg_tiff(storage_dir.parent / "noise.tif", 4096, 256, junk=100)
    assert path.stat().st_size < 200_000
    r = alice_client.post(
        f"/api/projects/{project.pk}/scenes",
        {"image": SimpleUploadedFile("noise.tif", path.read_bytes(), "image/tiff")},
    )
    assert r.status_code == 202, r.content
    run_worker_burst()
    r = alice_client.get(f"/api/projects/{project.pk}/scenes/{r.json()['id']}/import")
    error = r.json()["job"]["error"]
    assert r.status_code == 410
    for words in ("noise.tif is corrupt or padded", "4096x4096", "flat grey", "tile"):
        assert words in error, error
    assert str(storage_dir) not in error and "/tmp" not in error
    assert not Scene.objects.exists()
    assert storage_files(storage_dir) == []


def test_genuine_jpeg_tiles_import_and_a_tile_holding_a_bigger_jpeg_is_refused(tmp_path):
    write_tiled_bigtiff(tmp_path / "ok.tif", 600, 700, tile=256, compression="jpeg")
    assert image_to_npy(tmp_path / "ok.tif", tmp_path / "ok.npy") == (700, 600)
    got = np.load(tmp_path / "ok.npy").astype(int)
    assert np.abs(got - pattern(0, 600, 0, 700)).mean() < 4
    # Headers without scans: all grey.
    grey = random_scan_jpeg_tiff(tmp_path / "grey.tif", 512, 256, junk=0)
    with pytest.raises(SceneError, match="grey.tif is corrupt or padded"):
        image_to_npy(grey, tmp_path / "grey.npy")
    # A 256 px tile holding a 4096 x 4096 JPEG: libjpeg would decode all of it; refused first.
    big = imagecodecs.jpeg8_encode(np.zeros((4096, 4096, 3), np.uint8), level=10)
    write_raw_bigtiff(tmp_path / "big.tif", 256, 256, 256, [big], [(0, 0, len(big))],
                      compression=7, photometric=6)  # fmt: skip
    with pytest.raises(SceneError, match="holds a JPEG of 4096x4096 pixels, larger than its 256"):
        image_to_npy(tmp_path / "big.tif", tmp_path / "big.npy")
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == ["ok.npy"]
    assert not list(tmp_path.glob(".*"))  # no temporary left


PROBE = """
import json, resource, sys
from mlcore.ingest.scenes import image_to_npy
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
src, npy = sys.argv[1:3]
base = peak()
size = image_to_npy(src, npy)
print(json.dumps({"grown": peak() - base, "size": size}))
"""


def test_a_very_wide_tiled_tiff_imports_a_tile_at_a_time(tmp_path):
    """22 tiles of 4096 px side by side: a row of tiles is 1.1 GB of RGB, more than an import
    step may hold (1 GB); the import's peak memory grows by a fraction of it."""
    tiles, side = 22, 4096
    blob = zero_tile(side)  # each tile its own copy: real data, ~1032:1 as stored
    src = write_raw_bigtiff(tmp_path / "wide.tif", tiles * side, side, side, [blob] * tiles,
                            [(i, 0, len(blob)) for i in range(tiles)])  # fmt: skip
    row_bytes = tiles * side * side * 3
    assert row_bytes > GB and src.stat().st_size < 1_200_000
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(src), str(tmp_path / "wide.npy")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["size"] == [tiles * side, side]
    assert probe["grown"] < 256 * 2**20, probe  # a tile and a chunk, not the 1.1 GB row
    scene = NpyScene(tmp_path / "wide.npy")
    assert (scene.width, scene.height) == (tiles * side, side)
    assert not scene.read_rows(side - 2, side).any()


@pytest.mark.parametrize("chunk", [6 * 128 * 128 * 3, 128 * 128 * 3 - 1])
def test_tiles_written_in_chunks_and_slabs_land_exactly(tmp_path, monkeypatch, chunk):
    """Chunks of several tiles (the last one clipped at the edge), or tiles larger than a chunk
    written a slab of rows at a time; strips within or beyond a chunk; tiles stored in a
    scrambled order; a tifffile GeoTIFF."""
    monkeypatch.setattr(tiff_bands, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(tiff_bands, "SLAB_BYTES", 40 * 128 * 3)
    write_tiled_bigtiff(tmp_path / "t.tif", 300, 1000, tile=128, compression="zstd")
    assert image_to_npy(tmp_path / "t.tif", tmp_path / "t.npy") == (1000, 300)
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), pattern(0, 300, 0, 1000))

    grey = pattern(0, 200, 0, 300)[..., 0].astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "g.tif", grey, rowsperstrip=180, compression="deflate")
    image_to_npy(tmp_path / "g.tif", tmp_path / "g.npy")
    np.testing.assert_array_equal(
        np.load(tmp_path / "g.npy"), np.repeat(grey[..., None] >> 8, 3, 2)
    )

    # Tiles stored in the file in a scrambled order still land in their places.
    tiles = [(y, x) for y in range(0, 300, 128) for x in range(0, 1000, 128)]
    order = np.random.default_rng(1).permutation(len(tiles))  # blob k holds tile order[k]
    blobs = [zlib.compress(pattern(y, y + 128, x, x + 128).tobytes()) for y, x in tiles]
    blobs = [blobs[i] for i in order]
    where = np.argsort(order)
    table = [(int(where[i]), 0, len(blobs[where[i]])) for i in range(len(tiles))]
    write_raw_bigtiff(tmp_path / "r.tif", 1000, 300, 128, blobs, table)
    image_to_npy(tmp_path / "r.tif", tmp_path / "r.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), pattern(0, 300, 0, 1000))

    geo = write_geotiff(tmp_path / "geo.tif", 500, 700)
    assert check_scene_image(geo, "geo.tif") == (700, 500, "TIFF")
    image_to_npy(geo, tmp_path / "geo.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "geo.npy"), pattern(0, 500, 0, 700))


def test_a_tiff_with_4096_px_tiles_still_imports(tmp_path):
    src = write_tiled_bigtiff(tmp_path / "big.tif", 300, 8500, tile=4096, compression="deflate")
    assert check_scene_image(src, "big.tif") == (8500, 300, "TIFF")
    assert image_to_npy(src, tmp_path / "big.npy") == (8500, 300)
    np.testing.assert_array_equal(np.load(tmp_path / "big.npy"), pattern(0, 300, 0, 8500))
    with pytest.raises(UploadError, match="cannot be a scene"):  # its 25-tile cousin
        check_scene_image(sparse_tiff(tmp_path / "s.tif", with_data=True), "s.tif")
