"""Login on every page and API, with JSON answers for the API instead of a login redirect."""

from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import JsonResponse


class LoginRequiredEverywhere(LoginRequiredMiddleware):
    """Django's LoginRequiredMiddleware (views opt out with @login_not_required); scripts calling
    /api/ get a 401 JSON body rather than an HTML redirect."""

    def handle_no_permission(self, request, view_func):
        if request.path.startswith("/api/"):
            return JsonResponse(
                {"error": "authentication required: log in or send a session cookie"},
                status=401,
            )
        return super().handle_no_permission(request, view_func)
