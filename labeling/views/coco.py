"""GET /api/projects/<p>/runs/<r>/coco-results: a scoring run's detections as a COCO results
JSON file (labeling.scoring.coco_results); logged in, per-project access (another project's run:
404)."""

from __future__ import annotations

import json

from django.http import Http404, HttpResponse
from django.views.decorators.http import require_http_methods

from labeling.models import ScoringRun
from labeling.projects.access import project_for
from labeling.scoring.coco_results import ExportError, export_run_results
from labeling.views.common import json_api


@json_api(ExportError)
@require_http_methods(["GET"])
def api_run_coco_results(request, project_id, run_id):
    project = project_for(request.user, project_id)
    run = (
        ScoringRun.objects.select_related("scene__project")
        .filter(pk=run_id, scene__project=project)
        .first()
    )
    if run is None:
        raise Http404("No such scoring run in this project.")
    boxes = request.GET.get("boxes", "ranked")
    results = export_run_results(run, boxes, request.GET.get("min_score"))
    response = HttpResponse(json.dumps(results), content_type="application/json")
    name = f"run-{run.pk}-scene-{run.scene_id}-{boxes}.coco-results.json"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
