"""The OpenAPI 3 schema of the JSON API (served at /api/openapi.json).

Paths come from the URL resolver (every route under /api/, whichever area's urls module holds
it); what each operation does comes from ``OPERATIONS``, keyed by the route's URL name. A route
without an entry is still listed, flagged ``x-undocumented`` (and tests/app/test_api_review.py fails
until someone documents it), so the schema cannot silently fall behind the routes."""

from __future__ import annotations

import re

from django.urls import URLPattern, URLResolver, get_resolver

from labeling.review.queue import DEFAULT_STRATEGY, STRATEGIES

ERROR = {"$ref": "#/components/schemas/Error"}


def _q(name, description, schema_type="string", required=False, enum=None):
    schema = {"type": schema_type}
    if enum:
        schema["enum"] = list(enum)
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema}  # fmt: skip


def _json_body(description, properties=None, required=()):
    schema = {"type": "object", "properties": properties or {}}
    if required:
        schema["required"] = list(required)
    return {"required": True, "description": description,
            "content": {"application/json": {"schema": schema}}}  # fmt: skip


def _ok(description, status="200", content="application/json"):
    return {status: {"description": description, "content": {content: {"schema": {}}}}}


ERRORS = {
    "400": {"description": "bad input: {\"error\": what was wrong and what to do}",
            "content": {"application/json": {"schema": ERROR}}},
    "401": {"description": "not logged in", "content": {"application/json": {"schema": ERROR}}},
    "404": {"description": "not among your projects (or no such object)",
            "content": {"application/json": {"schema": ERROR}}},
}  # fmt: skip

BOX = {
    "x": {"type": "integer", "minimum": 0},
    "y": {"type": "integer", "minimum": 0},
    "w": {"type": "integer", "minimum": 1},
    "h": {"type": "integer", "minimum": 1},
}

