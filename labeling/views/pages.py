"""Pages of the review area: a project's dashboard, the deep-zoom scene viewer (and the tiles it
reads), the review queue and the metrics page. Thin: the numbers come from labeling.loop.cycle,
labeling.loop.metrics_view and labeling.jobs.enqueue; the pages' JavaScript talks to the JSON
API."""

from __future__ import annotations

import mimetypes
import posixpath
import shlex
from functools import lru_cache

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_safe

from labeling.jobs.enqueue import ACTIVE, job_state
from labeling.jobs.kinds import job_label
from labeling.loop import first_model
from labeling.loop.cycle import (
    CYCLE_KIND,
    f1_summary,
    pending_annotations,
    reconcile_versions,
    training_label,
)
from labeling.loop.learning_curve import learning_curve
from labeling.loop.metrics_view import run_confusion, version_rows
from labeling.loop.regions import REGION_MAX_WINDOWS
from labeling.models import Annotation, JobRecord, ScoringRun, shown_runs
from labeling.projects.access import project_for, scene_for
from labeling.projects.storage_keys import get_storage
from labeling.review.queue import DEFAULT_STRATEGY, skip_returns_after
from labeling.review.queue import STRATEGIES as QUEUE_STRATEGIES
from labeling.review.scene_labels import labels_summary
from labeling.scoring.thresholds import viewer_thresholds
from mlcore.ingest.deepzoom import DeepZoomError, level_sizes, read_dzi
from mlcore.storage import StorageKeyError, validate_key

STRATEGY_LABELS = {
    "uncertainty": "Uncertainty (least confidence)",
    "margin": "Margin (top two closest)",
    "entropy": "Entropy",
    "random": "Random",
    "top_score": "Highest score first (precision review)",
    "diverse_uncertainty": "Diverse uncertainty (no two overlapping)",
    "diverse_margin": "Diverse margin (no two overlapping)",
    "balanced": "Class-balanced (equal share per predicted class)",
    "mixed": "Mixed (diverse uncertainty + 1 in 3 random)",
    "cluster_margin": "Cluster-margin (kinds of confusion in turn)",
    "diverse_learnable": "Diverse uncertainty, ambiguous borders last",
}
# The queue page's choices: every strategy of labeling.review.queue, in its order.
STRATEGIES = [(name, STRATEGY_LABELS.get(name, name)) for name in QUEUE_STRATEGIES]
THUMB_MAX = 160
VIEWER_JS = "vendor/openseadragon/build/openseadragon/openseadragon.min.js"
VIEWER_IMAGES = "vendor/openseadragon/build/openseadragon/images/"


def _url(name: str, *args) -> str | None:
    """The URL of a named route, or None while the area that owns it has not added it."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


# -- deep-zoom tiles -----------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _dzi_descriptor(dzi_key: str) -> dict | None:
    """{tile_size, overlap, format, width, height} of a written pyramid (immutable once written)."""
    try:
        return read_dzi(get_storage().read(dzi_key))
    except (FileNotFoundError, OSError, DeepZoomError, ValueError, StorageKeyError):
        return None


def dzi_files(scene) -> tuple[str, str] | None:
    """(directory key, descriptor file name) of the scene's pyramid."""
    if not scene.dzi_key:
        return None
    folder, name = posixpath.split(scene.dzi_key)
    return folder, name


def thumbnail_url(scene) -> str | None:
    """A tile of the pyramid level that fits in THUMB_MAX pixels: the whole scene in one tile."""
    files = dzi_files(scene)
    info = _dzi_descriptor(scene.dzi_key) if files else None
    if not info:
        return None
    sizes = level_sizes(info["width"], info["height"])
    level = len(sizes) - 1
    while level > 0 and max(sizes[level]) > min(THUMB_MAX, info["tile_size"]):
        level -= 1
    stem = files[1].rsplit(".", 1)[0]
    return reverse("scene-dzi", args=[scene.pk, f"{stem}_files/{level}/0_0.{info['format']}"])


def raw_window_loading() -> dict:
    """How the viewer loads raw windows: whole up to ``whole_pixels`` of scene, else by blocks
    of ``block`` scene pixels in view once the view is at most ``max_view`` wide."""
    block = int(settings.VIEWER_RAW_WINDOWS_BLOCK)
    return {"whole_pixels": int(settings.VIEWER_RAW_WINDOWS_WHOLE_PIXELS), "block": block,
            "max_view": 3 * block, "max_blocks": 24}  # fmt: skip


