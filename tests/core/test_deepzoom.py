"""Deep Zoom pyramids (libvips dzsave): level count and sizes, tiles with overlap, exact top level,
lower levels the 2x2 means of the one above, a scene read from a file or by byte ranges from a
storage, directory and callback output."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

import mlcore.ingest.deepzoom as dz
from mlcore.ingest.scenes import NpyScene, array_to_npy


def _picture(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _reference_levels(image):
    """Every level by repeated 2x2 averaging of the whole image (what the bands must match)."""
    levels = [image]
    while max(levels[-1].shape[:2]) > 1:
        a = levels[-1]
        if a.shape[0] % 2:
            a = np.concatenate([a, a[-1:]], 0)
        levels.append(_halve(a))
    return levels[::-1]


def _halve(band):
    """2x2 mean (rounded) with an odd width repeating the last column."""
    if band.shape[1] % 2:
        band = np.concatenate([band, band[:, -1:]], axis=1)
    b = band.astype(np.uint16)
    s = b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def _assemble(tiles, level, width, height, tile_size, overlap):
    out = np.zeros((height, width, 3), np.uint8)
    for col in range(math.ceil(width / tile_size)):
        for row in range(math.ceil(height / tile_size)):
            tile = np.asarray(Image.open(io.BytesIO(tiles[f"s_files/{level}/{col}_{row}.png"])))
            x0, y0, x1, y1 = dz.tile_bounds(col, row, width, height, tile_size, overlap)
            assert tile.shape == (y1 - y0, x1 - x0, 3)
            out[y0:y1, x0:x1] = tile
    return out


@pytest.mark.parametrize(
    "height,width,tile_size,overlap", [(300, 600, 254, 1), (77, 45, 15, 2), (1, 1, 254, 1)]
)
def test_pyramid_levels_tiles_and_exact_pixels(height, width, tile_size, overlap):
    image = _picture(height, width)
    written = {}
    reports = []
    info = dz.generate_dzi(
        image,
        lambda key, data: written.__setitem__(key, data),
        name="s",
        tile_size=tile_size,
        overlap=overlap,
        fmt="png",
        progress=lambda d, t, m="": reports.append((d, t)),
    )
    levels = math.ceil(math.log2(max(width, height))) + 1
    assert info.levels == levels == dz.level_count(width, height)
    sizes = dz.level_sizes(width, height)
    assert sizes[-1] == (width, height) and sizes[0] == (1, 1)
    expected_tiles = sum(math.ceil(w / tile_size) * math.ceil(h / tile_size) for w, h in sizes)
    assert info.n_tiles == expected_tiles == len(written) - 1
    assert reports[-1][0] == reports[-1][1]
    reference = _reference_levels(image)
    for level, (w, h) in enumerate(sizes):
        assert reference[level].shape == (h, w, 3)
        got = _assemble(written, level, w, h, tile_size, overlap)
        if level == len(sizes) - 1:
            np.testing.assert_array_equal(got, reference[level])  # the scene's own pixels
        else:  # libvips rounds its means its own way: within one grey level
            assert np.abs(got.astype(int) - reference[level]).max() <= 1
    meta = dz.read_dzi(written["s.dzi"])
    assert meta == dict(
        tile_size=tile_size, overlap=overlap, format="png", width=width, height=height
    )


def test_tile_sizes_with_overlap():
    assert dz.tile_bounds(0, 0, 600, 300, 254, 1) == (0, 0, 255, 255)
    assert dz.tile_bounds(1, 0, 600, 300, 254, 1) == (253, 0, 509, 255)
    assert dz.tile_bounds(2, 1, 600, 300, 254, 1) == (507, 253, 600, 300)


class RangeStorage:
    """A storage with byte ranges only (like ADLS: no local path), recording what was read."""

    def __init__(self, files):
        self.files, self.reads = files, []

    def read_range(self, key, offset, length):
        self.reads.append(length)
        return self.files[key][offset : offset + length]


def test_a_scene_file_and_a_remote_scene_give_the_same_pyramid(tmp_path, monkeypatch):
    image = _picture(530, 170, seed=3)
    array_to_npy(image, tmp_path / "scene.npy")
    from_file = {}
    dz.generate_dzi(
        NpyScene(tmp_path / "scene.npy"), lambda k, d: from_file.__setitem__(k, d), name="s",
        tile_size=32, fmt="png", tmp_dir=tmp_path,
    )  # fmt: skip
    monkeypatch.setattr(dz, "STRIP_BYTES", 10 * 170 * 3)  # 10 rows per read
    storage = RangeStorage({"p.npy": (tmp_path / "scene.npy").read_bytes()})
    info = dz.generate_dzi(
        NpyScene(storage, "p.npy"), tmp_path / "out", name="s", tile_size=32, fmt="png",
        tmp_dir=tmp_path,
    )  # fmt: skip
    files = {p.relative_to(tmp_path / "out").as_posix(): p.read_bytes()
             for p in (tmp_path / "out").rglob("*") if p.is_file()}  # fmt: skip
    assert files.keys() == from_file.keys()
    for key in files:
        if key.endswith(".png"):
            np.testing.assert_array_equal(
                np.asarray(Image.open(io.BytesIO(files[key]))),
                np.asarray(Image.open(io.BytesIO(from_file[key]))),
            )
    assert info.levels == 11 and info.n_tiles == len(files) - 1
    # Streamed by byte ranges, never the whole scene in one read.
    assert max(storage.reads) <= 10 * 170 * 3 and sum(storage.reads) >= image.nbytes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("dzi-")]  # scratch removed


def test_storage_writer_prefixes_keys():
    stored = {}

    class DictStorage:
        def write(self, key, data):
            stored[key] = data

    dz.generate_dzi(_picture(10, 20), dz.storage_writer(DictStorage(), "dzi/7/"), name="s")
    assert "dzi/7/s.dzi" in stored and "dzi/7/s_files/0/0_0.jpg" in stored
    assert len(stored) == 1 + dz.level_count(20, 10)


def test_jpeg_directory_output_and_bad_parameters(tmp_path):
    image = _picture(100, 140)
    info = dz.generate_dzi(image, tmp_path, name="mona", fmt="jpg")
    assert (tmp_path / "mona.dzi").exists()
    top = tmp_path / "mona_files" / str(info.levels - 1) / "0_0.jpg"
    with Image.open(top) as im:
        assert im.format == "JPEG" and im.size == (140, 100)
    assert 'Format="jpg"' in (tmp_path / "mona.dzi").read_text()
    with pytest.raises(dz.DeepZoomError, match="format"):
        dz.generate_dzi(image, tmp_path, fmt="gif")
    with pytest.raises(dz.DeepZoomError, match="overlap"):
        dz.generate_dzi(image, tmp_path, tile_size=4, overlap=4)
    with pytest.raises(dz.DeepZoomError, match="name"):
        dz.generate_dzi(image, tmp_path, name="../x")
