"""labeling.uploads: storage keys named by users, size and pixel limits, image checks and the
ground-truth parsers (CSV and COCO JSON), with the messages a user sees."""

from __future__ import annotations

import json
import os

import pytest
from helpers_data import png_bytes, scene_png, truncated

from labeling.uploads import (
    UploadError,
    check_scene_image,
    check_size,
    check_user_key,
    parse_ground_truth,
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


def test_default_limits_let_100_megapixels_in_and_keep_bombs_out(settings):
    from PIL import Image

    assert settings.SCENE_MAX_PIXELS >= 100_000_000
    assert settings.SCENE_MAX_PIXELS < 4 * Image.MAX_IMAGE_PIXELS  # a bomb stays a bomb
    assert settings.UPLOAD_MAX_BYTES >= 300_000_000  # a 100 MP PNG fits


def test_a_good_image_passes(tmp_path):
    path = tmp_path / "ok.png"
    path.write_bytes(scene_png(96, 64))
    assert check_scene_image(path, "ok.png") == (96, 64, "PNG")


def test_a_truncated_image_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(truncated(scene_png(200, 200)))
    with pytest.raises(UploadError, match="corrupt or truncated"):
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


# --- ground truth ----------------------------------------------------------------------------


def test_csv_ground_truth():
    data = b"label,x,y,w,h\nplane,10,20,32,32\nship,0,0,16.4,8\n"
    boxes = parse_ground_truth(data, "gt.csv", CLASSES)
    assert boxes == [
        {"id": "gt-0", "label": "plane", "x": 10, "y": 20, "w": 32, "h": 32, "order": 0,
         "visible": 1.0},
        {"id": "gt-1", "label": "ship", "x": 0, "y": 0, "w": 16, "h": 8, "order": 1,
         "visible": 1.0},
    ]  # fmt: skip


def test_csv_with_a_bom_other_column_order_and_source_names():
    data = "\ufeffX,Y,W,H,Label\n1,2,3,4,airplane\n".encode()
    boxes = parse_ground_truth(data, "gt.csv", CLASSES, aliases={"airplane": "plane"})
    assert [(b["label"], b["x"], b["y"], b["w"], b["h"]) for b in boxes] == [("plane", 1, 2, 3, 4)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("label,x,y\nplane,1,2\n", "gt.csv: CSV lacks columns ['w', 'h']"),
        (
            "label,x,y,w,h\nplane,1,2,3,4\nship,a,2,3,4\n",
            "gt.csv line 3: x, y, w, h must be numbers",
        ),
        ("label,x,y,w,h\nplane,1,2,0,4\n", "gt.csv line 2: need x, y >= 0 and w, h > 0"),
        ("label,x,y,w,h\nplane,-5,2,3,4\n", "gt.csv line 2: need x, y >= 0"),
        ("label,x,y,w,h\n,1,2,3,4\n", "gt.csv line 2: the label is empty"),
        ("label,x,y,w,h\nplane,1,2,3\n", "gt.csv line 2: x, y, w, h must be numbers"),
        ("label,x,y,w,h\n", "no boxes found"),
        ("", "the ground-truth file is empty"),
        ("label,x,y,w,h\ncar,1,2,3,4\n", "labels ['car'] are not classes of this project"),
    ],
)
def test_bad_csv_rows_give_clear_errors(text, message):
    with pytest.raises(UploadError) as err:
        parse_ground_truth(text.encode(), "gt.csv", CLASSES)
    assert message in str(err.value)


def test_boxes_outside_the_image_are_refused():
    data = b"label,x,y,w,h\nplane,90,10,32,32\n"
    with pytest.raises(UploadError, match="box 1 .* reaches outside the 96x64 image"):
        parse_ground_truth(data, "gt.csv", CLASSES, size=(96, 64))


def coco(annotations, categories=None, images=None):
    doc = {
        "images": images if images is not None else [{"id": 1, "width": 96, "height": 64}],
        "categories": categories or [{"id": 1, "name": "plane"}, {"id": 2, "name": "ship"}],
        "annotations": annotations,
    }
    return json.dumps(doc).encode()


def test_coco_ground_truth():
    data = coco(
        [
            {"id": 7, "image_id": 1, "category_id": 2, "bbox": [4.0, 5.0, 20.0, 10.0]},
            {"id": 8, "image_id": 1, "category_id": 1, "bbox": [40, 30, 32, 32]},
        ]
    )
    boxes = parse_ground_truth(data, "gt.json", CLASSES)
    assert [(b["label"], b["x"], b["y"], b["w"], b["h"]) for b in boxes] == [
        ("ship", 4, 5, 20, 10),
        ("plane", 40, 30, 32, 32),
    ]


def test_our_own_json_list_is_accepted():
    data = json.dumps([{"label": "ship", "x": 1, "y": 2, "w": 3, "h": 4}]).encode()
    assert parse_ground_truth(data, "gt.json", CLASSES)[0]["label"] == "ship"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"{not json", "gt.json: not valid JSON"),
        (b'{"images": []}', "expected COCO JSON with 'annotations' and 'categories'"),
        (coco([{"category_id": 1, "bbox": [1, 2, 3]}]), "annotation 0: bbox must be [x, y, w, h]"),
        (coco([{"category_id": 9, "bbox": [1, 2, 3, 4]}]), "category_id 9 is not listed"),
        (coco([{"category_id": 1, "bbox": [1, 2, "w", 4]}]), "must be numbers"),
        (coco([], images=[{"id": 1}, {"id": 2}]), "describes 2 images"),
        (
            coco([{"category_id": 3, "bbox": [1, 2, 3, 4]}], [{"id": 3, "name": "tank"}]),
            "labels ['tank'] are not classes of this project",
        ),
        (b"\xff\xfe\x00binary", "not a text file"),
    ],
)
def test_bad_coco_gives_clear_errors(data, message):
    with pytest.raises(UploadError) as err:
        parse_ground_truth(data, "gt.json", CLASSES)
    assert message in str(err.value)


def test_png_helper_round_trips():
    import numpy as np

    assert png_bytes(np.zeros((2, 2, 3), np.uint8))[:4] == b"\x89PNG"
