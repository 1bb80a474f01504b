"""Routes of the loop area (see labeling/views/loop.py)."""

from django.urls import path

from labeling.views import loop

urlpatterns = [
    path("api/projects/<int:project_id>/retrain", loop.api_retrain, name="api-retrain"),
    path(
        "api/projects/<int:project_id>/models/<int:number>/current",
        loop.api_model_current,
        name="api-model-current",
    ),
    path("api/projects/<int:project_id>/jobs", loop.api_jobs, name="api-jobs"),
    path("api/jobs/<int:job_id>", loop.api_job, name="api-job"),
]
