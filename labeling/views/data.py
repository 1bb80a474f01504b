"""Pages and JSON API of the data area: new project, datasets (upload or storage path, import
progress, count table), scenes (upload, storage path, collage). The work itself is in
labeling.ingest.uploads (checks, storing) and the jobs it enqueues (workers.data_jobs, run by
RQ)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_safe

from labeling.forms import DatasetForm, ProjectForm, SceneForm, classes_from_rows
from labeling.ingest.demo_data import demo_target_path, demo_tiles_path
from labeling.ingest.uploads import (
    UploadError,
    add_collage_scene,
    add_dataset,
    add_scene,
    scene_url,
)
from labeling.jobs.enqueue import job_state
from labeling.models import Dataset, JobRecord, Project, Scene
from labeling.projects.access import project_for
from labeling.projects.edit import class_lock_reason, locked_change
from labeling.projects.measured_size import measured_object_size
from labeling.views.common import json_api, json_body
from labeling.web.input_parsing import parse_int

# --- helpers ---------------------------------------------------------------------------------


def _latest_job(project, kinds, **params) -> JobRecord | None:
    lookup = {f"params__{k}": v for k, v in params.items()}
    return (
        JobRecord.objects.filter(project=project, kind__in=kinds, **lookup)
        .order_by("-created_at")
        .first()
    )


def dataset_state(dataset: Dataset) -> dict:
    """What the dataset page polls and the API returns."""
    job = _latest_job(dataset.project, ["import_dataset"], dataset_id=dataset.pk)
    return {
        "id": dataset.pk,
        "project": dataset.project_id,
        "name": dataset.name,
        "source": dataset.source,
        "status": dataset.status,
        "error": dataset.error,
        "storage_key": dataset.storage_key,
        "sha256": dataset.sha256,
        "class_counts": dataset.ordered_counts(),
        "skipped": dataset.skipped,
        "job": job_state(job) if job else None,
        "url": reverse("dataset-detail", args=[dataset.project_id, dataset.pk]),
    }


def scene_state(scene: Scene) -> dict:
    jobs = {}
    for kind in ("import_scene", "make_collage", "dzi"):
        job = _latest_job(scene.project, [kind], scene_id=scene.pk)
        if job:
            jobs[kind] = job_state(job)
    return {
        "id": scene.pk,
        "project": scene.project_id,
        "name": scene.name,
        "width": scene.width,
        "height": scene.height,
        "ready": bool(scene.pixels_key),
        "image_key": scene.image_key,
        "pixels_key": scene.pixels_key,
        "dzi_key": scene.dzi_key,
        "ground_truth_key": scene.ground_truth_key,
        "sha256": scene.sha256,
        "jobs": jobs,
        "viewer_url": scene_url(scene),
        "import_url": reverse("scene-import", args=[scene.project_id, scene.pk]),
    }


def _failed_scene_job(project, scene_id) -> JobRecord | None:
    """The job that tried to make a scene which no longer exists (it failed and was removed)."""
    return _latest_job(project, ["import_scene", "make_collage"], scene_id=scene_id)


_api = json_api(UploadError)


def _json_body(request) -> dict:
    return json_body(request, UploadError)


def _is_json(request) -> bool:
    return request.content_type == "application/json"


def _form_errors(form) -> dict:
    return {field: [str(e) for e in errors] for field, errors in form.errors.items()}


def _error_text(form) -> str:
    """One line naming every problem: 'Class names must be unique.; window_size: ...'."""
    parts = []
    for field, errors in _form_errors(form).items():
        text = " ".join(errors)
        parts.append(text if field == "__all__" else f"{field}: {text}")
    return "; ".join(parts) or "invalid request"


# --- project ---------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def project_new(request):
    if request.method == "POST":
        form = ProjectForm(request.POST, classes=classes_from_rows(request.POST))
        if form.is_valid():
            project = form.save(user=request.user)
            messages.success(request, f"Project {project.name!r} created: add a dataset next.")
            return redirect("dataset-new", project.pk)
    else:
        form = ProjectForm()
    return render(request, "labeling/project_form.html",
                  {"form": form, "preset": ProjectForm.preset()})  # fmt: skip


@require_http_methods(["GET", "POST"])
def project_edit(request, project_id):
    """The project's settings and classes; what a trained model depends on stays locked
    (labeling.projects.edit)."""
    project = project_for(request.user, project_id)
    lock = class_lock_reason(project)
    if request.method == "POST":
        classes = classes_from_rows(request.POST)
        form = ProjectForm(request.POST, instance=project, classes=classes)
        if form.is_valid():
            refusal = locked_change(project, classes, form.cleaned_data)
            if refusal is None:
                form.save()
                messages.success(request, f"Project {project.name!r} saved.")
                return redirect("project-dashboard", project.pk)
            form.add_error(None, refusal)
        project.refresh_from_db()
    else:
        form = ProjectForm(instance=project)
    return render(
        request,
        "labeling/project_form.html",
        {
            "form": form,
            "project": project,
            "editing": True,
            "lock": lock,
            "measured": measured_object_size(project),  # offered for the object size
        },
        status=400 if request.method == "POST" else 200,
    )


def project_json(project: Project) -> dict:
    return {
        "id": project.pk,
        "name": project.name,
        "description": project.description,
        "classes": project.classes,
        "negative_class": project.negative_class,
        "class_names": project.class_names,
        "window_size": project.window_size,
        "object_size": project.object_size,
        "train_step": project.train_step,
        "score_step": project.score_step,
        "threshold": project.threshold,
        "engine": project.engine,
        "start_from_scratch": project.start_from_scratch,
        "members": [u.username for u in project.members.all()],
        "url": f"/projects/{project.pk}/",
    }


@_api
@require_http_methods(["POST"])
def api_project_create(request):
    body = _json_body(request)
    data = {
        field: body.get(field, Project._meta.get_field(field).get_default())
        for field in ProjectForm.Meta.fields
    }
    # The API keeps its documented default (the demo's classes) when none are given.
    form = ProjectForm(data, classes=body.get("classes", ProjectForm.preset()))
    if not form.is_valid():
        return JsonResponse({"error": _error_text(form), "fields": _form_errors(form)}, status=400)
    project = form.save(user=request.user)
    return JsonResponse(project_json(project), status=201)


def project_update(request, project) -> JsonResponse:
    """PATCH /api/projects/<id>: the fields given change, the others stay; 400 with the reason
    (a locked class edit, an invalid value), 200 with the project."""
    try:  # called from the review area's api_project, whose wrapper knows other errors
        body = _json_body(request)
    except UploadError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    data = {field: body.get(field, getattr(project, field)) for field in ProjectForm.Meta.fields}
    if "threshold_mode" in body:
        data["threshold_mode"] = body["threshold_mode"]
    else:
        data["threshold_mode"] = "calibrated" if project.use_calibrated_thresholds else "fixed"
    classes = body.get("classes", project.classes)
    form = ProjectForm(data, instance=project, classes=classes)
    if not form.is_valid():
        return JsonResponse({"error": _error_text(form), "fields": _form_errors(form)}, status=400)
    refusal = locked_change(project, classes, form.cleaned_data)
    if refusal is not None:
        return JsonResponse({"error": refusal}, status=409)
    project = form.save()
    return JsonResponse(project_json(project))


# --- datasets --------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def dataset_new(request, project_id):
    project = project_for(request.user, project_id)
    form = DatasetForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            dataset, _record = add_dataset(
                project,
                upload=form.cleaned_data["upload"],
                key=form.cleaned_data["storage_key"],
                name=form.cleaned_data["name"].strip(),
                split=form.cleaned_data["split"],
            )
        except UploadError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Importing {dataset.name!r}…")
            return redirect("dataset-detail", project.pk, dataset.pk)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "labeling/dataset_form.html",
        {"project": project, "form": form, "datasets": project.datasets.all()},
        status=status,
    )


@require_safe
def dataset_detail(request, project_id, dataset_id):
    project = project_for(request.user, project_id)
    dataset = get_object_or_404(Dataset, pk=dataset_id, project=project)
    return render(
        request,
        "labeling/dataset_detail.html",
        {"project": project, "dataset": dataset, "state": dataset_state(dataset)},
    )


@_api
@require_http_methods(["GET", "POST"])
def api_datasets(request, project_id):
    project = project_for(request.user, project_id)
    if request.method == "GET":
        return JsonResponse({"datasets": [dataset_state(d) for d in project.datasets.all()]})
    if _is_json(request):
        body = _json_body(request)
        if not body.get("storage_key"):
            raise UploadError("send {'storage_key': ...} as JSON, or upload a file as multipart")
        dataset, record = add_dataset(
            project,
            key=str(body["storage_key"]),
            name=str(body.get("name", "")),
            split=str(body.get("split", "all")),
        )
    else:
        form = DatasetForm(
            {
                "name": request.POST.get("name", ""),
                "storage_key": request.POST.get("storage_key", ""),
                "split": request.POST.get("split", "all"),
            },
            {"upload": request.FILES.get("file") or request.FILES.get("upload")}
            if ("file" in request.FILES or "upload" in request.FILES)
            else None,
        )
        if not form.is_valid():
            return JsonResponse(
                {"error": _error_text(form), "fields": _form_errors(form)}, status=400
            )
        dataset, record = add_dataset(
            project,
            upload=form.cleaned_data["upload"],
            key=form.cleaned_data["storage_key"],
            name=form.cleaned_data["name"].strip(),
            split=form.cleaned_data["split"],
        )
    return JsonResponse({**dataset_state(dataset), "job_id": record.pk}, status=202)


@_api
@require_http_methods(["GET"])
def api_dataset_detail(request, project_id, dataset_id):
    project = project_for(request.user, project_id)
    try:
        dataset = Dataset.objects.get(pk=dataset_id, project=project)
    except Dataset.DoesNotExist:
        raise Http404("No such dataset in this project.") from None
    return JsonResponse(dataset_state(dataset))


# --- scenes ----------------------------------------------------------------------------------


def _scene_form(project, data=None, files=None):
    return SceneForm(data, files, project=project, demo_available=demo_tiles_path() is not None)


@require_http_methods(["GET", "POST"])
def scene_new(request, project_id):
    project = project_for(request.user, project_id)
    form = _scene_form(project, request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if data["source"] == "collage":
                scene, _record = add_collage_scene(
                    project, tiles=data["tiles"], target=data["target"], cols=data["cols"],
                    name=data["name"].strip(),
                )  # fmt: skip
            else:
                scene, _record = add_scene(
                    project,
                    upload=data["image"] if data["source"] == "upload" else None,
                    key=data["storage_key"].strip() if data["source"] == "storage" else "",
                    name=data["name"].strip(),
                    ground_truth=data["ground_truth"],
                )
        except UploadError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Scene {scene.name!r} added: preparing it…")
            return redirect("scene-import", project.pk, scene.pk)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "labeling/scene_form.html",
        {
            "project": project,
            "form": form,
            "scenes": project.scenes.all(),
            "demo_target": demo_target_path() is not None,
        },
        status=status,
    )


@require_safe
def scene_import(request, project_id, scene_id):
    """Progress of a scene's preparation (pixels, deep-zoom tiles, first scoring)."""
    project = project_for(request.user, project_id)
    scene = Scene.objects.filter(pk=scene_id, project=project).first()
    if scene is None:
        job = _failed_scene_job(project, scene_id)
        if job is None:
            raise Http404("No such scene in this project.")
        return render(
            request,
            "labeling/scene_form.html",
            {"project": project, "form": _scene_form(project), "failed_job": job_state(job),
             "scenes": project.scenes.all(), "demo_target": demo_target_path() is not None},
            status=410,
        )  # fmt: skip
    return render(
        request,
        "labeling/scene_form.html",
        {"project": project, "scene": scene, "state": scene_state(scene)},
    )


