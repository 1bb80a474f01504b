"""JSON API of the review area: projects, scenes, runs, the detections feed, annotations (list,
post, undo), the review queue, exports, window crops and the OpenAPI schema. Thin: the work is
in labeling/review/ (services) and labeling.web.openapi (schema); access in
labeling.projects.access."""

from __future__ import annotations

from django.db.models import Count, Q
from django.http import Http404, HttpResponse, JsonResponse
from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods

from labeling.loop.cycle import pending_annotations, reconcile_versions, running_cycle
from labeling.loop.first_model import next_step
from labeling.models import Annotation, ScoringRun
from labeling.projects.access import project_for, projects_for, scene_for
from labeling.projects.edit import class_lock_reason
from labeling.projects.measured_size import measured_object_size
from labeling.review import annotations, crops, exports, feed, queue
from labeling.review.common import ReviewError, dumps, pixel_int
from labeling.views.common import json_api, json_body
from labeling.web.input_parsing import parse_id, parse_int

GZIP_MIN_BYTES = 1024


_api = json_api(ReviewError)


def _json_body(request) -> dict:
    return json_body(request, ReviewError, '{"kind": "confirm", ...}')


def _scene_param(request, value):
    """?scene=<id>: a scene of the user's projects (400 when it is not an id at all)."""
    return scene_for(request.user, parse_id(value, "scene", ReviewError))


def _chosen_version(request, project):
    """?version=<number>: the model version a person chose to look at (404 when the project has
    none of that number); None without it (then the current model's run is shown)."""
    number = request.GET.get("version")
    if number in (None, ""):
        return None
    number = parse_int(number, "version", ReviewError, low=1, high=2**31 - 1)  # the column's
    version = project.model_versions.filter(number=number).first()
    if version is None:
        raise Http404(f"Project {project.name!r} has no model version {number}.")
    return version


# -- projects, scenes, runs -----------------------------------------------------------------------


def project_summary(project) -> dict:
    return {
        "id": project.pk,
        "name": project.name,
        "description": project.description,
        "classes": project.classes,
        "class_names": project.class_names,
        "negative_class": project.negative_class,
        "colors": project.colours,
        "threshold": project.threshold,
        "class_thresholds": project.class_thresholds,
        "use_calibrated_thresholds": project.use_calibrated_thresholds,
        "window_size": project.window_size,
        "object_size": project.object_size,
        "scene_window": project.scene_window,
        "score_step": project.score_step,
        "engine": project.engine,
        "url": f"/projects/{project.pk}/",
    }


