"""Review-area benchmark against a live server (gunicorn, the app's WSGI entry point) on the
configured database (PostgreSQL: set DATABASE_URL) and Redis:

* time to first boxes: what the viewer does on opening a scene (GET the scene JSON, then the
  merged detections feed, gzip, parsed), cold (first request after the server started) and warm;
  also the raw-window feed and an ETag revalidation (304);
* size of the detections feed, raw and gzipped, next to a naive row-per-object JSON baseline;
* p50/p95 latency of POSTing an annotation with 20 concurrent clients (threads, one session and
  one keep-alive connection each), next to one client alone;
* the review loop as annotations accumulate: the project's annotations cleared, then loaded to
  10,000 and 100,000 (COPY; most of them on the queue's top windows, as reviewers answering
  the queue leave them, the rest boxes drawn anywhere); at each level one reviewer, then 20
  concurrent reviewers, take the next window (queue GET) and answer it (annotation POST), p50
  and p95 of each, the 20 as a busy team (each looks at a window for 1-2 s) and back to back
  (saturation); the first GET after a load apart (it builds the answered set from the database
  once; at the first level it also ranks the runs in that server process); every window handed
  out is counted: twice, or already answered, is a failure.

Scenes: the demo collage's size (2560 x 3968, 80 x 124 tiles of 32 px) and a scene ten times
larger (8096 x 12544). Their probability grids are synthetic (tiles of car/boat/negative, the
window's probabilities follow how much of each class it covers, plus noise) and go through the
real labeling.scoring.results.store_scoring_result, so the rows the API reads are the real ones.

    DATABASE_URL=postgres://... .venv/bin/python bench/bench_review.py [--quick] [--only-queue]

``run(quick)`` returns rows {"name", "value", "unit", "baseline", "baseline_value", "ratio"} for
bench/run_all.py.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import mlcore  # noqa: E402, F401  (sets the OpenMP wait policy before torch is imported)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collage_app.settings")

PROJECT_NAME = "bench_review"
TILE = 32
SCENES = {  # name: (height, width) in pixels
    "demo": (124 * TILE, 80 * TILE),
    "10x": (392 * TILE, 253 * TILE),
}
CLIENTS = 20


def setup_django():
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


# -- data ------------------------------------------------------------------------------------------


def synthetic_grid(height: int, width: int, window=32, step=16, seed=0):
    """A ScoreGrid over a scene of 32-pixel tiles, 10 % car, 10 % boat, the rest negative."""
    from mlcore.data.windows import grid_positions
    from mlcore.inference.scoring import ScoreGrid

    rng = np.random.default_rng(seed)
    rows, cols = height // TILE, width // TILE
    cls = rng.choice(3, size=(rows, cols), p=[0.1, 0.1, 0.8])
    onehot = np.eye(3, dtype=np.float32)[cls]  # (rows, cols, 3): car, boat, negative
    half = np.repeat(np.repeat(onehot, 2, axis=0), 2, axis=1)  # 16-pixel cells
    ys, xs = grid_positions(height, window, step), grid_positions(width, window, step)
    iy, ix = ys // 16, xs // 16
    cover = sum(half[iy + dy][:, ix + dx] for dy in (0, 1) for dx in (0, 1)) / 4.0
    logits = 8.0 * cover + rng.normal(0.0, 1.2, cover.shape).astype(np.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (e / e.sum(-1, keepdims=True)).astype(np.float32)
    return ScoreGrid(ys, xs, probs, ["car", "boat", "negative"], window, step)


def bench_project():
    from django.contrib.auth import get_user_model

    from labeling.models import ModelVersion, Project

    project, _ = Project.objects.get_or_create(name=PROJECT_NAME)
    User = get_user_model()
    users = []
    for i in range(CLIENTS):
        user, created = User.objects.get_or_create(username=f"bench_review_{i}")
        if created:
            user.set_password(uuid.uuid4().hex)
            user.save()
        users.append(user)
    project.members.add(*users)
    ModelVersion.objects.get_or_create(
        project=project, number=1,
        defaults={"status": "ready", "is_current": True, "classes": project.class_names},
    )  # fmt: skip
    return project, users


def bench_scene(project, key: str):
    """The scene and its done run, built once and reused by later runs of the bench."""
    from labeling.models import Scene, ScoringRun
    from labeling.scoring.results import store_scoring_result

    height, width = SCENES[key]
    name = f"bench {key} {width}x{height}"
    scene = Scene.objects.filter(project=project, name=name).first()
    if scene is not None and scene.shown_run() is not None:
        return scene, scene.shown_run(), None
    if scene is None:
        scene = Scene.objects.create(project=project, name=name, image_key="bench/synthetic",
                                     width=width, height=height)  # fmt: skip
    started = time.perf_counter()
    grid = synthetic_grid(height, width, seed=len(key))
    run = ScoringRun.objects.create(
        scene=scene, model_version=project.model_versions.get(number=1), status="running"
    )
    store_scoring_result(run, grid, {"synthetic": True})
    run.refresh_from_db()
    return scene, run, time.perf_counter() - started


def session_cookies(users) -> list[str]:
    from django.test import Client

    cookies = []
    for user in users:
        c = Client()
        c.force_login(user)
        csrf = uuid.uuid4().hex  # any 32-character token: the cookie and the header must match
        cookies.append((f"sessionid={c.cookies['sessionid'].value}; csrftoken={csrf}", csrf))
    return cookies


# -- the live server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """gunicorn serving collage_app.wsgi on localhost (gthread workers), stopped on exit."""

    def __init__(self, workers: int, threads: int):
        self.port = free_port()
        self.workers, self.threads = workers, threads
        self.proc = None

    def __enter__(self):
        cmd = [sys.executable, "-m", "gunicorn", "collage_app.wsgi:application",
               "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
               "--threads", str(self.threads), "--worker-class", "gthread",
               "--log-level", "warning", "--timeout", "300"]  # fmt: skip
        self.log = open(os.environ.get("BENCH_REVIEW_LOG", os.devnull), "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/api/health")
                conn.getresponse().read()
                conn.close()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer within 60 s")

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class Api:
    """One client: a keep-alive connection and a session."""

    def __init__(self, port: int, cookie: tuple[str, str]):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.cookie, self.csrf = cookie

    def get(self, path: str, headers=None):
        h = {"Cookie": self.cookie, "Accept-Encoding": "gzip"} | (headers or {})
        self.conn.request("GET", path, headers=h)
        r = self.conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()

    def post(self, path: str, body: dict):
        h = {"Cookie": self.cookie, "X-CSRFToken": self.csrf, "Content-Type": "application/json",
             "Referer": f"http://127.0.0.1:{self.conn.port}/"}  # fmt: skip
        self.conn.request("POST", path, body=json.dumps(body), headers=h)
        r = self.conn.getresponse()
        return r.status, r.read()


def decoded(headers: dict, body: bytes) -> bytes:
    return gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# -- measurements ----------------------------------------------------------------------------------


def first_boxes(api: Api, scene, repeats: int) -> dict:
    """GET scene JSON + merged feed (gzip) + JSON parse: cold once, then warm repeats."""

    def once():
        started = time.perf_counter()
        status, _, body = api.get(f"/api/scenes/{scene.pk}")
        assert status == 200, body[:200]
        status, headers, body = api.get(f"/api/scenes/{scene.pk}/detections?kind=merged")
        assert status == 200, body[:200]
        raw = decoded(headers, body)
        feed = json.loads(raw)
        return time.perf_counter() - started, feed, len(raw), body

    cold, feed, raw, body = once()
    warm = [once()[0] for _ in range(repeats)]
    return {"cold": cold, "warm": statistics.median(warm), "feed": feed, "raw": raw,
            "wire": len(body)}  # fmt: skip


def window_feed(api: Api, scene, repeats: int) -> dict:
    times, sizes = [], None
    for _ in range(repeats + 1):
        started = time.perf_counter()
        status, headers, body = api.get(f"/api/scenes/{scene.pk}/detections?kind=window")
        assert status == 200, body[:200]
        raw = decoded(headers, body)
        json.loads(raw)
        times.append(time.perf_counter() - started)
        sizes = (len(raw), len(body), headers)
    started = time.perf_counter()
    status, _, _ = api.get(f"/api/scenes/{scene.pk}/detections?kind=window",
                           {"If-None-Match": sizes[2]["ETag"]})  # fmt: skip
    revalidate = time.perf_counter() - started
    assert status == 304
    return {"cold": times[0], "warm": statistics.median(times[1:]), "raw": sizes[0],
            "gzip": sizes[1], "revalidate": revalidate}  # fmt: skip


def naive_size(feed: dict) -> tuple[int, int]:
    """The same boxes as a list of objects (what a straightforward API would send)."""
    rows = [
        {"id": i, "x": x, "y": y, "w": w, "h": h, "label": feed["classes"][c], "score": s}
        for i, x, y, w, h, c, s in zip(feed["id"], feed["x"], feed["y"], feed["w"], feed["h"],
                                       feed["label"], feed["score"], strict=True)
    ]  # fmt: skip
    raw = json.dumps(rows).encode()
    return len(raw), len(gzip.compress(raw, 5))


def post_latency(port: int, cookies, scene, clients: int, per_client: int, seed: int) -> dict:
    """Every client POSTs ``per_client`` annotations at random places; latencies in seconds."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    kinds = ["false_negative", "review", "confirm", "false_positive"]

    def work(i):
        api = Api(port, cookies[i])
        rng = np.random.default_rng(seed * 1000 + i)
        barrier.wait()
        mine, codes = [], []
        for _ in range(per_client):
            body = {"client_id": uuid.uuid4().hex, "kind": kinds[int(rng.integers(0, 4))],
                    "label": ["car", "boat", "negative"][int(rng.integers(0, 3))],
                    "x": int(rng.integers(0, scene.width - 32) // 16 * 16),
                    "y": int(rng.integers(0, scene.height - 32) // 16 * 16),
                    "w": 32, "h": 32, "detection": None}  # fmt: skip
            started = time.perf_counter()
            status, _ = api.post(f"/api/scenes/{scene.pk}/annotations", body)
            mine.append(time.perf_counter() - started)
            codes.append(status)
        with lock:
            latencies.extend(mine)
            statuses.extend(codes)

    wall = run_clients(work, clients)
    bad = [s for s in statuses if s != 201]
    if bad:
        raise RuntimeError(f"{len(bad)} POSTs failed, statuses {sorted(set(bad))}")
    return {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "n": len(latencies), "per_s": len(latencies) / wall}  # fmt: skip


LEVELS = (0, 10_000, 100_000)
QUICK_LEVELS = (0, 10_000)
# Of a level's annotations, this share answers the queue's top windows (in its own order: what
# reviewers leave behind), the rest are boxes drawn anywhere in the viewer.
QUEUE_SHARE = 0.8
QUEUE_STRATEGY = "uncertainty"
# A busy team: each reviewer looks at a window for 1 to 2 s before answering.
THINK = (1.0, 2.0)


def clear_annotations(project, scene_ids) -> None:
    """An empty project again: its annotations and skips gone (plain SQL: the model refuses to
    delete an annotation), the queue's Redis state and leases with them."""
    from django.db import connection

    from labeling.review import answered

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM labeling_annotation WHERE project_id = %s", [project.pk])
        cursor.execute("DELETE FROM labeling_queueskip WHERE project_id = %s", [project.pk])
    redis = answered.get_redis()
    answered.forget_scenes(scene_ids, redis)
    leases = list(redis.scan_iter(f"review:lease:{project.pk}:*", count=1000))
    if leases:
        redis.delete(*leases)


def queue_top_places(project, runs, count: int) -> list[tuple]:
    """The queue's first ``count`` windows over all the project's runs, (scene, x, y, w, h)."""
    from labeling.review import queue

    ranked = [queue.ranked_run(r, QUEUE_STRATEGY) for r in runs]
    prio = np.concatenate([rk.priority[rk.order] for rk in ranked])
    which = np.concatenate([np.full(len(rk.order), i) for i, rk in enumerate(ranked)])
    rank = np.concatenate([np.arange(len(rk.order)) for rk in ranked])
    best = np.lexsort((rank, which, -prio))[:count]  # the queue's merge: priority, scene, rank
    places = []
    for b in best:
        rk = ranked[which[b]]
        y, x = rk.origin(int(rk.order[rank[b]]))
        places.append((rk.scene_id, x, y, rk.window, rk.window))
    return places


def load_annotations(project, scenes, places, user, seed: int) -> float:
    """One 'review' annotation per place (seconds taken): COPY on PostgreSQL, batched INSERTs on
    SQLite (the default database, which has no COPY); Redis forgets the scenes' answered windows
    (the next queue request rebuilds them from the database)."""
    from django.db import connection
    from django.utils import timezone

    from labeling.models import Annotation
    from labeling.review import answered

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    labels = ["car", "boat", "negative"]
    now = timezone.now()
    rows = (
        (project.pk, scene_id, user.pk, now, "review", labels[int(rng.integers(0, 3))],
         x, y, w, h, "api")
        for scene_id, x, y, w, h in places
    )  # fmt: skip
    columns = "project_id, scene_id, user_id, created_at, kind, label, x, y, w, h, source"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY labeling_annotation ({columns}) FROM STDIN") as copy:
                for values in rows:
                    copy.write_row(values)
        else:
            names = [c.strip() for c in columns.split(",")]
            while batch := list(itertools.islice(rows, 5000)):
                Annotation.objects.bulk_create(Annotation(**dict(zip(names, v))) for v in batch)
        cursor.execute("ANALYZE labeling_annotation")
    answered.forget_scenes([s.pk for s in scenes], answered.get_redis())
    return time.perf_counter() - started


def level_places(project, runs, scenes, answered: set, have: int, want: int, seed: int):
    """Places of the annotations that take the project from ``have`` to ``want``: the queue's
    next top windows nobody answered yet (QUEUE_SHARE of the level) and boxes drawn at random
    places of random scenes."""
    top = int(round(want * QUEUE_SHARE)) - int(round(have * QUEUE_SHARE))
    rng = np.random.default_rng(seed)
    places = []
    if top > 0:
        ranked = queue_top_places(project, runs, top + len(answered))
        places = [p for p in ranked if p not in answered][:top]
    for _ in range(want - have - len(places)):
        scene = scenes[int(rng.integers(0, len(scenes)))]
        w, h = (int(v) for v in rng.integers(12, 64, 2))
        x, y = int(rng.integers(0, scene.width - w)), int(rng.integers(0, scene.height - h))
        places.append((scene.pk, x, y, w, h))
    return places


class ReviewLoop:
    """Reviewers taking the next window (GET) and answering it (POST); every window handed out
    is kept, to count the ones handed out twice or though already answered."""

    def __init__(self, port: int, cookies, project):
        self.port, self.cookies, self.project = port, cookies, project
        self.handed: list[tuple] = []
        self.lock = threading.Lock()

    def take(self, api: Api) -> tuple[float, dict]:
        started = time.perf_counter()
        status, headers, body = api.get(
            f"/api/projects/{self.project.pk}/queue?strategy={QUEUE_STRATEGY}"
        )
        took = time.perf_counter() - started
        item = json.loads(decoded(headers, body))
        assert status == 200 and not item["done"], item
        with self.lock:
            self.handed.append((item["scene"], item["x"], item["y"], item["w"], item["h"]))
        return took, item

    def answer(self, api: Api, item: dict) -> float:
        started = time.perf_counter()
        status, body = api.post(
            f"/api/scenes/{item['scene']}/annotations",
            {"client_id": uuid.uuid4().hex, "kind": "review", "label": item["guess"],
             "x": item["x"], "y": item["y"], "w": item["w"], "h": item["h"], "source": "queue"},
        )  # fmt: skip
        assert status == 201, body[:300]
        return time.perf_counter() - started

    def release(self, api: Api, item: dict) -> None:
        where = {"scene": item["scene"], "x": item["x"], "y": item["y"]}
        status, body = api.post(f"/api/projects/{self.project.pk}/queue/release", where)
        assert status == 200, body[:300]

    def run(self, clients: int, per_client: int, think=None) -> dict:
        """Each client takes and answers ``per_client`` windows, back to back or, with ``think``
        (low, high seconds), looking at each window for a random while first."""
        gets: list[float] = []
        posts: list[float] = []
        barrier = threading.Barrier(clients)
        errors: list[BaseException] = []

        def work(i):
            try:
                api = Api(self.port, self.cookies[i])
                rng = np.random.default_rng(i)
                barrier.wait()
                if think:  # the reviewers do not start in step
                    time.sleep(float(rng.uniform(0, think[1])))
                mine_get, mine_post = [], []
                for _ in range(per_client):
                    took, item = self.take(api)
                    mine_get.append(took)
                    if think:
                        time.sleep(float(rng.uniform(*think)))
                        # gunicorn closes a keep-alive connection idle for 2 s: so would a
                        # reviewer's browser find it, and open a new one.
                        api.conn.close()
                    mine_post.append(self.answer(api, item))
                with self.lock:
                    gets.extend(mine_get)
                    posts.extend(mine_post)
            except BaseException as exc:  # reported below
                errors.append(exc)

        wall = run_clients(work, clients)
        if errors:
            raise RuntimeError(f"review loop failed: {errors[0]!r}")
        return {"get_p50": percentile(gets, 50), "get_p95": percentile(gets, 95),
                "post_p50": percentile(posts, 50), "post_p95": percentile(posts, 95),
                "n": len(gets), "per_s": len(gets) / wall, "load": os.getloadavg()[0]}  # fmt: skip

    def warm_up(self, clients: int) -> float:
        """Every server worker ranks the runs once (process cache): concurrent GETs, their
        windows given back. Returns the slowest GET."""
        apis = [Api(self.port, self.cookies[i]) for i in range(clients)]
        got: list = [None] * clients

        def work(i):
            got[i] = self.take(apis[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for api, (_, item) in zip(apis, got, strict=True):
            self.release(api, item)
        with self.lock:
            del self.handed[-clients:]  # given back unanswered: they may be handed out again
        return max(took for took, _ in got)


def review_scaling(port: int, cookies, project, scenes, quick: bool) -> tuple[list, dict]:
    """The review loop at 0, 10k and 100k annotations (quick: 0 and 10k), 1 and 20 reviewers."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from labeling.models import Annotation

    runs = [run_ for _, run_ in scenes]
    scene_rows = [scene for scene, _ in scenes]
    loader = get_user_model().objects.get(username="bench_review_0")
    clear_annotations(project, [s.pk for s in scene_rows])
    loop = ReviewLoop(port, cookies, project)
    answered_before = 0  # windows handed out although answered before the level started
    per_single, per_many, per_paced = (8, 3, 3) if quick else (20, 8, 10)
    results, have = {}, 0
    for i, level in enumerate(QUICK_LEVELS if quick else LEVELS):
        seconds = None
        answered = set(loop.handed)  # answered by the loop at earlier levels
        if level > have:
            places = level_places(project, runs, scene_rows, answered, have, level, seed=i)
            seconds = load_annotations(project, scene_rows, places, loader, seed=i)
            answered.update(places)
        handed_before = len(loop.handed)
        count = Annotation.objects.filter(project=project).count()
        connection.close()
        # The first GET after a load builds the answered set from the database (once).
        first, item = loop.take(Api(port, cookies[0]))
        loop.release(Api(port, cookies[0]), item)
        loop.handed.pop()
        # New connections land on any server process: a few rounds reach them all.
        warm = max(loop.warm_up(CLIENTS) for _ in range(3))
        single = loop.run(1, per_single)
        many = loop.run(CLIENTS, per_many)
        paced = loop.run(CLIENTS, per_paced, think=THINK)
        answered_before += len(set(loop.handed[handed_before:]) & answered)
        have = Annotation.objects.filter(project=project).count()
        connection.close()
        results[level] = {"count": count, "load_s": seconds, "first": first, "warm_up": warm,
                          "single": single, "many": many, "paced": paced}  # fmt: skip
        print(f"  review loop at {count} annotations: GET p95 1 / {CLIENTS} paced / {CLIENTS} "
              f"back to back {single['get_p95'] * 1e3:.1f} / {paced['get_p95'] * 1e3:.1f} / "
              f"{many['get_p95'] * 1e3:.1f} ms, POST p95 {single['post_p95'] * 1e3:.1f} / "
              f"{paced['post_p95'] * 1e3:.1f} / {many['post_p95'] * 1e3:.1f} ms, "
              f"load average {many['load']:.2f}", file=sys.stderr)  # fmt: skip
    twice = len(loop.handed) - len(set(loop.handed))
    rows = []
    for level, r in results.items():
        label = f"{level // 1000}k annotations" if level else "empty project"
        single, many, paced = r["single"], r["many"], r["paced"]
        team = f"{CLIENTS} reviewers each answering every {THINK[0]:g}-{THINK[1]:g} s"
        rush = f"{CLIENTS} reviewers back to back"
        for what, key in (("queue GET", "get"), ("answer POST", "post")):
            for who, res in ((team, paced), (rush, many)):
                rows += [
                    row(f"review loop, {label} ({r['count']}): {what} p50, {who}",
                        res[f"{key}_p50"] * 1e3, "ms", "1 reviewer", single[f"{key}_p50"] * 1e3),
                    row(f"review loop, {label}: {what} p95, {who}", res[f"{key}_p95"] * 1e3,
                        "ms", "1 reviewer", single[f"{key}_p95"] * 1e3),
                ]  # fmt: skip
        rows += [
            row(f"review loop, {label}: windows answered per s, {rush}", many["per_s"], "1/s",
                "1 reviewer", single["per_s"]),
            row(f"review loop, {label}: first queue GET (builds the answered set)",
                r["first"] * 1e3, "ms"),
            row(f"review loop, {label}: load average while {CLIENTS} reviewers ran",
                many["load"], ""),
        ]  # fmt: skip
        if r["load_s"] is not None:
            rows.append(row(f"review loop, {label}: loading the annotations (COPY)",
                            r["load_s"], "s"))  # fmt: skip
    rows += [
        row("review loop: windows handed out", len(loop.handed), "windows"),
        row("review loop: windows handed out twice", twice, "windows"),
        row("review loop: windows handed out though answered before", answered_before, "windows"),
    ]
    if twice or answered_before:
        print_table(rows)
        raise RuntimeError(f"the queue handed out {twice} windows twice and {answered_before} "
                           "answered ones")  # fmt: skip
    return rows, results


def run_clients(work, clients: int) -> float:
    """``work(i)`` in ``clients`` threads at once; the wall-clock seconds until all are done."""
    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def row(name, value, unit, baseline="", baseline_value=None):
    ratio = None
    if baseline_value not in (None, 0) and value is not None:
        ratio = round(value / baseline_value, 3)
    return {"name": name, "value": round(value, 4) if isinstance(value, float) else value,
            "unit": unit, "baseline": baseline,
            "baseline_value": round(baseline_value, 4) if isinstance(baseline_value, float)
            else baseline_value, "ratio": ratio}  # fmt: skip


def detection_store_rows(project, quick: bool) -> list[dict]:
    """Storing a run's detections: COPY (the product's way on PostgreSQL) against the batched
    INSERTs it replaced, on the same rows (the gigapixel bench's mix: 13% merged boxes, the rest
    raw windows with their probabilities), side by side in one run."""
    from django.db import connection, transaction

    from labeling.models import ModelVersion, Scene, ScoringRun
    from labeling.scoring.results import copy_detections, insert_detections_in_batches

    if connection.vendor != "postgresql":
        return [row("detections stored: COPY needs PostgreSQL (set DATABASE_URL)", 0, "-")]
    n = 100_000 if quick else 976_148  # the gigapixel scene's 131,294 merged + 844,854 raw

    def rows(run):
        probs = json.dumps({"car": 0.9312, "boat": 0.0411, "negative": 0.0277})
        for i in range(n):
            merged = i % 1000 < 134
            yield (run.pk, "merged" if merged else "window", ("car", "boat")[i % 2],
                   0.5 + (i % 500) / 1000, (i * 16) % 32768, (i // 2048) * 16, 32, 32,
                   "{}" if merged else probs)  # fmt: skip

    scene = Scene.objects.create(project=project, name="detection store bench", width=1, height=1)
    version = ModelVersion.objects.create(project=project, number=10_000 + scene.pk)
    seconds = {}
    try:
        for name, store in (("copy", copy_detections), ("insert", insert_detections_in_batches)):
            run = ScoringRun.objects.create(scene=scene, model_version=version)
            started = time.perf_counter()
            with transaction.atomic():
                store(rows(run))
            seconds[name] = time.perf_counter() - started
    finally:
        scene.delete()
    return [row(f"detections stored, {n:,} rows: COPY", seconds["copy"], "s",
                "batched INSERT (bulk_create)", seconds["insert"])]  # fmt: skip


def drop_project() -> None:
    """Remove the bench's own project (scenes, runs, detections, its annotations) and grids."""
    import shutil

    from labeling.models import Project
    from labeling.projects.storage_keys import get_storage, project_prefix

    project = Project.objects.filter(name=PROJECT_NAME).first()
    if project is None:
        return
    local = get_storage().local_path(project_prefix(project))
    project.delete()
    if local is not None:
        shutil.rmtree(local, ignore_errors=True)


def run(quick: bool = False, rebuild: bool = False, only_queue: bool = False) -> list[dict]:
    setup_django()
    from django.conf import settings
    from django.db import connection

    from labeling.models import Detection

    if rebuild:
        drop_project()
    project, users = bench_project()
    built = {}
    scenes = {}
    for key in SCENES:
        scene, run_, seconds = bench_scene(project, key)
        scenes[key] = (scene, run_)
        built[key] = seconds
    cookies = session_cookies(users)
    rows: list[dict] = [] if only_queue else detection_store_rows(project, quick)
    connection.close()  # the server's workers and the clients' threads use their own
    repeats = 3 if quick else 9
    per_client = 10 if quick else 50
    with LiveServer(workers=3, threads=8) as server:
        api = Api(server.port, cookies[0])
        results = {}
        for key, (scene, _) in scenes.items():
            if only_queue:
                break
            fb = first_boxes(api, scene, repeats)
            wf = window_feed(api, scene, repeats)
            results[key] = (fb, wf)
        for key, (scene, run_) in scenes.items():
            if only_queue:
                break
            fb, wf = results[key]
            merged_raw = fb["raw"]
            naive_raw, naive_gz = naive_size(fb["feed"])
            label = f"{key} {scene.width}x{scene.height}"
            n_windows = run_.n_windows
            rows += [
                row(f"{label}: windows in the grid", n_windows, "windows"),
                row(f"{label}: merged boxes", fb["feed"]["count"], "boxes"),
                row(f"{label}: raw windows >= 0.5", Detection.objects.filter(
                    run=run_, kind="window").count(), "windows"),
                row(f"{label}: time to first boxes, cold (scene + merged feed)", fb["cold"], "s"),
                row(f"{label}: time to first boxes, warm", fb["warm"], "s",
                    "cold", fb["cold"]),
                row(f"{label}: merged feed, raw JSON", merged_raw / 1e3, "kB",
                    "row-per-box JSON", naive_raw / 1e3),
                row(f"{label}: merged feed, gzipped", fb["wire"] / 1e3, "kB",
                    "row-per-box JSON gzipped", naive_gz / 1e3),
                row(f"{label}: window feed (with probs), cold", wf["cold"], "s"),
                row(f"{label}: window feed, warm", wf["warm"], "s", "cold", wf["cold"]),
                row(f"{label}: window feed, raw JSON", wf["raw"] / 1e3, "kB"),
                row(f"{label}: window feed, gzipped", wf["gzip"] / 1e3, "kB",
                    "raw", wf["raw"] / 1e3),
                row(f"{label}: window feed, ETag revalidation (304)", wf["revalidate"], "s",
                    "warm", wf["warm"]),
            ]  # fmt: skip
            if built[key] is not None:
                rows.append(row(f"{label}: store_scoring_result (detections to DB)",
                                built[key], "s"))  # fmt: skip
        if not only_queue:
            demo_scene = scenes["demo"][0]
            single = post_latency(server.port, cookies, demo_scene, 1, per_client, seed=1)
            many = post_latency(server.port, cookies, demo_scene, CLIENTS, per_client, seed=2)
            rows += [
                row(f"POST annotation p50, {CLIENTS} concurrent clients", many["p50"] * 1e3,
                    "ms", "1 client", single["p50"] * 1e3),
                row(f"POST annotation p95, {CLIENTS} concurrent clients", many["p95"] * 1e3,
                    "ms", "1 client", single["p95"] * 1e3),
                row(f"POST annotation throughput, {CLIENTS} clients", many["per_s"], "req/s",
                    "1 client", single["per_s"]),
            ]  # fmt: skip
        loop_rows, _ = review_scaling(server.port, cookies, project, list(scenes.values()), quick)
        rows += loop_rows
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"\nbench_review: gunicorn 3 workers x 8 threads on localhost, database {engine}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    print_table(rows)
    return rows


def print_table(rows):
    width = max(len(r["name"]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10} {'unit':<8} {'baseline':>10}  ratio  (baseline)")
    for r in rows:
        base = "" if r["baseline_value"] is None else f"{r['baseline_value']:>10}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:>5}"
        print(f"{r['name']:<{width}}  {r['value']:>10} {r['unit']:<8} {base:>10}  {ratio:>5}  "
              f"{r['baseline']}")  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and POSTs")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--rebuild", action="store_true",
                        help="drop the bench project and build its scenes again (also times "
                        "store_scoring_result)")  # fmt: skip
    parser.add_argument("--only-queue", action="store_true",
                        help="only the review loop at 0 / 10k / 100k annotations")  # fmt: skip
    args = parser.parse_args(argv)
    rows = run(args.quick, args.rebuild, args.only_queue)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
