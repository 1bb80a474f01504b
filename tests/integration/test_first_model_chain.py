"""A project's first model is one chain started from the dashboard, the API or `manage.py train`:
it builds the training canvases from the project's datasets itself (no build_canvases first),
trains, calibrates and scores every scene. A press that cannot succeed is refused with the
reason in words and leaves no failed version; a failure in the chain is explained without a
Python exception name. A project's classes can be edited while no model depends on them, and
the next chain maps its stored datasets to them again. Real PostgreSQL, Redis and RQ workers
(burst, in this process), Spark local."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from loop_helpers import add_dataset, add_scene, run_workers

from labeling.loop.cycle import reconcile_versions, start_cycle
from labeling.loop.first_model import NothingToTrainOn
from labeling.models import Dataset, ModelVersion, ScoringRun, TrainingCanvas

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def loop_settings(settings, storage_dir):
    settings.SPARK_MASTER = "local[2]"
    settings.DEFAULT_TRAIN_PROFILE = "tiny"
    return settings


def test_a_project_with_nothing_to_learn_from_is_refused_in_words(
    redis_conn, loop_settings, project, alice, client
):
    client.force_login(alice)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert 'id="retrain-button" disabled' in page
    assert "nothing to train the first model on yet" in page
    assert "manage.py train" not in page
    for _ in range(3):  # repeated presses: the same answer, no version piles up
        answer = client.post(f"/api/projects/{project.pk}/retrain", {},
                             content_type="application/json")  # fmt: skip
        assert answer.status_code == 409
        error = answer.json()["error"]
        assert "add a tile dataset (+ Dataset)" in error and "automobile, ship" in error
        assert "Error" not in error
    assert not ModelVersion.objects.exists()
    api = client.get(f"/api/projects/{project.pk}").json()
    assert api["next_step"]["can_train"] is False
    assert "nothing to train" in api["next_step"]["why_off"]
    with pytest.raises(CommandError, match="nothing to train the first model on yet"):
        call_command("train", project.name, "--profile", "tiny", "--no-wait")
    assert not ModelVersion.objects.exists()

    # A dataset still importing: wait for it (said so); a failed one: its reason is shown.
    Dataset.objects.create(project=project, name="tiles.zip", source="upload", status="importing")
    with pytest.raises(NothingToTrainOn, match="'tiles.zip' is still importing"):
        start_cycle(project, alice, profile="tiny")
    Dataset.objects.filter(project=project).update(status="failed", error="no image in the zip")
    with pytest.raises(NothingToTrainOn, match="'tiles.zip', failed: no image in the zip"):
        start_cycle(project, alice, profile="tiny")
    assert not ModelVersion.objects.exists()


def test_the_first_model_chain_builds_its_canvases_trains_and_scores(
    redis_conn, loop_settings, project, alice, client
):
    add_dataset(project)
    scene, _ = add_scene(project)
    assert not TrainingCanvas.objects.exists()
    client.force_login(alice)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "Train the first model</button>" in page
    assert 'id="retrain-button" disabled' not in page

    answer = client.post(f"/api/projects/{project.pk}/retrain", {},
                         content_type="application/json")  # fmt: skip
    assert answer.status_code == 202, answer.content
    again = client.post(f"/api/projects/{project.pk}/retrain", {},
                        content_type="application/json")  # fmt: skip
    assert again.status_code == 409 and "already running" in again.json()["error"]
    run_workers("train", "score")
    version = project.current_model()
    assert version is not None and version.number == 1 and version.status == "ready"
    assert version.train_config["profile"] == "tiny"
    assert TrainingCanvas.objects.filter(project=project, kind="original").exists()
    run = ScoringRun.objects.get(model_version=version, scene=scene)
    assert run.status == "done"
    assert ModelVersion.objects.count() == 1
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "Next: review windows in the queue" in page

    # Classes are locked now: a rename is refused with the reason, a new colour is fine.
    renamed = [dict(c) for c in project.classes]
    renamed[0]["name"] = "lorry"
    answer = client.patch(f"/api/projects/{project.pk}", {"classes": renamed},
                          content_type="application/json")  # fmt: skip
    assert (
        answer.status_code == 409
        and "Model v1 was trained on these classes" in (answer.json()["error"])
    )
    recoloured = [dict(c) for c in project.classes]
    recoloured[0]["color"] = "#123456"
    answer = client.patch(f"/api/projects/{project.pk}", {"classes": recoloured},
                          content_type="application/json")  # fmt: skip
    assert answer.status_code == 200, answer.content
    project.refresh_from_db()
    assert project.classes[0] == {"name": "car", "color": "#123456", "sources": ["automobile"]}


def test_a_failed_chain_is_explained_and_the_next_press_is_allowed(
    redis_conn, loop_settings, project, alice, client
):
    """A dataset stored for other classes (imported before an edit, without its source
    classes) cannot be mapped: the version fails with what to do, in words."""
    dataset = add_dataset(project)  # stored as car / boat / negative, no source classes
    project.classes = [{"name": "lorry", "color": "#e6194b", "sources": ["truck"]}]
    project.save()
    start_cycle(project, alice, profile="tiny")
    run_workers("train", "score")
    reconcile_versions(project)  # what every page and the API do first
    version = ModelVersion.objects.get(project=project)
    assert version.status == "failed"
    assert f"Dataset {dataset.name!r} was imported for the classes car, boat, negative" in (
        version.error
    )
    client.force_login(alice)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "Model v1 failed: Dataset" in page and "Import it again" in page
    assert "ValueError" not in page and "TrainingMaterialError" not in page


def test_classes_edited_before_any_model_map_the_stored_dataset_again(
    redis_conn, loop_settings, project, alice, client
):
    """A dataset imported in the browser keeps its source classes: after the project's classes
    change (no model yet), the chain maps it to the new ones without a new import."""
    from helpers_data import image_folder_zip

    from labeling.ingest.uploads import add_dataset as upload_dataset

    zip_path = image_folder_zip(
        project_zip_path(loop_settings), {"automobile": 6, "ship": 6, "frog": 6, "horse": 6}
    )
    _, record = upload_dataset(project, path=zip_path, name="tiles", split="all")
    run_workers("default")
    assert Dataset.objects.get(project=project).status == "ready"
    client.force_login(alice)
    classes = [{"name": "frog", "color": "#3cb44b", "sources": ["frog"]},
               {"name": "horse", "color": "#4363d8", "sources": ["horse"]}]  # fmt: skip
    answer = client.patch(f"/api/projects/{project.pk}", {"classes": classes},
                          content_type="application/json")  # fmt: skip
    assert answer.status_code == 200, answer.content
    project.refresh_from_db()
    start_cycle(project, alice, profile="tiny")
    run_workers("train", "score")
    version = ModelVersion.objects.get(project=project)
    assert version.status == "ready", version.error
    assert version.classes == ["frog", "horse", "negative"]
    # the canvases it trained on were built for the new classes
    assert list(version.data_counts["windows"]) == ["frog", "horse", "negative"]
    from workers.loop_jobs import CanvasDir

    cset = CanvasDir(project).load()
    assert cset.classes == ["frog", "horse", "negative"]
    under = {int(v) for c in cset.canvases if c.label_map is not None for v in c.label_map.ravel()}
    assert {0, 1, 2} <= under  # frogs, horses and the rest (cars, ships) as negatives


def project_zip_path(settings):
    from pathlib import Path

    folder = Path(settings.STORAGE_URL).parent / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "tiles.zip"