def run_json(run: ScoringRun) -> dict:
    return {
        "id": run.pk,
        "scene": run.scene_id,
        "model_version": run.model_version.number,
        "status": run.status,
        "n_windows": run.n_windows,
        "n_partitions": run.n_partitions,
        "partitions": run.partitions,
        "timings": run.timings,
        "spark_master": run.spark_master,
        "spark_ui_url": run.spark_ui_url or None,
        "metrics": run.metrics,
        "error": run.error,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


@_api
@require_http_methods(["GET", "POST"])
def api_projects(request):
    """GET: the user's projects. POST: create one (the data area's api_project_create)."""
    if request.method == "POST":
        from labeling.views.data import api_project_create

        return api_project_create(request)
    projects = projects_for(request.user).annotate(
        n_scenes=Count("scenes", distinct=True),
        n_versions=Count("model_versions", distinct=True),
    )
    out = []
    for p in projects:
        current = p.current_model()
        out.append(
            project_summary(p)
            | {
                "scenes": p.n_scenes,
                "model_versions": p.n_versions,
                "current_model": current.number if current else None,
            }
        )
    return JsonResponse({"projects": out})


@_api
@require_http_methods(["GET", "PATCH"])
def api_project(request, project_id):
    """GET: the project, its counts, versions and next step; PATCH: edit it (its classes only
    while no model depends on them: labeling.projects.edit)."""
    project = project_for(request.user, project_id)
    if request.method == "PATCH":
        from labeling.views.data import project_update

        return project_update(request, project)
    reconcile_versions(project)  # a version whose worker died reads failed, not "training"
    current = project.current_model()
    versions = list(project.model_versions.all())
    counts = Annotation.objects.filter(project=project).aggregate(
        total=Count("id"), unconsumed=Count("id", filter=Q(consumed_by__isnull=True))
    )
    scenes = list(project.scenes.all())
    pending = pending_annotations(project)
    return JsonResponse(
        project_summary(project)
        | {
            "counts": {
                "scenes": len(scenes),
                "model_versions": len(versions),
                "annotations": counts["total"],
                "pending_annotations": len(pending),
            },
            "current_model": current.number if current else None,
            "next_step": next_step(project, pending, running_cycle(project) is not None),
            "classes_locked": class_lock_reason(project),
            # The median side of the boxes reviewers drew, offered for object_size.
            "measured_object_size": measured_object_size(project),
            "model_versions": [
                {
                    "number": v.number,
                    "status": v.status,
                    "is_current": v.is_current,
                    "engine": v.engine,
                    "started_from": v.started_from,
                    "metrics": v.metrics,
                    "thresholds": v.thresholds,  # calibrated, from the model file
                    "created_at": v.created_at.isoformat(),
                }
                for v in versions
            ],  # fmt: skip
            "scenes": [
                {
                    "id": s.pk,
                    "name": s.name,
                    "width": s.width,
                    "height": s.height,
                    "url": f"/scenes/{s.pk}/",
                }
                for s in scenes
            ],  # fmt: skip
        }
    )


def _dzi_url(scene) -> str | None:
    """The deep-zoom descriptor as the pages serve it (tiles are beside it)."""
    if not scene.dzi_key:
        return None
    name = scene.dzi_key.rsplit("/", 1)[-1]
    try:
        return reverse("scene-dzi", args=[scene.pk, name])
    except NoReverseMatch:
        return f"/scenes/{scene.pk}/dzi/{name}"


@_api
@require_http_methods(["GET"])
def api_scene(request, scene_id):
    scene = scene_for(request.user, scene_id)
    project = scene.project
    run = scene.shown_run(_chosen_version(request, project))
    latest = None
    if run is not None:
        latest = run_json(run) | {
            "detections": {
                kind: run.detections.filter(kind=kind).count() for kind in feed.FEED_KINDS
            }
        }
    return JsonResponse(
        {
            "id": scene.pk,
            "project": project.pk,
            "name": scene.name,
            "width": scene.width,
            "height": scene.height,
            "ready": bool(scene.pixels_key),
            "dzi_url": _dzi_url(scene),
            "has_ground_truth": scene.has_ground_truth,
            "latest_run": latest,
            "classes": project.classes,
            "class_names": project.class_names,
            "negative_class": project.negative_class,
            "colors": project.colours,
            "threshold": project.threshold,
            "class_thresholds": {c: project.threshold_for(c) for c in project.colours},
            "window_size": project.window_size,
        }
    )


@_api
@require_http_methods(["GET"])
def api_runs(request, project_id):
    project = project_for(request.user, project_id)
    runs = ScoringRun.objects.filter(scene__project=project).select_related("model_version")
    scene = request.GET.get("scene")
    if scene:
        runs = runs.filter(scene_id=_scene_param(request, scene).pk)
    return JsonResponse({"runs": [run_json(r) for r in runs.order_by("-created_at", "-id")]})


# -- detections -----------------------------------------------------------------------------------


@_api
@require_http_methods(["GET"])
def api_detections(request, scene_id):
    scene = scene_for(request.user, scene_id)
    run = feed.feed_run(scene, request.GET.get("run"))
    if run is None:
        raise Http404(f"Scene {scene.name!r} has no finished scoring run yet (or no such run).")
    query = request.GET.urlencode()
    etag = feed.feed_etag(run, query)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    seen = request.headers.get("If-None-Match", "")
    if etag in [t.strip().removeprefix("W/") for t in seen.split(",")]:
        response = HttpResponse(status=304)
        for key, value in headers.items():
            response[key] = value
        return response
    raw, zipped = feed.feed_payload(
        scene,
        run,
        kind=request.GET.get("kind", "merged"),
        label=request.GET.get("label"),
        min_score=request.GET.get("min_score"),
        region=request.GET.get("region"),
    )
    response = HttpResponse(content_type="application/json")
    response["Vary"] = "Accept-Encoding"
    if "gzip" in request.headers.get("Accept-Encoding", "") and len(raw) >= GZIP_MIN_BYTES:
        response.content = zipped
        response["Content-Encoding"] = "gzip"
    else:
        response.content = raw
    for key, value in headers.items():
        response[key] = value
    return response


# -- annotations ----------------------------------------------------------------------------------


def _annotations_page(request, scene) -> dict:
    """?limit= (1..PAGE_MAX, default PAGE_DEFAULT) and ?cursor= (the previous page's
    next_cursor); `next` is the following page's URL, null on the last page."""
    limit = parse_int(request.GET.get("limit", annotations.PAGE_DEFAULT), "limit", ReviewError,
                      low=1, high=annotations.PAGE_MAX)  # fmt: skip
    cursor = request.GET.get("cursor")
    after = parse_id(cursor, "cursor", ReviewError) if cursor not in (None, "") else None
    effective, history, next_cursor = annotations.scene_annotations(scene, limit, after)
    following = urlencode({"limit": limit, "cursor": next_cursor or ""})
    return {
        "scene": scene.pk,
        "effective": [annotations.annotation_json(a) for a in effective],
        "history": [annotations.annotation_json(a) for a in history],
        "limit": limit,
        "next_cursor": next_cursor,
        "next": f"{request.path}?{following}" if next_cursor else None,
    }


@_api
@require_http_methods(["GET", "POST"])
def api_annotations(request, scene_id):
    scene = scene_for(request.user, scene_id)
    if request.method == "GET":
        return JsonResponse(_annotations_page(request, scene))
    body = _json_body(request)
    # With a client_id a repeat returns the first row: safe to rerun after a lost connection.
    request.idempotent = bool(body.get("client_id"))
    missing = [f for f in ("kind", "label", "x", "y", "w", "h") if f not in body]
    if missing:
        raise ReviewError(
            f"missing field(s) {', '.join(missing)}: send kind, label, x, y, w, h "
            "(and client_id, detection)"
        )
    source = body.get("source", "ui")
    annotation, created = annotations.record_annotation(
        scene.project,
        scene,
        request.user,
        kind=body["kind"],
        label=body["label"],
        x=body["x"],
        y=body["y"],
        w=body["w"],
        h=body["h"],
        detection=body.get("detection"),
        client_id=body.get("client_id"),
        source=source,
    )
    return JsonResponse(annotations.annotation_json(annotation), status=201 if created else 200)


@_api
@require_http_methods(["POST"])
def api_annotation_undo(request, annotation_id):
    target = (
        Annotation.objects.select_related("project", "scene")
        .filter(pk=annotation_id, project__in=projects_for(request.user))
        .first()
    )
    if target is None:
        raise Http404("No such annotation among your projects' annotations.")
    body = _json_body(request)
    request.idempotent = bool(body.get("client_id"))  # as for an annotation
    try:
        row, created = annotations.undo(
            target, request.user, client_id=body.get("client_id"), source=body.get("source", "ui")
        )
    except annotations.UndoRefused as exc:
        return JsonResponse({"error": str(exc)}, status=403)
    return JsonResponse(annotations.annotation_json(row), status=201 if created else 200)


# -- queue, export, crops -------------------------------------------------------------------------


@_api
@require_http_methods(["GET"])
def api_queue(request, project_id):
    project = project_for(request.user, project_id)
    strategy = request.GET.get("strategy", queue.DEFAULT_STRATEGY)
    scene = request.GET.get("scene")
    scene = _scene_param(request, scene) if scene else None
    if scene is not None and scene.project_id != project.pk:
        raise Http404("No such scene in this project.")
    # ahead=1: asked for while the reviewer still looks at a window (the page's prefetch).
    ahead = parse_int(request.GET.get("ahead", "0"), "ahead", ReviewError, high=1)
    item = queue.next_queue_window(project, request.user, strategy, scene=scene, ahead=ahead)
    if item is None:
        return JsonResponse({"done": True, "strategy": strategy, "remaining": 0})
    return JsonResponse(item | {"done": False, "strategy": strategy})


@_api
@require_http_methods(["POST"])
def api_queue_release(request, project_id):
    """Give back a window this reviewer was handed but will not answer (strategy changed, page
    left), so another reviewer gets it now instead of after the lease expires."""
    project = project_for(request.user, project_id)
    body = _json_body(request)
    missing = [k for k in ("scene", "x", "y") if k not in body]
    if missing:
        raise ReviewError('send {"scene": id, "x": int, "y": int} of the window to give back')
    scene_id = parse_id(body["scene"], "scene", ReviewError)
    x, y = (pixel_int(k, body[k]) for k in ("x", "y"))
    scene = scene_for(request.user, scene_id)
    if scene.project_id != project.pk:
        raise Http404("No such scene in this project.")
    released = queue.release_lease(project, scene.pk, x, y, request.user)
    return JsonResponse({"released": released})


@_api
@require_http_methods(["POST"])
def api_queue_skip(request, project_id):
    """Skip a window ("not sure"): recorded as a skip, never as a label; the queue hands it out
    again after other windows were answered."""
    project = project_for(request.user, project_id)
    body = _json_body(request)
    missing = [k for k in ("scene", "x", "y") if k not in body]
    if missing:
        raise ReviewError('send {"scene": id, "x": int, "y": int} of the window to skip')
    scene = scene_for(request.user, parse_id(body["scene"], "scene", ReviewError))
    if scene.project_id != project.pk:
        raise Http404("No such scene in this project.")
    row = queue.skip_window(project, scene, request.user, body["x"], body["y"])
    return JsonResponse(
        {"skipped": row.pk, "scene": scene.pk, "x": row.x, "y": row.y,
         "returns_after": queue.skip_returns_after()},
        status=201,
    )  # fmt: skip


@_api
@require_http_methods(["GET"])
def api_export(request, project_id):
    project = project_for(request.user, project_id)
    fmt = request.GET.get("format", "coco")
    history = request.GET.get("history", "") in ("1", "true", "yes")
    slug = "".join(c if c.isalnum() else "-" for c in project.name).strip("-") or "project"
    suffix = "-history" if history else ""
    if fmt == "coco":
        response = HttpResponse(
            dumps(exports.export_coco(project, history)), content_type="application/json"
        )
        name = f"{slug}-annotations{suffix}.coco.json"
    elif fmt == "csv":
        response = HttpResponse(
            exports.export_csv(project, history), content_type="text/csv; charset=utf-8"
        )
        name = f"{slug}-annotations{suffix}.csv"
    else:
        raise ReviewError(f"format must be coco or csv, got {fmt!r}")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@_api
@require_http_methods(["GET"])
def api_window_image(request, scene_id):
    scene = scene_for(request.user, scene_id)
    for name in ("x", "y"):
        if name not in request.GET:
            raise ReviewError(f"{name} is required: ?x=<px>&y=<px>[&size=&context=&scale=]")
    image = crops.window_crop(
        scene,
        request.GET["x"],
        request.GET["y"],
        size=request.GET.get("size"),
        context=request.GET.get("context"),
        scale=request.GET.get("scale", 1),
        outline=request.GET.get("outline", "1") not in ("0", "false", "no"),
    )
    response = HttpResponse(crops.png_bytes(image), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@_api
@require_http_methods(["GET"])
def api_openapi(request):
    from labeling.web.openapi import build_schema

    return JsonResponse(build_schema())
