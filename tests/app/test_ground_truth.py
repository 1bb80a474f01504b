"""labeling.ground_truth: CSV and COCO JSON ground truth -> boxes, with the messages a user
sees; at most GROUND_TRUTH_MAX_BOXES boxes, parsed in memory proportional to the boxes."""

from __future__ import annotations

import json

import pytest

from labeling.ground_truth.parsing import GroundTruthError, parse_ground_truth

CLASSES = ["plane", "ship", "negative"]


def test_csv_ground_truth():
    data = b"label,x,y,w,h\nplane,10,20,32,32\nship,0,0,16.4,8\n"
    boxes = list(parse_ground_truth(data, "gt.csv", CLASSES).boxes())
    assert boxes == [
        {"id": "gt-0", "label": "plane", "x": 10, "y": 20, "w": 32, "h": 32, "order": 0,
         "visible": 1.0},
        {"id": "gt-1", "label": "ship", "x": 0, "y": 0, "w": 16, "h": 8, "order": 1,
         "visible": 1.0},
    ]  # fmt: skip


def test_csv_with_a_bom_other_column_order_and_source_names():
    data = "\ufeffX,Y,W,H,Label\n1,2,3,4,airplane\n".encode()
    boxes = parse_ground_truth(data, "gt.csv", CLASSES, aliases={"airplane": "plane"}).boxes()
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
    with pytest.raises(GroundTruthError) as err:
        parse_ground_truth(text.encode(), "gt.csv", CLASSES)
    assert message in str(err.value)


def test_boxes_outside_the_image_are_refused():
    data = b"label,x,y,w,h\nplane,90,10,32,32\n"
    with pytest.raises(GroundTruthError, match="box 1 .* reaches outside the 96x64 image"):
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
    boxes = parse_ground_truth(data, "gt.json", CLASSES).boxes()
    assert [(b["label"], b["x"], b["y"], b["w"], b["h"]) for b in boxes] == [
        ("ship", 4, 5, 20, 10),
        ("plane", 40, 30, 32, 32),
    ]


def test_our_own_json_list_is_accepted():
    data = json.dumps([{"label": "ship", "x": 1, "y": 2, "w": 3, "h": 4}]).encode()
    assert parse_ground_truth(data, "gt.json", CLASSES).box(0)["label"] == "ship"


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
    with pytest.raises(GroundTruthError) as err:
        parse_ground_truth(data, "gt.json", CLASSES)
    assert message in str(err.value)


# --- bounds ----------------------------------------------------------------------------------


def csv_of(n: int) -> bytes:
    rows = "".join(
        f"{'plane' if i % 2 else 'ship'},{i % 9000},{i % 7000},32,32\n" for i in range(n)
    )
    return ("label,x,y,w,h\n" + rows).encode()


def coco_of(n: int) -> bytes:
    annotation = {"image_id": 1, "category_id": 1, "area": 1024, "iscrowd": 0,
                  "segmentation": [[1.5, 2.5, 3.5, 4.5, 5.5, 6.5]]}  # fmt: skip
    return coco([annotation | {"id": i, "bbox": [i % 90, 5, 4, 4]} for i in range(n)])


@pytest.mark.parametrize(
    "make, name",
    [
        (csv_of, "gt.csv"),
        (coco_of, "gt.json"),
        (lambda n: json.dumps([{"label": "ship", "x": 1, "y": 2, "w": 3, "h": 4}] * n).encode(),
         "own.json"),
    ],
)  # fmt: skip
def test_more_boxes_than_the_limit_are_refused(settings, make, name):
    settings.GROUND_TRUTH_MAX_BOXES = 1000
    assert len(parse_ground_truth(make(1000), name, CLASSES)) == 1000
    with pytest.raises(GroundTruthError) as err:
        parse_ground_truth(make(1001), name, CLASSES)
    assert str(err.value) == (
        f"{name} has more than 1,000 boxes, the limit of one ground-truth file "
        "(GROUND_TRUTH_MAX_BOXES); split the scene or raise the limit."
    )


@pytest.mark.slow  # files at the 200,000-box limit
@pytest.mark.parametrize("make, bound_mb", [(csv_of, 20), (coco_of, 80)])
def test_parsing_a_file_at_the_limit_costs_memory_in_proportion(settings, make, bound_mb):
    """At the default 200,000 boxes: the CSV (4 MB) peaked at 112 MB with one dict per box
    (text, StringIO and rows on top), 8 MB now (the boxes' columns); the COCO file (31 MB, each
    annotation with a polygon) at 39 MB, most of it the file's text."""
    import io
    import tracemalloc

    assert settings.GROUND_TRUTH_MAX_BOXES == 200_000
    data = make(200_000)
    tracemalloc.start()
    try:
        table = parse_ground_truth(io.BytesIO(data), "gt", CLASSES, size=(10_000, 10_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(table) == 200_000 and table.box(199_999)["w"] == table.w[0]
    assert peak < bound_mb * 2**20, f"{peak / 2**20:.1f} MB"


def test_stored_json_is_the_boxes(tmp_path):
    import io

    table = parse_ground_truth(csv_of(25_001), "gt.csv", CLASSES)  # three chunks of JSON
    out = io.BytesIO()
    table.write_json(out)
    assert json.loads(out.getvalue()) == list(table.boxes())
    last = {"id": "gt-25000", "label": "ship", "x": 7000, "y": 4000, "w": 32, "h": 32,
            "order": 25000, "visible": 1.0}  # fmt: skip
    assert list(table.boxes())[-1] == last


@pytest.mark.django_db
def test_a_scene_upload_with_too_many_boxes_is_a_400_naming_the_limit(
    alice_client, project, storage_dir, settings
):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from helpers_data import scene_png, storage_files

    from labeling.models import JobRecord, Scene

    settings.GROUND_TRUTH_MAX_BOXES = 10
    rows = "".join(f"car,{i},0,8,8\n" for i in range(11))
    r = alice_client.post(
        f"/api/projects/{project.pk}/scenes",
        {"image": SimpleUploadedFile("s.png", scene_png(64, 64), "image/png"),
         "ground_truth": SimpleUploadedFile("gt.csv", f"label,x,y,w,h\n{rows}".encode())},
    )  # fmt: skip
    assert r.status_code == 400
    assert "gt.csv has more than 10 boxes" in r.json()["error"]
    assert "GROUND_TRUTH_MAX_BOXES" in r.json()["error"]
    assert not Scene.objects.exists() and not JobRecord.objects.exists()
    assert storage_files(storage_dir) == []
