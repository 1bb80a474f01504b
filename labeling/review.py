"""The review area's services: recording annotations (append-only, idempotent), the active-learning
review queue (ranked windows handed out under a Redis lease), the detections feed the viewer
draws, annotation exports (COCO JSON, CSV) and window crops for the queue.

Views (labeling/views/api.py) and the loop's simulated reviewer call these; nothing here knows
about HTTP. Bad input raises ``ReviewError`` with a message that says what was wrong and what to
do; the views turn it into a 400."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from labeling.cycle import effective_annotations, training_label
from labeling.models import Annotation, Detection, ScoringRun
from labeling.thresholds import hit_class, run_threshold_source, run_thresholds, slider_start
from mlcore import sampling
from mlcore.sampling import priorities

ANNOTATION_KINDS = [k for k, _ in Annotation.KINDS]
SOURCES = ("ui", "queue", "api", "simulated")


def api_strategy(name: str) -> str:
    """The API's name of an mlcore.sampling strategy: hyphens, and least confidence is
    "uncertainty"."""
    return "uncertainty" if name in ("least_confidence", "uncertainty") else name.replace("_", "-")


# Strategy names of the API (and aliases) -> mlcore.sampling names: every mlcore name, with
# underscores or hyphens.
STRATEGY_ALIASES = {"uncertainty": "least_confidence"}
for _name in sampling.STRATEGIES:
    _core = "least_confidence" if _name == "uncertainty" else _name
    STRATEGY_ALIASES.setdefault(_name, _core)
    STRATEGY_ALIASES.setdefault(_name.replace("_", "-"), _core)
STRATEGIES = tuple(dict.fromkeys(api_strategy(n) for n in sampling.STRATEGIES))
# The queue's strategy when none is asked for (pages, API, simulate_review): mlcore's default.
DEFAULT_STRATEGY = api_strategy(sampling.DEFAULT_STRATEGY)
CLIENT_ID_MAX = 64


class ReviewError(ValueError):
    """Bad input to a review service; the message says what was wrong and what to do."""


# -- annotations ----------------------------------------------------------------------------------


# Pixel coordinates and sizes from users: far beyond any scene, far inside a bigint.
PIXELS_MAX = 10**9


def _as_int(name: str, value) -> int:
    """A pixel number from JSON or a query string: ASCII digits only (int() would take "²" or
    "٣"), bounded so no huge number reaches arithmetic or the database."""
    from labeling.parsing import parse_int

    return parse_int(value, f"{name} (scene pixels)", ReviewError, -PIXELS_MAX, PIXELS_MAX)


def check_box(scene, x, y, w, h) -> tuple[int, int, int, int]:
    """(x, y, w, h) as ints, inside the scene, at least 1 pixel wide and high."""
    x, y, w, h = (_as_int(n, v) for n, v in (("x", x), ("y", y), ("w", w), ("h", h)))
    if w < 1 or h < 1:
        raise ReviewError(f"the box must be at least 1x1 pixels, got w={w}, h={h}")
    if x < 0 or y < 0 or x + w > scene.width or y + h > scene.height:
        raise ReviewError(
            f"the box x={x}, y={y}, w={w}, h={h} is outside scene {scene.name!r} "
            f"({scene.width}x{scene.height} pixels): keep 0 <= x, x + w <= {scene.width}, "
            f"0 <= y, y + h <= {scene.height}"
        )
    return x, y, w, h


def _detection_of(scene, detection):
    if detection is None or detection == "":
        return None
    if isinstance(detection, Detection):
        det = detection
    else:
        from labeling.parsing import parse_id

        if isinstance(detection, bool) or not isinstance(detection, (int, str)):
            raise ReviewError(f"detection must be a detection id or null, got {detection!r}")
        try:
            det = Detection.objects.select_related("run").get(
                pk=parse_id(detection, "detection", ValueError)
            )
        except (Detection.DoesNotExist, ValueError):
            raise ReviewError(
                f"detection {detection!r} does not exist: take the id from this scene's "
                "detections feed, or send null"
            ) from None
    if det.run.scene_id != scene.pk:
        raise ReviewError(
            f"detection {det.pk} belongs to another scene, not to {scene.name!r}: take the id "
            "from this scene's detections feed"
        )
    return det


def _existing(client_id: str, project, scene, user):
    row = Annotation.objects.filter(client_id=client_id).first()
    if row is None:
        return None
    if (
        row.project_id != project.pk
        or row.scene_id != scene.pk
        or row.user_id != getattr(user, "pk", None)
    ):
        raise ReviewError(
            f"client_id {client_id!r} was already used for another annotation: send a new "
            "unique id (a UUID) for each new annotation"
        )
    return row


def record_annotation(
    project,
    scene,
    user,
    *,
    kind,
    label,
    x,
    y,
    w,
    h,
    detection=None,
    client_id=None,
    source="ui",
    undoes=None,
) -> tuple[Annotation, bool]:
    """Append one annotation after checking it; returns (annotation, created).

    The same ``client_id`` again returns the row it created the first time (created False), so
    a retried request never adds a second annotation. An ``undo`` needs ``undoes`` (the annotation
    it cancels, in the same scene) and takes that annotation's place and label."""
    if scene.project_id != project.pk:
        raise ReviewError(f"scene {scene.pk} does not belong to project {project.name!r}")
    if client_id is not None and client_id != "":
        # Printable only: PostgreSQL text cannot hold NUL, and an id has no control characters.
        if (
            not isinstance(client_id, str)
            or len(client_id) > CLIENT_ID_MAX
            or not client_id.isprintable()
        ):
            raise ReviewError(
                f"client_id must be a string of at most {CLIENT_ID_MAX} printable characters "
                "(a UUID)"
            )
        row = _existing(client_id, project, scene, user)
        if row is not None:
            return row, False
    else:
        client_id = None
    if kind not in ANNOTATION_KINDS:
        raise ReviewError(f"unknown kind {kind!r}: use one of {', '.join(ANNOTATION_KINDS)}")
    if source not in SOURCES:
        raise ReviewError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    target = None
    if kind == "undo" or undoes is not None:
        if kind != "undo":
            raise ReviewError("only an annotation of kind 'undo' may point at another (undoes)")
        if undoes is None:
            raise ReviewError("an undo needs the id of the annotation it undoes")
        target = undoes
        if not isinstance(target, Annotation):
            target = Annotation.objects.filter(pk=_as_int("undoes", undoes)).first()
        if target is None or target.scene_id != scene.pk:
            raise ReviewError(f"annotation {undoes!r} is not an annotation of this scene")
        label, x, y, w, h = target.label, target.x, target.y, target.w, target.h
        detection = target.detection_id
    if label not in project.class_names:
        raise ReviewError(
            f"unknown class {label!r}: project {project.name!r} has "
            f"{', '.join(project.class_names)}"
        )
    x, y, w, h = check_box(scene, x, y, w, h)
    det = _detection_of(scene, detection)
    row = Annotation(
        project=project,
        scene=scene,
        user=user if getattr(user, "pk", None) else None,
        kind=kind,
        label=label,
        x=x,
        y=y,
        w=w,
        h=h,
        detection=det,
        undoes=target,
        source=source,
        client_id=client_id,
        created_at=timezone.now(),
    )
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        # Two copies of one request raced: the other one's row is the answer.
        if client_id is None:
            raise
        existing = _existing(client_id, project, scene, user)
        if existing is None:
            raise
        return existing, False
    return row, True


