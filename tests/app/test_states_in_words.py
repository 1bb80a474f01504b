"""States said as they are (issue 34, "States are misreported"), server side on real rows: the
job table and its API name job kinds in words ("First model", "Scene import"; the API keeps the
identifiers in ``kind``), the cycle's scoring step says what it did (a scene still importing is
named, never "no scene to score yet"), a model's row says what it trained on (dataset images
and reviewed labels apart), and the queue without a model says the project's next step."""

from __future__ import annotations

import re

import pytest

from labeling.models import Dataset, JobRecord, ModelVersion, Scene, ScoringRun

pytestmark = pytest.mark.django_db


def _version(project, number, **fields):
    return ModelVersion.objects.create(project=project, number=number, classes=["car", "boat"],
                                       **fields)  # fmt: skip


def test_job_kinds_read_as_words_on_the_dashboard_and_beside_the_api_s_identifiers(
    project, alice_client
):
    v1 = _version(project, 1, status="ready", is_current=True,
                  train_config={"finetune_from": None})  # fmt: skip
    v2 = _version(project, 2, status="training", parent=v1, train_config={"finetune_from": 1})
    first = JobRecord.objects.create(project=project, kind="retrain_cycle", status="done",
                                     params={"version_id": v1.pk})  # fmt: skip
    JobRecord.objects.create(project=project, kind="import_scene", status="done")
    JobRecord.objects.create(project=project, kind="score", status="done")
    retrain = JobRecord.objects.create(project=project, kind="retrain_cycle", status="running",
                                       params={"version_id": v2.pk})  # fmt: skip
    jobs = alice_client.get(f"/api/projects/{project.pk}/jobs").json()["jobs"]
    assert [(j["kind"], j["label"]) for j in jobs] == [
        ("retrain_cycle", "Retrain cycle"),
        ("score", "Scoring"),
        ("import_scene", "Scene import"),
        ("retrain_cycle", "First model"),
    ]
    assert alice_client.get(f"/api/jobs/{first.pk}").json()["label"] == "First model"
    html = alice_client.get(f"/projects/{project.pk}/").content.decode()
    cells = re.findall(r'<td class="job-kind" title="(\w+)">([^<]*)</td>', html)
    assert cells == [("retrain_cycle", "Retrain cycle"), ("score", "Scoring"),
                     ("import_scene", "Scene import"),
                     ("retrain_cycle", "First model")]  # fmt: skip
    assert ">import_scene<" not in html and ">retrain_cycle<" not in html
    # The status line names the running cycle the same way.
    assert f"Retrain cycle running (job {retrain.pk})." in html


def test_the_first_model_s_status_line_says_first_model(project, alice_client):
    v1 = _version(project, 1, status="training", train_config={"finetune_from": None})
    job = JobRecord.objects.create(project=project, kind="retrain_cycle", status="running",
                                   params={"version_id": v1.pk})  # fmt: skip
    html = alice_client.get(f"/projects/{project.pk}/").content.decode()
    assert f"First model running (job {job.pk})." in html


def test_the_scoring_step_says_what_it_did(project):
    from workers.loop_jobs import scoring_message  # the cycle's scoring step writes it

    assert scoring_message(project, []) == (
        "no scene yet: scenes added later are scored by this model"
    )
    # A scene still importing (no pixels yet): named, never "no scene to score yet".
    importing = Scene.objects.create(project=project, name="harbour.tif", image_key="k")
    text = scoring_message(project, [])
    assert text == "scene 'harbour.tif' still importing: scored by this model when the import ends"
    assert "no scene" not in text
    importing.pixels_key, importing.width, importing.height = "p.npy", 64, 64
    importing.save()
    version = _version(project, 1, status="scoring")
    run = ScoringRun.objects.create(scene=importing, model_version=version, status="queued")
    assert scoring_message(project, [run]) == "1 scene queued for scoring"


def test_a_model_s_row_says_what_it_trained_on(project, alice_client):
    _version(project, 1, status="ready", is_current=False, train_config={"finetune_from": None},
             data_counts={"dataset_images": 50000, "annotations_used": 0})  # fmt: skip
    _version(project, 2, status="ready", is_current=True, train_config={"finetune_from": 1},
             data_counts={"dataset_images": 50000, "annotations_used": 12})  # fmt: skip
    _version(project, 3, status="ready", train_config={"finetune_from": None},
             data_counts={"dataset_images": 0, "annotations_used": 1})  # fmt: skip
    html = alice_client.get(f"/projects/{project.pk}/").content.decode()
    assert "<th>Trained on</th>" in html and "Labels used" not in html
    cells = dict(re.findall(r'<tr data-version="(\d)".*?<td class="trained-on">([^<]*)</td>',
                            html, re.S))  # fmt: skip
    assert cells == {
        "1": "50,000 dataset images and no reviewed labels",
        "2": "50,000 dataset images and 12 new reviewed labels",
        "3": "no dataset images and 1 reviewed label",
    }


def test_the_queue_without_a_model_says_the_next_step(project, alice_client):
    url = f"/projects/{project.pk}/review/"
    html = alice_client.get(url).content.decode()
    assert "Every window is annotated" not in html
    assert re.search(r'id="queue-no-model">There is nothing to train the first model on yet', html)
    Dataset.objects.create(project=project, name="tiles", source="upload", status="ready")
    html = alice_client.get(url).content.decode()
    assert re.search(r'id="queue-no-model">Next: train the first model on the project', html)
    version = _version(project, 1, status="training", train_config={"finetune_from": None})
    JobRecord.objects.create(project=project, kind="retrain_cycle", status="running",
                             params={"version_id": version.pk})  # fmt: skip
    html = alice_client.get(url).content.decode()
    assert re.search(r'id="queue-no-model">A training cycle is running', html)


def test_a_scene_imported_while_the_first_model_trained_is_scored_by_it_once(project):
    """The scoring step found the scene still importing; its import ended before the version
    was promoted (no current model then: the import's follow-up scored nothing). Promotion
    scores it, and a follow-up running after that does not score it again."""
    from labeling.loop import cycle
    from workers.data_jobs import queue_follow_up

    scene = Scene.objects.create(project=project, name="harbour.tif", image_key="k")
    version = _version(project, 1, status="scoring", model_key="m.onnx",
                       train_config={"finetune_from": None})  # fmt: skip
    Scene.objects.filter(pk=scene.pk).update(pixels_key="p.npy", width=64, height=64)
    scene.refresh_from_db()
    assert "scoring_run" not in queue_follow_up(scene)  # no current model yet
    assert cycle.promote(version)
    [run] = ScoringRun.objects.filter(scene=scene)
    assert run.model_version_id == version.pk
    assert JobRecord.objects.filter(kind="score", params__run_id=run.pk).count() == 1
    assert "scoring_run" not in queue_follow_up(scene)  # scored once, not twice
    assert ScoringRun.objects.filter(scene=scene).count() == 1
