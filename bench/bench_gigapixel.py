"""A gigapixel scene from file to reviewed detections on this machine
(docs/speed.md#gigapixel-scenes).

Steps, each in its own Python process so that its peak RSS is its own (os.wait4; for the steps
that start other processes, Spark's JVM and Python workers or the web server, the largest process
of the tree, the tree's sum of RSS and of PSS (shared pages once), sampled every 0.2 s):

1. ``make``: a 32,768 x 32,768 scene (3.2 GB of pixels) written tile by tile as a tiled,
   JPEG-compressed BigTIFF: grey noise with ~130,000 red and green 32-pixel squares (objects);
   also the same picture as a baseline JPEG (libvips, streamed). ``--scene cifar``: instead a
   wall of CIFAR-10 *test* images (a seeded random draw per 32 px cell, so about a tenth of the
   cells are cars and a tenth ships), what a real model has objects to find in.
2. ``check``: what the upload request does (labeling.ingest.uploads.check_scene_image): header and
   structure, no decoding.
3. ``ingest-tiff`` / ``ingest-jpeg``: the import job's conversion,
   mlcore.ingest.scenes.image_to_npy, streaming into the scoring ``.npy``.
4. ``pyramid-vips`` / ``pyramid-ours``: the deep-zoom pyramid by mlcore.ingest.deepzoom (libvips
   dzsave) and by the numpy + Pillow writer it replaced (bench/baseline_deepzoom.py), same scene.
5. ``score``: Spark ``local[2]`` (workers.spark_score.score_scene_on_spark, partitions reading
   only their strips) with a colour window classifier (ONNX, onnx.helper; it finds the squares),
   or with ``--model`` a real model file (the demo's first model:
   ``var/exp/demo/model/model.onnx``), scored the way the file says (densely when it names a
   dense graph beside it). ``--master standalone``: on a Spark standalone cluster of two 1-core
   workers started here (bench/spark_cluster.py); the result says how evenly the partitions'
   work spread (``skew``).
6. ``detections``: labeling.scoring.results.store_scoring_result: NMS-merged boxes and raw windows
   into PostgreSQL, the grid into storage.
7. ``queue``: the review queue's ranking of every window (labeling.review.queue.ranked_run) and
   the first window handed out (next_queue_window), cold.
8. ``viewer``: gunicorn + headless Chromium: log in, open the scene; time to first boxes, the
   feed's size, and a frame's draw time at the home view and zoomed in.

    nice -n 19 env DATABASE_URL=postgres://... REDIS_URL=redis://.../11 \\
        .venv/bin/python bench/bench_gigapixel.py --work /work/gigapixel-bench [--side 32768]

Writes bench/results/gigapixel.json and prints the table; ``--clean`` deletes the work folder
at the end (the scene and its copies are ~10 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import mlcore  # noqa: E402, F401  (sets the OpenMP wait policy first)

TILE = 256
OBJECT = 32
PROJECT = "bench_gigapixel"
STEP = 16
CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/check_system.sh --browser)
STEPS = ["make", "check", "ingest-tiff", "ingest-jpeg", "pyramid-vips", "pyramid-ours",
         "score", "detections", "queue", "viewer"]  # fmt: skip


# -- the steps (run in a child process: --step NAME) ------------------------------------------


def scene_tile(ty: int, tx: int):
    """Tile (ty, tx): grey noise and, in each 64-pixel cell, a red or green square half the
    time. Deterministic per tile."""
    import numpy as np

    rng = np.random.default_rng(ty * 100_003 + tx)
    tile = rng.integers(110, 146, (TILE, TILE, 3), dtype=np.uint8)
    for cy in range(0, TILE, 64):
        for cx in range(0, TILE, 64):
            if rng.random() < 0.5:
                y, x = cy + int(rng.integers(0, 32)), cx + int(rng.integers(0, 32))
                colour = (220, 40, 40) if rng.random() < 0.5 else (40, 200, 40)
                tile[y : y + OBJECT, x : x + OBJECT] = colour
    return tile


def cifar_tiles():
    """A function (ty, tx) -> tile of CIFAR-10 test images, 8 x 8 a tile, seeded per tile (the
    images are the shared data's, read once)."""
    import numpy as np

    from mlcore.data.datasets import load_dataset

    data = load_dataset(REPO.parent / "shared" / "data" / "cifar10-jpg.zip", split="test")
    images, per = data.images, TILE // OBJECT

    def tile(ty: int, tx: int):
        rng = np.random.default_rng(ty * 100_003 + tx)
        picks = images[rng.integers(0, len(images), per * per)]
        return (
            picks.reshape(per, per, OBJECT, OBJECT, 3)
            .transpose(0, 2, 1, 3, 4)
            .reshape(TILE, TILE, 3)
        )

    return tile


def step_make(work: Path, side: int, scene: str = "squares") -> dict:
    import pyvips
    import tifffile

    n = side // TILE
    make_tile = cifar_tiles() if scene == "cifar" else scene_tile
    tifffile.imwrite(
        work / "scene.tif", (make_tile(ty, tx) for ty in range(n) for tx in range(n)),
        shape=(side, side, 3), dtype="uint8", tile=(TILE, TILE), photometric="rgb",
        compression="jpeg", compressionargs={"level": 90}, bigtiff=True, maxworkers=2,
    )  # fmt: skip
    image = pyvips.Image.new_from_file(str(work / "scene.tif"), access="sequential")
    image.jpegsave(str(work / "scene.jpg"), Q=90)
    return {"tiff_bytes": (work / "scene.tif").stat().st_size,
            "jpeg_bytes": (work / "scene.jpg").stat().st_size}  # fmt: skip


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collage_app.settings")
    import django

    django.setup()


def step_check(work: Path, side: int) -> dict:
    setup_django()
    from labeling.ingest.uploads import check_scene_image

    out = {}
    for name in ("scene.tif", "scene.jpg"):
        start = time.perf_counter()
        out[name] = [*check_scene_image(work / name, name), time.perf_counter() - start]
    return out


def step_ingest(work: Path, name: str) -> dict:
    from mlcore.ingest.scenes import image_to_npy

    dst = work / "storage" / PROJECT / "pixels.npy"
    dst.parent.mkdir(parents=True, exist_ok=True)
    width, height = image_to_npy(work / name, dst)
    return {"width": width, "height": height, "npy_bytes": dst.stat().st_size}


def step_pyramid(work: Path, which: str) -> dict:
    from mlcore.ingest.scenes import NpyScene

    if which == "vips":
        from mlcore.ingest.deepzoom import generate_dzi
    else:
        sys.path.insert(0, str(REPO / "bench"))
        from baseline_deepzoom import generate_dzi
    out = work / f"dzi-{which}"
    shutil.rmtree(out, ignore_errors=True)
    info = generate_dzi(NpyScene(work / "storage" / PROJECT / "pixels.npy"), out, tmp_dir=work)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"tiles": info.n_tiles, "levels": info.levels, "bytes": size}


