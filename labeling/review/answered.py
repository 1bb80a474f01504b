"""Which windows of a done run are answered, kept in Redis so that handing out the next window
costs the same at 0 and at 100,000 annotations.

Per run (and per rebuild, its generation ``g``):

* ``answered``: the set of flat window indices whose place has an effective annotation, plus a
  sentinel (-1) saying it was built. Built once from the database (:func:`open_walks`), then kept
  up to date by :func:`place_changed`, which every recorded annotation calls. It expires after
  ``REVIEW_ANSWERED_SECONDS`` (an hour) and is rebuilt then, so anything it missed while Redis
  was unreachable is repaired.
* ``walk``: per strategy, a cursor into the ranked order; every window before it is answered or
  in ``loose``. The queue starts there instead of at the top of the ranking.
* ``loose``: windows that may lie before a cursor without being answered: an undone answer, a
  skipped window the cursor moved past while it was held back. Few; every request looks at them.

The database stays the truth: the queue checks a window's place in the database before handing
it out, and a missing ``answered`` set is rebuilt from it. Updates of one place and a rebuild are
ordered by PostgreSQL advisory locks (a place's updates one at a time, a rebuild alone), so the
set never keeps a window an undo reopened."""

from __future__ import annotations

import logging
import zlib
from functools import reduce
from operator import or_

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q

from labeling.loop.cycle import effective_annotations
from labeling.models import Annotation

log = logging.getLogger(__name__)

SENTINEL = -1
# First halves of the two-int advisory lock keys ("rvsc", "rvpl" in ASCII), apart from
# labeling.loop.cycle_lock's.
SCENE_LOCK = 0x72767363
PLACE_LOCK = 0x7276706C
# The most windows one round trip checks while walking past answered ones.
MAX_BATCH = 8192

# KEYS: answered, loose; ARGV: flat, "1" answered / "0" open again, ttl. Only a built set is
# changed (a missing one is rebuilt from the database anyway).
_SYNC = """
if redis.call('SISMEMBER', KEYS[1], '-1') == 0 then return 0 end
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return 1
"""
# KEYS: walk, loose; ARGV: strategy, new cursor, ttl, flats to note as loose first. The cursor
# only moves forward.
_ADVANCE = """
if #ARGV > 3 then
  redis.call('SADD', KEYS[2], unpack(ARGV, 4))
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


_clients: dict = {}


def get_redis():
    """The default queue's Redis, one client (and connection pool) per process and config
    (django_rq.get_connection makes a new pool, so a new TCP connection, on every call). It
    tries a command twice, not ten times with backoff: with Redis down, an annotation is still
    recorded at once and the queue answers 503 at once."""
    import django_rq
    import redis
    from django_rq.settings import QUEUES
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    config = QUEUES["default"]
    key = repr(sorted(config.items()))
    client = _clients.get(key)
    if client is None:
        if "URL" in config and not config.get("SSL"):
            client = redis.Redis.from_url(
                config["URL"], db=config.get("DB"), retry=Retry(NoBackoff(), 1),
                socket_connect_timeout=2, socket_timeout=10,
            )  # fmt: skip
        else:
            client = django_rq.get_connection("default")
        client = _clients.setdefault(key, client)
    return client


def answered_seconds() -> int:
    return settings.REVIEW_ANSWERED_SECONDS


def run_ident(run) -> str:
    """The run's id and creation time: a database rebuilt with the same ids never meets keys
    an older one left in Redis."""
    return f"{run.pk}.{int(run.created_at.timestamp() * 1e6)}"


def _gen_key(ident: str) -> str:
    return f"review:gen:{ident}"


def _keys(ident: str, gen) -> tuple[str, str, str]:
    base = f"review:{ident}:{gen}"
    return f"{base}:answered", f"{base}:walk", f"{base}:loose"


def _registry_key(scene_id: int) -> str:
    """Hash of the scene's runs with a built set: ident -> grid geometry (for place_changed)."""
    return f"review:runs:{scene_id}"


