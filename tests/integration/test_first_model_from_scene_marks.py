"""A project with no tile dataset learns its first model from what reviewers mark on its scene
(issue 34.2): objects (any class) and background ("nothing here", a review answer of the negative
class at any spot). Only the marked windows become training samples (exact, at their own
place): no dataset canvas exists, so no unmarked pixel teaches "negative". A share of the marks
is held out to calibrate the thresholds and the model's row says so. Without at least one object
and one background mark the first model is refused in words. Real PostgreSQL, Redis, RQ workers
(burst, in this process), Spark local."""

from __future__ import annotations

import pytest
from loop_helpers import add_scene, run_workers

from labeling.loop.cycle import start_cycle
from labeling.loop.first_model import NothingToTrainOn
from labeling.models import ModelVersion, Scene, ScoringRun, TrainingCanvas
from labeling.review.annotations import record_annotation
from workers.loop_jobs import CanvasDir

pytestmark = pytest.mark.django_db(transaction=True)
OWN = [{"name": "red", "color": "#e6194b", "sources": []},
       {"name": "blue", "color": "#4363d8", "sources": []}]  # fmt: skip


@pytest.fixture
def own_project(project, settings, storage_dir):
    settings.SPARK_MASTER = "local[2]"
    settings.DEFAULT_TRAIN_PROFILE = "tiny"
    project.classes = OWN
    project.save()
    return project


def mark(project, scene, user, truth, per_class: int = 5) -> dict[str, int]:
    """Marks on the synthetic scene's tiles (test_loop.add_scene: colour 0 red, 1 blue, 2 the
    rest): objects by class, the rest as "nothing here"."""
    name = {"car": "red", "boat": "blue", "negative": "negative"}
    counts = dict.fromkeys(name.values(), 0)
    for box in truth:
        label = name[box["label"]]
        if counts[label] >= per_class:
            continue
        kind = "review" if label == "negative" else "false_negative"
        record_annotation(project, scene, user, kind=kind, label=label, x=box["x"],
                          y=box["y"], w=box["w"], h=box["h"])  # fmt: skip
        counts[label] += 1
    return counts


def test_the_scene_alone_teaches_the_first_model(redis_conn, own_project, alice, client):
    project = own_project
    scene, truth = add_scene(project, size=256)
    Scene.objects.filter(pk=scene.pk).update(ground_truth_key="")  # the user's own scene
    client.force_login(alice)

    # Nothing marked yet: refused, and told how to start from the scene.
    answer = client.post(f"/api/projects/{project.pk}/retrain", {},
                         content_type="application/json")  # fmt: skip
    assert answer.status_code == 409
    assert "start from a scene alone" in answer.json()["error"]
    assert '"nothing here"' in answer.json()["error"]
    # Objects but no background: still refused, with the counts so far.
    first = next(b for b in truth if b["label"] == "car")
    record_annotation(project, scene, alice, kind="false_negative", label="red", x=first["x"],
                      y=first["y"], w=32, h=32)  # fmt: skip
    with pytest.raises(NothingToTrainOn, match="so far 1 object and 0 background marks"):
        start_cycle(project, alice, profile="tiny")
    assert not ModelVersion.objects.exists()

    counts = mark(project, scene, alice, truth)
    assert counts == {"red": 5, "blue": 5, "negative": 5}
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "Train the first model</button>" in page
    assert "10 objects and 5 background marks" in page

    answer = client.post(f"/api/projects/{project.pk}/retrain", {},
                         content_type="application/json")  # fmt: skip
    assert answer.status_code == 202, answer.content
    run_workers("train", "score")
    version = project.current_model()
    assert version is not None and version.status == "ready", version
    assert ScoringRun.objects.get(model_version=version, scene=scene).status == "done"

    # Only the marked windows were learnt: no dataset canvas, every sample an exact mark.
    assert not TrainingCanvas.objects.filter(project=project, kind="original").exists()
    cset = CanvasDir(project).load()
    assert all(c.layout == "exact" for c in cset.canvases)
    held = version.data_counts["calibration_marks"]
    assert held == {"red": 1, "blue": 1, "negative": 1}  # 20% of 5 a class
    trained = sum(len(c.placements) for c in cset.canvases)
    assert trained == 15 - sum(held.values())
    # Calibrated on the held-out marks, and the model's row says so.
    assert cset.calibration is not None and version.thresholds
    assert set(version.thresholds) == {"red", "blue"}
    page = client.get(f"/projects/{project.pk}/").content.decode()
    said = "calibrated on held-out scene marks (1 red, 1 blue, 1 negative; never trained on)"
    assert said in page

    # The next marks fine-tune it; the held-out ones never join training.
    more = next(b for b in reversed(truth) if b["label"] == "boat")
    record_annotation(project, scene, alice, kind="false_negative", label="blue", x=more["x"],
                      y=more["y"], w=32, h=32)  # fmt: skip
    start_cycle(project, alice, profile="tiny")
    run_workers("train", "score")
    v2 = project.current_model()
    assert v2.number == 2 and v2.status == "ready"
    cset = CanvasDir(project).load()
    assert sum(len(c.placements) for c in cset.canvases) == trained + 1