# URL name -> {method: operation}
OPERATIONS: dict[str, dict[str, dict]] = {
    "api-health": {"get": {"summary": "Health of the services (database, Redis, storage, workers); "
                                      "where they are (URLs, folders) for staff only",
                           "tags": ["core"], "responses": _ok("health report")
                           | {"503": {"description": "a service is down"}}}},
    "api-openapi": {"get": {"summary": "This OpenAPI schema", "tags": ["core"],
                            "responses": _ok("OpenAPI 3 document")}},
    "api-projects": {
        "get": {"summary": "The projects you are a member of, with scene and model counts",
                "tags": ["review"], "responses": _ok("{\"projects\": [...]}")},
        "post": {"summary": "Create a project (you become its member)", "tags": ["data"],
                 "requestBody": _json_body("project fields", {
                     "name": {"type": "string"}, "description": {"type": "string"},
                     "classes": {"type": "array", "items": {"type": "object"}},
                     "negative_class": {"type": "string"}, "window_size": {"type": "integer"},
                     "object_size": {"type": "integer", "nullable": True},
                     "train_step": {"type": "integer"}, "score_step": {"type": "integer"},
                     "threshold": {"type": "number"}, "engine": {"type": "string"},
                     "start_from_scratch": {"type": "boolean"}},
                     required=["name"]),
                 "responses": _ok("the project", "201")},
    },
    "api-project": {
        "get": {"summary": "One project: classes, colours, threshold, counts (scenes, model "
                           "versions, annotations, pending annotations), versions, scenes, "
                           "measured_object_size (median side of the boxes reviewers drew)",
                "tags": ["review"], "responses": _ok("project")},
        "patch": {"summary": "Edit the project: the fields given change (name, description, "
                             "classes with colours and sources, negative class, window, steps, "
                             "threshold); classes, sources, negative class and window only "
                             "while no model version depends on them (else 409 with the reason)",
                  "tags": ["data"],
                  "requestBody": _json_body("the fields to change", {
                      "classes": {"type": "array", "items": {"type": "object"}},
                      "name": {"type": "string"}, "description": {"type": "string"}}),
                  "responses": _ok("the project")
                  | {"409": {"description": "a model depends on the classes",
                             "content": {"application/json": {"schema": ERROR}}}}},
    },
    "api-runs": {
        "get": {"summary": "Scoring runs of the project: status, timings, partitions, Spark UI "
                           "URL, metrics", "tags": ["review"],
                "parameters": [_q("scene", "only the runs of this scene id", "integer")],
                "responses": _ok("{\"runs\": [...]}")},
    },
    "api-run-coco-results": {
        "get": {"summary": "A scoring run's detections as a COCO results JSON list (image_id, "
                           "category_id, bbox [x, y, w, h], score = the class probability, "
                           "rank_score = the order the run's AP ranks), ids as in the "
                           "annotations export, for COCO.loadRes / FiftyOne", "tags": ["review"],
                "parameters": [_q("boxes", "ranked: every merged box scoring >= 0.05 (what "
                                  "the run's COCO AP ranks); merged: the run's detections at "
                                  "its thresholds", enum=["ranked", "merged"]),
                               _q("min_score", "keep boxes scoring at least this", "number")],
                "responses": _ok("[{image_id, category_id, bbox, score}, ...] (attachment)")},
    },
    "api-queue": {
        "get": {"summary": "Next window for this reviewer, leased to you (two reviewers never "
                           "get the same window); answer with POST annotations kind=review",
                "tags": ["review"],
                "parameters": [
                    _q("strategy", "ranking of the windows (default "
                       f"{DEFAULT_STRATEGY}; the diverse ones, balanced, mixed and cluster_margin "
                       "never hand out two overlapping windows in one round)",
                       enum=list(STRATEGIES)),
                    _q("scene", "only this scene id", "integer"),
                    _q("ahead", "1 when asked for while you still look at another window (its "
                       "answer counts toward a skipped window's return); default 0", "integer"),
                ],
                "responses": _ok("{scene, run, x, y, w, h, probs: {class: p}, guess, score, "
                                 "thresholds: {class: t}, reason, needs_choice (no class reaches "
                                 "its threshold yet one ranks above the negative class: ask for a "
                                 "choice), priority, lease_seconds, "
                                 "remaining, done: false} or "
                                 "{done: true}")},
    },
    "api-queue-release": {
        "post": {"summary": "Give back a window you were handed but will not answer, so another "
                            "reviewer gets it before its lease expires", "tags": ["review"],
                 "requestBody": _json_body("the window", {
                     "scene": {"type": "integer"}, "x": {"type": "integer"},
                     "y": {"type": "integer"}}, required=("scene", "x", "y")),
                 "responses": _ok("{\"released\": true|false} (false: not leased to you)")},
    },
    "api-queue-skip": {
        "post": {"summary": "Skip a window you are not sure about: recorded as a skip (never a "
                            "label, never trained on); the queue hands it out again after "
                            "other windows were answered. Only a window of the scene's scoring "
                            "run (400 otherwise)", "tags": ["review"],
                 "requestBody": _json_body("the window", {
                     "scene": {"type": "integer"}, "x": {"type": "integer"},
                     "y": {"type": "integer"}}, required=("scene", "x", "y")),
                 "responses": _ok("{skipped: id, scene, x, y, returns_after}", "201")},
    },
    "api-export": {
        "get": {"summary": "Export the project's annotations (effective labels, or the whole "
                           "history with history=1)", "tags": ["review"],
                "parameters": [_q("format", "file format", enum=["coco", "csv"]),
                               _q("history", "1: every annotation, not only effective ones")],
                "responses": {"200": {"description": "COCO JSON or CSV (attachment)",
                                      "content": {"application/json": {"schema": {}},
                                                  "text/csv": {"schema": {}}}}}},
    },
    "api-labels": {
        "get": {"summary": "The scenes' labels: the boxes reviewers confirmed, corrected or "
                           "added (source reviewed) plus the model's boxes above threshold no "
                           "reviewer rejected (source model), each with the model's probability "
                           "and its reviewer", "tags": ["review"],
                "parameters": [_q("format", "json (with per-scene counts and the estimated "
                                  "share still wrong), coco (ground truth, no negative "
                                  "category), yolo (zip of txt + classes), csv, geojson (one "
                                  "scene)", enum=["json", "coco", "yolo", "csv", "geojson"]),
                               _q("scene", "only this scene id", "integer")],
                "responses": _ok("labels (json) or a file (attachment)")},
    },
    "api-scene-labels": {
        "get": {"summary": "One scene's labels (as /api/projects/<p>/labels?scene=)",
                "tags": ["review"],
                "parameters": [_q("format", "json, coco, yolo, csv or geojson",
                                  enum=["json", "coco", "yolo", "csv", "geojson"])],
                "responses": _ok("labels (json) or a file (attachment)")},
    },
    "api-scene": {
        "get": {"summary": "One scene: size, deep-zoom URL, latest run summary, classes and "
                           "colours, threshold", "tags": ["review"],
                "responses": _ok("scene")},
    },
    "api-scene-geojson": {
        "get": {"summary": "The scene's merged detections (latest done run) and its effective "
                           "reviewed annotations as GeoJSON polygons, clipped to the image. "
                           "Default: RFC 7946, WGS84 longitude/latitude (reprojected from the "
                           "GeoTIFF's CRS), counter-clockwise rings, no crs member. crs=native: "
                           "the scene's own CRS, named in the legacy crs member (an EPSG URN, "
                           "or WKT for a CRS without an EPSG code), as GDAL and QGIS read it. "
                           "crs=pixels: scene pixels (x right, y down) under a local "
                           "engineering CRS, never read as degrees. A scene without usable "
                           "georeferencing (none, or GeoTIFF tags ignored on import: the reason "
                           "is in the import job's log) answers 409 unless crs=pixels",
                "tags": ["review"],
                "parameters": [_q("run", "a scoring run id instead of the latest", "integer"),
                               _q("crs", "coordinates of the export (default wgs84)",
                                  enum=["wgs84", "native", "pixels"])],
                "responses": _ok("{type: FeatureCollection, crs? (native, pixels), features: "
                                 "[{geometry: Polygon, properties: {source: "
                                 "detection|annotation, scene, label, score?, run?, kind?, "
                                 "pixel_box: [x, y, w, h] clipped}}]} (attachment)",
                                 content="application/geo+json")
                | {"409": {"description": "no usable georeferencing for the asked crs: "
                                          "{\"error\": why, and to ask for crs=pixels}",
                           "content": {"application/json": {"schema": ERROR}}}}},
    },
    "api-detections": {
        "get": {"summary": "Columnar detections feed of the latest done run (gzip, ETag)",
                "tags": ["review"],
                "parameters": [
                    _q("run", "a scoring run id instead of the latest", "integer"),
                    _q("kind", "merged boxes (NMS, default) or raw windows",
                       enum=["merged", "window"]),
                    _q("label", "only this class"),
                    _q("min_score", "only scores >= this", "number"),
                    _q("region", "x0,y0,x1,y1: only boxes overlapping this region"),
                ],
                "responses": _ok("{run, model_version, kind, classes, colors, window, count, "
                                 "id: [], x: [], y: [], w: [], h: [], label: [class index], "
                                 "score: [], probs: [[]] (kind=window)}")
                | {"304": {"description": "not modified (If-None-Match)"}}},
    },
    "api-annotations": {
        "get": {"summary": "Annotations of a scene, a page at a time, newest first: the "
                           "history and its rows in effect (newest per place, after undo, over "
                           "the whole history)", "tags": ["review"],
                "parameters": [_q("limit", "rows per page, 1-5000, default 1000", "integer"),
                               _q("cursor", "the previous page's next_cursor", "integer")],
                "responses": _ok("{effective: [...], history: [...], limit, next_cursor, "
                                 "next: the following page's URL or null}")},
        "post": {"summary": "Add an annotation (idempotent by client_id)", "tags": ["review"],
                 "requestBody": _json_body("the annotation", {
                     "client_id": {"type": "string", "maxLength": 64},
                     "kind": {"type": "string", "enum": ["confirm", "false_positive",
                              "wrong_class", "false_negative", "review", "region"],
                              "description": "region: a background region (the negative "
                              "class, 1 to 32 object sizes a side)"},
                     "label": {"type": "string", "description": "a class or the negative class"},
                     **BOX,
                     "detection": {"type": ["integer", "null"]},
                     "source": {"type": "string", "enum": ["ui", "queue", "api", "simulated"]},
                 }, required=["kind", "label", "x", "y", "w", "h"]),
                 "responses": _ok("created", "201") | _ok("the same client_id again: that row")},
    },
    "api-annotation-undo": {
        "post": {"summary": "Undo an annotation (one's own; a project's reviewers any): appends "
                            "an 'undo' annotation pointing at it",
                 "tags": ["review"],
                 "requestBody": _json_body("optional client_id",
                                           {"client_id": {"type": "string"}}),
                 "responses": _ok("the undo annotation", "201")
                 | {"403": {"description": "another member's annotation: only the project's "
                                           "reviewers may undo it",
                            "content": {"application/json": {"schema": ERROR}}}}},
    },
    "api-window-image": {
        "get": {"summary": "PNG crop of the scene: the window with context around it",
                "tags": ["review"],
                "parameters": [
                    _q("x", "window origin x", "integer", True),
                    _q("y", "window origin y", "integer", True),
                    _q("size", "window size (default: the project's)", "integer"),
                    _q("context", "pixels around the window (default size/2)", "integer"),
                    _q("scale", "integer enlargement 1-8 (default 1)", "integer"),
                    _q("outline", "0: no frame around the window"),
                ],
                "responses": _ok("(size + 2 context) * scale pixels square", content="image/png")},
    },
    "api-datasets": {
        "get": {"summary": "Datasets of the project", "tags": ["data"],
                "responses": _ok("{\"datasets\": [...]}")},
        "post": {"summary": "Import a dataset: multipart 'file' upload or JSON storage_key",
                 "tags": ["data"],
                 "requestBody": _json_body("storage key (or multipart upload)", {
                     "storage_key": {"type": "string"}, "name": {"type": "string"},
                     "split": {"type": "string"}}),
                 "responses": _ok("dataset state and job_id", "202")},
    },
    "api-dataset-detail": {
        "get": {"summary": "One dataset with its import job and class counts", "tags": ["data"],
                "responses": _ok("dataset")},
    },
    "api-scenes": {
        "get": {"summary": "Scenes of the project", "tags": ["data"],
                "responses": _ok("{\"scenes\": [...]}")},
        "post": {"summary": "Add a scene: multipart 'image' upload, JSON storage_key or "
                            "{collage: {tiles, cols, seed}}", "tags": ["data"],
                 "requestBody": _json_body("scene source", {
                     "storage_key": {"type": "string"}, "name": {"type": "string"},
                     "collage": {"type": "object"}}),
                 "responses": _ok("scene state and job_id", "202")},
    },
    "api-scene-import": {
        "get": {"summary": "Preparation state of a scene (pixels, deep-zoom, first scoring)",
                "tags": ["data"],
                "responses": _ok("scene state") | {"410": {"description": "import failed"}}},
    },
    "api-retrain": {
        "post": {"summary": "Start a retrain cycle", "tags": ["loop"],
                 "parameters": [_q("profile", "training profile", enum=["tiny", "quick",
                                                                         "full"])],
                 "responses": _ok("{job, label, version}", "202")
                 | {"409": {"description": "a cycle is already running",
                            "content": {"application/json": {"schema": ERROR}}}}},
    },
    "api-model-current": {
        "post": {"summary": "Make model version <number> current (rollback or promote); the "
                            "scenes it never scored are queued for scoring by it",
                 "tags": ["loop"],
                 "responses": _ok("the version, with scoring_runs: the runs queued")},
    },
    "api-jobs": {
        "get": {"summary": "Recent jobs of the project with progress", "tags": ["loop"],
                "parameters": [_q("limit", "1-200, default 50", "integer")],
                "responses": _ok("{\"jobs\": [...]}: each with its kind (an identifier) "
                                 "and its label (the kind in words)")},
    },
    "api-job": {
        "get": {"summary": "One job with its log", "tags": ["loop"], "responses": _ok("job")},
    },
}  # fmt: skip

