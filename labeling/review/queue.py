"""The active-learning review queue: strategy names, each done run's windows ranked once per
strategy (cached), the next window handed out under a Redis lease, or given back, or skipped
(held back until other windows were answered, never a label)."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from labeling.cycle import effective_annotations
from labeling.formatting import fixed3
from labeling.models import Annotation, QueueSkip, ScoringRun
from labeling.review.cache import cached
from labeling.review.common import ReviewError
from labeling.thresholds import hit_class, run_thresholds
from mlcore import sampling
from mlcore.sampling import priorities


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

LEASE_SECONDS = 120
# A skipped window comes back once this many other windows of the project were answered or
# skipped after it (or sooner, when nothing else is left).
SKIP_RETURNS_AFTER = 10


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
    return cached(key, lambda: _rank(run, name))


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


def skip_returns_after() -> int:
    return int(getattr(settings, "REVIEW_SKIP_RETURNS_AFTER", SKIP_RETURNS_AFTER))


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


def _held_back_places(project, scene_ids) -> dict[int, set]:
    """Skipped windows still held back: fewer than skip_returns_after() answers or skips of the
    project came after their newest skip."""
    skips = list(
        QueueSkip.objects.filter(project=project, scene_id__in=scene_ids)
        .order_by("created_at", "id")
        .values_list("scene_id", "x", "y", "w", "h", "created_at")
    )
    out: dict[int, set] = {s: set() for s in scene_ids}
    if not skips:
        return out
    since = skips[0][5]
    answers = Annotation.objects.filter(project=project, created_at__gt=since).exclude(kind="undo")
    times = sorted(list(answers.values_list("created_at", flat=True)) + [row[5] for row in skips])
    newest = {}
    for scene_id, x, y, w, h, at in skips:  # oldest first: the newest skip of a place wins
        newest[(scene_id, x, y, w, h)] = at
    need = skip_returns_after()
    for (scene_id, x, y, w, h), at in newest.items():
        if len(times) - bisect_right(times, at) < need:
            out[scene_id].add((x, y, w, h))
    return out


def skip_window(project, scene, user, x, y) -> QueueSkip:
    """Record that this reviewer skipped the window at (x, y) of ``scene`` (not sure): no label,
    never trained on; the queue hands it out again after skip_returns_after() other windows
    were answered or skipped. Its lease is given back."""
    from labeling.review.common import pixel_int

    if scene.project_id != project.pk:
        raise ReviewError(f"scene {scene.pk} does not belong to project {project.name!r}")
    x, y = pixel_int("x", x), pixel_int("y", y)
    size = project.window_size
    if x < 0 or y < 0 or x + size > scene.width or y + size > scene.height:
        raise ReviewError(f"the window at x={x}, y={y} ({size} px) is outside scene {scene.name!r}")
    row = QueueSkip.objects.create(
        project=project,
        scene=scene,
        user=user if getattr(user, "pk", None) else None,
        x=x,
        y=y,
        w=size,
        h=size,
    )
    release_lease(project, scene.pk, x, y, user)
    return row


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
    scene_ids = [r.scene_id for r in runs]
    places = _annotated_places(project, scene_ids)
    held = _held_back_places(project, scene_ids)
    ttl = lease_seconds()
    owner = str(getattr(user, "pk", "") or "anonymous")
    # Per run: the ranked order without the annotated windows, the skipped ones held back.
    pools, later = [], []
    remaining = 0
    for run in runs:
        ranked = ranked_run(run, name)
        annotated = _annotated_mask(ranked, places[run.scene_id])
        skipped = _annotated_mask(ranked, held[run.scene_id]) & ~annotated
        free = ranked.order[~(annotated | skipped)[ranked.order]]
        remaining += len(free) + int(skipped.sum())
        if len(free):
            pools.append((run, ranked, free))
        if skipped.any():
            later.append((run, ranked, ranked.order[skipped[ranked.order]]))
    # Skipped windows come back only when nothing else is left.
    for group in (pools, later):
        item = _lease_first(project, group, redis, owner, ttl, remaining)
        if item is not None:
            return item
    return None


def _lease_first(project, pools, redis, owner, ttl, remaining) -> dict | None:
    """The best window of ``pools`` [(run, ranked, free flat indices)] nobody holds, leased."""
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
    thresholds = run_thresholds(run)
    best = hit_class(ranked.classes, p, thresholds, project.negative_class)
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
        "thresholds": {c: float(t) for c, t in thresholds.items() if c in ranked.classes},
        "reason": guess_reason(ranked.classes, p, best, thresholds, project.negative_class),
        "priority": round(float(ranked.priority[flat]), 6),
        "lease_seconds": ttl,
        "remaining": int(remaining),
    }


def guess_reason(classes, probs, best: int, thresholds: dict, negative) -> str:
    """Why the model's guess is what it is, in the detection rule's terms (labeling.thresholds
    .hit_class): "negative: boat 0.336 is below boat's threshold 0.575"."""
    classes = list(classes)
    guess = classes[best]
    positives = [i for i, c in enumerate(classes) if c != negative and c in thresholds]
    if guess == negative or not positives:
        if not positives:
            return f"{guess}: the most probable class ({fixed3(probs[best])})"
        top = max(positives, key=lambda i: probs[i])
        name = classes[top]
        return (
            f"{negative}: {name} {fixed3(probs[top])} is below {name}'s threshold "
            f"{fixed3(thresholds[name])}"
            + ("" if len(positives) == 1 else ", and so is every other class")
        )
    return f"{guess}: {guess} {fixed3(probs[best])} reaches {guess}'s threshold " + fixed3(
        thresholds[guess]
    )


def release_lease(project, scene_id: int, x: int, y: int, user, redis=None) -> bool:
    """Give a leased window back (only the reviewer holding it can)."""
    redis = redis if redis is not None else get_redis()
    key = lease_key(project.pk, scene_id, x, y)
    owner = str(getattr(user, "pk", "") or "anonymous")
    holder = redis.get(key)
    if holder is not None and holder.decode() == owner:
        return bool(redis.delete(key))
    return False