def colour_model(path: Path, classes=("car", "boat", "negative"), window=32) -> Path:
    """uint8 NHWC images -> probs: softmax of the window's mean colour (red -> car, green ->
    boat, grey -> negative), in the project's ONNX format."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((3, 3), np.float32)
    w[0, 0], w[2, 0], w[1, 1], w[2, 1] = 0.05, -0.05, 0.05, -0.05
    b = np.array([0.0, 0.0, 2.0], np.float32)
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("GlobalAveragePool", ["nchw"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "colour", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                         ["N", window, window, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    meta = {"classes": json.dumps(list(classes)), "window": str(window), "mean": "[0, 0, 0]",
            "std": "[1, 1, 1]", "engine": "onnx.helper colour bench model"}  # fmt: skip
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path.write_bytes(model.SerializeToString())
    return path


def bench_model(work: Path) -> Path:
    """The model file the run scores with: the copy of ``--model`` (and its dense sibling) in
    the work folder, else the colour classifier."""
    chosen = work / "model" / "model.onnx"
    return chosen if chosen.is_file() else colour_model(work / "colour.onnx")


def copy_model(source: Path, work: Path) -> None:
    """``source`` and every file it names beside it (its dense graph, its int8 copy)."""
    from mlcore.model.onnx_file import sibling_files

    folder = work / "model"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(source, folder / "model.onnx")
    for sibling in sibling_files(source):
        shutil.copy(sibling, folder / sibling.name)


def step_score(work: Path, side: int, master: str = "local[2]") -> dict:
    """Spark ``local[2]``, or ``standalone``: a master and two 1-core workers started here
    (bench/spark_cluster.py), the seed's many-node setup in kind on one machine."""
    from mlcore.storage import LocalStorage
    from workers.spark_score import get_spark, score_scene_on_spark, stop_spark

    model = bench_model(work)
    url = LocalStorage(work / "storage").root_url
    cluster = None
    conf = {"spark.ui.enabled": "false"}
    if master == "standalone":
        from bench.spark_cluster import StandaloneCluster

        cluster = StandaloneCluster(work / "spark-cluster", n_workers=2, worker_memory="2g")
        master = cluster.start().master_url
        conf |= cluster.session_conf(executor_memory="1g")
    try:
        spark = get_spark(master, conf=conf)
        spark.sparkContext.setLogLevel("ERROR")
        try:
            start = time.perf_counter()
            grid, info = score_scene_on_spark(url, f"{PROJECT}/pixels.npy", str(model), STEP,
                                              master=master, batch_size=1024)  # fmt: skip
            seconds = time.perf_counter() - start
        finally:
            stop_spark(spark)
    finally:
        if cluster is not None:
            cluster.stop()
    grid.save(work / "grid.npz")
    windows = int(grid.probs.shape[0] * grid.probs.shape[1])
    return {"windows": windows, "seconds": seconds, "windows_per_s": windows / seconds,
            "master": "standalone, 2 workers x 1 core" if cluster else master,
            "partitions": info.n_partitions, "skew": partition_skew(info.partition_timings),
            "model": model.name, "dense": info.scoring.startswith("dense"),
            "scoring": info.scoring}  # fmt: skip