_CONVERTER = re.compile(r"<(?:(?P<conv>\w+):)?(?P<name>\w+)>")


def _walk(patterns, prefix=""):
    for p in patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, route)
        elif isinstance(p, URLPattern):
            yield route, p.name


def api_routes() -> list[tuple[str, str | None, list[tuple[str, str]]]]:
    """(OpenAPI path, URL name, [(parameter, converter)]) of every route under /api/."""
    out = []
    for route, name in _walk(get_resolver().url_patterns):
        route = route.lstrip("^").rstrip("$")
        if not route.startswith("api/"):
            continue
        params = [(m["name"], m["conv"] or "str") for m in _CONVERTER.finditer(route)]
        out.append(("/" + _CONVERTER.sub(r"{\g<name>}", route), name, params))
    return out


def build_schema() -> dict:
    paths: dict[str, dict] = {}
    for path, name, params in api_routes():
        item = paths.setdefault(path, {})
        if params:
            item["parameters"] = [
                {"name": p, "in": "path", "required": True,
                 "schema": {"type": "integer" if conv == "int" else "string"}}
                for p, conv in params
            ]  # fmt: skip
        operations = OPERATIONS.get(name)
        if operations is None:
            item.setdefault("x-undocumented", []).append(name)
            item.setdefault(
                "get",
                {
                    "summary": f"(undocumented route {name})",
                    "responses": {"200": {"description": "see the code"}},
                },
            )
            continue  # fmt: skip
        for method, op in operations.items():
            responses = dict(op["responses"]) | {
                k: v for k, v in ERRORS.items() if k not in op["responses"]
            }
            item[method] = dict(op) | {"operationId": f"{name}-{method}", "responses": responses}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Collage labeling API",
            "version": "1",
            "description": "Active-learning labeling of detections on very large images. Log in "
            "(session cookie) first; POST needs the X-CSRFToken header from the csrftoken cookie. "
            'Errors are {"error": "..."} with status 400, 401, 403 or 404.',
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
            },
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "sessionid"}},
        },  # fmt: skip
        "security": [{"session": []}],
        "paths": paths,
    }