def undo(annotation, user, client_id=None, source="ui") -> tuple[Annotation, bool]:
    """Append an ``undo`` annotation cancelling ``annotation`` (history is kept)."""
    return record_annotation(
        annotation.project,
        annotation.scene,
        user,
        kind="undo",
        label=annotation.label,
        x=annotation.x,
        y=annotation.y,
        w=annotation.w,
        h=annotation.h,
        client_id=client_id,
        source=source,
        undoes=annotation,
    )


def annotation_json(a: Annotation) -> dict:
    return {
        "id": a.pk,
        "scene": a.scene_id,
        "kind": a.kind,
        "label": a.label,
        "x": a.x,
        "y": a.y,
        "w": a.w,
        "h": a.h,
        "detection": a.detection_id,
        "undoes": a.undoes_id,
        "user": a.user.username if a.user_id and a.user else None,
        "created_at": a.created_at.isoformat(),
        "client_id": a.client_id,
        "consumed_by": a.consumed_by.number if a.consumed_by_id and a.consumed_by else None,
        "source": a.source,
    }


def scene_annotations(scene) -> tuple[list[Annotation], list[Annotation]]:
    """(effective, history) of a scene, newest first."""
    history = list(
        Annotation.objects.filter(scene=scene)
        .select_related("user", "consumed_by")
        .order_by("-created_at", "-id")
    )
    return effective_annotations(history), history