def geometry(ranked) -> str:
    """ "window step ylast xlast rows cols" when the grid's origins are min(i * step, last) (as
    mlcore.data.windows.grid_positions makes them), else "" (place_changed then drops the set)."""
    step = int(ranked.step)
    for origins in (ranked.ys, ranked.xs):
        expected = np.minimum(np.arange(len(origins)) * step, origins[-1])
        if not np.array_equal(origins, expected):
            return ""
    ys, xs = ranked.ys, ranked.xs
    return f"{ranked.window} {step} {int(ys[-1])} {int(xs[-1])} {len(ys)} {len(xs)}"


def _axis_index(v: int, step: int, last: int, n: int):
    if v == last:
        return n - 1
    if 0 <= v < last and v % step == 0:
        return v // step
    return None


def flat_of_geometry(geom: str, x: int, y: int, w: int, h: int):
    window, step, ylast, xlast, rows, cols = (int(v) for v in geom.split())
    if w != window or h != window:
        return None
    i, j = _axis_index(y, step, ylast, rows), _axis_index(x, step, xlast, cols)
    return None if i is None or j is None else i * cols + j


def _lock(sql: str, *keys) -> None:
    """Advisory locks held until the transaction ends."""
    if connection.vendor != "postgresql":
        return  # SQLite: one writer at a time anyway; the narrow races stay (single machine)
    with connection.cursor() as cursor:
        cursor.execute(sql, list(keys))


def _place_lock_id(scene_id: int, x: int, y: int, w: int, h: int) -> int:
    return zlib.crc32(f"{scene_id}:{x}:{y}:{w}:{h}".encode()) & 0x7FFFFFFF


class _Light:
    """The fields labeling.loop.cycle.effective_annotations reads, without a model instance."""

    __slots__ = ("pk", "scene_id", "kind", "undoes_id", "created_at", "x", "y", "w", "h")
    FIELDS = ("id", "scene_id", "kind", "undoes_id", "created_at", "x", "y", "w", "h")

    def __init__(self, values):
        (self.pk, self.scene_id, self.kind, self.undoes_id, self.created_at, self.x, self.y,
         self.w, self.h) = values  # fmt: skip


def light_rows(queryset) -> list[_Light]:
    return [_Light(v) for v in queryset.values_list(*_Light.FIELDS)]


def place_is_answered(scene_id: int, x: int, y: int, w: int, h: int) -> bool:
    """Whether the place has an effective annotation now (the rows of that one place: undo rows
    copy their target's place, so every row that matters is here)."""
    rows = light_rows(Annotation.objects.filter(scene_id=scene_id, x=x, y=y, w=w, h=h))
    return bool(rows) and bool(effective_annotations(rows))


def _answered_squares(scene_id: int, size: int) -> list[tuple[int, int]]:
    """(x, y) of the scene's size x size places with an effective annotation. A place without
    undo rows has one as soon as it has a row, so the database groups those (one small row per
    place); only places with an undo have their rows read and sorted out here."""
    squares = Annotation.objects.filter(scene_id=scene_id, w=size, h=size)
    undos = Count("id", filter=Q(kind="undo"))
    groups = squares.order_by().values_list("x", "y").annotate(undos=undos)
    answered, undone = [], []
    for x, y, undos in groups:
        (undone if undos else answered).append((x, y))
    if undone:
        rows = light_rows(squares.filter(reduce(or_, (Q(x=x, y=y) for x, y in undone))))
        answered += [(a.x, a.y) for a in effective_annotations(rows)]
    return answered


