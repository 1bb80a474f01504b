"""No answer carries an absolute path of the server: where the app, its data and its Python
live is the operator's business, and an error message naming them tells an outsider the layout
of the machine. Messages from mlcore name files by their full path (what a person at the
terminal needs); this middleware is the net for every answer: a JSON, HTML or text body that
holds one of the server's folders gets it written relative (the app's own folder) or as a
bracketed name ([var], [storage], [starting model], [python], [tmp]). Staff, who run the
server, see answers as they are (the health page's details are theirs). The check is a byte
search per folder, so answers without them cost nothing more.

The folders and their pattern are worked out once per process (settings do not change while a
server runs); a test that changes a setting (Django's setting_changed) has them worked out
again."""

from __future__ import annotations

import functools
import json
import re
import sys
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.signals import setting_changed

REPO = Path(__file__).resolve().parents[2]
TEXT_KINDS = ("application/json", "text/html", "text/plain", "text/csv")


@functools.lru_cache(maxsize=1)
def _folders() -> tuple[tuple[str, str], ...]:
    """(absolute folder, what is shown instead), the longest first (the most specific wins);
    computed once per process."""
    from labeling.projects.storage_keys import get_storage
    from mlcore.model.starting_model import starting_model_dir
    from mlcore.storage import LocalStorage

    named = {str(REPO): ""}
    try:
        local = get_storage()
        storage = local.root if isinstance(local, LocalStorage) else None
    except Exception:  # storage misconfigured: that is another answer's business
        storage = None
    start = starting_model_dir()
    for folder, name in (
        (settings.VAR_DIR, "[var]"),
        (storage, "[storage]"),
        (None if REPO in Path(start).resolve().parents else start, "[starting model]"),
        (sys.prefix, "[python]"),
        (sys.base_prefix, "[python]"),
        (tempfile.gettempdir(), "[tmp]"),
    ):
        if folder:
            for form in {str(folder).rstrip("/"), str(Path(folder).resolve())}:
                if len(form) > 1:  # never "/" itself
                    named.setdefault(form, name)
    return tuple(sorted(named.items(), key=lambda item: -len(item[0])))


@functools.lru_cache(maxsize=1)
def _pattern() -> re.Pattern:
    """A folder only as a whole path, not inside a longer name ("/tmp" in "/var/tmp", "/tmpx");
    the "/" after it is taken along, so the app's own files read as relative paths."""
    folders = _folders()
    return re.compile(
        r"(?<![\w.-])(" + "|".join(re.escape(f) for f, _ in folders) + r")(?:(/)|(?![\w.-]))"
    )


@functools.lru_cache(maxsize=1)
def _needles() -> tuple[bytes, ...]:
    """Each folder as the bytes of a body that holds it, plain and JSON-escaped."""
    return tuple({n for f, _ in _folders() for n in (f.encode(), _json_escaped(f))})


def _forget(**_kwargs) -> None:
    for cached in (_folders, _pattern, _needles):
        cached.cache_clear()


setting_changed.connect(_forget, dispatch_uid="labeling.web.server_paths")


def hide_server_paths(text: str) -> str:
    """``text`` with every absolute server folder replaced (see the module's doc)."""
    folders = _folders()
    if not any(folder in text for folder, _ in folders):
        return text
    names = dict(folders)
    pattern = _pattern()

    def shown(match: re.Match) -> str:
        name, slash = names[match.group(1)], match.group(2) or ""
        if name == "":
            return "" if slash else "."
        return name + slash

    return pattern.sub(shown, text)


def _json_escaped(folder: str) -> bytes:
    return json.dumps(folder)[1:-1].encode()


class HideServerPaths:
    """Response middleware: text bodies leave without absolute server paths."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        kind = response.get("Content-Type", "").split(";")[0].strip()
        user = getattr(request, "user", None)
        if (
            (user is not None and user.is_staff)  # the operators: the health page's details
            or response.streaming
            or response.has_header("Content-Encoding")
            or not (kind in TEXT_KINDS or kind.endswith("+json"))
        ):
            return response
        body = response.content
        if not any(needle in body for needle in _needles()):
            return response
        charset = response.charset or "utf-8"
        text = body.decode(charset, errors="replace")
        if kind == "application/json" or kind.endswith("+json"):
            try:  # rewrite inside the decoded strings, so escaped forms are caught too
                fixed = json.dumps(_rewrite(json.loads(text)))
            except (ValueError, RecursionError):
                fixed = hide_server_paths(text)
        else:
            fixed = hide_server_paths(text)
        response.content = fixed.encode(charset)
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        return response


def _rewrite(value):
    if isinstance(value, str):
        return hide_server_paths(value)
    if isinstance(value, list):
        return [_rewrite(v) for v in value]
    if isinstance(value, dict):
        return {hide_server_paths(k): _rewrite(v) for k, v in value.items()}
    return value