@_api
@require_http_methods(["GET", "POST"])
def api_scenes(request, project_id):
    project = project_for(request.user, project_id)
    if request.method == "GET":
        return JsonResponse({"scenes": [scene_state(s) for s in project.scenes.all()]})
    if _is_json(request):
        body = _json_body(request)
        if "collage" in body:
            spec = body["collage"] if isinstance(body["collage"], dict) else {}
            try:
                cols = parse_int(spec.get("cols", 80), "cols", ValueError, -(2**31), 2**31)
                seed = parse_int(spec.get("seed", 0), "seed", ValueError, 0, 2**32 - 1)
            except ValueError as exc:
                raise UploadError(f"collage cols and seed must be whole numbers: {exc}") from None
            if not 2 <= cols <= 400:
                raise UploadError(f"collage cols must be between 2 and 400, not {cols}")
            scene, record = add_collage_scene(
                project, tiles=str(spec.get("tiles", "demo")), cols=cols,
                name=str(body.get("name", "")), seed=seed,
            )  # fmt: skip
        elif body.get("storage_key"):
            scene, record = add_scene(
                project, key=str(body["storage_key"]), name=str(body.get("name", ""))
            )
        else:
            raise UploadError(
                "send {'storage_key': ...} or {'collage': {'tiles': 'demo'|<dataset id>}} as "
                "JSON, or upload 'image' (and optionally 'ground_truth') as multipart"
            )
    else:
        form = _scene_form(
            project,
            {
                "source": request.POST.get("source")
                or ("collage" if request.POST.get("tiles") else "upload"),
                "name": request.POST.get("name", ""),
                "storage_key": request.POST.get("storage_key", ""),
                "tiles": request.POST.get("tiles", ""),
                "cols": request.POST.get("cols", 80),
            },
            request.FILES,
        )
        if not form.is_valid():
            return JsonResponse(
                {"error": _error_text(form), "fields": _form_errors(form)}, status=400
            )
        data = form.cleaned_data
        if data["source"] == "collage":
            scene, record = add_collage_scene(
                project, tiles=data["tiles"], target=data["target"], cols=data["cols"],
                name=data["name"].strip(),
            )  # fmt: skip
        else:
            scene, record = add_scene(
                project,
                upload=data["image"] if data["source"] == "upload" else None,
                key=data["storage_key"].strip() if data["source"] == "storage" else "",
                name=data["name"].strip(),
                ground_truth=data["ground_truth"],
            )
    return JsonResponse({**scene_state(scene), "job_id": record.pk}, status=202)


@_api
@require_http_methods(["GET"])
def api_scene_import(request, project_id, scene_id):
    project = project_for(request.user, project_id)
    scene = Scene.objects.filter(pk=scene_id, project=project).first()
    if scene is None:
        job = _failed_scene_job(project, scene_id)
        if job is None:
            raise Http404("No such scene in this project.")
        return JsonResponse(
            {"id": int(scene_id), "ready": False, "removed": True, "job": job_state(job)},
            status=410,
        )
    return JsonResponse(scene_state(scene))