def place_changed(scene_id: int, x: int, y: int, w: int, h: int, answered=None, redis=None):
    """Bring the answered sets of the scene's runs up to date with the place's annotations, after
    one was recorded (committed). ``answered``: True for a new answer (the newest row of its
    place, and only undoing it, once its id is known, can change that), None to read the place
    from the database (an undo). Redis being down loses nothing the database has: the queue
    checks a window's place in the database before handing it out, and the set is rebuilt from
    the database when it expires."""
    from redis.exceptions import RedisError

    try:
        redis = redis if redis is not None else get_redis()
        with transaction.atomic():
            # A rebuild of the scene waits for us (or we for it); updates of this place run one
            # at a time, each reading the place after the previous one's commit.
            _lock(
                "SELECT pg_advisory_xact_lock_shared(%s, %s), pg_advisory_xact_lock(%s, %s)",
                *(SCENE_LOCK, scene_id, PLACE_LOCK, _place_lock_id(scene_id, x, y, w, h)),
            )
            runs = redis.hgetall(_registry_key(scene_id))
            if not runs:
                return
            if answered is None:
                answered = place_is_answered(scene_id, x, y, w, h)
            idents = [k.decode() for k in runs]
            gens = redis.mget([_gen_key(i) for i in idents])
            sync = redis.register_script(_SYNC)
            ttl = 2 * answered_seconds()
            for ident, gen in zip(idents, gens, strict=True):
                if gen is None:
                    continue
                geom = runs[ident.encode()].decode()
                answered_key, _, loose_key = _keys(ident, gen.decode())
                if not geom:
                    redis.delete(answered_key)  # an irregular grid: rebuilt on the next request
                    continue
                flat = flat_of_geometry(geom, x, y, w, h)
                if flat is not None:
                    sync(keys=[answered_key, loose_key], args=[flat, int(answered), ttl])
    except RedisError as exc:
        log.warning("review queue: answered windows of scene %s not updated: %s", scene_id, exc)


def forget_scenes(scene_ids, redis=None) -> None:
    """Drop what Redis knows about these scenes' answered windows (after annotations were written
    without record_annotation, e.g. a bulk load): the next queue request rebuilds it."""
    redis = redis if redis is not None else get_redis()
    for scene_id in scene_ids:
        for ident in redis.hkeys(_registry_key(scene_id)):
            redis.delete(_gen_key(ident.decode()))
        redis.delete(_registry_key(scene_id))


def open_walks(pairs, strategy: str, redis) -> list[Walk]:
    """Walks of the runs in ``pairs`` [(run, ranked)]: two round trips to Redis for them all,
    and a rebuild from the database for a run whose answered set is missing."""
    idents = [run_ident(run) for run, _ in pairs]
    gens = [g.decode() if g else None for g in redis.mget([_gen_key(i) for i in idents])]
    states = _read_states(idents, gens, strategy, redis)
    for k, (run, ranked) in enumerate(pairs):
        if states[k] is None:
            gens[k] = _rebuild(run, ranked, idents[k], redis)
            states[k] = _read_states([idents[k]], [gens[k]], strategy, redis)[0]
    return [
        Walk(run, ranked, strategy, redis, _keys(ident, gen), *state)
        for (run, ranked), ident, gen, state in zip(pairs, idents, gens, states, strict=True)
    ]


def _read_states(idents, gens, strategy: str, redis) -> list:
    """(cursor, loose members, set size) per run, or None where the set is not built."""
    pipe = redis.pipeline(transaction=False)
    for ident, gen in zip(idents, gens, strict=True):
        if gen is not None:
            answered_key, walk_key, loose_key = _keys(ident, gen)
            pipe.sismember(answered_key, SENTINEL)
            pipe.hget(walk_key, strategy)
            pipe.smembers(loose_key)
            pipe.scard(answered_key)
    results = iter(pipe.execute())
    states = []
    for gen in gens:
        if gen is None:
            states.append(None)
            continue
        built, cursor, loose, count = (next(results) for _ in range(4))
        states.append((int(cursor or 0), loose, count) if built else None)
    return states