def partition_skew(timings: list[dict]) -> dict:
    """How evenly the partitions' work spread: their seconds (median, slowest, slowest /
    median) and each executor's share of the windows."""
    import numpy as np

    seconds = np.array([t["seconds"] for t in timings], dtype=float)
    hosts: dict[str, int] = {}
    for t in timings:
        hosts[t["host"]] = hosts.get(t["host"], 0) + t["windows"]
    total = sum(hosts.values()) or 1
    median = float(np.median(seconds)) if len(seconds) else 0.0
    return {
        "median_s": round(median, 2), "max_s": round(float(seconds.max(initial=0.0)), 2),
        "max_over_median": round(float(seconds.max(initial=0.0)) / median, 2) if median else None,
        "windows_share_by_executor": sorted(round(n / total, 3) for n in hosts.values()),
    }  # fmt: skip


def step_detections(work: Path, side: int) -> dict:
    setup_django()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from labeling.models import Detection, ModelVersion, Project, Scene, ScoringRun
    from labeling.projects.storage_keys import get_storage
    from labeling.scoring.results import store_scoring_result
    from labeling.scoring.thresholds import model_file_thresholds
    from mlcore.inference.scoring import ScoreGrid

    call_command("migrate", verbosity=0, interactive=False)
    Project.objects.filter(name=PROJECT).delete()
    user = get_user_model().objects.filter(username="bench").first()
    if user is None:
        user = get_user_model().objects.create_user("bench", password="pw-bench")
    project = Project.objects.create(name=PROJECT)  # car, boat and negative by default
    project.members.add(user)
    storage = get_storage()
    version = ModelVersion.objects.create(project=project, number=1, status="ready",
                                          is_current=True, classes=project.class_names)  # fmt: skip
    model = bench_model(work)
    version.model_key = f"{PROJECT}/{model.name}"
    storage.write(version.model_key, model.read_bytes())
    version.thresholds = model_file_thresholds(model)  # a real model's calibrated ones
    version.save(update_fields=["model_key", "thresholds"])
    pixels = f"{PROJECT}/pixels.npy"
    scene = Scene.objects.create(project=project, name="gigapixel", image_key=pixels,
                                 pixels_key=pixels, width=side, height=side,
                                 dzi_key=f"{PROJECT}/dzi/scene.dzi")  # fmt: skip
    dzi = work / "storage" / PROJECT / "dzi"
    if not dzi.exists():
        (work / "dzi-vips").rename(dzi)
    run = ScoringRun.objects.create(scene=scene, model_version=version, status="running")
    grid = ScoreGrid.load(work / "grid.npz")
    start = time.perf_counter()
    store_scoring_result(run, grid, {"bench": "gigapixel"})
    seconds = time.perf_counter() - start
    counts = {k: Detection.objects.filter(run=run, kind=k).count() for k in ("merged", "window")}
    (work / "ids.json").write_text(json.dumps({"project": project.pk, "scene": scene.pk,
                                               "run": run.pk}))  # fmt: skip
    from django.db import connection

    # SQLite (no DATABASE_URL) has no COPY: its figure is not the product's (postgresql).
    return {"seconds": seconds, **counts, "database": connection.vendor}


