"""Whole numbers and text from user input (JSON bodies, query strings, command arguments),
checked before they reach arithmetic or the database: ASCII digits only, bounded; text that
PostgreSQL can store. Refused with a message naming the field. Services raise their own error
type (ReviewError, UploadError...), views turn it into 400."""

from __future__ import annotations

import re

# Database ids are PostgreSQL bigints: a larger number can never name a row, and sending one to
# the database is an error there, not a "no such row".
ID_MAX = 2**63 - 1
# Beyond this many digits a number is no pixel count or id (and int() of 4,300+ digits raises
# ValueError since Python 3.11).
INT_DIGITS_MAX = 19


def parse_int(value, name: str, error: type[Exception], low: int = 0, high: int = ID_MAX) -> int:
    """``value`` (a JSON number or a string of ASCII digits) as an int in [low, high], or
    ``error`` naming the field. Unicode digits ("²", "٣") that str.isdigit() and int() accept
    are refused: they are never what a client meant."""
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] == "-" else text
        ok = digits.isascii() and digits.isdecimal() and len(digits) <= INT_DIGITS_MAX
        number = int(text) if ok else None
    else:
        number = None
    if number is None:
        raise error(f"{name} must be an integer (a whole number), got {_shown(value)}")
    if not low <= number <= high:
        raise error(f"{name} must be between {low} and {high}, got {_shown(value)}")
    return number


def _shown(value) -> str:
    """The value for an error message, short (a huge int is not even converted to text)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return "a number with more than 30 digits"
    return repr(value if isinstance(value, (int, float, str)) else type(value).__name__)[:60]


def parse_id(value, name: str, error: type[Exception]) -> int:
    """An object id from user input (1 .. bigint max)."""
    return parse_int(value, name, error, low=1)


def parse_fraction(value, name: str, error: type[Exception]) -> float | None:
    """An optional number in [0, 1] from user input (a score floor); None when not given."""
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise error(f"{name} must be a number in [0, 1], got {_shown(value)}") from None
    if not 0.0 <= number <= 1.0:  # also refuses nan
        raise error(f"{name} must be in [0, 1], got {_shown(value)}")
    return number


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why PostgreSQL cannot store ``text`` (None when it can): text and jsonb hold no NUL, and
    a lone surrogate ("\\udcff", which a JSON body or a command argument can carry) cannot be
    encoded as UTF-8; either would be a database error, a 500, instead of a 400."""
    if "\x00" in text:
        return "contains a NUL character"
    if surrogate := _SURROGATE.search(text):
        code = ord(surrogate.group())
        return f"contains a lone surrogate (U+{code:04X}), which is not valid Unicode text"
    return None


def check_text(value: str, name: str, error: type[Exception]) -> str:
    """``value`` as is, or ``error`` naming the field when the database could not store it."""
    problem = text_problem(value)
    if problem:
        raise error(f"{name} {problem}")
    return value
