"""manage.py create_project / add_dataset / add_scene: what a pipeline drives without the browser.
Queued imports run for real with an RQ SimpleWorker in burst mode; --wait runs them in-process."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from helpers_data import (
    image_folder_zip,
    run_worker_burst,
    scene_png,
    storage_files,
    truncated,
    write_fake_cifar,
)

from labeling.models import Dataset, JobRecord, Project, Scene


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def sp(alice):
    run(
        "create_project", "ships and planes", "--user", "alice",
        "--class", "plane:#1f77b4:airplane", "--class", "ship::ship",
    )  # fmt: skip
    return Project.objects.get(name="ships and planes")


# --- create_project --------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_project(alice, bob):
    out, _ = run(
        "create_project", "ships and planes", "--user", "alice", "--class",
        "plane:#1f77b4:airplane,aeroplane", "--class", "ship::ship", "--window", "16",
        "--train-step", "4", "--score-step", "8", "--threshold", "0.75", "--engine", "torch",
    )  # fmt: skip
    project = Project.objects.get(name="ships and planes")
    assert f"Created project #{project.pk} 'ships and planes' for alice" in out
    assert "plane (#1f77b4) <- airplane, aeroplane" in out
    assert project.classes[0] == {
        "name": "plane", "color": "#1f77b4", "sources": ["airplane", "aeroplane"]
    }  # fmt: skip
    assert project.classes[1]["name"] == "ship" and project.classes[1]["sources"] == ["ship"]
    assert project.classes[1]["color"].startswith("#")  # a stable default colour
    assert (project.window_size, project.train_step, project.score_step) == (16, 4, 8)
    assert project.threshold == 0.75 and list(project.members.all()) == [alice]


@pytest.mark.django_db
def test_create_project_json_output_and_default_classes(alice):
    out, _ = run("create_project", "demo-like", "--user", "alice", "--json")
    body = json.loads(out)
    assert body["class_names"] == ["car", "boat", "negative"] and body["members"] == ["alice"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--class", "plane::airplane", "--class", "plane::ship"], "Class names must be unique"),
        (["--class", "plane:red:airplane"], "is not a #rrggbb value"),
        (["--class", "a/b::x"], "must be 1-40 letters"),
        (["--train-step", "0"], "train step must be between 1 and the window size"),
        (["--score-step", "10"], "should divide the window size (32)"),
        (["--threshold", "0"], "The threshold must be in (0, 1]"),
        (["--negative", "plane", "--class", "plane::airplane"], "must differ from the positive"),
    ],
)
def test_create_project_refuses_bad_input(alice, extra, message):
    with pytest.raises(CommandError) as err:
        run("create_project", "p", "--user", "alice", *extra)
    assert "The project was not created" in str(err.value) and message in str(err.value)
    assert not Project.objects.exists()


@pytest.mark.django_db
def test_create_project_needs_a_real_user():
    with pytest.raises(CommandError, match="No user 'ghost'"):
        run("create_project", "p", "--user", "ghost")


# --- add_dataset -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_add_dataset_wait_prints_progress_and_the_count_table(sp, storage_dir, tmp_path):
    zip_path = image_folder_zip(
        tmp_path / "tiles.zip", {"airplane": 5, "ship": 2, "frog": 3}, split="train",
        extra={"train/frog/bad.jpg": b"garbage"},
    )  # fmt: skip
    out, err = run("add_dataset", "ships and planes", str(zip_path), "--user", "alice", "--wait")
    dataset = Dataset.objects.get(project=sp)
    assert dataset.status == "ready"
    assert f"Dataset #{dataset.pk} 'tiles.zip': ready" in out
    lines = out.splitlines()
    assert any(line.split() == ["airplane", "5", "plane"] for line in lines), out
    assert any(line.split() == ["frog", "3", "negative"] for line in lines), out
    assert any(line.split() == ["negative", "3"] for line in lines), out
    assert "skipped files: 1" in out and "train/frog/bad.jpg: not a readable image" in out
    assert "importing tiles.zip" in err and "100%" in err  # tqdm's bar on stderr
    record = JobRecord.objects.get(kind="import_dataset")
    assert record.status == "done" and record.queue == "inline"


@pytest.mark.django_db(transaction=True)
def test_add_dataset_queues_by_default_and_a_worker_imports_it(
    sp, storage_dir, redis_conn, tmp_path
):
    tar_path, _, _ = write_fake_cifar(tmp_path, per_batch=2, n_test=3)
    out, _ = run("add_dataset", str(sp.pk), str(tar_path), "--user", "alice", "--name", "cifar")
    dataset = Dataset.objects.get(project=sp)
    assert dataset.status == "pending" and "queued (job #" in out
    run_worker_burst()
    dataset.refresh_from_db()
    assert dataset.status == "ready", dataset.error
    assert sum(dataset.class_counts["classes"].values()) == 5 * 2 + 3


@pytest.mark.django_db(transaction=True)
def test_add_dataset_from_a_storage_key(sp, storage_dir, tmp_path):
    (storage_dir / "in").mkdir()
    image_folder_zip(storage_dir / "in" / "d.zip", {"airplane": 2, "ship": 2})
    out, _ = run("add_dataset", str(sp.pk), "--key", "in/d.zip", "--user", "alice", "--wait")
    assert Dataset.objects.get(project=sp).source == "storage:in/d.zip"
    assert any(line.split() == ["ship", "2", "ship"] for line in out.splitlines())


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["../escape.zip", "/etc/passwd", "in/../../x.zip"])
def test_add_dataset_refuses_keys_outside_the_storage(sp, storage_dir, key):
    with pytest.raises(CommandError, match="paths outside the storage prefix are refused"):
        run("add_dataset", str(sp.pk), "--key", key, "--user", "alice")
    assert not Dataset.objects.exists() and not JobRecord.objects.exists()


@pytest.mark.django_db
def test_another_users_project_is_refused(sp, bob, storage_dir, tmp_path):
    zip_path = image_folder_zip(tmp_path / "d.zip", {"airplane": 1})
    with pytest.raises(CommandError, match="No project 'ships and planes' among bob's projects"):
        run("add_dataset", "ships and planes", str(zip_path), "--user", "bob")
    with pytest.raises(CommandError, match=f"No project '{sp.pk}' among bob's projects"):
        run("add_scene", str(sp.pk), str(zip_path), "--user", "bob")
    assert not Dataset.objects.exists() and storage_files(storage_dir) == []


@pytest.mark.django_db
def test_add_dataset_argument_errors(sp, storage_dir, tmp_path, settings):
    with pytest.raises(CommandError, match="exactly one of the two"):
        run("add_dataset", str(sp.pk), "--user", "alice")
    with pytest.raises(CommandError, match="no such file"):
        run("add_dataset", str(sp.pk), str(tmp_path / "missing.zip"), "--user", "alice")
    settings.UPLOAD_MAX_BYTES = 100
    zip_path = image_folder_zip(tmp_path / "d.zip", {"airplane": 2})
    with pytest.raises(CommandError, match="above the upload limit of 100 bytes"):
        run("add_dataset", str(sp.pk), str(zip_path), "--user", "alice")
    assert not Dataset.objects.exists() and storage_files(storage_dir) == []


@pytest.mark.django_db(transaction=True)
def test_add_dataset_twice_names_the_first(sp, storage_dir, tmp_path):
    zip_path = image_folder_zip(tmp_path / "d.zip", {"airplane": 2, "ship": 1})
    run("add_dataset", str(sp.pk), str(zip_path), "--user", "alice", "--wait")
    first = Dataset.objects.get()
    with pytest.raises(CommandError, match=rf"as dataset 'd.zip' \(#{first.pk}\)"):
        run("add_dataset", str(sp.pk), str(zip_path), "--user", "alice", "--wait")
    assert Dataset.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_wait_import_says_why(sp, storage_dir, tmp_path):
    zip_path = image_folder_zip(tmp_path / "pets.zip", {"cat": 2, "dog": 1})
    with pytest.raises(CommandError, match="none of the project's source classes"):
        run("add_dataset", str(sp.pk), str(zip_path), "--user", "alice", "--wait")
    assert Dataset.objects.get().status == "failed"
    assert storage_files(storage_dir) == []


# --- add_scene -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_add_scene_wait_with_ground_truth(sp, storage_dir, redis_conn, tmp_path):
    image = tmp_path / "harbour.png"
    image.write_bytes(scene_png(120, 80))
    gt = tmp_path / "gt.csv"
    gt.write_text("label,x,y,w,h\nship,4,4,32,32\nairplane,60,40,32,32\n")
    out, err = run(
        "add_scene", str(sp.pk), str(image), "--ground-truth", str(gt), "--user", "alice",
        "--wait",
    )  # fmt: skip
    scene = Scene.objects.get(project=sp)
    assert f"Scene #{scene.pk} 'harbour.png': 120 x 80 px ready" in out
    assert "preparing harbour.png" in err
    assert scene.pixels_key and scene.ground_truth_key and not scene.dzi_key
    dzi = JobRecord.objects.get(kind="dzi")
    assert dzi.status == "queued" and dzi.rq_job_id  # queued for the workers
    run_worker_burst()
    scene.refresh_from_db()
    assert scene.dzi_key


@pytest.mark.django_db(transaction=True)
def test_add_scene_queued_from_a_storage_key(sp, storage_dir, redis_conn):
    (storage_dir / "in").mkdir()
    (storage_dir / "in" / "s.png").write_bytes(scene_png(64, 64, seed=2))
    out, _ = run("add_scene", "ships and planes", "--key", "in/s.png", "--user", "alice", "--json")
    body = json.loads(out)
    assert body["image_key"] == "in/s.png" and not body["ready"]
    run_worker_burst()
    scene = Scene.objects.get(pk=body["id"])
    assert (scene.width, scene.height) == (64, 64) and scene.dzi_key


@pytest.mark.django_db
def test_add_scene_refuses_a_corrupt_image_and_keeps_nothing(sp, storage_dir, tmp_path):
    image = tmp_path / "cut.png"
    image.write_bytes(truncated(scene_png(300, 300)))
    with pytest.raises(CommandError, match="cut.png is corrupt or truncated"):
        run("add_scene", str(sp.pk), str(image), "--user", "alice")
    assert not Scene.objects.exists() and not JobRecord.objects.exists()
    assert storage_files(storage_dir) == []


@pytest.mark.django_db
def test_add_scene_refuses_bad_ground_truth(sp, storage_dir, tmp_path):
    image = tmp_path / "s.png"
    image.write_bytes(scene_png(64, 64))
    gt = tmp_path / "gt.csv"
    gt.write_text("label,x,y,w,h\nship,1,1,10,10\nship,1,1,-3,10\n")
    with pytest.raises(CommandError, match="gt.csv line 3: need x, y >= 0 and w, h > 0"):
        run("add_scene", str(sp.pk), str(image), "--ground-truth", str(gt), "--user", "alice")
    assert not Scene.objects.exists() and storage_files(storage_dir) == []


@pytest.mark.django_db
def test_add_scene_argument_errors(sp, storage_dir, tmp_path):
    with pytest.raises(CommandError, match="Give one of"):
        run("add_scene", str(sp.pk), "--user", "alice")
    with pytest.raises(CommandError, match="Give one of"):
        run("add_scene", str(sp.pk), "x.png", "--key", "y.png", "--user", "alice")
    with pytest.raises(CommandError, match="paths outside the storage prefix are refused"):
        run("add_scene", str(sp.pk), "--key", "../../etc/hosts", "--user", "alice")
    with pytest.raises(CommandError, match="--cols must be between 2 and 400"):
        run("add_scene", str(sp.pk), "--collage", "demo", "--cols", "1", "--user", "alice")
    with pytest.raises(CommandError, match="is not a ready dataset"):
        run("add_scene", str(sp.pk), "--collage", "999", "--user", "alice")


@pytest.mark.django_db(transaction=True)
def test_add_scene_collage_from_the_demo_library(sp, storage_dir, redis_conn, shared_data):
    out, _ = run(
        "add_scene", str(sp.pk), "--collage", "demo", "--cols", "12", "--user", "alice", "--wait"
    )
    scene = Scene.objects.get(project=sp)
    assert scene.width == 12 * 32 and scene.height % 32 == 0
    assert scene.ground_truth_key and scene.pixels_key and "ready" in out
