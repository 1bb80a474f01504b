"""JSON API of the loop area: start a retrain cycle, switch the current model (rollback or
promote), list a project's jobs and read one job with its log. Thin: the work is in
labeling.loop.cycle (cycle state, promotion) and labeling.jobs.enqueue (JobRecord state)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods

from labeling.jobs.enqueue import job_state
from labeling.jobs.kinds import job_label
from labeling.loop.cycle import (
    TRAIN_PROFILES,
    CycleAlreadyRunning,
    make_current_by_hand,
    reconcile_job,
    start_cycle,
)
from labeling.loop.first_model import NothingToTrainOn
from labeling.models import JobRecord, ModelVersion
from labeling.projects.access import project_for, projects_for
from labeling.views.common import json_api, json_body
from labeling.web.input_parsing import parse_int
from mlcore.model.starting_model import StartingModelError

JOBS_LIMIT_MAX = 200


class BadRequest(ValueError):
    pass


_api = json_api(BadRequest)


def _wants_json(request) -> bool:
    return request.content_type == "application/json" or "json" in request.headers.get("Accept", "")


def _json_body(request) -> dict:
    return json_body(request, BadRequest, '{"profile": "quick"}')


def _back(request, project):
    """Where a form POST from the dashboard returns to."""
    target = request.POST.get("next", "")
    if target.startswith("/") and not target.startswith("//"):
        return redirect(target)
    return redirect(f"/projects/{project.pk}/")


def version_json(version: ModelVersion) -> dict:
    return {
        "number": version.number,
        "status": version.status,
        "is_current": version.is_current,
        "parent": version.parent.number if version.parent_id else None,
        "started_from": version.started_from,
        "metrics": version.metrics,
        "thresholds": version.thresholds,  # calibrated, from the model file
        "error": version.error,
    }


def job_json(record: JobRecord, with_log: bool = False) -> dict:
    state = job_state(record)
    out = {
        "id": record.pk,
        "project": record.project_id,
        "kind": record.kind,
        "label": state["label"],  # the kind in words (labeling.jobs.kinds)
        "queue": record.queue,
        "status": record.status,
        "progress_done": record.progress_done,
        "progress_total": record.progress_total,
        "fraction": state["fraction"],
        "message": record.message,
        "error": record.error,
        "params": record.params,
        "created_at": record.created_at.isoformat(),
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "finished_at": state["finished_at"],
    }
    if with_log:
        out["log"] = record.log
        out["result"] = record.result
    return out


@_api
@require_http_methods(["POST"])
def api_retrain(request, project_id):
    """Start a retrain cycle: 202 {"job", "version"}; 409 while one runs. A form POST (from the
    dashboard) redirects back with the same message."""
    project = project_for(request.user, project_id)
    as_json = _wants_json(request)
    body = _json_body(request) if request.content_type == "application/json" else {}
    profile = body.get("profile") or request.POST.get("profile") or request.GET.get("profile")
    # The dashboard's button names none: the installation's default (tests: the tiny one).
    profile = profile or settings.DEFAULT_TRAIN_PROFILE
    if not isinstance(profile, str) or profile not in TRAIN_PROFILES:
        text = (
            f"Unknown training profile {str(profile)[:40]!r}: use one of "
            f"{', '.join(TRAIN_PROFILES)}."
        )
        if not as_json:
            messages.error(request, text)
            return _back(request, project)
        raise BadRequest(text)
    try:
        record = start_cycle(project, request.user, profile=profile)
    except (StartingModelError, NothingToTrainOn) as exc:  # what to fix, in words
        if not as_json:
            messages.error(request, str(exc))
            return _back(request, project)
        return JsonResponse({"error": str(exc)}, status=409)
    except CycleAlreadyRunning as exc:
        if not as_json:
            messages.warning(request, str(exc))
            return _back(request, project)
        body = {"error": str(exc)}
        if exc.record is not None:
            body["job"] = exc.record.pk
        if exc.version is not None:
            body["version"] = exc.version.number
        return JsonResponse(body, status=409)
    version = ModelVersion.objects.get(pk=record.params["version_id"])
    if not as_json:
        messages.success(
            request, f"{job_label(record)} started: model v{version.number} is training."
        )
        return _back(request, project)
    return JsonResponse(
        {
            "job": record.pk,
            "label": job_label(record),
            "version": version.number,
            "status": version.status,
        },
        status=202,
    )


@_api
@require_http_methods(["POST"])
def api_model_current(request, project_id, number):
    """Make model version <number> current (rollback or promote)."""
    project = project_for(request.user, project_id)
    version = ModelVersion.objects.filter(project=project, number=number).first()
    if version is None:
        raise Http404(f"Project {project.name!r} has no model v{number}.")
    try:
        scoring = make_current_by_hand(project, version, request.user)
    except ValueError as exc:
        if not _wants_json(request):
            messages.error(request, str(exc))
            return _back(request, project)
        raise BadRequest(str(exc)) from None
    if not _wants_json(request):
        scenes = f"{len(scoring)} scene{'s' if len(scoring) != 1 else ''}"
        then = f"; scoring the {scenes} it had not scored" if scoring else ""
        messages.success(request, f"Model v{version.number} is now current{then}.")
        return _back(request, project)
    version.refresh_from_db()
    return JsonResponse(version_json(version) | {"scoring_runs": [r.pk for r in scoring]})


@_api
@require_http_methods(["GET"])
def api_jobs(request, project_id):
    """Recent jobs of the project, newest first (?limit=, default 50, at most 200)."""
    project = project_for(request.user, project_id)
    limit = parse_int(request.GET.get("limit", 50), "limit", BadRequest, 1,
                      JOBS_LIMIT_MAX)  # fmt: skip
    records = JobRecord.objects.filter(project=project).order_by("-created_at", "-id")[:limit]
    return JsonResponse({"jobs": [job_json(reconcile_job(r)) for r in records]})


@_api
@require_http_methods(["GET"])
def api_job(request, job_id):
    """One job with its log (only for members of its project)."""
    record = JobRecord.objects.filter(pk=job_id).first()
    visible = record is not None and (
        (record.project_id is None and request.user.is_superuser)
        or projects_for(request.user).filter(pk=record.project_id).exists()
    )
    if not visible:
        raise Http404("No such job among your projects' jobs.")
    return JsonResponse(job_json(reconcile_job(record), with_log=True))
