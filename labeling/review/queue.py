"""The active-learning review queue: strategy names, each done run's windows ranked once per
strategy (cached), the next window handed out under a Redis lease, or given back, or skipped
(held back until other windows were answered, never a label)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from labeling.models import Annotation, QueueSkip, ScoringRun, shown_runs
from labeling.review.answered import get_redis, open_walks, place_changed, place_is_answered
from labeling.review.cache import cached
from labeling.review.common import ReviewError
from labeling.scoring.thresholds import hit_class, run_thresholds
from labeling.web.formatting import fixed3
from mlcore import sampling
from mlcore.sampling import priorities

# One spelling per strategy everywhere (pages, API, commands, bench): mlcore.sampling's names.
STRATEGIES = sampling.STRATEGIES
# The queue's strategy when none is asked for (pages, API, simulate_review): mlcore's default.
DEFAULT_STRATEGY = sampling.DEFAULT_STRATEGY


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
    rank: np.ndarray  # position of each flat index in order
    step: int
    row_of: dict  # origin y -> grid row
    col_of: dict  # origin x -> grid column

    def origin(self, flat: int) -> tuple[int, int]:
        """(y, x) of a flat window index."""
        k = len(self.xs)
        return int(self.ys[flat // k]), int(self.xs[flat % k])

    def flat_of(self, x: int, y: int, w: int, h: int) -> int | None:
        """The flat index of the window at exactly this place, or None (not a grid window)."""
        if w != self.window or h != self.window:
            return None
        i, j = self.row_of.get(y), self.col_of.get(x)
        return None if i is None or j is None else i * len(self.xs) + j


def normalise_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ReviewError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    return strategy


def ranked_run(run: ScoringRun, strategy: str) -> RankedRun:
    """The run's windows ranked by ``strategy``, cached in process memory per (run, strategy):
    the grid is read and sorted once; which windows are answered lives in Redis
    (labeling.review.answered)."""
    name = normalise_strategy(strategy)
    key = (run.pk, run.grid_key, name)
    return cached(key, lambda: _rank(run, name))


def _rank(run: ScoringRun, name: str) -> RankedRun:
    from labeling.scoring.results import load_grid

    grid = load_grid(run)
    # random: seeded by the run, so every reviewer walks the same shuffle and leases spread it.
    prio = priorities(grid, name, seed=run.pk, negative=run.scene.project.negative_class)
    prio = np.asarray(prio, dtype=np.float64).ravel()
    order = np.argsort(-prio, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return RankedRun(
        run_id=run.pk,
        scene_id=run.scene_id,
        ys=grid.ys,
        xs=grid.xs,
        probs=grid.probs.reshape(-1, len(grid.classes)),
        classes=list(grid.classes),
        window=int(grid.window),
        order=order,
        priority=prio,
        rank=rank,
        step=int(grid.step),
        row_of={int(v): i for i, v in enumerate(grid.ys)},
        col_of={int(v): i for i, v in enumerate(grid.xs)},
    )


def lease_key(project_id: int, scene_id: int, x: int, y: int) -> str:
    return f"review:lease:{project_id}:{scene_id}:{x}:{y}"


def lease_seconds() -> int:
    return settings.REVIEW_LEASE_SECONDS


def skip_returns_after() -> int:
    """A skipped window comes back once this many other windows were answered or skipped after it
    (or sooner, when nothing else is left)."""
    return settings.REVIEW_SKIP_RETURNS_AFTER


def _held_back_places(project, scene_ids, ahead: int = 0) -> dict[int, set]:
    """Skipped windows still held back: fewer than skip_returns_after() answers or skips of the
    project came after their newest skip, counting ``ahead`` answers still to come before the
    window asked for is shown (the queue page asks for the next window while one is on screen).

    A skip at time t is held back exactly when t is no older than the need-th newest answer or
    skip, so only the need newest of each are read (index on (project, created_at)), however
    many the project has."""
    need = skip_returns_after() - ahead
    out: dict[int, set] = {s: set() for s in scene_ids}
    if need <= 0:
        return out
    skips = list(
        QueueSkip.objects.filter(project=project)
        .order_by("-created_at", "-id")
        .values_list("scene_id", "x", "y", "w", "h", "created_at")[:need]
    )
    if not skips:
        return out
    answers = (
        Annotation.objects.filter(project=project)
        .exclude(kind="undo")
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:need]
    )
    times = sorted([row[5] for row in skips] + list(answers), reverse=True)
    oldest_held = times[need - 1] if len(times) >= need else None
    for scene_id, x, y, w, h, at in skips:
        if scene_id in out and (oldest_held is None or at >= oldest_held):
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
    size = project.scene_window
    if x < 0 or y < 0 or x + size > scene.width or y + size > scene.height:
        raise ReviewError(f"the window at x={x}, y={y} ({size} px) is outside scene {scene.name!r}")
    # Only a window the queue can hand out: any other place would be stored for nothing (a
    # client once stored 2,000 skips of places that are no window).
    runs = _queue_runs(project, scene)
    if not runs:
        raise ReviewError(f"scene {scene.name!r} has no scored windows yet: nothing to skip")
    grid = window_origins(runs[0])
    if not (np.any(grid["ys"] == y) and np.any(grid["xs"] == x)):
        raise ReviewError(
            f"there is no window at x={x}, y={y} of scene {scene.name!r}: skip a window the "
            f"queue handed out (windows start every {grid['step']} px)"
        )
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


def window_origins(run: ScoringRun) -> dict:
    """The run's window origins (``ys``, ``xs``) and ``step``, read from its grid file without
    its probabilities (an .npz member is read only when asked for), cached per run."""

    def build():
        from labeling.projects.storage_keys import get_storage

        storage = get_storage()
        local = storage.local_path(run.grid_key)
        source = local if local is not None else io.BytesIO(storage.read(run.grid_key))
        with np.load(source, allow_pickle=False) as data:
            return {"ys": data["ys"], "xs": data["xs"], "step": int(data["step"])}

    return cached((run.pk, run.grid_key, "origins"), build)


def _queue_runs(project, scene=None) -> list[ScoringRun]:
    """The run people see of each scene (of ``scene`` only, when given: labeling.models.
    shown_runs, the current model's) that has a grid, in scene order."""
    shown = shown_runs(project, [scene] if scene is not None else None)
    ordered = sorted(shown.values(), key=lambda r: (r.scene.name, r.scene_id))
    return [r for r in ordered if r.grid_key]


def next_queue_window(
    project, user, strategy=DEFAULT_STRATEGY, scene=None, redis=None, ahead: int = 0
) -> dict | None:
    """The next window this reviewer should label, leased to them, or None when every window of
    the project's (or ``scene``'s) latest done runs is annotated or leased to someone else.

    Windows whose place already has an effective annotation are skipped. The lease is a Redis
    key per project + scene + window set with NX and an expiry: two reviewers asking at once never
    get the same window, and a window left unanswered comes back after ``lease_seconds``.

    The work does not grow with the project's annotations: the answered windows are a Redis set
    per run and each strategy's walk starts at a cursor past the answered top of its ranking
    (labeling.review.answered); the database is read for the runs, the newest skips and the one
    place handed out.

    ``ahead``: answers still to come before this window is shown (1 when asked for while the
    reviewer looks at another window): a skipped window comes back after skip_returns_after()
    answers as the reviewer counts them, not one later."""
    name = normalise_strategy(strategy)
    if scene is not None and scene.project_id != project.pk:
        raise ReviewError(f"scene {scene.pk} does not belong to project {project.name!r}")
    redis = redis if redis is not None else get_redis()
    runs = _queue_runs(project, scene)
    if not runs:
        return None
    held = _held_back_places(project, [r.scene_id for r in runs], ahead)
    walks = open_walks([(run, ranked_run(run, name)) for run in runs], name, redis)
    held_flats = []
    for walk in walks:
        flats = (walk.ranked.flat_of(*place) for place in held[walk.run.scene_id])
        held_flats.append({f for f in flats if f is not None})
    remaining = sum(w.remaining for w in walks)
    ttl = lease_seconds()
    owner = str(getattr(user, "pk", "") or "anonymous")
    lease = _Leaser(project, redis, owner, ttl, remaining, ahead)
    # Loose windows (undone, or skipped and passed by the cursor) first: they may rank above
    # the cursor; then the ranking from the cursor, further down while everything is leased.
    tried = [set() for _ in walks]
    candidates = []
    for i, walk in enumerate(walks):
        candidates += [(i, f) for f in walk.loose_free(held_flats[i])]
    want = 32  # per run; more only while everything looked at is leased
    while True:
        for i, walk in enumerate(walks):
            candidates += [(i, f) for f in walk.scan(want, held_flats[i])]
        candidates = [(i, f) for i, f in dict.fromkeys(candidates) if f not in tried[i]]
        if not candidates:
            break
        item = lease.first(walks, candidates)
        if item is not None:
            return item
        for i, f in candidates:
            tried[i].add(f)
        candidates = []
        want *= 2
    # Skipped windows come back only when nothing else is left.
    later = []
    for i, walk in enumerate(walks):
        flats = sorted(held_flats[i], key=lambda f: walk.ranked.rank[f])
        later += [(i, f) for f, a in zip(flats, walk.is_answered(flats), strict=True) if not a]
    return lease.first(walks, later, held_ok=True)


class _Leaser:
    """Takes the lease of the best candidate nobody holds."""

    def __init__(self, project, redis, owner, ttl, remaining, ahead=0):
        self.project, self.redis, self.owner = project, redis, owner
        self.ttl, self.remaining, self.ahead = ttl, remaining, ahead

    def first(self, walks, candidates, held_ok=False) -> dict | None:
        """``candidates`` [(walk index, flat)]: best priority first (stable: scene order, then
        rank), the first one free in Redis and still unanswered in the database, leased; unless
        ``held_ok``, not one skipped meanwhile (see _skipped_meanwhile)."""
        candidates = sorted(
            candidates,
            key=lambda c: (-walks[c[0]].ranked.priority[c[1]], c[0], walks[c[0]].ranked.rank[c[1]]),
        )
        if not candidates:
            return None
        keys = []
        for i, flat in candidates:
            ranked = walks[i].ranked
            y, x = ranked.origin(flat)
            keys.append(lease_key(self.project.pk, ranked.scene_id, x, y))
        for (i, flat), key, holder in zip(candidates, keys, self.redis.mget(keys), strict=True):
            if holder is not None or not self.redis.set(key, self.owner, nx=True, ex=self.ttl):
                continue
            walk = walks[i]
            y, x = walk.ranked.origin(flat)
            place = (x, y, walk.ranked.window, walk.ranked.window)
            if place_is_answered(walk.run.scene_id, *place):
                # Answered after its annotation reached Redis, or while Redis was unreachable:
                # note it (so it is not looked at again) and let the lease go.
                place_changed(walk.run.scene_id, *place, redis=self.redis)
                self.redis.delete(key)
                self.remaining -= 1
                continue
            if not held_ok and self._skipped_meanwhile(walk.run.scene_id, place):
                self.redis.delete(key)
                continue
            return _queue_item(self.project, walk.run, walk.ranked, flat, self.ttl, self.remaining)
        return None

    def _skipped_meanwhile(self, scene_id: int, place) -> bool:
        """A skip saved while this request ran: its window's lease was given back by the skip,
        after the held-back places were read. Only a place with a skip is looked at again."""
        x, y, w, h = place
        skips = QueueSkip.objects.filter(project=self.project, scene_id=scene_id, x=x, y=y)
        if not skips.exists():
            return False
        return place in _held_back_places(self.project, [scene_id], self.ahead)[scene_id]


def _queue_item(project, run, ranked: RankedRun, flat: int, ttl: int, remaining: int) -> dict:
    y, x = ranked.origin(flat)
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
        "needs_choice": needs_choice(ranked.classes, p, best, thresholds, project.negative_class),
        "priority": round(float(ranked.priority[flat]), 6),
        "lease_seconds": ttl,
        "remaining": int(remaining),
    }


def guess_reason(classes, probs, best: int, thresholds: dict, negative) -> str:
    """Why the model's guess is what it is, in the detection rule's terms
    (labeling.scoring.thresholds .hit_class): "negative: boat 0.336 is below boat's threshold
    0.575"."""
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


def needs_choice(classes, probs, best: int, thresholds: dict, negative) -> bool:
    """True when accepting the guess would take the threshold rule's word against the ranking:
    no class reaches its threshold, so the guess is ``negative``, yet a class is more probable
    than ``negative`` ("negative p = 0.121" beside car 0.440). The queue page then wants a
    choice instead of Enter."""
    classes = list(classes)
    if classes[best] != negative or not any(c in thresholds for c in classes if c != negative):
        return False
    return any(c != negative and probs[i] > probs[best] for i, c in enumerate(classes))


def release_lease(project, scene_id: int, x: int, y: int, user, redis=None) -> bool:
    """Give a leased window back (only the reviewer holding it can)."""
    redis = redis if redis is not None else get_redis()
    key = lease_key(project.pk, scene_id, x, y)
    owner = str(getattr(user, "pk", "") or "anonymous")
    holder = redis.get(key)
    if holder is not None and holder.decode() == owner:
        return bool(redis.delete(key))
    return False