# -- the review queue -----------------------------------------------------------------------------

LEASE_SECONDS = 120
CACHE_BYTES = 512 * 1024 * 1024


class _Cache:
    """Process-memory LRU of ranked runs and feed columns, bounded by their numpy bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    @staticmethod
    def _size(value) -> int:
        if isinstance(value, tuple):
            return sum(len(v) for v in value if isinstance(v, bytes)) + 1024
        parts = value.values() if isinstance(value, dict) else vars(value).values()
        return sum(getattr(p, "nbytes", 0) for p in parts) + 1024

    def get(self, key):
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
            return None if hit is None else hit[0]

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = (value, self._size(value))
            total = sum(size for _, size in self.items.values())
            while len(self.items) > 1 and total > self.max_bytes:
                _, (_, size) = self.items.popitem(last=False)
                total -= size

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


_cache = _Cache(CACHE_BYTES)
_building: dict = {}
_building_lock = threading.Lock()
_building: dict = {}


@dataclass
class RankedRun:
    """A done run's grid in queue order: flat window indices best-first and their priority."""

    run_id: int
    scene_id: int
    ys: np.ndarray
    xs: np.ndarray
    probs: np.ndarray  # (R * K, C)
    classes: list[str]
    window: int
    order: np.ndarray  # flat indices, best first
    priority: np.ndarray  # (R * K,)


def normalise_strategy(strategy: str) -> str:
    if strategy not in STRATEGY_ALIASES:
        raise ReviewError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    return STRATEGY_ALIASES[strategy]


def ranked_run(run: ScoringRun, strategy: str) -> RankedRun:
    """The run's windows ranked by ``strategy``, cached in process memory per (run, strategy):
    the grid is read and sorted once, later calls only filter the order."""
    name = normalise_strategy(strategy)
    key = (run.pk, run.grid_key, name)
    return _cached(key, lambda: _rank(run, name))


def _cached(key, build):
    hit = _cache.get(key)
    if hit is not None:
        return hit
    with _building_lock:
        building = _building.setdefault(key, threading.Lock())
    with building:  # one thread builds (reads a grid, queries rows); the others wait for it
        try:
            hit = _cache.get(key)
            if hit is None:
                hit = build()
                _cache.put(key, hit)
        finally:
            with _building_lock:
                _building.pop(key, None)
    return hit


def _rank(run: ScoringRun, name: str) -> RankedRun:
    from labeling.results import load_grid

    grid = load_grid(run)
    # random: seeded by the run, so every reviewer walks the same shuffle and leases spread it.
    prio = priorities(grid, name, seed=run.pk, negative=run.scene.project.negative_class)
    prio = np.asarray(prio, dtype=np.float64).ravel()
    return RankedRun(
        run_id=run.pk,
        scene_id=run.scene_id,
        ys=grid.ys,
        xs=grid.xs,
        probs=grid.probs.reshape(-1, len(grid.classes)),
        classes=list(grid.classes),
        window=int(grid.window),
        order=np.argsort(-prio, kind="stable"),
        priority=prio,
    )