def step_queue(work: Path, side: int) -> dict:
    setup_django()
    from django.contrib.auth import get_user_model

    from labeling.models import Project, ScoringRun
    from labeling.review.queue import DEFAULT_STRATEGY, next_queue_window, ranked_run

    ids = json.loads((work / "ids.json").read_text())
    project, run = Project.objects.get(pk=ids["project"]), ScoringRun.objects.get(pk=ids["run"])
    start = time.perf_counter()
    ranked_run(run, DEFAULT_STRATEGY)
    rank_s = time.perf_counter() - start
    user = get_user_model().objects.get(username="bench")
    start = time.perf_counter()
    item = next_queue_window(project, user)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    next_queue_window(project, user)
    second_s = time.perf_counter() - start
    from labeling.review import cache

    held = sum(size for _value, size in cache._cache.items.values())
    return {"rank_s": rank_s, "first_window_s": first_s, "next_window_s": second_s,
            "strategy": DEFAULT_STRATEGY, "got": bool(item), "cached_bytes": held,
            "cache_budget_bytes": cache.CACHE_BYTES, "windows": run.n_windows}  # fmt: skip


def step_viewer(work: Path, side: int) -> dict:
    """gunicorn in a child, Chromium driven from here."""
    import socket

    from playwright.sync_api import sync_playwright

    ids = json.loads((work / "ids.json").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "collage_app.wsgi:application", "--bind",
         f"127.0.0.1:{port}", "--workers", "1", "--threads", "4", "--worker-class", "gthread",
         "--timeout", "600", "--log-level", "warning"], cwd=REPO,
    )  # fmt: skip
    (work / "server.pid").write_text(str(server.pid))
    try:
        time.sleep(4)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.set_default_timeout(600_000)
            base = f"http://127.0.0.1:{port}"
            page.goto(f"{base}/login/")
            page.fill("#id_username", "bench")
            page.fill("#id_password", "pw-bench")
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/login" not in url)
            feed = {}
            page.on("response", lambda r: feed.setdefault("bytes", int(
                r.headers.get("content-length", 0))) if "/detections?kind=merged" in r.url
                else None)  # fmt: skip
            start = time.perf_counter()
            page.goto(f"{base}/scenes/{ids['scene']}/")
            page.wait_for_function("Number(document.body.dataset.firstBoxesMs) > 0")
            first_s = time.perf_counter() - start
            home = page.evaluate("sceneViewer.lastDraw()")
            loaded = page.evaluate("sceneViewer.loaded('merged')")
            raw_at_home = page.evaluate("sceneViewer.loaded('window')")
            start = time.perf_counter()
            page.evaluate("sceneViewer.zoomTo(16000, 16000, 1400, 900)")
            page.wait_for_function("sceneViewer.loaded('window') > 0")
            raw_s = time.perf_counter() - start
            zoomed = page.evaluate("sceneViewer.lastDraw()")
            page.evaluate("sceneViewer.setKind('window')")
            page.wait_for_timeout(500)
            zoomed_raw = page.evaluate("sceneViewer.lastDraw()")
            windows = page.evaluate("sceneViewer.loaded('window')")
            heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"first_boxes_s": first_s, "merged_loaded": loaded, "home_draw": home,
            "raw_windows_at_home": raw_at_home, "zoomed_draw": zoomed,
            "raw_windows_in_view_s": raw_s, "raw_windows_loaded": windows,
            "zoomed_raw_draw": zoomed_raw, "js_heap_bytes": heap,
            "feed_gzip_bytes": feed.get("bytes")}  # fmt: skip


def run_step(name: str, work: Path, side: int, scene: str = "squares",
             master: str = "local[2]") -> dict:  # fmt: skip
    if name == "make":
        return step_make(work, side, scene)
    if name == "check":
        return step_check(work, side)
    if name.startswith("ingest-"):
        return step_ingest(work, "scene.tif" if name == "ingest-tiff" else "scene.jpg")
    if name.startswith("pyramid-"):
        return step_pyramid(work, name.split("-", 1)[1])
    if name == "score":
        return step_score(work, side, master)
    return {"detections": step_detections, "queue": step_queue,
            "viewer": step_viewer}[name](work, side)  # fmt: skip


