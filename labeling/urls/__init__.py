from django.urls import include, path

from labeling.views import core

urlpatterns = [
    path("", core.project_list, name="project-list"),
    path("health/", core.health, name="health"),
    path("api/health", core.health, name="api-health"),
    # Each area of the app keeps its routes in its own module.
    path("", include("labeling.urls.review")),
    path("", include("labeling.urls.data")),
    path("", include("labeling.urls.loop")),
    path("", include("labeling.urls.pages")),
]
