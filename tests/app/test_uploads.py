"""labeling.ingest.uploads: storage keys named by users, size and pixel limits and image checks,
with the messages a user sees (the ground-truth parsers: tests/app/test_ground_truth.py)."""

from __future__ import annotations

import os

import pytest
from helpers_data import png_bytes, scene_png, truncated

from labeling.ingest.uploads import (
    UploadError,
    check_scene_image,
    check_size,
    check_user_key,
    safe_filename,
)

pytestmark = pytest.mark.django_db

CLASSES = ["plane", "ship", "negative"]


# --- storage keys ----------------------------------------------------------------------------


@pytest.fixture
def stored(storage_dir):
    (storage_dir / "incoming").mkdir()
    (storage_dir / "incoming" / "scene.png").write_bytes(scene_png())
    return storage_dir


def test_a_key_inside_the_storage_is_accepted(project, stored):
    assert check_user_key(project, " incoming/scene.png ") == "incoming/scene.png"


@pytest.mark.parametrize(
    "key, words",
    [
        ("../outside.png", "'..' segment"),
        ("incoming/../../outside.png", "'..' segment"),
        ("/etc/passwd", "absolute"),
        ("C:/data/x.png", "drive letter"),
        ("incoming\\scene.png", "backslash"),
        ("", "empty"),
    ],
)
def test_keys_outside_the_storage_prefix_are_refused(project, stored, key, words):
    with pytest.raises(UploadError) as err:
        check_user_key(project, key)
    assert words in str(err.value)
    assert "outside the storage prefix are refused" in str(err.value)


def test_a_symlink_out_of_the_storage_is_refused(project, stored, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(scene_png())
    os.symlink(secret, stored / "incoming" / "link.png")
    with pytest.raises(UploadError, match="outside the storage"):
        check_user_key(project, "incoming/link.png")


def test_another_projects_folder_is_refused(project, stored):
    other = f"projects/{project.pk + 1}/scenes/1/original.png"
    (stored / other).parent.mkdir(parents=True)
    (stored / other).write_bytes(scene_png())
    with pytest.raises(UploadError, match="another project's folder"):
        check_user_key(project, other)


def test_a_missing_key_says_so(project, stored):
    with pytest.raises(UploadError, match="No object 'incoming/nope.png' in the storage"):
        check_user_key(project, "incoming/nope.png")


# --- limits and images -----------------------------------------------------------------------


def test_size_limit_names_the_limit_and_the_way_out(settings):
    settings.UPLOAD_MAX_BYTES = 1000
    check_size("small.png", 1000)
    with pytest.raises(UploadError) as err:
        check_size("big.png", 5000)
    assert "big.png is 4.9 KiB, above the upload limit of 1,000 bytes" in str(err.value)
    assert "UPLOAD_MAX_BYTES" in str(err.value)


def test_default_limits_let_gigapixels_in_and_keep_bombs_out(settings, tmp_path):
    assert settings.SCENE_MAX_PIXELS >= 2_000_000_000  # a 32k x 32k scene and twice more
    assert settings.UPLOAD_MAX_BYTES >= 300_000_000  # a 100 MP PNG fits
    # A 60 kB PNG declaring 60,000 x 60,000 pixels (3.6 gigapixels): refused by its header.
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(60_000, 60_000))
    with pytest.raises(UploadError, match="3,600,000,000 pixels, above the limit of 2,500,000,000"):
        check_scene_image(path, "bomb.png")


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose IHDR is rewritten to declare width x height (CRC fixed up)."""
    import struct
    import zlib

    data = bytearray(scene_png(64, 64))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_a_png_whose_data_cannot_cover_its_size_is_refused_before_decoding(tmp_path):
    """Within the pixel limit, but its image data could not inflate to the declared size."""
    path = tmp_path / "lying.png"
    path.write_bytes(png_declaring(40_000, 40_000))
    with pytest.raises(UploadError, match="lying.png is truncated: its .* bytes of image data"):
        check_scene_image(path, "lying.png")


def test_a_good_image_passes(tmp_path):
    path = tmp_path / "ok.png"
    path.write_bytes(scene_png(96, 64))
    assert check_scene_image(path, "ok.png") == (96, 64, "PNG")


def test_a_truncated_image_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(truncated(scene_png(200, 200)))
    with pytest.raises(UploadError, match="cut.png is corrupt or truncated: its 'IDAT' chunk"):
        check_scene_image(path, "cut.png")


def test_a_non_image_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"these are my notes, not a picture\n" * 10)
    with pytest.raises(UploadError, match="not an image"):
        check_scene_image(path, "notes.png")


def test_too_many_pixels_is_refused_before_decoding(tmp_path, settings):
    settings.SCENE_MAX_PIXELS = 1000
    path = tmp_path / "wide.png"
    path.write_bytes(scene_png(100, 20))
    with pytest.raises(UploadError, match="2,000 pixels, above the limit of 1,000"):
        check_scene_image(path, "wide.png")


def test_other_formats_are_refused(tmp_path):
    from PIL import Image

    path = tmp_path / "anim.gif"
    Image.new("RGB", (40, 30), "red").save(path, "GIF")
    with pytest.raises(UploadError, match="GIF image; upload PNG, JPEG or TIFF"):
        check_scene_image(path, "anim.gif")


def test_safe_filename():
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\me\\my scene (1).tif") == "my_scene__1_.tif"
    assert safe_filename("...") == "upload"


def test_png_helper_round_trips():
    import numpy as np

    assert png_bytes(np.zeros((2, 2, 3), np.uint8))[:4] == b"\x89PNG"