def _rebuild(run, ranked, ident: str, redis) -> str:
    """Read the scene's effective places once and write a new generation of the set."""
    with transaction.atomic():
        _lock("SELECT pg_advisory_xact_lock(%s, %s)", SCENE_LOCK, run.scene_id)
        gen = redis.get(_gen_key(ident))
        if gen is not None and redis.sismember(_keys(ident, gen.decode())[0], SENTINEL):
            return gen.decode()  # another request built it while we waited
        flats = {ranked.flat_of(x, y, ranked.window, ranked.window) for x, y in
                 _answered_squares(run.scene_id, ranked.window)}  # fmt: skip
        flats.discard(None)
        new = str(redis.incr(_gen_key(ident)))
        # Outlives the set it names (rebuilt hourly); a run that left the queue leaves nothing.
        redis.expire(_gen_key(ident), 3 * answered_seconds())
        answered_key, walk_key, loose_key = _keys(ident, new)
        pipe = redis.pipeline(transaction=True)
        pipe.delete(answered_key, walk_key, loose_key)
        members = [SENTINEL, *sorted(flats)]
        for start in range(0, len(members), 10000):
            pipe.sadd(answered_key, *members[start : start + 10000])
        pipe.expire(answered_key, answered_seconds())
        registry = _registry_key(run.scene_id)
        pipe.hset(registry, ident, geometry(ranked))
        # Older runs of the scene are out of the queue: their sets need no more updates.
        older = [k for k in redis.hkeys(registry) if int(k.split(b".")[0]) < run.pk]
        if older:
            pipe.hdel(registry, *older)
        if gen is not None:
            pipe.delete(*_keys(ident, gen.decode()))
        pipe.execute()
        return new


class Walk:
    """One request's view of a run's queue state (:func:`open_walks`): the cursor of its
    strategy, the loose windows, how many are answered; ``scan`` walks the ranking from the
    cursor."""

    def __init__(self, run, ranked, strategy: str, redis, keys, cursor: int, loose, count: int):
        self.run, self.ranked, self.strategy, self.redis = run, ranked, strategy, redis
        self.answered_key, self.walk_key, self.loose_key = keys
        self.ttl = 2 * answered_seconds()
        self.cursor = cursor
        self.pos = cursor  # where scan goes on
        self.advancing = True  # scan is still in the answered run that starts at the cursor
        self.loose = sorted((int(v) for v in loose), key=lambda f: ranked.rank[f])
        self.answered_count = max(0, count - 1)
        self._advance = redis.register_script(_ADVANCE)

    @property
    def remaining(self) -> int:
        return len(self.ranked.order) - self.answered_count

    def is_answered(self, flats) -> list[bool]:
        if not len(flats):
            return []
        return [bool(v) for v in self.redis.smismember(self.answered_key, [int(f) for f in flats])]

    def loose_free(self, held: set) -> list[int]:
        """Loose windows that are neither answered nor held back, best first."""
        out = [f for f, a in zip(self.loose, self.is_answered(self.loose), strict=True) if not a]
        return [f for f in out if f not in held]

    def scan(self, want: int, held: set) -> list[int]:
        """Up to ``want`` free windows (not answered, not held back) from where the last scan
        stopped, in rank order. The first windows from the cursor that are answered or held back
        move the cursor past them (held ones noted as loose first, so they come back)."""
        order = self.ranked.order
        free: list[int] = []
        batch = 64
        while len(free) < want and self.pos < len(order):
            flats = order[self.pos : self.pos + batch]
            answered = self.is_answered(flats)
            lead, new_loose = 0, []
            for flat, done in zip(flats, answered, strict=True):
                flat = int(flat)
                if not done and flat not in held:
                    free.append(flat)
                    self.advancing = False
                elif self.advancing:
                    lead += 1
                    if not done:
                        new_loose.append(flat)
            if lead:
                self._advance(
                    keys=[self.walk_key, self.loose_key],
                    args=[self.strategy, self.pos + lead, self.ttl, *new_loose],
                )
            self.pos += len(flats)
            batch = min(batch * 2, MAX_BATCH)
        return free
