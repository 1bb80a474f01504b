"""GET /api/scenes/<s>/geojson[?crs=wgs84|native|pixels]: the scene's detections and reviewed
annotations as GeoJSON (labeling.review.geo_export); logged in, per-project access. Georeferencing
that cannot give the asked coordinates is a 409 that says why and what to ask for instead."""

from __future__ import annotations

import json

from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.http import require_http_methods

from labeling.projects.access import scene_for
from labeling.review import feed
from labeling.review.common import ReviewError
from labeling.review.geo_export import scene_geojson
from labeling.views.common import json_api
from mlcore.ingest.georef import CRS_MODES, GeorefError


@json_api(ReviewError)
@require_http_methods(["GET"])
def api_scene_geojson(request, scene_id):
    scene = scene_for(request.user, scene_id)
    run = feed.feed_run(scene, request.GET.get("run"))
    if run is None and request.GET.get("run"):
        raise Http404("No such finished scoring run of this scene.")
    crs = request.GET.get("crs") or "wgs84"
    if crs not in CRS_MODES:
        raise ReviewError(f"crs must be one of {', '.join(CRS_MODES)}, got {crs[:50]!r}")
    try:
        data = scene_geojson(scene, run, crs=crs)
    except GeorefError as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    body = json.dumps(data, allow_nan=False)  # strict JSON: mlcore.ingest.georef keeps it finite
    response = HttpResponse(body, content_type="application/geo+json")
    response["Content-Disposition"] = f'attachment; filename="scene-{scene.pk}.geojson"'
    return response
