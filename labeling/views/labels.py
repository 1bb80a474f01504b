"""GET the scene's labels (labeling.review.scene_labels): the reviewed boxes plus the model's
boxes no reviewer rejected, as JSON, COCO ground truth, YOLO text files (zip), CSV or GeoJSON.

``/api/projects/<p>/labels?format=&scene=`` (every scene, or one) and ``/api/scenes/<s>/labels``
(GeoJSON: one scene, ``crs=wgs84|native|pixels`` as the detections' GeoJSON);
logged in, per-project access like every API route."""

from __future__ import annotations

import json

from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.http import require_http_methods

from labeling.projects.access import project_for, scene_for
from labeling.review import scene_labels as sl
from labeling.review.common import ReviewError
from labeling.views.common import json_api
from labeling.web.input_parsing import parse_id
from mlcore.ingest.georef import CRS_MODES, GeorefError


def _labels_response(project, scene, fmt: str, stem: str, request_crs: str) -> HttpResponse:
    fmt = sl.check_format(fmt)
    if fmt == "json":
        scenes = sl.project_scenes(project, scene)
        names = {s.pk: sl.image_file_name(s) for s in scenes}
        body = []
        for s in scenes:
            labels = sl.scene_labels(s)
            body.append({"scene": s.pk, "name": s.name, "file_name": names[s.pk],
                         "summary": sl.labels_summary(s, labels), "labels": labels})  # fmt: skip
        return JsonResponse({"project": project.pk, "scenes": body})
    if fmt == "geojson":
        if scene is None:
            scenes = sl.project_scenes(project)
            if len(scenes) != 1:
                raise ReviewError(
                    "GeoJSON holds one scene (one coordinate system): add &scene=<id> "
                    f"(this project has {len(scenes)} scenes)"
                )
            scene = scenes[0]
        crs = request_crs
        if crs not in CRS_MODES:
            raise ReviewError(f"crs must be one of {', '.join(CRS_MODES)}, got {crs[:50]!r}")
        try:
            data = sl.labels_geojson(scene, crs)
        except GeorefError as exc:  # as the detections' GeoJSON answers it
            return JsonResponse({"error": str(exc)}, status=409)
        response = HttpResponse(json.dumps(data, allow_nan=False),
                                content_type="application/geo+json")  # fmt: skip
        name = f"scene-{scene.pk}-labels.geojson"
    elif fmt == "coco":
        response = HttpResponse(json.dumps(sl.labels_coco(project, scene)),
                                content_type="application/json")  # fmt: skip
        name = f"{stem}-labels.coco.json"
    elif fmt == "csv":
        response = HttpResponse(sl.labels_csv(project, scene), content_type="text/csv")
        name = f"{stem}-labels.csv"
    else:  # yolo
        response = HttpResponse(sl.labels_yolo(project, scene), content_type="application/zip")
        name = f"{stem}-labels.yolo.zip"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@json_api(ReviewError)
@require_http_methods(["GET"])
def api_project_labels(request, project_id):
    project = project_for(request.user, project_id)
    scene = None
    if request.GET.get("scene") not in (None, ""):
        scene_id = parse_id(request.GET["scene"], "scene", ReviewError)
        scene = project.scenes.filter(pk=scene_id).first()
        if scene is None:
            raise Http404("No such scene in this project.")
    stem = f"project-{project.pk}" if scene is None else f"scene-{scene.pk}"
    return _labels_response(project, scene, request.GET.get("format", "json"), stem,
                            request.GET.get("crs") or "wgs84")  # fmt: skip


@json_api(ReviewError)
@require_http_methods(["GET"])
def api_scene_labels(request, scene_id):
    scene = scene_for(request.user, scene_id)
    return _labels_response(scene.project, scene, request.GET.get("format", "json"),
                            f"scene-{scene.pk}", request.GET.get("crs") or "wgs84")  # fmt: skip
