"""The data area through the JSON API (and the pages' forms), with jobs run for real by an RQ
SimpleWorker in burst mode on Redis: projects, datasets (zip, CIFAR-10 archive, storage path),
scenes (upload, storage path, collage), limits, corrupt files, duplicates, other users."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from helpers_data import (
    image_folder_zip,
    run_worker_burst,
    scene_png,
    storage_files,
    truncated,
    write_fake_cifar,
)

from labeling.models import Dataset, JobRecord, Project, Scene

SHIPS_AND_PLANES = [
    {"name": "plane", "color": "#1f77b4", "sources": ["airplane"]},
    {"name": "ship", "color": "#ff7f0e", "sources": ["ship"]},
]


@pytest.fixture
def sp(alice):
    p = Project.objects.create(name="ships and planes", classes=SHIPS_AND_PLANES)
    p.members.add(alice)
    return p


@pytest.fixture
def bob_client(bob):
    c = Client()
    c.force_login(bob)
    return c


def post_json(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def upload(name, data, content_type="application/octet-stream"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def small_zip(tmp_path, name="planes.zip", **kwargs):
    counts = kwargs.pop("counts", {"airplane": 4, "ship": 3, "cat": 2})
    return image_folder_zip(tmp_path / name, counts, **kwargs)


# --- projects --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_a_project_through_the_api(alice_client, alice):
    r = post_json(
        alice_client,
        "/api/projects",
        {"name": "ships and planes", "classes": SHIPS_AND_PLANES, "window_size": 32,
         "train_step": 8, "score_step": 16, "threshold": 0.8, "engine": "torch"},
    )  # fmt: skip
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["class_names"] == ["plane", "ship", "negative"]
    assert body["members"] == ["alice"] and body["threshold"] == 0.8
    project = Project.objects.get(pk=body["id"])
    assert project.classes == SHIPS_AND_PLANES and alice in project.members.all()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change, message",
    [
        ({"classes": []}, "Add at least one positive class"),
        (
            {"classes": SHIPS_AND_PLANES + [{"name": "Plane", "color": "#000000", "sources": []}]},
            "Class names must be unique",
        ),  # fmt: skip
        ({"classes": [{"name": "plane", "color": "blue", "sources": []}]}, "is not a #rrggbb"),
        ({"negative_class": "plane"}, "must differ from the positive classes"),
        ({"window_size": 0}, "window size must be at least 1"),
        ({"train_step": 64}, "train step must be between 1 and the window size"),
        ({"score_step": 12}, "scoring step (12) should divide the window size (32)"),
        ({"threshold": 1.5}, "threshold must be in (0, 1]"),
        ({"engine": "caffe"}, "Select a valid choice"),
        ({"name": ""}, "name: This field is required"),
    ],
)
def test_invalid_projects_are_refused_with_the_reason(alice_client, change, message):
    body = {"name": "p", "classes": SHIPS_AND_PLANES, **change}
    r = post_json(alice_client, "/api/projects", body)
    assert r.status_code == 400
    assert message in r.json()["error"]
    assert not Project.objects.exists()


@pytest.mark.django_db
def test_a_project_name_is_unique(alice_client, sp):
    r = post_json(alice_client, "/api/projects", {"name": "ships and planes"})
    assert r.status_code == 400 and "already exists" in r.json()["error"]


@pytest.mark.django_db
def test_the_project_page_form_keeps_the_rows_and_shows_the_errors(alice_client):
    r = alice_client.post(
        "/projects/new/",
        {"name": "x", "class_name": ["plane", "plane", ""], "class_color": ["#111111"] * 3,
         "class_sources": ["airplane", "ship", ""], "negative_class": "negative",
         "window_size": 32, "train_step": 8, "score_step": 16, "threshold": 0.9,
         "engine": "torch"},
    )  # fmt: skip
    assert r.status_code == 200
    html = r.content.decode()
    assert "Class names must be unique." in html
    assert html.count('name="class_name"') == 3  # the two rows typed plus a spare one
    assert not Project.objects.exists()


@pytest.mark.django_db
def test_the_project_page_creates_the_project_and_goes_to_datasets(alice_client, alice):
    r = alice_client.post(
        "/projects/new/",
        {"name": "ships and planes", "class_name": ["plane", "ship", ""],
         "class_color": ["#1f77b4", "#ff7f0e", "#4363d8"],
         "class_sources": ["airplane", "ship", ""], "negative_class": "negative",
         "window_size": 32, "train_step": 8, "score_step": 16, "threshold": 0.9,
         "engine": "torch"},
    )  # fmt: skip
    project = Project.objects.get(name="ships and planes")
    assert r.status_code == 302 and r.url == f"/projects/{project.pk}/datasets/new/"
    assert project.classes == SHIPS_AND_PLANES
    assert list(project.members.all()) == [alice]


@pytest.mark.django_db
def test_the_api_wants_a_login(client, sp):
    r = client.get(f"/api/projects/{sp.pk}/datasets")
    assert r.status_code == 401 and "authentication required" in r.json()["error"]


# --- another user's project ------------------------------------------------------------------


@pytest.mark.django_db
def test_another_users_project_is_a_404_everywhere(bob_client, sp, storage_dir, tmp_path):
    zip_path = small_zip(tmp_path)
    urls = [
        f"/api/projects/{sp.pk}/datasets",
        f"/api/projects/{sp.pk}/scenes",
        f"/projects/{sp.pk}/datasets/new/",
        f"/projects/{sp.pk}/scenes/new/",
    ]
    for url in urls:
        assert bob_client.get(url).status_code == 404, url
    r = bob_client.post(
        f"/api/projects/{sp.pk}/datasets", {"file": upload("d.zip", zip_path.read_bytes())}
    )
    assert r.status_code == 404 and r.json() == {"error": "No such project among yours."}
    r = bob_client.post(f"/api/projects/{sp.pk}/scenes", {"image": upload("s.png", scene_png())})
    assert r.status_code == 404
    r = post_json(bob_client, f"/api/projects/{sp.pk}/scenes", {"storage_key": "x.png"})
    assert r.status_code == 404
    assert not Dataset.objects.exists() and not Scene.objects.exists()
    assert storage_files(storage_dir) == []


@pytest.mark.django_db
def test_another_projects_dataset_is_a_404(alice_client, alice, sp):
    other = Project.objects.create(name="other")
    other.members.add(alice)
    dataset = Dataset.objects.create(project=other, name="d", source="test")
    r = alice_client.get(f"/api/projects/{sp.pk}/datasets/{dataset.pk}")
    assert r.status_code == 404 and "No such dataset" in r.json()["error"]
    assert alice_client.get(f"/api/projects/{other.pk}/datasets/{dataset.pk}").status_code == 200


# --- datasets --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_upload_a_zip_import_it_and_read_the_count_table(
    alice_client, sp, storage_dir, redis_conn, tmp_path
):
    zip_path = small_zip(
        tmp_path,
        extra={"ship/broken.jpg": b"\xff\xd8\xff not really a jpeg", "README.txt": b"hello"},
    )
    r = alice_client.post(
        f"/api/projects/{sp.pk}/datasets",
        {"file": upload("planes.zip", zip_path.read_bytes()), "name": "my tiles"},
    )
    assert r.status_code == 202, r.content
    state = r.json()
    assert state["status"] == "pending" and state["job"]["status"] == "queued"
    run_worker_burst()
    r = alice_client.get(f"/api/projects/{sp.pk}/datasets/{state['id']}")
    state = r.json()
    assert state["status"] == "ready", state["error"]
    assert state["job"]["status"] == "done" and state["job"]["fraction"] == 1.0
    assert state["class_counts"] == {
        "sources": {
            "airplane": {"count": 4, "to": "plane"},
            "ship": {"count": 3, "to": "ship"},
            "cat": {"count": 2, "to": "negative"},
        },
        "classes": {"plane": 4, "ship": 3, "negative": 2},
    }
    assert list(state["class_counts"]["classes"]) == ["plane", "ship", "negative"]
    skipped = dict(state["skipped"])
    assert "not a readable image" in skipped["ship/broken.jpg"]
    assert skipped["README.txt"] == "outside the <split>/<class>/ layout"
    dataset = Dataset.objects.get(pk=state["id"])
    assert dataset.storage_key in storage_files(storage_dir)
    from labeling.projects.storage_keys import get_storage
    from mlcore.data.datasets import LabelledImages

    local = get_storage().local_path(dataset.storage_key)
    images = LabelledImages.load_npz(local)
    assert images.class_names == ["plane", "ship", "negative"] and len(images) == 9
    # The page shows the same table.
    page = alice_client.get(state["url"]).content.decode()
    assert 'id="count-table"' in page and "<td>airplane</td><td>4</td><td>plane</td>" in page


@pytest.mark.django_db(transaction=True)
def test_upload_the_cifar10_archive(alice_client, sp, storage_dir, redis_conn, tmp_path):
    tar_path, _folder, truth = write_fake_cifar(tmp_path, per_batch=3, n_test=5)
    r = alice_client.post(
        f"/api/projects/{sp.pk}/datasets",
        {"file": upload("cifar-10-python.tar.gz", tar_path.read_bytes()), "split": "test"},
    )
    assert r.status_code == 202, r.content
    run_worker_burst()
    dataset = Dataset.objects.get(pk=r.json()["id"])
    assert dataset.status == "ready", dataset.error
    assert sum(dataset.class_counts["classes"].values()) == 5
    labels = truth["test_batch"][1].tolist()
    assert dataset.class_counts["classes"]["plane"] == labels.count(0)
    assert dataset.class_counts["classes"]["ship"] == labels.count(8)


@pytest.mark.django_db(transaction=True)
def test_a_dataset_from_a_storage_path(alice_client, sp, storage_dir, redis_conn, tmp_path):
    (storage_dir / "incoming").mkdir()
    small_zip(storage_dir / "incoming", name="tiles.zip", split="train")
    r = post_json(
        alice_client,
        f"/api/projects/{sp.pk}/datasets",
        {"storage_key": "incoming/tiles.zip", "split": "train"},
    )
    assert r.status_code == 202, r.content
    run_worker_burst()
    dataset = Dataset.objects.get(pk=r.json()["id"])
    assert dataset.status == "ready" and dataset.source == "storage:incoming/tiles.zip"
    assert dataset.class_counts["classes"] == {"plane": 4, "ship": 3, "negative": 2}
    assert (storage_dir / "incoming" / "tiles.zip").exists()  # the user's file is left alone
    again = post_json(
        alice_client, f"/api/projects/{sp.pk}/datasets", {"storage_key": "incoming/tiles.zip"}
    )
    assert again.status_code == 400 and "already imported" in again.json()["error"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "key, message",
    [
        ("../outside.zip", "'..' segment"),
        ("/etc/passwd", "absolute"),
        ("incoming/../../x.zip", "'..' segment"),
        ("projects/999/datasets/1/upload/x.zip", "another project's folder"),
        ("incoming/missing.zip", "No object 'incoming/missing.zip'"),
    ],
)
def test_storage_paths_outside_the_prefix_are_refused(alice_client, sp, storage_dir, key, message):
    r = post_json(alice_client, f"/api/projects/{sp.pk}/datasets", {"storage_key": key})
    assert r.status_code == 400
    assert message in r.json()["error"]
    r = post_json(alice_client, f"/api/projects/{sp.pk}/scenes", {"storage_key": key})
    assert r.status_code == 400 and message in r.json()["error"]
    assert not Dataset.objects.exists() and not Scene.objects.exists()
    assert not JobRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_same_dataset_twice_names_the_first(
    alice_client, sp, storage_dir, redis_conn, tmp_path
):
    data = small_zip(tmp_path).read_bytes()
    first = alice_client.post(f"/api/projects/{sp.pk}/datasets", {"file": upload("a.zip", data)})
    assert first.status_code == 202
    files_before = storage_files(storage_dir)
    second = alice_client.post(f"/api/projects/{sp.pk}/datasets", {"file": upload("b.zip", data)})
    assert second.status_code == 400
    error = second.json()["error"]
    first_id = first.json()["id"]
    assert f"already added to this project as dataset 'a.zip' (#{first_id})" in error
    assert f"/projects/{sp.pk}/datasets/{first_id}/" in error
    assert Dataset.objects.count() == 1 and storage_files(storage_dir) == files_before


@pytest.mark.django_db
def test_an_oversized_upload_leaves_nothing(alice_client, sp, storage_dir, settings, tmp_path):
    settings.UPLOAD_MAX_BYTES = 2000
    data = small_zip(tmp_path).read_bytes()
    assert len(data) > 2000
    r = alice_client.post(f"/api/projects/{sp.pk}/datasets", {"file": upload("big.zip", data)})
    assert r.status_code == 400
    assert "big.zip is" in r.json()["error"] and "UPLOAD_MAX_BYTES" in r.json()["error"]
    r = alice_client.post(
        f"/api/projects/{sp.pk}/scenes", {"image": upload("big.png", scene_png(200, 200))}
    )
    assert r.status_code == 400 and "above the upload limit of 2.0 KiB" in r.json()["error"]
    assert not Dataset.objects.exists() and not Scene.objects.exists()
    assert not JobRecord.objects.exists() and storage_files(storage_dir) == []


@pytest.mark.django_db
def test_a_file_that_is_no_dataset_is_refused(alice_client, sp, storage_dir):
    r = alice_client.post(
        f"/api/projects/{sp.pk}/datasets", {"file": upload("notes.zip", b"plain text")}
    )
    assert r.status_code == 400 and "is neither a zip" in r.json()["error"]
    assert not Dataset.objects.exists() and storage_files(storage_dir) == []


@pytest.mark.django_db(transaction=True)
def test_a_zip_without_the_projects_classes_fails_with_the_reason_and_no_files(
    alice_client, sp, storage_dir, redis_conn, tmp_path
):
    data = small_zip(tmp_path, counts={"cat": 2, "dog": 2}).read_bytes()
    r = alice_client.post(f"/api/projects/{sp.pk}/datasets", {"file": upload("pets.zip", data)})
    assert r.status_code == 202
    run_worker_burst()
    state = alice_client.get(f"/api/projects/{sp.pk}/datasets/{r.json()['id']}").json()
    assert state["status"] == "failed"
    assert "none of the project's source classes ['airplane', 'ship']" in state["error"]
    assert state["job"]["status"] == "failed"
    assert storage_files(storage_dir) == []  # the upload went with the failure


# --- scenes ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_upload_a_scene_with_csv_ground_truth(alice_client, sp, storage_dir, redis_conn):
    gt = b"label,x,y,w,h\nairplane,10,10,32,32\nship,50,20,32,32\n"
    r = alice_client.post(
        f"/api/projects/{sp.pk}/scenes",
        {"image": upload("harbour.png", scene_png(96, 64), "image/png"),
         "ground_truth": upload("gt.csv", gt, "text/csv")},
    )  # fmt: skip
    assert r.status_code == 202, r.content
    state = r.json()
    assert (state["width"], state["height"]) == (96, 64) and not state["ready"]
    run_worker_burst()  # the import, then the deep-zoom job it queues
    state = alice_client.get(f"/api/projects/{sp.pk}/scenes/{state['id']}/import").json()
    assert state["ready"] and state["dzi_key"], state
    assert state["jobs"]["import_scene"]["status"] == "done"
    assert state["jobs"]["dzi"]["status"] == "done"
    scene = Scene.objects.get(pk=state["id"])
    from labeling.projects.storage_keys import get_storage
    from mlcore.ingest.scenes import NpyScene

    storage = get_storage()
    pixels = NpyScene(storage, scene.pixels_key)
    assert (pixels.height, pixels.width) == (64, 96)
    boxes = json.loads(storage.read(scene.ground_truth_key))
    assert [(b["label"], b["x"], b["y"]) for b in boxes] == [("plane", 10, 10), ("ship", 50, 20)]
    assert storage.exists(scene.dzi_key)
    listed = alice_client.get(f"/api/projects/{sp.pk}/scenes").json()["scenes"]
    assert [s["name"] for s in listed] == ["harbour.png"]


@pytest.mark.django_db(transaction=True)
def test_upload_a_scene_with_coco_ground_truth(alice_client, sp, storage_dir, redis_conn):
    coco = {
        "images": [{"id": 1, "file_name": "s.png", "width": 96, "height": 64}],
        "categories": [{"id": 5, "name": "ship"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 30, 20]}],
    }
    r = alice_client.post(
        f"/api/projects/{sp.pk}/scenes",
        {"image": upload("s.png", scene_png(96, 64)),
         "ground_truth": upload("gt.json", json.dumps(coco).encode())},
    )  # fmt: skip
    assert r.status_code == 202, r.content
    from labeling.projects.storage_keys import get_storage

    scene = Scene.objects.get(pk=r.json()["id"])
    boxes = json.loads(get_storage().read(scene.ground_truth_key))
    assert [(b["label"], b["x"], b["y"], b["w"], b["h"]) for b in boxes] == [("ship", 1, 2, 30, 20)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name, data, message",
    [
        ("gt.csv", b"label,x,y,w,h\nplane,1,2,3,4\nship,1,x,3,4\n",
         "gt.csv line 3: x, y, w, h must be numbers"),
        ("gt.csv", b"label,x,y\nplane,1,2\n", "CSV lacks columns ['w', 'h']"),
        ("gt.csv", b"label,x,y,w,h\ntank,1,2,3,4\n", "labels ['tank'] are not classes"),
        ("gt.csv", b"label,x,y,w,h\nplane,80,10,32,32\n", "reaches outside the 96x64 image"),
        ("gt.json", b'{"annotations": [{"bbox": [1, 2], "category_id": 1}], "categories": []}',
         "annotation 0: bbox must be [x, y, w, h]"),
    ],
)  # fmt: skip
def test_bad_ground_truth_is_refused_and_nothing_is_stored(
    alice_client, sp, storage_dir, name, data, message
):
    r = alice_client.post(
        f"/api/projects/{sp.pk}/scenes",
        {"image": upload("s.png", scene_png(96, 64)), "ground_truth": upload(name, data)},
    )
    assert r.status_code == 400
    assert message in r.json()["error"]
    assert not Scene.objects.exists() and storage_files(storage_dir) == []


@pytest.mark.django_db
def test_a_corrupt_scene_image_is_refused_with_the_reason(alice_client, sp, storage_dir):
    r = alice_client.post(
        f"/api/projects/{sp.pk}/scenes",
        {"image": upload("cut.png", truncated(scene_png(300, 200)), "image/png")},
    )
    assert r.status_code == 400
    assert r.json()["error"].startswith("cut.png is corrupt or truncated")
    r = alice_client.post(
        f"/api/projects/{sp.pk}/scenes", {"image": upload("text.jpg", b"no pixels here")}
    )
    assert r.status_code == 400 and r.json()["error"].startswith("text.jpg is not an image")
    assert not Scene.objects.exists() and not JobRecord.objects.exists()
    assert storage_files(storage_dir) == []


@pytest.mark.django_db
def test_a_decompression_bomb_is_refused(alice_client, sp, storage_dir, settings):
    settings.SCENE_MAX_PIXELS = 5000
    r = alice_client.post(
        f"/api/projects/{sp.pk}/scenes", {"image": upload("bomb.png", scene_png(100, 100))}
    )
    assert r.status_code == 400
    assert "10,000 pixels, above the limit of 5,000" in r.json()["error"]
    assert not Scene.objects.exists() and storage_files(storage_dir) == []


@pytest.mark.django_db(transaction=True)
def test_the_same_scene_twice_names_the_first(alice_client, sp, storage_dir, redis_conn):
    data = scene_png(96, 64, seed=3)
    first = alice_client.post(f"/api/projects/{sp.pk}/scenes", {"image": upload("a.png", data)})
    assert first.status_code == 202
    second = alice_client.post(f"/api/projects/{sp.pk}/scenes", {"image": upload("b.png", data)})
    assert second.status_code == 400
    assert f"as scene 'a.png' (#{first.json()['id']})" in second.json()["error"]
    assert Scene.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_scene_from_the_storage(alice_client, sp, storage_dir, redis_conn):
    (storage_dir / "incoming").mkdir()
    (storage_dir / "incoming" / "strip.png").write_bytes(scene_png(128, 40, seed=5))
    r = post_json(
        alice_client, f"/api/projects/{sp.pk}/scenes", {"storage_key": "incoming/strip.png"}
    )
    assert r.status_code == 202, r.content
    run_worker_burst()
    scene = Scene.objects.get(pk=r.json()["id"])
    assert (scene.width, scene.height) == (128, 40) and scene.pixels_key and scene.dzi_key
    assert scene.image_key == "incoming/strip.png" and len(scene.sha256) == 64


@pytest.mark.django_db(transaction=True)
def test_a_corrupt_image_in_the_storage_fails_its_job_and_the_scene_goes(
    alice_client, sp, storage_dir, redis_conn
):
    (storage_dir / "incoming").mkdir()
    (storage_dir / "incoming" / "cut.png").write_bytes(truncated(scene_png(300, 200)))
    r = post_json(
        alice_client, f"/api/projects/{sp.pk}/scenes", {"storage_key": "incoming/cut.png"}
    )
    assert r.status_code == 202
    scene_id = r.json()["id"]
    run_worker_burst()
    r = alice_client.get(f"/api/projects/{sp.pk}/scenes/{scene_id}/import")
    assert r.status_code == 410 and r.json()["removed"]
    assert "corrupt or truncated" in r.json()["job"]["error"]
    assert not Scene.objects.exists()
    assert storage_files(storage_dir) == ["incoming/cut.png"]  # the user's own file stays


@pytest.mark.django_db(transaction=True)
def test_a_collage_from_an_imported_dataset(alice_client, sp, storage_dir, redis_conn, tmp_path):
    data = small_zip(tmp_path, counts={"airplane": 6, "ship": 6, "cat": 6}).read_bytes()
    r = alice_client.post(f"/api/projects/{sp.pk}/datasets", {"file": upload("t.zip", data)})
    run_worker_burst()
    dataset_id = r.json()["id"]
    r = alice_client.post(
        f"/api/projects/{sp.pk}/scenes",
        {"source": "collage", "tiles": str(dataset_id), "cols": 6,
         "target": upload("target.png", scene_png(60, 40, seed=9))},
    )  # fmt: skip
    assert r.status_code == 202, r.content
    run_worker_burst()
    scene = Scene.objects.get(pk=r.json()["id"])
    assert scene.width == 6 * 32 and scene.pixels_key and scene.dzi_key and scene.ground_truth_key
    from labeling.projects.storage_keys import get_storage

    boxes = json.loads(get_storage().read(scene.ground_truth_key))
    assert boxes and {b["label"] for b in boxes} <= {"plane", "ship", "negative"}


@pytest.mark.django_db
def test_a_collage_needs_a_ready_tile_library(alice_client, sp, storage_dir):
    r = post_json(
        alice_client, f"/api/projects/{sp.pk}/scenes", {"collage": {"tiles": "12345", "cols": 8}}
    )
    assert r.status_code == 400 and "is not a ready dataset of this project" in r.json()["error"]
    r = post_json(
        alice_client, f"/api/projects/{sp.pk}/scenes", {"collage": {"tiles": "cifar", "cols": 8}}
    )
    assert r.status_code == 400 and "'cifar' is not a ready dataset" in r.json()["error"]
    r = post_json(alice_client, f"/api/projects/{sp.pk}/scenes", {"collage": {"cols": "many"}})
    assert r.status_code == 400 and "whole numbers" in r.json()["error"]


@pytest.mark.django_db
def test_scene_form_page_shows_upload_errors(alice_client, sp, storage_dir, settings):
    settings.UPLOAD_MAX_BYTES = 1000
    r = alice_client.post(
        f"/projects/{sp.pk}/scenes/new/",
        {"source": "upload", "cols": 80, "image": upload("big.png", scene_png(100, 100))},
    )
    assert r.status_code == 400
    assert "above the upload limit" in r.content.decode()
    assert not Scene.objects.exists() and storage_files(storage_dir) == []


@pytest.mark.django_db(transaction=True)
def test_a_zip_without_images_fails_naming_the_file_not_the_server_path(
    alice_client, sp, storage_dir, redis_conn, tmp_path
):
    import zipfile

    path = tmp_path / "empty.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes/readme.txt", "no images here")
    r = alice_client.post(
        f"/api/projects/{sp.pk}/datasets", {"file": upload("empty.zip", path.read_bytes())}
    )
    assert r.status_code == 202
    run_worker_burst()
    dataset = Dataset.objects.get(pk=r.json()["id"])
    assert dataset.status == "failed"
    assert dataset.error.startswith("empty.zip: no images found; expected <split>/<class>/")
    assert str(storage_dir) not in dataset.error
    assert storage_files(storage_dir) == []


@pytest.mark.django_db(transaction=True)
def test_a_new_scene_is_queued_for_scoring_with_the_current_model(
    alice_client, sp, storage_dir, redis_conn
):
    from labeling.models import ModelVersion, ScoringRun

    model = ModelVersion.objects.create(
        project=sp, number=1, status="ready", is_current=True, model_key="m.onnx"
    )
    r = alice_client.post(f"/api/projects/{sp.pk}/scenes", {"image": upload("s.png", scene_png())})
    assert r.status_code == 202
    run_worker_burst("default")  # the import and the deep-zoom tiles; scoring waits on `score`
    scene = Scene.objects.get(pk=r.json()["id"])
    run = ScoringRun.objects.get(scene=scene)
    assert run.model_version == model and run.status == "queued"
    job = JobRecord.objects.get(kind="score")
    assert job.queue == "score" and job.params == {"run_id": run.pk} and job.rq_job_id
    import django_rq

    assert django_rq.get_queue("score").job_ids == [job.rq_job_id]


@pytest.mark.django_db(transaction=True)
def test_a_scene_above_the_in_memory_size_streams_through_a_temporary_file(
    alice_client, sp, storage_dir, redis_conn, settings, tmp_path
):
    import hashlib

    data = scene_png(1300, 1200, seed=4)  # random pixels: ~4.5 MiB of PNG
    assert len(data) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    r = alice_client.post(f"/api/projects/{sp.pk}/scenes", {"image": upload("big.png", data)})
    assert r.status_code == 202, r.content
    run_worker_burst()
    scene = Scene.objects.get(pk=r.json()["id"])
    assert (scene.width, scene.height) == (1300, 1200) and scene.dzi_key
    stored = (storage_dir / scene.image_key).read_bytes()
    assert stored == data and scene.sha256 == hashlib.sha256(data).hexdigest()
