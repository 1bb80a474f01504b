"""The detections feed the viewer draws: a run's detections as cached numpy columns, filtered by
kind, class, score and region, encoded once (JSON and gzip) with an ETag."""

from __future__ import annotations

import hashlib

import numpy as np
from django.db.models import F

from labeling.models import Detection, ScoringRun
from labeling.review.cache import cached
from labeling.review.common import ReviewError, dumps
from labeling.scoring.thresholds import run_threshold_source, run_thresholds, slider_start
from labeling.web.input_parsing import parse_fraction

FEED_KINDS = ("merged", "window")


def parse_region(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        raise ReviewError(
            f"region must be x0,y0,x1,y1 in scene pixels (e.g. 0,0,1024,1024), got {text!r}"
        ) from None
    if x1 <= x0 or y1 <= y0:
        raise ReviewError(f"region {text!r} is empty: x1 must exceed x0 and y1 must exceed y0")
    return x0, y0, x1, y1


def _feed_columns(run: ScoringRun, kind: str) -> dict:
    """All detections of one kind of a run as numpy columns, cached in process memory (a done
    run's detections never change; a retried run gets a new finished_at, hence a new key)."""
    key = ("feed", run.pk, kind, run.finished_at.isoformat() if run.finished_at else "")
    return cached(key, lambda: _build_feed_columns(run, kind))


def _region_columns(run: ScoringRun, kind: str, region) -> dict:
    """The detections overlapping ``region`` read from the database alone: a gigapixel run has
    about a million raw windows, which as cached columns cost a web worker over 1 GB; the
    viewer asks for them one block of the area in view at a time."""
    x0, y0, x1, y1 = region
    rows = (
        Detection.objects.filter(run=run, kind=kind, x__lt=x1, y__lt=y1)
        .alias(x_end=F("x") + F("w"), y_end=F("y") + F("h"))
        .filter(x_end__gt=x0, y_end__gt=y0)
    )
    return _build_feed_columns(run, kind, rows)


def _build_feed_columns(run: ScoringRun, kind: str, rows=None) -> dict:
    fields = ["id", "x", "y", "w", "h", "label", "score"]
    if kind == "window":
        fields.append("probs")
    if rows is None:
        rows = Detection.objects.filter(run=run, kind=kind)
    rows = list(rows.order_by("-score", "id").values_list(*fields))
    classes = list(run.model_version.classes or run.scene.project.class_names)
    index = {c: i for i, c in enumerate(classes)}
    for r in rows:  # a class unknown to the model's list gets appended, never dropped
        if r[5] not in index:
            index[r[5]] = len(classes)
            classes.append(r[5])
    n = len(rows)
    cols = {
        "classes": classes,
        "id": np.fromiter((r[0] for r in rows), dtype=np.int64, count=n),
        "x": np.fromiter((r[1] for r in rows), dtype=np.int64, count=n),
        "y": np.fromiter((r[2] for r in rows), dtype=np.int64, count=n),
        "w": np.fromiter((r[3] for r in rows), dtype=np.int64, count=n),
        "h": np.fromiter((r[4] for r in rows), dtype=np.int64, count=n),
        "label": np.fromiter((index[r[5]] for r in rows), dtype=np.int64, count=n),
        "score": np.fromiter((r[6] for r in rows), dtype=np.float64, count=n),
    }
    if kind == "window":
        probs = np.zeros((n, len(classes)), dtype=np.float64)
        for i, r in enumerate(rows):
            for c, p in (r[7] or {}).items():
                if c in index:
                    probs[i, index[c]] = p
        cols["probs"] = probs
    return cols


def feed_run(scene, run_id=None) -> ScoringRun | None:
    if run_id in (None, ""):
        return scene.shown_run()  # the current model's run, never a failed version's
    from labeling.web.input_parsing import parse_id

    try:
        run_pk = parse_id(run_id, "run", ValueError)
    except ValueError:
        raise ReviewError(f"run must be a scoring run id, got {str(run_id)[:50]!r}") from None
    return ScoringRun.objects.filter(scene=scene, pk=run_pk, status="done").first()


def detections_feed(scene, run, kind="merged", label=None, min_score=None, region=None) -> dict:
    """The compact columnar feed the viewer draws (see the review contract)."""
    if kind not in FEED_KINDS:
        raise ReviewError(f"kind must be one of {', '.join(FEED_KINDS)}, got {kind!r}")
    project = scene.project
    box = None
    if region not in (None, ""):
        box = parse_region(region) if isinstance(region, str) else region
    # Raw windows of a region: only those rows (the viewer's blocks of a big scene).
    cols = _region_columns(run, kind, box) if kind == "window" and box else _feed_columns(run, kind)
    classes = cols["classes"]
    keep = np.ones(len(cols["id"]), dtype=bool)
    if label not in (None, ""):
        if label not in classes:
            raise ReviewError(f"unknown class {label!r}: this run has {', '.join(classes)}")
        keep &= cols["label"] == classes.index(label)
    threshold = parse_fraction(min_score, "min_score", ReviewError)
    if threshold is not None:
        keep &= cols["score"] >= threshold
    if box is not None:
        x0, y0, x1, y1 = box
        # Boxes that overlap the region.
        keep &= (cols["x"] < x1) & (cols["x"] + cols["w"] > x0)
        keep &= (cols["y"] < y1) & (cols["y"] + cols["h"] > y0)
    idx = np.flatnonzero(keep)
    out = {
        "run": run.pk,
        "scene": scene.pk,
        "model_version": run.model_version.number,
        "kind": kind,
        "classes": classes,
        "colors": project.colours,
        "negative_class": project.negative_class,
        # The thresholds this run's detections were made with (labeling.scoring.thresholds).
        "threshold": slider_start(run_thresholds(run), project.threshold),
        "class_thresholds": run_thresholds(run),
        "threshold_source": run_threshold_source(run),
        "window": project.scene_window,  # scene pixels (Project.object_size)
        "count": int(len(idx)),
    }
    for name in ("id", "x", "y", "w", "h", "label"):
        out[name] = cols[name][idx].tolist()
    out["score"] = np.round(cols["score"][idx], 3).tolist()
    if kind == "window":
        out["probs"] = np.round(cols["probs"][idx], 3).tolist()
    return out


def feed_payload(scene, run, kind="merged", label=None, min_score=None, region=None):
    """(JSON bytes, the same gzipped) of a feed, cached per run and filters: every reviewer
    opening the scene gets the encoded bytes straight from memory."""
    import gzip

    key = ("payload", run.pk, run.finished_at.isoformat() if run.finished_at else "", kind,
           label or "", min_score or "", region or "")  # fmt: skip

    def build():
        raw = dumps(detections_feed(scene, run, kind, label, min_score, region))
        return raw, gzip.compress(raw, compresslevel=5)

    return cached(key, build)


def feed_etag(run, query: str) -> str:
    stamp = run.finished_at.isoformat() if run.finished_at else ""
    digest = hashlib.sha1(f"{run.pk}|{stamp}|{query}".encode()).hexdigest()[:20]
    return f'"feed-{digest}"'
