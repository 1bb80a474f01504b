"""What every JSON view shares: error responses and request bodies."""

from __future__ import annotations

import json
from functools import wraps

from django.http import Http404, JsonResponse


def json_api(*bad_input: type[Exception]):
    """Decorator: ``Http404`` (not among the user's projects) -> 404, any of ``bad_input`` -> 400,
    both as ``{"error": "..."}`` with the reason."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                return view(request, *args, **kwargs)
            except Http404 as exc:
                return JsonResponse({"error": str(exc) or "not found"}, status=404)
            except bad_input as exc:
                return JsonResponse({"error": str(exc)}, status=400)

        return wrapper

    return decorate


def json_body(request, error: type[Exception], example: str = '{"name": ...}') -> dict:
    """The request's JSON object, or ``error`` saying what was wrong and what to send."""
    try:
        body = json.loads(request.body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(
            f"the request body is not valid JSON ({exc}): send a JSON object with "
            "Content-Type: application/json"
        ) from None
    if not isinstance(body, dict):
        raise error(f"the request body must be a JSON object, e.g. {example}")
    return body