@pytest.fixture
def start_dir(tmp_path, monkeypatch):
    from helpers_starting import make_starting_model

    from mlcore.model import starting_model

    directory = make_starting_model(tmp_path / "start")
    monkeypatch.setenv(starting_model.STARTING_MODEL_ENV, str(directory))
    return directory


# quick's first-model recipe (from the starting model), a few steps so the test is fast
FEW_STEPS = {"steps": 3, "batch_size": 16, "val_windows": 32, "threads": 1}


def test_the_scene_alone_starts_from_the_starting_model(redis_conn, own_project, alice, start_dir):
    """The dashboard's default profile starts from the starting model: classes of one's own with
    no source class get new heads on its backbone, trained on the marks alone."""
    project = own_project
    scene, truth = add_scene(project, size=256)
    Scene.objects.filter(pk=scene.pk).update(ground_truth_key="")
    mark(project, scene, alice, truth)
    start_cycle(project, alice, profile="quick", config=FEW_STEPS)
    run_workers("train", "score")
    version = ModelVersion.objects.get(project=project)
    assert version.status == "ready", version.error
    assert version.started_from["kind"] == "starting-model"
    assert version.classes == ["red", "blue", "negative"]
    assert ScoringRun.objects.get(model_version=version).status == "done"


def test_a_dataset_with_sources_the_start_lacks_trains_from_the_starting_model(
    redis_conn, own_project, alice, start_dir
):
    """An uploaded dataset keeps its source classes: CIFAR-10 names reuse the start's heads, a
    folder the start does not know ("cow") gets a new one."""
    from helpers_data import image_folder_zip

    from labeling.ingest.uploads import add_dataset as upload_dataset

    project = own_project
    project.classes = [{"name": "frog", "color": "#3cb44b", "sources": ["frog"]},
                       {"name": "cow", "color": "#4363d8", "sources": ["cow"]}]  # fmt: skip
    project.save()
    folder = own_project_dir(project)
    zip_path = image_folder_zip(folder / "tiles.zip", {"frog": 8, "cow": 8, "truck": 8})
    upload_dataset(project, path=zip_path, name="tiles", split="all")
    run_workers("default")
    start_cycle(project, alice, profile="quick", config=FEW_STEPS)
    run_workers("train", "score")
    version = ModelVersion.objects.get(project=project)
    assert version.status == "ready", version.error
    assert version.started_from["kind"] == "starting-model"
    cset = CanvasDir(project).load()
    assert sorted(h[0] for h in cset.heads) == ["cow", "frog", "truck"]


def own_project_dir(project):
    from pathlib import Path

    from django.conf import settings

    folder = Path(settings.STORAGE_URL).parent / f"uploads-{project.pk}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