# -- the parent: one child per step, its wall time and peak memory --------------------------------


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _memory(pid: int, path: str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss(pid: int) -> int:
    return _memory(pid, "status", "VmRSS:")


def _pss(pid: int) -> int:
    """Proportional set size: each page shared by n processes counts 1/n in each, so a tree's sum
    counts the pages Spark's forked Python workers share with their daemon once (a sum of RSS
    counts them in every process)."""
    return _memory(pid, "smaps_rollup", "Pss:")


def _role(pid: int, root: int) -> str:
    """What a process of the step's tree is, for the tree's memory by role: the step's own
    process, Spark's JVM, a Spark Python worker (or their daemon), or something else it started."""
    if pid == root:
        return "step process"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "other"
    if argv and argv[0].endswith(b"java"):
        return "JVM"
    if any(b"pyspark.daemon" in a or b"pyspark.worker" in a for a in argv):
        return "Spark Python workers"
    return "other"


def measure(name: str, work: Path, side: int, scene: str = "squares",
            master: str = "local[2]") -> dict:  # fmt: skip
    cmd = [sys.executable, __file__, "--step", name, "--work", str(work), "--side", str(side),
           "--scene", scene, "--master", master]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    peak = {"largest": 0, "tree": 0, "tree_pss": 0, "by_role": {}}
    done = threading.Event()

    def sample():
        while not done.is_set():
            tree = _tree(proc.pid)
            sizes = [_rss(p) for p in tree]
            peak["largest"] = max(peak["largest"], max(sizes, default=0))
            peak["tree"] = max(peak["tree"], sum(sizes))
            pss = {p: _pss(p) for p in tree}
            if sum(pss.values()) > peak["tree_pss"]:
                peak["tree_pss"] = sum(pss.values())
                by_role: dict[str, int] = {}
                for p, size in pss.items():
                    role = _role(p, proc.pid)
                    by_role[role] = by_role.get(role, 0) + size
                peak["by_role"] = by_role
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"step {name} failed ({proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "step": name,
        "wall_s": wall,
        "peak_rss": usage.ru_maxrss * 1024,
        "largest_process_rss": peak["largest"],
        "tree_rss": peak["tree"],
        "tree_pss": peak["tree_pss"],
        "tree_pss_by_role_at_peak": peak["by_role"],
        "result": result,
    }


def _roles_line(by_role: dict[str, int]) -> str:
    return ", ".join(f"{role} {size / 2**20:.0f}" for role, size in sorted(by_role.items()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "var" / "gigapixel-bench")
    parser.add_argument("--side", type=int, default=32768)
    parser.add_argument("--step", choices=STEPS)
    parser.add_argument("--only", nargs="*", choices=STEPS, help="run these steps only")
    parser.add_argument("--clean", action="store_true", help="delete the work folder at the end")
    parser.add_argument("--scene", choices=("squares", "cifar"), default="squares",
                        help="what the scene shows (module docstring, step 1)")  # fmt: skip
    parser.add_argument("--model", type=Path,
                        help="a model file to score with (default: colour classifier)")  # fmt: skip
    parser.add_argument("--master", choices=("local[2]", "standalone"), default="local[2]",
                        help="the score step's Spark: local, or a standalone cluster of two "
                             "1-core workers started here")  # fmt: skip
    parser.add_argument("--results", default="gigapixel",
                        help="bench/results/NAME.json to write (and merge into)")  # fmt: skip
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("STORAGE_URL", str(args.work / "storage"))
    if args.step:
        print(json.dumps(run_step(args.step, args.work, args.side, args.scene, args.master)))
        return
    if "viewer" in (args.only or STEPS) and not Path(CHROMIUM).is_file():
        parser.error(f"the viewer step needs Chromium at {CHROMIUM}: run "
                     "scripts/check_system.sh --browser, or leave it out with --only")  # fmt: skip
    if args.model is not None:
        if not args.model.is_file():
            parser.error(f"--model {args.model} is not a file")
        copy_model(args.model, args.work)
    rows = []
    load = os.getloadavg()
    for name in args.only or STEPS:
        row = measure(name, args.work, args.side, args.scene, args.master)
        row["load_before"] = load[0]
        load = os.getloadavg()
        row["load_after"] = load[0]
        rows.append(row)
        print(f"{name:14s} {row['wall_s']:8.1f} s  peak RSS {row['peak_rss'] / 2**20:7.0f} MiB"
              f"  (largest process {row['largest_process_rss'] / 2**20:.0f} MiB, tree "
              f"{row['tree_rss'] / 2**20:.0f} MiB, PSS {row['tree_pss'] / 2**20:.0f} MiB: "
              f"{_roles_line(row['tree_pss_by_role_at_peak'])})"
              f"  load {row['load_before']:.1f}-"
              f"{row['load_after']:.1f}  {json.dumps(row['result'])}", flush=True)  # fmt: skip
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    previous = {}
    path = results / f"{args.results}.json"
    if path.exists():
        previous = {r["step"]: r for r in json.loads(path.read_text())}
    previous.update({r["step"]: r for r in rows})
    path.write_text(json.dumps(list(previous.values()), indent=1))
    if args.clean:
        shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
