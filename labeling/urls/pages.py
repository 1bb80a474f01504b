"""Routes of the review area's pages (see labeling/views/pages.py)."""

from django.urls import path

from labeling.views import pages

urlpatterns = [
    path("projects/<int:project_id>/", pages.project_dashboard, name="project-dashboard"),
    path("projects/<int:project_id>/review/", pages.review_queue, name="review-queue"),
    path("projects/<int:project_id>/metrics/", pages.project_metrics, name="project-metrics"),
    path("scenes/<int:scene_id>/", pages.scene_viewer, name="scene-viewer"),
    path("scenes/<int:scene_id>/dzi/<path:path>", pages.scene_dzi, name="scene-dzi"),
]
