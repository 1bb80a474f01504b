"""Review-area benchmark against a live server (gunicorn, the app's WSGI entry point) on the
configured database (PostgreSQL: set DATABASE_URL) and Redis:

* time to first boxes: what the viewer does on opening a scene (GET the scene JSON, then the
  merged detections feed, gzip, parsed), cold (first request after the server started) and warm;
  also the raw-window feed and an ETag revalidation (304);
* size of the detections feed, raw and gzipped, next to a naive row-per-object JSON baseline;
* p50/p95 latency of POSTing an annotation with 20 concurrent clients (threads, one session and
  one keep-alive connection each), next to one client alone; and of fetching the review queue.

Scenes: the demo collage's size (2560 x 3968, 80 x 124 tiles of 32 px) and a scene ten times
larger (8096 x 12544). Their probability grids are synthetic (tiles of car/boat/negative, the
window's probabilities follow how much of each class it covers, plus noise) and go through the
real labeling.results.store_scoring_result, so the rows the API reads are the real ones.

    DATABASE_URL=postgres://... .venv/bin/python bench/bench_review.py [--quick]

``run(quick)`` returns rows {"name", "value", "unit", "baseline", "baseline_value", "ratio"} for
bench/run_all.py.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
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
    from mlcore.scoring import ScoreGrid
    from mlcore.windows import grid_positions

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
    from labeling.results import store_scoring_result

    height, width = SCENES[key]
    name = f"bench {key} {width}x{height}"
    scene = Scene.objects.filter(project=project, name=name).first()
    if scene is not None and scene.latest_run() is not None:
        return scene, scene.latest_run(), None
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

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    bad = [s for s in statuses if s != 201]
    if bad:
        raise RuntimeError(f"{len(bad)} POSTs failed, statuses {sorted(set(bad))}")
    return {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "n": len(latencies), "per_s": len(latencies) / wall}  # fmt: skip


def queue_latency(port: int, cookies, project, clients: int, per_client: int) -> dict:
    """Each client fetches the next window and answers it (the review loop), timing the GET."""
    latencies: list[float] = []
    seen: list[tuple] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def work(i):
        api = Api(port, cookies[i])
        barrier.wait()
        mine, places = [], []
        for _ in range(per_client):
            started = time.perf_counter()
            status, headers, body = api.get(
                f"/api/projects/{project.pk}/queue?strategy=uncertainty"
            )
            mine.append(time.perf_counter() - started)
            item = json.loads(decoded(headers, body))
            assert status == 200 and not item["done"], item
            places.append((item["scene"], item["x"], item["y"]))
            status, _ = api.post(
                f"/api/scenes/{item['scene']}/annotations",
                {"client_id": uuid.uuid4().hex, "kind": "review", "label": item["guess"],
                 "x": item["x"], "y": item["y"], "w": item["w"], "h": item["h"],
                 "source": "queue"},
            )  # fmt: skip
            assert status == 201
        with lock:
            latencies.extend(mine)
            seen.extend(places)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(set(seen)) != len(seen):
        raise RuntimeError("the queue handed the same window to two reviewers")
    return {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95), "n": len(seen)}


def row(name, value, unit, baseline="", baseline_value=None):
    ratio = None
    if baseline_value not in (None, 0) and value is not None:
        ratio = round(value / baseline_value, 3)
    return {"name": name, "value": round(value, 4) if isinstance(value, float) else value,
            "unit": unit, "baseline": baseline,
            "baseline_value": round(baseline_value, 4) if isinstance(baseline_value, float)
            else baseline_value, "ratio": ratio}  # fmt: skip


def drop_project() -> None:
    """Remove the bench's own project (scenes, runs, detections, its annotations) and grids."""
    import shutil

    from labeling.models import Project
    from labeling.storage import get_storage, project_prefix

    project = Project.objects.filter(name=PROJECT_NAME).first()
    if project is None:
        return
    local = get_storage().local_path(project_prefix(project))
    project.delete()
    if local is not None:
        shutil.rmtree(local, ignore_errors=True)


def run(quick: bool = False, rebuild: bool = False) -> list[dict]:
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
    connection.close()  # the server's workers and the clients' threads use their own
    repeats = 3 if quick else 9
    per_client = 10 if quick else 50
    rows: list[dict] = []
    with LiveServer(workers=3, threads=8) as server:
        api = Api(server.port, cookies[0])
        results = {}
        for key, (scene, _) in scenes.items():
            fb = first_boxes(api, scene, repeats)
            wf = window_feed(api, scene, repeats)
            results[key] = (fb, wf)
        for key, (scene, run_) in scenes.items():
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
        demo_scene = scenes["demo"][0]
        single = post_latency(server.port, cookies, demo_scene, 1, per_client, seed=1)
        many = post_latency(server.port, cookies, demo_scene, CLIENTS, per_client, seed=2)
        queue = queue_latency(server.port, cookies, project, CLIENTS, max(3, per_client // 5))
    rows += [
        row(f"POST annotation p50, {CLIENTS} concurrent clients", many["p50"] * 1e3, "ms",
            "1 client", single["p50"] * 1e3),
        row(f"POST annotation p95, {CLIENTS} concurrent clients", many["p95"] * 1e3, "ms",
            "1 client", single["p95"] * 1e3),
        row(f"POST annotation throughput, {CLIENTS} clients", many["per_s"], "req/s",
            "1 client", single["per_s"]),
        row(f"review queue GET p50, {CLIENTS} concurrent reviewers", queue["p50"] * 1e3, "ms"),
        row(f"review queue GET p95, {CLIENTS} concurrent reviewers", queue["p95"] * 1e3, "ms"),
    ]  # fmt: skip
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"\nbench_review: gunicorn 3 workers x 8 threads on localhost, database {engine}, "
          f"{os.cpu_count()} CPUs, {many['n']} + {single['n']} POSTs, "
          f"{queue['n']} queue answers")  # fmt: skip
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
    args = parser.parse_args(argv)
    rows = run(args.quick, args.rebuild)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
