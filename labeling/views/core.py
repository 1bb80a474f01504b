"""Pages every user sees first: the project list and the health page."""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render

from labeling.access import projects_for
from labeling.health import health_report


@login_required
def project_list(request):
    projects = projects_for(request.user).prefetch_related("scenes", "model_versions")
    return render(request, "labeling/project_list.html", {"projects": projects})


@login_required
def health(request):
    report = health_report()
    status = 200 if report["ok"] else 503
    if request.GET.get("format") == "json" or request.path.startswith("/api/"):
        return JsonResponse(report, status=status)
    return render(request, "labeling/health.html", {"report": report}, status=status)
