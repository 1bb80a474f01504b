"""Pages every user sees first: the login, the project list and the health page."""

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from labeling.projects.access import projects_for
from labeling.web.health import for_member, health_report
from labeling.web.middleware import reconnect_if_cut


class LoginView(auth_views.LoginView):
    """Django's login, surviving a database connection cut by the server: checking the password
    takes long enough for a cut to land while the connection is idle, so it is replaced if so
    before the session is written; and what follows may be rerun whole (another session row, the
    same user logged in), so the retry middleware reruns a login that failed after writing."""

    http_method_names = ["get", "head", "post", "options"]  # FormView would take PUT as POST

    def form_valid(self, form):
        self.request.idempotent = True
        reconnect_if_cut()
        return super().form_valid(form)


@login_required
@require_safe
def project_list(request):
    projects = projects_for(request.user).prefetch_related("scenes", "model_versions")
    return render(request, "labeling/project_list.html", {"projects": projects})


def csrf_failure(request, reason=""):
    """settings.CSRF_FAILURE_VIEW: the API answers a refused CSRF check in JSON like every other
    error; pages get Django's own explanation page."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": f"CSRF check failed ({reason}): send the csrftoken cookie's value in an "
                      "X-CSRFToken header"},
            status=403,
        )  # fmt: skip
    from django.views.csrf import csrf_failure as django_csrf_failure

    return django_csrf_failure(request, reason)


@login_required
@require_safe
def health(request):
    report = health_report()
    status = 200 if report["ok"] else 503
    if not request.user.is_staff:
        report = for_member(report)
    if request.GET.get("format") == "json" or request.path.startswith("/api/"):
        return JsonResponse(report, status=status)
    return render(request, "labeling/health.html", {"report": report}, status=status)
