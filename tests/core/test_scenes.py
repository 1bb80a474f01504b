"""Scenes: picture -> scoring .npy, byte-range row reads (path and storage), validation errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mlcore.ingest.scenes import (
    ArrayScene,
    NpyScene,
    SceneError,
    array_to_npy,
    image_to_npy,
    open_scene,
    validate_scene_image,
)


def _picture(h=37, w=53, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class RangeStorage:
    """Just the two Storage methods NpyScene uses, over a dict, recording each range read."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.reads = files, []

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self.reads.append((key, offset, length))
        return self.files[key][offset : offset + length]


def test_image_to_npy_writes_rgb_rows(tmp_path):
    pic = _picture()
    Image.fromarray(pic).save(tmp_path / "scene.png")
    size = image_to_npy(tmp_path / "scene.png", tmp_path / "scene.npy", band_bytes=8 * 53 * 3)
    assert size == (53, 37)
    back = np.load(tmp_path / "scene.npy")
    assert back.dtype == np.uint8 and back.flags.c_contiguous
    np.testing.assert_array_equal(back, pic)
    assert not list(tmp_path.glob("*.tmp"))


def test_image_to_npy_converts_modes_and_accepts_file_objects():
    rgba = np.dstack([_picture(), np.full((37, 53), 100, np.uint8)])
    src = io.BytesIO()
    Image.fromarray(rgba).save(src, "PNG")
    src.seek(0)
    dst = io.BytesIO()
    image_to_npy(src, dst)
    dst.seek(0)
    np.testing.assert_array_equal(np.load(dst), rgba[..., :3])

    grey = io.BytesIO()
    Image.fromarray(_picture()[..., 0]).save(grey, "PNG")
    grey.seek(0)
    dst = io.BytesIO()
    image_to_npy(grey, dst)
    dst.seek(0)
    out = np.load(dst)
    assert out.shape == (37, 53, 3) and (out[..., 0] == out[..., 2]).all()


def test_pixel_limit_and_bad_files_give_clear_errors(tmp_path):
    Image.fromarray(_picture()).save(tmp_path / "scene.png")
    with pytest.raises(SceneError, match="above the limit of 1,000"):
        image_to_npy(tmp_path / "scene.png", tmp_path / "x.npy", max_pixels=1000)
    with pytest.raises(SceneError, match="above the limit"):
        validate_scene_image(tmp_path / "scene.png", max_pixels=1000)
    assert not (tmp_path / "x.npy").exists()

    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SceneError, match="not an image"):
        validate_scene_image(tmp_path / "notes.txt")

    Image.fromarray(_picture(200, 300)).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert validate_scene_image(tmp_path / "full.jpg") == (300, 200, "JPEG")
    # The header alone is intact: the damage shows when the pixels are streamed, and nothing
    # half-written stays.
    assert validate_scene_image(tmp_path / "cut.jpg") == (300, 200, "JPEG")
    with pytest.raises(SceneError, match="cut.jpg is corrupt or truncated: .*premature end"):
        image_to_npy(tmp_path / "cut.jpg", tmp_path / "cut.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.jpg", "full.jpg", "notes.txt",
                                                          "scene.png"]  # fmt: skip


def test_npy_scene_reads_only_the_requested_rows(tmp_path):
    pic = _picture(40, 25)
    array_to_npy(pic, tmp_path / "s.npy")
    by_path = NpyScene(tmp_path / "s.npy")
    assert (by_path.height, by_path.width) == (40, 25)
    np.testing.assert_array_equal(by_path.read_rows(7, 19), pic[7:19])
    np.testing.assert_array_equal(by_path.read_rows(0, 40), pic)
    assert by_path.read_rows(5, 5).shape == (0, 25, 3)

    storage = RangeStorage({"scenes/s.npy": (tmp_path / "s.npy").read_bytes()})
    scene = NpyScene(storage, "scenes/s.npy")
    header_reads = len(storage.reads)
    np.testing.assert_array_equal(scene.read_rows(30, 33), pic[30:33])
    (key, offset, length) = storage.reads[header_reads]
    assert key == "scenes/s.npy" and length == 3 * 25 * 3
    assert offset == len(storage.files[key]) - 40 * 25 * 3 + 30 * 25 * 3
    assert len(storage.reads) == header_reads + 1  # the header was parsed once, not per read
    with pytest.raises(SceneError, match="outside"):
        scene.read_rows(10, 41)


def test_npy_scene_rejects_wrong_arrays_and_truncation(tmp_path):
    np.save(tmp_path / "float.npy", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(SceneError, match="uint8"):
        NpyScene(tmp_path / "float.npy")
    np.save(tmp_path / "fortran.npy", np.asfortranarray(_picture(4, 5)))
    with pytest.raises(SceneError, match="C order"):
        NpyScene(tmp_path / "fortran.npy")
    (tmp_path / "plain.npy").write_bytes(b"not numpy at all")
    with pytest.raises(SceneError, match="not a .npy"):
        NpyScene(tmp_path / "plain.npy")
    array_to_npy(_picture(10, 10), tmp_path / "cut.npy")
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-50])
    scene = NpyScene(tmp_path / "cut.npy")
    np.testing.assert_array_equal(scene.read_rows(0, 5), _picture(10, 10)[:5])
    with pytest.raises(SceneError, match="truncated"):
        scene.read_rows(5, 10)
    with pytest.raises(SceneError, match="truncated"):
        validate_scene_image(tmp_path / "cut.npy")
    with pytest.raises(SceneError, match="does not exist"):
        NpyScene(tmp_path / "missing.npy")


def test_array_scene_and_open_scene(tmp_path):
    pic = _picture()
    scene = ArrayScene(pic)
    np.testing.assert_array_equal(scene.read_rows(3, 9), pic[3:9])
    with pytest.raises(SceneError):
        ArrayScene(pic[..., :2])
    Image.fromarray(pic).save(tmp_path / "p.png")
    array_to_npy(pic, tmp_path / "p.npy")
    assert isinstance(open_scene(tmp_path / "p.npy"), NpyScene)
    np.testing.assert_array_equal(open_scene(tmp_path / "p.png").read_rows(0, 37), pic)
