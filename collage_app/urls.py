from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from labeling.views.core import LoginView

urlpatterns = [
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # RQ dashboard: django-rq's views are staff-only.
    path("django-rq/", include("django_rq.urls")),
    path("", include("labeling.urls")),
]
