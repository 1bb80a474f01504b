"""GET /api/scenes/<s>/geojson: the scene's detections and reviewed annotations as GeoJSON in
its coordinate system (labeling.review.geo_export); logged in, per-project access."""

from __future__ import annotations

import json

from django.http import Http404, HttpResponse
from django.views.decorators.http import require_http_methods

from labeling.access import scene_for
from labeling.review import feed
from labeling.review.common import ReviewError
from labeling.review.geo_export import scene_geojson
from labeling.views.common import json_api


@json_api(ReviewError)
@require_http_methods(["GET"])
def api_scene_geojson(request, scene_id):
    scene = scene_for(request.user, scene_id)
    run = feed.feed_run(scene, request.GET.get("run"))
    if run is None and request.GET.get("run"):
        raise Http404("No such finished scoring run of this scene.")
    body = json.dumps(scene_geojson(scene, run))
    response = HttpResponse(body, content_type="application/geo+json")
    response["Content-Disposition"] = f'attachment; filename="scene-{scene.pk}.geojson"'
    return response
