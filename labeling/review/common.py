"""What every review module shares: the error bad input raises (the views turn it into a 400),
the parser of pixel numbers from users, and compact JSON bytes."""

from __future__ import annotations

import json


class ReviewError(ValueError):
    """Bad input to a review service; the message says what was wrong and what to do."""


# Pixel coordinates and sizes from users: far beyond any scene, far inside a bigint.
PIXELS_MAX = 10**9


def pixel_int(name: str, value) -> int:
    """A pixel number from JSON or a query string: ASCII digits only (int() would take "²" or
    "٣"), bounded so no huge number reaches arithmetic or the database."""
    from labeling.web.input_parsing import parse_int

    return parse_int(value, f"{name} (scene pixels)", ReviewError, -PIXELS_MAX, PIXELS_MAX)


def dumps(data) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