@require_GET
def scene_dzi(request, scene_id, path):
    """The scene's .dzi descriptor and its tiles, from storage. Only the descriptor and files
    under <name>_files/ of this scene's pyramid are served; anything else is a 404."""
    scene = scene_for(request.user, scene_id)
    files = dzi_files(scene)
    if files is None:
        raise Http404("This scene has no deep-zoom tiles yet.")
    folder, name = files
    stem = name.rsplit(".", 1)[0]
    if path != name and not path.startswith(f"{stem}_files/"):
        raise Http404("Not a file of this scene's deep-zoom pyramid.")
    try:
        key = validate_key(f"{folder}/{path}")
    except StorageKeyError:
        raise Http404("Not a valid tile path.") from None
    storage = get_storage()
    content_type = (
        "application/xml" if path.endswith(".dzi") else mimetypes.guess_type(path)[0]
    ) or "application/octet-stream"
    try:
        local = storage.local_path(key)
        if local is not None:
            if not local.is_file():
                raise FileNotFoundError(key)
            response = FileResponse(open(local, "rb"), content_type=content_type)
        else:
            response = HttpResponse(storage.read(key), content_type=content_type)
    except (FileNotFoundError, IsADirectoryError, StorageKeyError):
        raise Http404("No such tile.") from None
    # Tiles never change once written (a new pyramid gets a new descriptor first).
    response["Cache-Control"] = "private, max-age=86400"
    return response


# -- dashboard -----------------------------------------------------------------------------------


def _run_summary(run: ScoringRun, negative: str) -> dict:
    timings = run.timings or {}
    seconds = timings.get("total") or timings.get("total_seconds") or timings.get("seconds")
    if seconds is None and run.started_at and run.finished_at:
        seconds = (run.finished_at - run.started_at).total_seconds()
    return {
        "run": run,
        "seconds": round(float(seconds), 1) if isinstance(seconds, (int, float)) else None,
        "detections": sum((run.metrics or {}).get("detections", {}).values()),
        "f1": f1_summary(run.metrics, negative),
    }


def job_seconds(record) -> float | None:
    """How long a job ran (so far, while it runs): from its start (else its creation) to its
    end; None while it waits in its queue."""
    start = record.started_at or (record.created_at if record.finished_at else None)
    if start is None:
        return None
    end = record.finished_at or timezone.now()
    return max(0.0, (end - start).total_seconds())


def _change(before, after) -> dict | None:
    if before is None or after is None:
        return None
    return {"before": before, "after": after, "delta": after - before}


def cycle_effect(rows: list[dict]) -> dict | None:
    """What the newest finished cycle changed: object F1 and COCO AP of the newest ready version
    made from another one, against that parent's (labeling.loop.metrics_view.version_rows)."""
    by_number = {r["number"]: r for r in rows}
    for row in reversed(rows):
        parent = by_number.get(row["parent"])
        if row["status"] != "ready" or parent is None:
            continue
        f1 = lambda r: (r.get("object") or {}).get("f1")  # noqa: E731
        ap = lambda r, k: (r.get("coco") or {}).get(k)  # noqa: E731
        changes = {
            "f1": _change(f1(parent), f1(row)),
            "ap50": _change(ap(parent, "ap50"), ap(row, "ap50")),
            "ap": _change(ap(parent, "ap"), ap(row, "ap")),
        }
        return {"from": parent["number"], "to": row["number"], "labels": row["labels_used"],
                **changes}  # fmt: skip
    return None


@require_safe
def project_dashboard(request, project_id):
    project = project_for(request.user, project_id)
    reconcile_versions(project)  # a version whose worker died reads failed, not "training"
    negative = project.negative_class
    scenes = []
    shown = shown_runs(project)  # the current model's runs, never a failed version's
    for scene in project.scenes.all():
        run = shown.get(scene.pk)
        scenes.append(
            {
                "scene": scene,
                "thumbnail": thumbnail_url(scene),
                "run": run,
                "detections": sum((run.metrics or {}).get("detections", {}).values())
                if run
                else None,
                "dzi_job": None
                if scene.dzi_key
                else _latest_job_state(project, "dzi", scene_id=scene.pk),
                # Reviewed boxes and the estimated share still wrong (labeling.review.scene_labels).
                "labels": labels_summary(scene, run=run),
            }
        )
    row_list = version_rows(project, with_annotations=False)
    rows = {r["number"]: r for r in row_list}
    versions = [
        {"version": v, "row": rows.get(v.number, {})}
        for v in project.model_versions.select_related("parent").order_by("-number")
    ]
    runs = [
        _run_summary(r, negative)
        for r in ScoringRun.objects.filter(scene__project=project)
        .select_related("scene", "model_version")
        .order_by("-created_at")[:20]
    ]
    pending = pending_annotations(project)
    cycle_job = (
        JobRecord.objects.filter(project=project, kind=CYCLE_KIND, status__in=ACTIVE)
        .order_by("-created_at", "-id")
        .first()
    )
    cycle_running = cycle_job is not None
    jobs = [
        job_state(j)
        | {
            "params": j.params,
            "started_at": j.started_at.isoformat() if j.started_at else None,
            "seconds": job_seconds(j),
        }
        for j in JobRecord.objects.filter(project=project).order_by("-created_at", "-id")[:15]
    ]
    next_step = first_model.next_step(project, pending, cycle_running)
    config = {
        "project": project.pk,
        "jobs_url": _url("api-jobs", project.pk),
        "retrain_url": _url("api-retrain", project.pk),
        "project_url": _url("api-project", project.pk),
        "pending": len(pending),
        "cycle_running": cycle_running,
        # The running cycle's job: the page's status line follows it until the cycle ends.
        "cycle_job": cycle_job.pk if cycle_job else None,
        "poll_ms": 2000,
    }
    return render(
        request,
        "labeling/project_dashboard.html",
        {
            "project": project,
            "scenes": scenes,
            "versions": versions,
            "runs": runs,
            "jobs": jobs,
            "pending": len(pending),
            "pending_by_kind": kinds_in_words(_count_by(pending, "kind")),
            "cycle_effect": cycle_effect(row_list),
            "held_back": held_back_version(project),
            "export_url": _url("api-export", project.pk),
            "labels_url": _url("api-labels", project.pk),
            "cycle_running": cycle_running,
            "cycle_label": job_label(cycle_job) if cycle_job else "",
            "next_step": next_step,
            "config": config,
            "datasets": project.datasets.all()[:10],
        },
    )