def get_redis():
    import django_rq

    return django_rq.get_connection("default")


def lease_key(project_id: int, scene_id: int, x: int, y: int) -> str:
    return f"review:lease:{project_id}:{scene_id}:{x}:{y}"


def lease_seconds() -> int:
    return int(getattr(settings, "REVIEW_LEASE_SECONDS", LEASE_SECONDS))


def _annotated_mask(ranked: RankedRun, places: set) -> np.ndarray:
    """Windows of the grid whose exact place (x, y, window, window) has an effective annotation."""
    mask = np.zeros(len(ranked.ys) * len(ranked.xs), dtype=bool)
    if not places:
        return mask
    row_of = {int(v): i for i, v in enumerate(ranked.ys)}
    col_of = {int(v): i for i, v in enumerate(ranked.xs)}
    k = len(ranked.xs)
    for x, y, w, h in places:
        if w == ranked.window and h == ranked.window and y in row_of and x in col_of:
            mask[row_of[y] * k + col_of[x]] = True
    return mask


class _Row:
    """The fields labeling.cycle.effective_annotations reads, without a model instance (the
    queue reads every annotation of the project on each call)."""

    __slots__ = ("pk", "scene_id", "kind", "undoes_id", "created_at", "x", "y", "w", "h")
    FIELDS = ("id", "scene_id", "kind", "undoes_id", "created_at", "x", "y", "w", "h")

    def __init__(self, values):
        (self.pk, self.scene_id, self.kind, self.undoes_id, self.created_at, self.x, self.y,
         self.w, self.h) = values  # fmt: skip


def _light_rows(queryset) -> list[_Row]:
    return [_Row(v) for v in queryset.values_list(*_Row.FIELDS)]


def _annotated_places(project, scene_ids) -> dict[int, set]:
    rows = _light_rows(Annotation.objects.filter(project=project, scene_id__in=scene_ids))
    out: dict[int, set] = {s: set() for s in scene_ids}
    for a in effective_annotations(rows):
        out[a.scene_id].add((a.x, a.y, a.w, a.h))
    return out


def _answered_meanwhile(scene_id: int, item: dict) -> bool:
    """Whether the window now has an effective annotation (one may have been committed between
    the snapshot of annotated places and taking the lease)."""
    rows = _light_rows(
        Annotation.objects.filter(
            scene_id=scene_id, x=item["x"], y=item["y"], w=item["w"], h=item["h"]
        )
    )
    if not rows:
        return False
    # An undo may point at an annotation of this place from another place's row set: undo rows
    # copy their target's place, so every row that matters is here.
    return bool(effective_annotations(rows))


def _queue_runs(project, scene=None) -> list[ScoringRun]:
    scenes = [scene] if scene is not None else list(project.scenes.all())
    runs = []
    for s in scenes:
        run = (
            s.scoring_runs.filter(status="done")
            .select_related("model_version")
            .order_by("-finished_at")
            .first()
        )
        if run is not None and run.grid_key:
            runs.append(run)
    return runs


