"""Every route answers 405 to a method it does not serve (PUT, DELETE, PATCH on a page or on
/api/health used to render the page with 200). Routes are read from the URL configuration, so a
new one is covered the day it is added."""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

# What fills a route's parameters: the method check comes before any lookup.
SAMPLE = {"int": "1", "path": "x/y.png", "str": "x"}
THIRD_PARTY = ("admin/", "django-rq/")


def routes(patterns=None, prefix=""):
    """(url, name) of every route of the app: the login, logout and labeling's."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = str(entry.pattern)
        if (prefix + route).startswith(THIRD_PARTY):
            continue
        if isinstance(entry, URLResolver):
            yield from routes(entry.url_patterns, prefix + route)
        elif isinstance(entry, URLPattern):
            url = prefix + route
            for converter, value in SAMPLE.items():
                while f"<{converter}:" in url:
                    start = url.index(f"<{converter}:")
                    url = url[:start] + value + url[url.index(">", start) + 1 :]
            yield "/" + url, entry.name


def test_routes_are_read():
    names = {name for _, name in routes()}
    assert {"login", "project-list", "api-health", "scene-viewer", "api-annotations"} <= names
    assert len(names) > 30


# Routes that do serve one of these methods (their own tests cover it).
SERVES = {"patch": {"api-project"}}


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_methods_a_route_does_not_serve_answer_405(alice_client, method):
    served = {
        url: getattr(alice_client, method)(url).status_code
        for url, name in routes()
        if name not in SERVES.get(method, ())
    }
    assert {url: status for url, status in served.items() if status != 405} == {}