def held_back_version(project):
    """The newest ready version a cycle kept from being current (worse on held-out data than
    the current model, labeling.loop.cycle.promotion_decision), newer than the current one."""
    current = project.current_model()
    for v in project.model_versions.filter(status="ready", is_current=False).order_by("-number"):
        if current is not None and v.number < current.number:
            return None
        decision = (v.metrics or {}).get("promotion") or {}
        if decision and not decision.get("promoted"):
            return v
    return None


def _count_by(rows, attr) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[getattr(row, attr)] = counts.get(getattr(row, attr), 0) + 1
    return sorted(counts.items())


def kinds_in_words(counts) -> list[tuple[str, int]]:
    """[(kind, n)] -> [(its name in words, n)]: "1 missed object", "2 false positives" (never
    "1 false_negative")."""
    names = dict(Annotation.KINDS)
    out = []
    for kind, n in counts:
        name = names.get(kind, kind.replace("_", " "))
        if n != 1:
            name += "es" if name.endswith(("s", "x", "sh", "ch")) else "s"
        out.append((name, n))
    return out


def _latest_job_state(project, kind, **params) -> dict | None:
    lookup = {f"params__{k}": v for k, v in params.items()}
    job = (
        JobRecord.objects.filter(project=project, kind=kind, **lookup)
        .order_by("-created_at")
        .first()
    )
    return job_state(job) if job else None


# -- scene viewer --------------------------------------------------------------------------------


@require_safe
def scene_viewer(request, scene_id):
    scene = scene_for(request.user, scene_id)
    project = scene.project
    run = scene.shown_run()
    files = dzi_files(scene)
    config = {
        "scene": {"id": scene.pk, "name": scene.name, "width": scene.width,
                  "height": scene.height},
        "project": project.pk,
        "classes": [{"name": c["name"], "color": c["color"]} for c in project.classes],
        "negative": project.negative_class,
        **viewer_thresholds(project, run, request.GET.get("threshold")),
        "window": project.scene_window,
        "region_max": REGION_MAX_WINDOWS * project.scene_window,  # a background region's side
        "run": {"id": run.pk, "model_version": run.model_version.number} if run else None,
        "raw_windows": raw_window_loading(),
        "dzi_url": reverse("scene-dzi", args=[scene.pk, files[1]]) if files else None,
        "osd_images": static(VIEWER_IMAGES),
        "urls": {
            "detections": _url("api-detections", scene.pk),
            "annotations": _url("api-annotations", scene.pk),
            "undo": (_url("api-annotation-undo", 0) or "").replace("/0/", "/{id}/"),
            "scene_state": _url("api-scene-import", project.pk, scene.pk),
            "review": reverse("review-queue", args=[project.pk]) + f"?scene={scene.pk}",
        },
    }  # fmt: skip
    return render(
        request,
        "labeling/scene_viewer.html",
        {
            "scene": scene,
            "project": project,
            "run": run,
            "config": config,
            "viewer_js": static(VIEWER_JS),
            "dzi_job": None if files else _latest_job_state(project, "dzi", scene_id=scene.pk),
        },
    )


# -- review queue --------------------------------------------------------------------------------


