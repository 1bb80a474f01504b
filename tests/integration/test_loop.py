"""The whole active-learning loop through real Redis, a real RQ worker and Spark in local mode:
canvases -> model v1 -> annotations -> retrain cycle -> v2 current, scene rescored, metrics
stored, annotations consumed. Small on purpose: 32-px tiles on 128-px canvases, a ResNet of
depth 8 and width 8 trained for a few steps, a 256x256 scene."""

from __future__ import annotations

import pytest
from loop_helpers import (
    SPARK_MASTER,
    annotate,
    build_small_project,
    run_workers,
)

from labeling.loop.cycle import (
    CycleAlreadyRunning,
    effective_annotations,
    pending_annotations,
    set_current,
    start_cycle,
)
from labeling.models import Annotation, Scene, ScoringRun, TrainingCanvas
from labeling.projects.storage_keys import get_storage
from mlcore.data.canvases import CORRECTION_WEIGHT


@pytest.fixture
def loop_settings(settings, storage_dir):
    settings.SPARK_MASTER = SPARK_MASTER
    return settings


@pytest.mark.django_db(transaction=True)
def test_a_whole_cycle_promotes_v2_and_consumes_the_annotations(
    redis_conn, loop_settings, project, alice
):
    scene = build_small_project(project)
    assert TrainingCanvas.objects.filter(project=project, kind="original").count() == 3

    first = start_cycle(project, alice, profile="tiny")
    with pytest.raises(CycleAlreadyRunning, match="already running"):
        start_cycle(project, alice, profile="tiny")
    run_workers("train", "score")
    first.refresh_from_db()
    assert first.status == "done", first.error
    v1 = project.current_model()
    assert v1 is not None and v1.number == 1 and v1.status == "ready", first.log
    assert get_storage().exists(v1.model_key) and get_storage().exists(v1.checkpoint_key)
    run1 = ScoringRun.objects.get(model_version=v1)
    assert run1.status == "done" and run1.n_partitions >= 1 and run1.partitions

    annotations = annotate(project, scene, alice)
    assert len(pending_annotations(project)) == 4
    second = start_cycle(project, alice, profile="tiny")
    run_workers("train", "score")
    second.refresh_from_db()
    assert second.status == "done", second.error
    v1.refresh_from_db()
    v2 = project.current_model()
    assert v2.number == 2 and v2.parent_id == v1.pk and not v1.is_current
    assert v2.train_config["finetune_from"] == 1
    assert sorted(v2.data_counts["annotation_ids"]) == sorted(a.pk for a in annotations)
    assert v2.data_counts["tiles_added"] == {"car": 1, "negative": 2, "boat": 1}
    run2 = ScoringRun.objects.get(model_version=v2)
    assert run2.status == "done" and run2.metrics
    assert get_storage().exists(run2.parquet_key)
    assert v2.metrics["scenes"][scene.name] == run2.metrics
    # The score job measured how many of the 4 answers v2 now decides as answered.
    stick = ScoringRun.objects.get(pk=run2.pk).model_version.metrics["corrections_stick"]
    assert stick["answered"] == 4 and 0 <= stick["kept"] <= 4
    assert stick["scenes"][scene.name]["answered"] == 4
    assert set(
        Annotation.objects.filter(project=project).values_list("consumed_by", flat=True)
    ) == {v2.pk}
    assert pending_annotations(project) == []
    corrections = TrainingCanvas.objects.filter(project=project, kind="correction")
    # A class's tiles each with their scene context (112 px) on 128 px canvases: one a canvas.
    assert sorted(c.class_name for c in corrections) == ["boat", "car", "negative", "negative"]
    assert {c.weight for c in corrections} == {CORRECTION_WEIGHT}

    # Rollback from the page: v1 becomes current again, v2 stays ready.
    set_current(project, v1)
    assert project.current_model() == v1


@pytest.mark.django_db(transaction=True)
def test_a_cycle_with_nothing_new_adds_no_canvases_twice(redis_conn, loop_settings, project):
    """Retrying the corrections step adds each annotation's tile once."""
    from workers.loop_jobs import feed_corrections

    scene = build_small_project(project)
    annotate(project, scene, None, n=2)

    class Ctx:
        def progress(self, *a):
            pass

        def log(self, line):
            pass

    first = feed_corrections(Ctx(), project.pk)
    again = feed_corrections(Ctx(), project.pk)
    assert sum(first["added"].values()) == 2 and again["added"] == {}
    assert TrainingCanvas.objects.filter(project=project, kind="correction").count() == 2


@pytest.mark.django_db
def test_effective_label_is_the_newest_and_undo_cancels(project, alice):
    scene = Scene.objects.create(project=project, name="s", image_key="-")
    common = dict(project=project, scene=scene, user=alice, x=0, y=0, w=32, h=32)
    first = Annotation.objects.create(kind="false_negative", label="car", **common)
    second = Annotation.objects.create(kind="wrong_class", label="boat", **common)
    assert [a.pk for a in effective_annotations(Annotation.objects.all())] == [second.pk]
    undo = Annotation.objects.create(kind="undo", label="boat", undoes=second, **common)
    assert [a.pk for a in effective_annotations(Annotation.objects.all())] == [first.pk]
    Annotation.objects.create(kind="undo", label="boat", undoes=undo, **common)
    assert [a.pk for a in effective_annotations(Annotation.objects.all())] == [second.pk]
    assert [a.pk for a in pending_annotations(project)] == [second.pk]


@pytest.mark.django_db
def test_only_a_ready_model_can_be_made_current(project):
    from labeling.models import ModelVersion

    failed = ModelVersion.objects.create(project=project, number=1, status="failed")
    with pytest.raises(ValueError, match="only a ready model"):
        set_current(project, failed)
