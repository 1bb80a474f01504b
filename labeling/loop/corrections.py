"""Corrections stick: of the answers a model version learnt from, the share it now decides as the
reviewer answered (mlcore.eval.loop_figures.corrections_stick), on the grids of its scoring runs at
the thresholds their detections used.

A version learns from every effective answer consumed by an earlier version (replayed as exact
samples) and from the ones it took itself (``data_counts["seen_annotation_ids"]``). Each answer
is judged on the grid window it was given for (the window nearest its box: metrics_view's
``annotation_truth``), by the answer's training label. Computed once, when the version's runs
are done, and stored in ``version.metrics["corrections_stick"]``."""

from __future__ import annotations

from collections import defaultdict

from django.db import transaction

from labeling.loop.cycle import effective_annotations
from labeling.loop.metrics_view import (
    annotation_truth,
    latest_runs_by_version,
    predicted_labels,
)
from labeling.models import Annotation, ModelVersion
from labeling.scoring.results import load_grid
from labeling.scoring.thresholds import run_thresholds
from mlcore.eval.loop_figures import corrections_stick


def learnt_annotations(version) -> list[Annotation]:
    """The effective annotations ``version`` was trained on."""
    seen = set((version.data_counts or {}).get("seen_annotation_ids", []))
    earlier = set(
        ModelVersion.objects.filter(
            project_id=version.project_id, number__lt=version.number, status="ready"
        ).values_list("pk", flat=True)
    )
    history = Annotation.objects.filter(project_id=version.project_id).only(
        "id", "scene_id", "kind", "label", "undoes_id", "created_at", "x", "y", "w", "h",
        "consumed_by_id",
    )  # fmt: skip
    effective = effective_annotations(history)
    return [a for a in effective if a.pk in seen or a.consumed_by_id in earlier]


def version_corrections_stick(version, runs) -> dict | None:
    """``{"answered", "kept", "share", "scenes": {name: {...}}}`` over the done ``runs`` (one per
    scene) of ``version``; None when it learnt from no answer on a scene it scored."""
    project = version.project
    by_scene = defaultdict(list)
    for a in learnt_annotations(version):
        by_scene[a.scene_id].append(a)
    scenes, answered, kept = {}, 0, 0
    for run in runs:
        annotations = by_scene.get(run.scene_id)
        if not annotations or not run.grid_key:
            continue
        grid = load_grid(run)
        truth = annotation_truth(grid, project, annotations)
        stick = corrections_stick(predicted_labels(grid, project, run_thresholds(run)), truth)
        scenes[run.scene.name] = stick
        answered += stick["answered"]
        kept += stick["kept"]
    if not answered:
        return None
    share = round(kept / answered, 4)
    return {"answered": answered, "kept": kept, "share": share, "scenes": scenes}


def record_corrections_stick(version) -> dict | None:
    """Measure and store the figure once every scene the version scored has a done run (a
    scoring job calls it after each run). Returns what was stored, or None (not yet, or no
    answers to judge)."""
    if version.scoring_runs.exclude(status__in=("done", "failed")).exists():
        return None
    runs = latest_runs_by_version(version.project, version).get(version.pk, [])
    stick = version_corrections_stick(version, runs)
    if stick is None:
        return None
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        locked.metrics = dict(locked.metrics or {}) | {"corrections_stick": stick}
        locked.save(update_fields=["metrics"])
    return stick