def class_mix(project, pending=None) -> list[dict]:
    """The class mix of what was answered in this cycle: per project class (negative last), how
    many of the project's pending annotations (effective, not yet consumed by a model:
    labeling.loop.cycle.pending_annotations) teach it, by their training label."""
    pending = pending_annotations(project) if pending is None else pending
    counts = dict.fromkeys(project.class_names, 0)
    for a in pending:
        label = training_label(a, project)
        counts[label] = counts.get(label, 0) + 1
    colours = project.colours
    return [{"name": c, "count": n, "color": colours.get(c, "#9e9e9e")} for c, n in counts.items()]


def queue_next_step(project) -> dict:
    """The dashboard's next step (labeling.loop.first_model.next_step), for a project that has
    no model yet: what to mark, that the first model can be trained now, or that it trains."""
    running = JobRecord.objects.filter(project=project, kind=CYCLE_KIND, status__in=ACTIVE)
    return first_model.next_step(project, pending_annotations(project), running.exists())


@require_safe
def review_queue(request, project_id):
    project = project_for(request.user, project_id)
    scenes = list(project.scenes.all())
    chosen = request.GET.get("scene", "")
    if chosen and not any(str(s.pk) == chosen for s in scenes):
        raise Http404("No such scene in this project.")
    strategy = request.GET.get("strategy", DEFAULT_STRATEGY)
    if strategy not in dict(STRATEGIES):
        strategy = DEFAULT_STRATEGY
    mix = class_mix(project)
    config = {
        "project": project.pk,
        "classes": [{"name": c["name"], "color": c["color"]} for c in project.classes],
        "negative": project.negative_class,
        "window": project.scene_window,
        "strategy": strategy,
        "scene": int(chosen) if chosen else None,
        "class_mix": {m["name"]: m["count"] for m in mix},
        "urls": {
            "queue": _url("api-queue", project.pk),
            "queue_release": _url("api-queue-release", project.pk),
            "queue_skip": _url("api-queue-skip", project.pk),
            "annotations": (_url("api-annotations", 0) or "").replace("/0/", "/{scene}/"),
            "undo": (_url("api-annotation-undo", 0) or "").replace("/0/", "/{id}/"),
            "window_image": (_url("api-window-image", 0) or "").replace("/0/", "/{scene}/"),
            "viewer": reverse("scene-viewer", args=[0]).replace("/0/", "/{scene}/"),
        },
    }
    return render(
        request,
        "labeling/review_queue.html",
        {
            "project": project,
            "scenes": scenes,
            "chosen": chosen,
            "strategies": STRATEGIES,
            "strategy": strategy,
            "config": config,
            "class_mix": mix,
            "class_mix_total": sum(m["count"] for m in mix),
            # Without a model the queue has nothing to hand out: it says the project's next step.
            "next_step": None if project.current_model() else queue_next_step(project),
            "skip_returns_after": skip_returns_after(),
        },
    )


# -- metrics -------------------------------------------------------------------------------------


@require_safe
def project_metrics(request, project_id):
    project = project_for(request.user, project_id)
    rows = version_rows(project)
    runs = list(
        ScoringRun.objects.filter(scene__project=project, status="done")
        .exclude(grid_key="")
        .select_related("scene", "model_version")
        .order_by("-finished_at", "-id")
    )
    chosen = request.GET.get("run", "")
    run = None
    if chosen:
        run = next((r for r in runs if str(r.pk) == chosen), None)
        if run is None:
            raise Http404("No such scoring run in this project.")
    else:  # the run people see (the current model's), never a failed version's
        shown = {r.pk for r in shown_runs(project).values()}
        run = next((r for r in runs if r.pk in shown), None)
    confusion = None
    confusion_error = ""
    if run is not None:
        try:
            confusion = run_confusion(run)
        except (FileNotFoundError, OSError, ValueError) as exc:
            confusion_error = f"The probability grid of run {run.pk} cannot be read: {exc}"
    matrix_rows = []
    if confusion:
        for i, (name, row) in enumerate(zip(confusion["classes"], confusion["matrix"])):
            total = sum(row)
            cells = [
                {"n": n, "share": round(n / total, 3) if total else 0.0, "diag": i == j}
                for j, n in enumerate(row)
            ]
            matrix_rows.append({"label": name, "cells": cells, "total": total})
    return render(
        request,
        "labeling/metrics.html",
        {
            "project": project,
            "rows": rows,
            "rows_desc": list(reversed(rows)),
            "runs": runs[:50],
            "run": run,
            "confusion": confusion,
            "confusion_error": confusion_error,
            "matrix_rows": matrix_rows,
            "chart": {"rows": rows},
            "learning_curve": learning_curve(project, rows),
            # Pasteable: a project name with spaces or quotes needs shell quoting.
            "simulate_command": f"manage.py simulate_review {shlex.quote(project.name)} "
            "--strategy random",
        },
    )