def next_queue_window(
    project, user, strategy=DEFAULT_STRATEGY, scene=None, redis=None
) -> dict | None:
    """The next window this reviewer should label, leased to them, or None when every window of
    the project's (or ``scene``'s) latest done runs is annotated or leased to someone else.

    Windows whose place already has an effective annotation are skipped. The lease is a Redis
    key per project + scene + window set with NX and an expiry: two reviewers asking at once never
    get the same window, and a window left unanswered comes back after ``lease_seconds``."""
    name = normalise_strategy(strategy)
    if scene is not None and scene.project_id != project.pk:
        raise ReviewError(f"scene {scene.pk} does not belong to project {project.name!r}")
    redis = redis if redis is not None else get_redis()
    runs = _queue_runs(project, scene)
    if not runs:
        return None
    places = _annotated_places(project, [r.scene_id for r in runs])
    ttl = lease_seconds()
    owner = str(getattr(user, "pk", "") or "anonymous")
    # Per run: the ranked order without the annotated windows.
    pools = []
    remaining = 0
    for run in runs:
        ranked = ranked_run(run, name)
        annotated = _annotated_mask(ranked, places[run.scene_id])
        free = ranked.order[~annotated[ranked.order]]
        remaining += len(free)
        if len(free):
            pools.append((run, ranked, free))
    batch = 64
    while pools:
        # The best `batch` candidates of each run, merged by priority (stable: scene order).
        candidates = []
        for i, (_run, ranked, free) in enumerate(pools):
            for flat in free[:batch]:
                candidates.append((-ranked.priority[flat], i, int(flat)))
        candidates.sort(key=lambda c: (c[0], c[1]))
        keys = []
        for _, i, flat in candidates:
            run, ranked, _ = pools[i]
            k = len(ranked.xs)
            y, x = int(ranked.ys[flat // k]), int(ranked.xs[flat % k])
            keys.append(lease_key(project.pk, run.scene_id, x, y))
        taken = redis.mget(keys)
        for (_, i, flat), key, holder in zip(candidates, keys, taken, strict=True):
            if holder is not None:
                continue
            if redis.set(key, owner, nx=True, ex=ttl):
                run, ranked, _ = pools[i]
                item = _queue_item(project, run, ranked, flat, ttl, remaining)
                if _answered_meanwhile(run.scene_id, item):
                    # Annotated (and its lease let go) after the snapshot above: skip it.
                    continue
                return item
        # Everything in this batch is leased by someone: look further down each run.
        pools = [(r, rk, free[batch:]) for r, rk, free in pools if len(free) > batch]
        batch *= 2
    return None


def _queue_item(project, run, ranked: RankedRun, flat: int, ttl: int, remaining: int) -> dict:
    k = len(ranked.xs)
    y, x = int(ranked.ys[flat // k]), int(ranked.xs[flat % k])
    p = ranked.probs[flat]
    # The guess follows the run's detection rule at its (calibrated) thresholds, as the viewer.
    best = hit_class(ranked.classes, p, run_thresholds(run), project.negative_class)
    return {
        "scene": run.scene_id,
        "run": run.pk,
        "model_version": run.model_version.number,
        "x": x,
        "y": y,
        "w": ranked.window,
        "h": ranked.window,
        "probs": {c: round(float(v), 4) for c, v in zip(ranked.classes, p, strict=True)},
        "guess": ranked.classes[best],
        "score": round(float(p[best]), 4),
        "priority": round(float(ranked.priority[flat]), 6),
        "lease_seconds": ttl,
        "remaining": int(remaining),
    }


def release_lease(project, scene_id: int, x: int, y: int, user, redis=None) -> bool:
    """Give a leased window back (only the reviewer holding it can)."""
    redis = redis if redis is not None else get_redis()
    key = lease_key(project.pk, scene_id, x, y)
    owner = str(getattr(user, "pk", "") or "anonymous")
    holder = redis.get(key)
    if holder is not None and holder.decode() == owner:
        return bool(redis.delete(key))
    return False


# -- the detections feed --------------------------------------------------------------------------

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
    return _cached(key, lambda: _build_feed_columns(run, kind))


def _build_feed_columns(run: ScoringRun, kind: str) -> dict:
    fields = ["id", "x", "y", "w", "h", "label", "score"]
    if kind == "window":
        fields.append("probs")
    rows = list(
        Detection.objects.filter(run=run, kind=kind).order_by("-score", "id").values_list(*fields)
    )
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
        return scene.latest_run()
    from labeling.parsing import parse_id

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
    cols = _feed_columns(run, kind)
    classes = cols["classes"]
    keep = np.ones(len(cols["id"]), dtype=bool)
    if label not in (None, ""):
        if label not in classes:
            raise ReviewError(f"unknown class {label!r}: this run has {', '.join(classes)}")
        keep &= cols["label"] == classes.index(label)
    if min_score not in (None, ""):
        try:
            threshold = float(min_score)
        except (TypeError, ValueError):
            raise ReviewError(f"min_score must be a number in [0, 1], got {min_score!r}") from None
        if not 0.0 <= threshold <= 1.0:
            raise ReviewError(f"min_score must be in [0, 1], got {min_score!r}")
        keep &= cols["score"] >= threshold
    if region not in (None, ""):
        x0, y0, x1, y1 = parse_region(region) if isinstance(region, str) else region
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
        # The thresholds this run's detections were made with (labeling.thresholds).
        "threshold": slider_start(run_thresholds(run), project.threshold),
        "class_thresholds": run_thresholds(run),
        "threshold_source": run_threshold_source(run),
        "window": project.window_size,
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

    return _cached(key, build)


def feed_etag(run, query: str) -> str:
    stamp = run.finished_at.isoformat() if run.finished_at else ""
    digest = hashlib.sha1(f"{run.pk}|{stamp}|{query}".encode()).hexdigest()[:20]
    return f'"feed-{digest}"'


# -- exports --------------------------------------------------------------------------------------


def project_annotations(project, history: bool = False) -> list[Annotation]:
    rows = list(
        Annotation.objects.filter(project=project)
        .select_related("user", "consumed_by", "scene")
        .order_by("-created_at", "-id")
    )
    return rows if history else effective_annotations(rows)


def export_coco(project, history: bool = False) -> dict:
    """COCO detection JSON: one image per scene, categories = the project's classes (negative
    last), one annotation per effective label (or the whole history with ``history``). The
    category is the class the annotation teaches (a false positive teaches the negative class);
    the review details are under ``attributes``."""
    rows = project_annotations(project, history)
    classes = project.class_names
    category = {c: i + 1 for i, c in enumerate(classes)}
    images = [
        {"id": s.pk, "file_name": s.name, "width": s.width, "height": s.height}
        for s in project.scenes.all().order_by("id")
    ]
    annotations = []
    for a in sorted(rows, key=lambda a: a.pk):
        annotations.append(
            {
                "id": a.pk,
                "image_id": a.scene_id,
                "category_id": category.get(training_label(a, project), 0),
                "bbox": [a.x, a.y, a.w, a.h],
                "area": a.w * a.h,
                "iscrowd": 0,
                "attributes": {
                    "kind": a.kind,
                    "label": a.label,
                    "user": a.user.username if a.user else None,
                    "created_at": a.created_at.isoformat(),
                    "source": a.source,
                    "detection": a.detection_id,
                    "undoes": a.undoes_id,
                    "consumed_by": a.consumed_by.number if a.consumed_by else None,
                },
            }
        )
    return {
        "info": {
            "description": f"annotations of project {project.name}",
            "date_created": timezone.now().isoformat(),
            "history": history,
        },
        "images": images,
        "categories": [
            {
                "id": category[c],
                "name": c,
                "supercategory": "negative" if c == project.negative_class else "object",
            }
            for c in classes
        ],  # fmt: skip
        "annotations": annotations,
    }


CSV_COLUMNS = [
    "id", "scene", "scene_name", "kind", "label", "training_label", "x", "y", "w", "h", "user",
    "created_at", "source", "client_id", "detection", "undoes", "consumed_by", "effective",
]  # fmt: skip


def export_csv(project, history: bool = False) -> str:
    rows = project_annotations(project, True)
    effective = {a.pk for a in effective_annotations(rows)}
    if not history:
        rows = [a for a in rows if a.pk in effective]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for a in sorted(rows, key=lambda a: a.pk):
        writer.writerow(
            [
                a.pk, a.scene_id, a.scene.name, a.kind, a.label, training_label(a, project),
                a.x, a.y, a.w, a.h, a.user.username if a.user else "",
                a.created_at.isoformat(), a.source, a.client_id or "", a.detection_id or "",
                a.undoes_id or "", a.consumed_by.number if a.consumed_by else "",
                int(a.pk in effective),
            ]
        )  # fmt: skip
    return out.getvalue()


# -- window crops ---------------------------------------------------------------------------------

CROP_MAX = 2048
# What one crop request may cost: the output image (window + context, times scale) has at most
# this many pixels (12 MB as RGB), and the scene is read a band of rows at a time, so neither
# memory nor PNG encoding time grows with what a request asks for.
CROP_OUTPUT_MAX_PIXELS = 2048 * 2048
CROP_READ_BYTES = 16 * 1024 * 1024
OUTLINE = (255, 221, 0)


def window_crop(
    scene, x, y, size=None, context=None, scale=1, outline=True, storage=None
) -> np.ndarray:
    """The window at (x, y) of ``size`` pixels with ``context`` pixels around it, as uint8
    (H, W, 3) of side (size + 2 * context) * scale; outside the scene is grey. Reads only the
    rows it needs from the scene's pixels. ``outline`` draws a 1-pixel frame just outside the
    window (in the context) so the reviewer sees which window is asked about."""
    from labeling.storage import get_storage
    from mlcore.scenes import NpyScene, SceneError

    if not scene.pixels_key:
        raise ReviewError(f"scene {scene.name!r} has no pixels yet: wait for its import to finish")
    size = scene.project.window_size if size in (None, "") else _as_int("size", size)
    context = size // 2 if context in (None, "") else _as_int("context", context)
    scale = _as_int("scale", scale)
    x, y = _as_int("x", x), _as_int("y", y)
    if not 1 <= size <= CROP_MAX:
        raise ReviewError(f"size must be between 1 and {CROP_MAX} pixels, got {size}")
    if not 0 <= context <= CROP_MAX:
        raise ReviewError(f"context must be between 0 and {CROP_MAX} pixels, got {context}")
    if not 1 <= scale <= 8:
        raise ReviewError(f"scale must be between 1 and 8, got {scale}")
    if not (0 <= x < scene.width and 0 <= y < scene.height):
        raise ReviewError(
            f"x={x}, y={y} is outside scene {scene.name!r} ({scene.width}x{scene.height})"
        )
    side = size + 2 * context
    if (side * scale) ** 2 > CROP_OUTPUT_MAX_PIXELS:
        raise ReviewError(
            f"the crop would be {side * scale}x{side * scale} pixels ((size + 2 * context) * "
            f"scale), above the limit of {CROP_OUTPUT_MAX_PIXELS:,} pixels: ask for a smaller "
            "size, context or scale"
        )
    out = np.full((side, side, 3), 128, dtype=np.uint8)
    x0, y0 = x - context, y - context
    sy0, sy1 = max(y0, 0), min(y0 + side, scene.height)
    sx0, sx1 = max(x0, 0), min(x0 + side, scene.width)
    try:
        reader = NpyScene(storage or get_storage(), scene.pixels_key)
        # A band of whole rows at a time: a wide scene's rows can be far bigger than the crop.
        band = max(1, CROP_READ_BYTES // max(1, reader.width * 3))
        for b0 in range(sy0, sy1, band):
            b1 = min(b0 + band, sy1)
            out[b0 - y0 : b1 - y0, sx0 - x0 : sx1 - x0] = reader.read_rows(b0, b1)[:, sx0:sx1]
    except (SceneError, FileNotFoundError, OSError) as exc:
        raise ReviewError(f"the pixels of scene {scene.name!r} cannot be read: {exc}") from None
    if outline and context > 0:
        a, b = context - 1, context + size  # frame rows/cols just outside the window
        out[a, a : b + 1] = OUTLINE
        out[b, a : b + 1] = OUTLINE
        out[a : b + 1, a] = OUTLINE
        out[a : b + 1, b] = OUTLINE
    if scale > 1:
        out = np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)
    return out


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def dumps(data) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
