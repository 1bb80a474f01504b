"""Routes of the review area's JSON API (labeling/views/api.py; pages are in urls_pages)."""

from django.urls import path

from labeling.views import api, coco, geo, labels

urlpatterns = [
    path("api/openapi.json", api.api_openapi, name="api-openapi"),
    path("api/projects", api.api_projects, name="api-projects"),
    path("api/projects/<int:project_id>", api.api_project, name="api-project"),
    path("api/projects/<int:project_id>/runs", api.api_runs, name="api-runs"),
    path(
        "api/projects/<int:project_id>/runs/<int:run_id>/coco-results",
        coco.api_run_coco_results,
        name="api-run-coco-results",
    ),
    path("api/projects/<int:project_id>/queue", api.api_queue, name="api-queue"),
    path(
        "api/projects/<int:project_id>/queue/release",
        api.api_queue_release,
        name="api-queue-release",
    ),
    path("api/projects/<int:project_id>/queue/skip", api.api_queue_skip, name="api-queue-skip"),
    path("api/projects/<int:project_id>/annotations/export", api.api_export, name="api-export"),
    path("api/projects/<int:project_id>/labels", labels.api_project_labels, name="api-labels"),
    path("api/scenes/<int:scene_id>/labels", labels.api_scene_labels, name="api-scene-labels"),
    path("api/scenes/<int:scene_id>", api.api_scene, name="api-scene"),
    path("api/scenes/<int:scene_id>/detections", api.api_detections, name="api-detections"),
    path("api/scenes/<int:scene_id>/annotations", api.api_annotations, name="api-annotations"),
    path("api/scenes/<int:scene_id>/geojson", geo.api_scene_geojson, name="api-scene-geojson"),
    path("api/scenes/<int:scene_id>/window.png", api.api_window_image, name="api-window-image"),
    path(
        "api/annotations/<int:annotation_id>/undo",
        api.api_annotation_undo,
        name="api-annotation-undo",
    ),
]
