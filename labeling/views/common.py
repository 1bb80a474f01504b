"""What every JSON view shares: error responses and request bodies (numbers from user input:
labeling.web.input_parsing)."""

from __future__ import annotations

import json
from functools import wraps

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, JsonResponse
from django.http.multipartparser import MultiPartParserError


def json_api(*bad_input: type[Exception]):
    """Decorator: ``Http404`` (not among the user's projects) -> 404, any of ``bad_input`` -> 400,
    both as ``{"error": "..."}`` with the reason. A body Django refuses to read (too big, too
    many fields, a broken multipart) is a 400 with the reason too, never an HTML page."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                return view(request, *args, **kwargs)
            except Http404 as exc:
                return JsonResponse({"error": str(exc) or "not found"}, status=404)
            except bad_input as exc:
                return JsonResponse({"error": str(exc)}, status=400)
            except RequestDataTooBig:
                return JsonResponse({"error": body_too_big_message()}, status=400)
            except (SuspiciousOperation, MultiPartParserError) as exc:
                return JsonResponse({"error": f"the request cannot be read: {exc}"}, status=400)

        return wrapper

    return decorate


def body_too_big_message() -> str:
    from django.conf import settings

    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return (
        f"the request body is larger than {limit:,} bytes: send a smaller JSON body (files go "
        "as multipart uploads, up to UPLOAD_MAX_BYTES)"
    )


def json_body(request, error: type[Exception], example: str = '{"name": ...}') -> dict:
    """The request's JSON object, or ``error`` saying what was wrong and what to send."""
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and int() refusing a 4,300+ digit number;
        # RecursionError a body nested thousands deep.
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise error(
            f"the request body is not valid JSON ({reason}): send a JSON object with "
            "Content-Type: application/json"
        ) from None
    if not isinstance(body, dict):
        raise error(f"the request body must be a JSON object, e.g. {example}")
    return body
