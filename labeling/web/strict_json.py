"""Every JSON answer is strict JSON (RFC 8259): Python's json writes NaN and Infinity for
non-finite floats (a diverged model's score, a ratio of zeros), which browsers' JSON.parse, GIS
tools and most clients refuse. This middleware is the project-wide net under the views' own
care: a JSON body that holds such a token outside strings is rewritten with null in its place
(and the path logged), so no client gets a body it cannot parse. The check is a byte search, so
answers without those words cost nothing more; gzip bodies (the detections feed) pass as they
are, their producers write finite numbers."""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)
TOKENS = (b"NaN", b"Infinity")


class _NotStrict(ValueError):
    pass


def _refuse(name):
    raise _NotStrict(name)


def strict_body(body: bytes) -> bytes | None:
    """``body`` rewritten as strict JSON (non-finite numbers -> null), or None when it is strict
    already or not JSON at all."""
    if not any(token in body for token in TOKENS):
        return None
    try:
        json.loads(body, parse_constant=_refuse)
        return None  # the words were inside strings
    except _NotStrict:
        data = json.loads(body, parse_constant=lambda _name: None)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return json.dumps(data, allow_nan=False).encode()


class StrictJsonResponses:
    """Innermost response middleware: JSON bodies leave as strict JSON."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        kind = response.get("Content-Type", "").split(";")[0].strip()
        if (
            response.streaming
            or response.has_header("Content-Encoding")
            or not (kind == "application/json" or kind.endswith("+json"))
        ):
            return response
        fixed = strict_body(response.content)
        if fixed is not None:
            log.warning("%s answered non-finite numbers in JSON: sent as null", request.path)
            response.content = fixed
            if response.has_header("Content-Length"):
                response["Content-Length"] = str(len(fixed))
        return response
