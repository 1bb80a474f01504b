"""A project's first model starts from the starting model (through the real cycle: Redis, an RQ
worker, Spark local), records it on the version and shows it on the dashboard; the project's
"start from scratch" setting and the tiny profile train from random weights; a broken starting
model refuses the cycle with the reason (409 JSON), never falls back silently; a retrain with
another profile fine-tunes the network the current version has."""

from __future__ import annotations

import pytest
import torch
from helpers_starting import make_starting_model
from loop_helpers import annotate, build_small_project, run_workers

from labeling.loop.cycle import start_cycle
from labeling.projects.storage_keys import get_storage
from mlcore.model import starting_model
from mlcore.model.starting_model import StartingModelError
from mlcore.train.training import read_checkpoint

# quick's first-model recipe (from the starting model), but a few steps, so the test is fast
FEW_STEPS = {"steps": 2, "batch_size": 16, "val_windows": 32, "threads": 1, "lr": 0.0}


@pytest.fixture
def start_dir(tmp_path, monkeypatch):
    directory = make_starting_model(tmp_path / "start")
    monkeypatch.setenv(starting_model.STARTING_MODEL_ENV, str(directory))
    return directory


@pytest.fixture
def loop_settings(settings, storage_dir):
    settings.SPARK_MASTER = "local[2]"
    return settings


def trained_checkpoint(version):
    return read_checkpoint(get_storage().local_path(version.checkpoint_key))


@pytest.mark.django_db(transaction=True)
def test_the_first_model_starts_from_the_starting_model(
    redis_conn, loop_settings, project, alice, start_dir, client
):
    scene = build_small_project(project)
    record = start_cycle(project, alice, profile="quick", config=FEW_STEPS)
    run_workers("train", "score")
    record.refresh_from_db()
    assert record.status == "done", record.error
    v1 = project.current_model()
    assert v1.started_from["kind"] == "starting-model"
    assert v1.started_from["name"] == "test-starting-model"
    assert (
        v1.started_from["sha256"] == starting_model.read_card()["files"]["checkpoint.pt"]["sha256"]
    )
    trained, start = trained_checkpoint(v1), read_checkpoint(start_dir / "checkpoint.pt")
    assert trained["architecture"]["depth"] == 8  # the start's (quick says 20)
    # lr 0: the backbone is the start's, the project's class heads are new
    torch.testing.assert_close(trained["state_dict"]["stem.0.weight"],
                               start["state_dict"]["stem.0.weight"])  # fmt: skip
    client.force_login(alice)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "starting model <code>test-starting-model</code>" in page
    api = client.get(f"/api/projects/{project.pk}").json()
    assert api["model_versions"][0]["started_from"]["kind"] == "starting-model"

    # a retrain with another profile fine-tunes v1's network instead of failing to load it
    annotate(project, scene, alice)
    second = start_cycle(project, alice, profile="tiny")
    run_workers("train", "score")
    second.refresh_from_db()
    assert second.status == "done", second.error
    v2 = project.current_model()
    assert v2.number == 2 and v2.started_from == {"kind": "fine-tune", "name": "v1"}
    assert trained_checkpoint(v2)["architecture"]["depth"] == 8


@pytest.mark.django_db(transaction=True)
def test_start_from_scratch_setting_and_the_tiny_profile_use_random_weights(
    redis_conn, loop_settings, project, alice, start_dir
):
    build_small_project(project)
    start_cycle(project, alice, profile="tiny")
    run_workers("train", "score")
    assert project.current_model().started_from["kind"] == "scratch"
    project.start_from_scratch = True
    project.save()
    from labeling.loop.cycle import first_model_start

    assert first_model_start(project, "quick")["kind"] == "scratch"


@pytest.mark.django_db(transaction=True)
def test_a_corrupt_starting_model_refuses_the_cycle_with_the_reason(
    redis_conn, loop_settings, project, alice, start_dir, client
):
    build_small_project(project)
    (start_dir / "checkpoint.pt").write_bytes(b"damaged")
    with pytest.raises(StartingModelError, match="checkpoint.pt is corrupt or was replaced"):
        start_cycle(project, alice, profile="quick")
    assert not project.model_versions.exists()
    client.force_login(alice)
    answer = client.post(f"/api/projects/{project.pk}/retrain", {"profile": "quick"},
                         content_type="application/json")  # fmt: skip
    assert answer.status_code == 409
    assert "checkpoint.pt is corrupt" in answer.json()["error"]
    assert "make pretrain" in answer.json()["error"]
