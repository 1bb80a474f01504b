"""Routes of the data area (see labeling/views/data.py)."""

from django.urls import path

from labeling.views import data

urlpatterns = [
    path("projects/new/", data.project_new, name="project-new"),
    path("projects/<int:project_id>/edit/", data.project_edit, name="project-edit"),
    path("projects/<int:project_id>/datasets/new/", data.dataset_new, name="dataset-new"),
    path(
        "projects/<int:project_id>/datasets/<int:dataset_id>/",
        data.dataset_detail,
        name="dataset-detail",
    ),
    path("projects/<int:project_id>/scenes/new/", data.scene_new, name="scene-new"),
    path(
        "projects/<int:project_id>/scenes/<int:scene_id>/import/",
        data.scene_import,
        name="scene-import",
    ),
    path("api/projects/<int:project_id>/datasets", data.api_datasets, name="api-datasets"),
    path(
        "api/projects/<int:project_id>/datasets/<int:dataset_id>",
        data.api_dataset_detail,
        name="api-dataset-detail",
    ),
    path("api/projects/<int:project_id>/scenes", data.api_scenes, name="api-scenes"),
    path(
        "api/projects/<int:project_id>/scenes/<int:scene_id>/import",
        data.api_scene_import,
        name="api-scene-import",
    ),
]
