"""Spark scoring driver: score a scene's windows on a Spark cluster. Plumbing only.

The math is :func:`mlcore.inference.scoring.score_strip`; this module cuts the scene's window rows
into balanced contiguous partitions (many more than executors, so no executor waits on one long
remainder strip), ships the ONNX model once (``sc.addFile``) and the repo's ``mlcore`` and
``workers`` packages as a zip (``sc.addPyFile``), and assembles the probability grid from the
compact float32 blocks the tasks write (one per model output: probs, and the boxes and
centredness of a model that has them). The blocks travel through the scene's storage
(``RESULTS_PREFIX``, deleted as they are read), not through ``collect()``: collected, every
partition's results sat in the driver's JVM on their way to Python (a 32k scene's 134 MB
took the JVM from 313 to 877 MiB).

Each task opens the scene itself (``storage_from_url`` on the executor) and reads only its strip
plus the window overlap. Credentials never travel in the task closure: the storage URL carries
none, and the variables the storage needs (``AZURE_STORAGE_KEY``, ``AZURE_STORAGE_SAS_TOKEN``,
``AZURE_STORAGE_ENDPOINT``, ``AZURE_CLIENT_*`` ...) reach executors as ``spark.executorEnv.*``.

Executors need numpy, pillow, onnxruntime (and azure-storage-file-datalake for ADLS scenes);
neither PyTorch nor Django. ``master`` defaults to ``$SPARK_MASTER`` or ``local[*]``; a
``spark://host:port``, ``yarn`` or ``k8s://`` master works the same way.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlcore.progress import Progress

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]
# Environment variables the executors' storage may need; forwarded as spark.executorEnv.*.
FORWARDED_ENV = (
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_ENDPOINT",
    "AZURE_STORAGE_RETRIES",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
)
MASTER_CONNECT_TIMEOUT_S = 10.0
# Where tasks leave their results for the driver, in the scene's storage: one .npz per partition,
# named for the run (its start in ns first), deleted once read, and on failure. A task of a
# cancelled job can still write after that: such files are swept a day later by any run.
RESULTS_PREFIX = "spark-results/"
STALE_RESULTS_S = 24 * 3600


class SparkScoringError(RuntimeError):
    """Scoring on Spark could not run; the message says why and what to check."""


@dataclass
class SparkRunInfo:
    partition_timings: list[dict] = field(default_factory=list)
    spark_ui_url: str | None = None
    n_partitions: int = 0
    wall_s: float = 0.0
    master: str = ""
    scoring: str = "per window"  # or "dense" (the model file says it can be: issue 37)


# --------------------------------------------------------------------------------------------
# Partitioning


def balanced_partitions(n_rows: int, n_partitions: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) row ranges whose sizes differ by at most one row."""
    n_partitions = max(1, min(n_partitions, n_rows))
    bounds = np.linspace(0, n_rows, n_partitions + 1).round().astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def original_partitions(n_rows: int, n_executors: int) -> list[tuple[int, int]]:
    """The published pipeline's split: one strip per executor, remainder on the last one."""
    n_executors = max(1, min(n_executors, n_rows))
    per = n_rows // n_executors
    ranges = [(i * per, (i + 1) * per) for i in range(n_executors)]
    ranges[-1] = (ranges[-1][0], n_rows)
    return ranges


# --------------------------------------------------------------------------------------------
# Session


def _check_master_reachable(master: str) -> None:
    """Fail fast (seconds, not minutes of registration retries) for a dead spark:// master."""
    if not master.startswith("spark://"):
        return
    errors = []
    for hostport in master[len("spark://") :].split(","):
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=MASTER_CONNECT_TIMEOUT_S):
                return
        except (OSError, ValueError) as exc:
            errors.append(f"{hostport}: {exc}")
    raise SparkScoringError(
        f"cannot reach the Spark master {master} ({'; '.join(errors)}). Start the master or set "
        f"SPARK_MASTER to a reachable one (default local[*])."
    )


def _forwarded_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
    env.update(extra or {})
    return env


def _is_on_this_machine(master: str) -> bool:
    if master.startswith("local"):
        return True
    hosts = [hp.rpartition(":")[0] for hp in master.removeprefix("spark://").split(",")]
    return master.startswith("spark://") and all(h in ("127.0.0.1", "localhost") for h in hosts)


def stop_spark(spark) -> None:
    """Stop ``spark`` and forget what was shipped to its context."""
    _SHIPPED.pop(id(spark.sparkContext._jsc), None)
    _SHIPPED_MODELS.difference_update(
        {item for item in _SHIPPED_MODELS if item[0] == id(spark.sparkContext._jsc)}
    )
    spark.stop()


def get_spark(
    master: str | None = None,
    app_name: str = "collage-scoring",
    conf: dict[str, str] | None = None,
    executor_env: dict[str, str] | None = None,
):
    """Start a SparkSession on ``master`` or reuse the running one (it must use that master)."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    master = master or os.environ.get("SPARK_MASTER") or "local[*]"
    _check_master_reachable(master)
    running_context = SparkContext._active_spark_context  # process-wide, not per thread
    if running_context is not None:
        running = running_context.master
        if running != master:
            raise SparkScoringError(
                f"a SparkSession on {running!r} is already running in this process; stop it "
                f"before scoring on {master!r} (one SparkContext per process)"
            )
        spark = SparkSession.builder.getOrCreate()
    else:
        builder = SparkSession.builder.master(master).appName(app_name)
        builder = builder.config("spark.python.worker.reuse", "true")
        # Progress goes to the callback; a console bar would only clutter worker logs.
        builder = builder.config("spark.ui.showConsoleProgress", "false")
        for key, value in (conf or {}).items():
            builder = builder.config(key, value)
        for name, value in _forwarded_env(executor_env).items():
            builder = builder.config(f"spark.executorEnv.{name}", value)
        try:
            spark = builder.getOrCreate()
        except Exception as exc:
            raise SparkScoringError(f"could not start Spark on master {master!r}: {exc}") from exc
        if not os.environ.get("PYSPARK_PYTHON") and _is_on_this_machine(master):
            # Executors on this machine can run this very interpreter (numpy, onnxruntime...);
            # remote executors use the PYSPARK_PYTHON of the environment.
            spark.sparkContext.pythonExec = sys.executable
    _ship_code(spark.sparkContext)
    return spark


_SHIPPED: dict[int, str] = {}  # SparkContext -> code zip already added
_SHIPPED_MODELS: set[tuple[int, str]] = set()


def _ship_code(sc) -> None:
    """Zip mlcore/ and workers/ (sources only) and addPyFile it once per SparkContext."""
    key = id(sc._jsc)
    if key in _SHIPPED:
        return
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in ("mlcore", "workers"):
            for path in sorted((REPO_ROOT / package).rglob("*.py")):
                archive.write(path, path.relative_to(REPO_ROOT).as_posix())
    digest = hashlib.sha1(buffer.getvalue()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"collage-code-{digest}.zip"
    if not target.exists():
        target.write_bytes(buffer.getvalue())
    sc.addPyFile(str(target))
    _SHIPPED[key] = str(target)


# --------------------------------------------------------------------------------------------
# Executor side

_SCORERS: dict[str, object] = {}  # one InferenceSession per executor Python process and model


def _executor_dense_scorer(dense_name: str, threads: int):
    from pyspark import SparkFiles

    from mlcore.inference.dense_scoring import DenseScorer

    path = SparkFiles.get(dense_name)
    if path not in _SCORERS:
        _SCORERS[path] = DenseScorer(path, threads=threads)
    return _SCORERS[path]


def _executor_scorer(model_name: str, threads: int):
    from pyspark import SparkFiles

    path = SparkFiles.get(model_name)
    if path not in _SCORERS and model_name.endswith(".mxnet.zip"):
        # One folder per Python worker process: concurrent workers never read a half-written file.
        folder = Path(f"{path}.{os.getpid()}.d")
        folder.mkdir(exist_ok=True)
        with zipfile.ZipFile(path) as bundle:
            bundle.extractall(folder)
        symbol = next(folder.glob("*-symbol.json"))
        from mlcore.inference.scoring import load_scorer

        _SCORERS[path] = load_scorer(symbol)
    if path not in _SCORERS:
        from mlcore.inference.scoring import load_scorer

        # One task per core: ONNX Runtime gets the task's cores, not the whole machine's, so
        # concurrent tasks on one executor host do not oversubscribe the CPU.
        kwargs = {"threads": threads} if model_name.endswith(".onnx") else {}
        _SCORERS[path] = load_scorer(path, **kwargs)
    return _SCORERS[path]


def _score_partition(task: dict, done_counter):
    """Runs on an executor: read this partition's strip, score it, write its float32 outputs
    ({name: (rows, columns, ...)}, an .npz) to ``task["results_key"]`` in the scene's storage.
    Densely (the trunk over the strip and its halo, which it reads from the scene:
    mlcore.inference.dense_scoring.score_rows_dense) when the driver shipped a dense graph, so
    partitions join without seams; per window otherwise."""
    from mlcore.inference.dense_scoring import score_rows_dense
    from mlcore.inference.scoring import score_strip
    from mlcore.ingest.scenes import NpyScene
    from mlcore.storage import storage_from_url

    start = time.perf_counter()
    ys = np.asarray(task["ys"], dtype=np.int64)
    xs = np.asarray(task["xs"], dtype=np.int64)
    window = task["window"]
    storage = storage_from_url(task["storage_url"])
    scene = NpyScene(storage, task["scene_key"])
    if task.get("dense_name"):
        dense = _executor_dense_scorer(task["dense_name"], task["threads"])
        outputs = score_rows_dense(dense, scene, ys, xs, task["step"])
    else:
        scorer = _executor_scorer(task["model_name"], task["threads"])
        strip = scene.read_rows(int(ys[0]), int(ys[-1]) + window)
        outputs = score_strip(scorer, strip, ys, xs, task["batch_size"], scene_window=window)
    blocks = {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in outputs.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **blocks)
    del blocks, outputs
    storage.write(task["results_key"], buffer.getbuffer())  # no copy of the bytes
    seconds = time.perf_counter() - start
    done_counter.add(len(ys) * len(xs))
    timing = {
        "partition": task["partition"],
        "rows": len(ys),
        "windows": len(ys) * len(xs),
        "seconds": seconds,
        "host": f"{socket.gethostname()}:{os.getpid()}",
    }
    return task["partition"], timing


# --------------------------------------------------------------------------------------------
# Driver


MXNET_SYMBOL_SUFFIX = "-symbol.json"


def _resolve_model(model_path_or_key: str, storage) -> Path:
    """A local model file: the path itself, or a copy of that key in the scene's storage (for an
    MXNet symbol file, with its params and meta files beside it)."""
    from mlcore.storage import StorageKeyError, download_file

    path = Path(model_path_or_key)
    if path.is_file():
        return path.resolve()
    key = str(model_path_or_key)
    try:
        in_storage = storage.exists(key)
    except StorageKeyError:
        in_storage = False
    if in_storage:
        folder = Path(tempfile.mkdtemp(prefix="collage-model-"))
        keys = [key]
        if key.endswith(MXNET_SYMBOL_SUFFIX):
            prefix = key[: -len(MXNET_SYMBOL_SUFFIX)]
            keys = [k for k in storage.list(prefix) if "/" not in k[len(prefix) :]]
        for each in keys:
            download_file(storage, each, folder / Path(each).name)
        download_siblings(storage, key, folder / path.name)
        return folder / path.name
    raise SparkScoringError(
        f"model {model_path_or_key!r} is neither a local file nor a key in {storage.root_url}"
    )


def download_siblings(storage, key: str, local: Path) -> None:
    """The files a downloaded model file names beside it (its dense graph, its int8 copy and
    theirs: mlcore.model.onnx_file.sibling_files), from beside its key, those the storage has:
    without them the model is scored per window, in fp32."""
    from mlcore.model.onnx_file import sibling_files
    from mlcore.storage import download_file

    folder = key.rpartition("/")[0]

    def fetch(name: str, target: Path) -> bool:
        sibling = f"{folder}/{name}" if folder else name
        if not storage.exists(sibling):
            return False
        download_file(storage, sibling, target)
        return True

    sibling_files(local, fetch=fetch)


def _model_payload(model_path: Path) -> tuple[bytes, str]:
    """What is shipped to the executors, as one file: the ONNX model itself, or an MXNet model's
    symbol, params and meta files zipped together (executors then need mxnet, not onnxruntime)."""
    if not model_path.name.endswith(MXNET_SYMBOL_SUFFIX):
        return model_path.read_bytes(), model_path.suffix
    prefix = model_path.name[: -len(MXNET_SYMBOL_SUFFIX)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        for sibling in sorted(model_path.parent.glob(f"{prefix}-*")):
            if sibling.is_file() and sibling.suffix in (".json", ".params"):
                bundle.write(sibling, sibling.name)
    return buffer.getvalue(), ".mxnet.zip"


def score_scene_on_spark(
    scene_storage_url: str,
    scene_key: str,
    model_path_or_key: str,
    step: int,
    master: str | None = None,
    batch_size: int = 1024,
    partitions: int | None = None,
    progress: Progress | None = None,
    app_name: str = "collage-scoring",
    original_split: bool = False,
    spark_conf: dict[str, str] | None = None,
    executor_env: dict[str, str] | None = None,
    object_size: int | None = None,
    precision: str | None = None,
):
    """Score every window of the ``.npy`` scene ``scene_key`` in ``scene_storage_url``.

    ``object_size``: the objects' size on the scene in pixels (None: the model's window). The
    scoring windows are that size, at ``step`` scaled by it (``step`` is at the model's scale:
    ``mlcore.inference.scoring.scene_geometry``), each resized to the model's window; the grid
    is in scene pixels.

    Returns ``(ScoreGrid, SparkRunInfo)``; the grid equals single-process ``score_scene``.
    ``partitions`` defaults to 4x the default parallelism (capped at the number of window
    rows); ``original_split=True`` instead cuts ``partitions`` (default: one per executor core)
    equal strips with the whole remainder on the last one (the published pipeline's split,
    kept for benchmarks). ``executor_env`` adds environment variables for the executors.
    ``precision``: auto (default, or $MLCORE_SCORING_PRECISION), fp32 or int8
    (mlcore.inference.int8_sibling.scoring_file).
    """
    from mlcore.data.windows import grid_positions
    from mlcore.inference.dense_scoring import dense_scorer_for
    from mlcore.inference.int8_sibling import scoring_file
    from mlcore.inference.scoring import ScoreGrid, load_scorer, scene_geometry
    from mlcore.ingest.scenes import NpyScene
    from mlcore.storage import StorageNotFoundError, storage_from_url, validate_key

    wall_start = time.perf_counter()
    if step <= 0:
        raise SparkScoringError(f"step must be a positive number of pixels, got {step}")
    validate_key(scene_key)
    storage = storage_from_url(scene_storage_url)
    if not storage.exists(scene_key):
        raise StorageNotFoundError(
            f"scene {scene_key!r} not found in {storage.root_url}: upload it first (ingress)"
        )
    model_path = _resolve_model(model_path_or_key, storage)
    fp32_path = model_path
    # Its int8 copy on a CPU with int8 units, chosen here once: every partition scores it.
    model_path = scoring_file(model_path, precision)
    scorer = load_scorer(str(model_path))
    classes = list(scorer.classes)
    window, step = scene_geometry(int(scorer.window), object_size, step)
    # A model file that says it can be scored densely is, partition by partition.
    dense = dense_scorer_for(model_path, step, window)
    scene = NpyScene(storage, scene_key)
    ys = grid_positions(scene.height, window, step)
    xs = grid_positions(scene.width, window, step)

    spark = get_spark(master, app_name, spark_conf, executor_env)
    sc = spark.sparkContext
    if original_split:
        ranges = original_partitions(len(ys), partitions or sc.defaultParallelism)
    else:
        ranges = balanced_partitions(len(ys), partitions or 4 * sc.defaultParallelism)
    # addFile refuses a second, different file under one name: name the copy by its content.
    payload, suffix = _model_payload(model_path)
    model_name = f"model-{hashlib.sha1(payload).hexdigest()[:12]}{suffix}"
    _ship_model(sc, model_name, payload)
    dense_name = None
    if dense is not None:
        dense_payload = dense.path.read_bytes()
        dense_name = f"model-{hashlib.sha1(dense_payload).hexdigest()[:12]}.dense.onnx"
        _ship_model(sc, dense_name, dense_payload)
    if model_path.parent.name.startswith("collage-model-"):  # our download of a storage key
        shutil.rmtree(model_path.parent, ignore_errors=True)

    # A progress callback that raises (the job was cancelled or declared dead: workers.runner)
    # stops the Spark job at once, and its exception is what this call raises.
    group, stopped = f"{app_name}-{os.getpid()}-{time.monotonic_ns()}", []
    results_prefix = validate_key(f"{RESULTS_PREFIX}{time.time_ns()}-{os.getpid()}-")
    tasks = [
        {
            "partition": index,
            "results_key": f"{results_prefix}{index:05d}.npz",
            "storage_url": storage.root_url,  # no credentials: those come via executorEnv
            "scene_key": scene_key,
            "model_name": model_name,
            "ys": ys[lo:hi].tolist(),
            "xs": xs.tolist(),
            "window": window,
            "step": step,
            "dense_name": dense_name,
            "batch_size": batch_size,
            "threads": int(sc.getConf().get("spark.task.cpus", "1")),
        }
        for index, (lo, hi) in enumerate(ranges)
    ]
    total = len(ys) * len(xs)
    done_counter = sc.accumulator(0)
    finished = threading.Event()

    def report_progress():
        while not finished.wait(0.5):
            if progress:
                try:
                    progress(int(done_counter.value), total, "scoring on Spark")
                except BaseException as exc:
                    stopped.append(exc)
                    sc.cancelJobGroup(group)
                    return

    reporter = threading.Thread(target=report_progress, daemon=True)
    reporter.start()
    # sc.environment is what spark.executorEnv.* feeds: setting it for this job gives executors
    # the current credentials even on a reused session, without putting them in the closure.
    saved_env = dict(sc.environment)
    sc.environment.update(_forwarded_env(executor_env))
    rdd = sc.parallelize(tasks, len(tasks)).map(lambda task: _score_partition(task, done_counter))
    sc.setJobGroup(group, app_name, interruptOnCancel=True)
    outputs: dict[str, np.ndarray] = {}
    timings = []
    try:
        try:
            results = rdd.collect()
        except Exception as exc:
            if stopped:
                raise stopped[0] from None
            raise SparkScoringError(
                _explain_task_failure(exc, scene_storage_url, scene_key)
            ) from exc
        finally:
            sc.environment.clear()
            sc.environment.update(saved_env)
            finished.set()
            reporter.join()
        if stopped:  # stopped just as the last task ended
            raise stopped[0]
        for index, timing in results:  # one partition's results in memory at a time
            lo, hi = ranges[index]
            key = tasks[index]["results_key"]
            with np.load(io.BytesIO(storage.read(key))) as blocks:
                for name in blocks.files:
                    block = blocks[name]
                    if name not in outputs:
                        shape = (len(ys), len(xs), *block.shape[2:])
                        outputs[name] = np.empty(shape, dtype=np.float32)
                    outputs[name][lo:hi] = block
            storage.delete(key)
            timings.append(timing)
    finally:  # a failed or stopped run's partitions, and late files of runs a day old
        delete_results(storage, results_prefix, stale_after_s=STALE_RESULTS_S)
    if progress:
        progress(total, total, "scored on Spark")
    probs = outputs.pop("probs")
    grid = ScoreGrid(ys, xs, probs, classes, window, step, **outputs)
    info = SparkRunInfo(
        partition_timings=sorted(timings, key=lambda t: t["partition"]),
        spark_ui_url=sc.uiWebUrl,
        n_partitions=len(ranges),
        wall_s=time.perf_counter() - wall_start,
        master=sc.master,
        scoring=("dense" if dense is not None else "per window")
        + (", int8" if model_path != fp32_path else ""),
    )
    return grid, info


def delete_results(storage, run_prefix: str, stale_after_s: float | None = None) -> None:
    """Delete the partitions' result files of the run ``run_prefix`` and, with
    ``stale_after_s``, those of any run that started that long ago: one listing of
    RESULTS_PREFIX. A storage error here is logged, not raised: it must not hide the error of
    the run it cleans up after."""
    from mlcore.storage import StorageError

    now = time.time_ns()
    try:
        for key in storage.list(RESULTS_PREFIX):
            started = key[len(RESULTS_PREFIX) :].split("-", 1)[0]
            stale = (stale_after_s is not None and started.isdigit()
                     and now - int(started) > stale_after_s * 1e9)  # fmt: skip
            if key.startswith(run_prefix) or stale:
                storage.delete(key)
    except StorageError as exc:
        log.warning("could not delete Spark results of %s: %s", run_prefix, exc)


def _ship_model(sc, name: str, payload: bytes) -> None:
    """addFile ``payload`` as ``name`` once per SparkContext (addFile refuses a second,
    different file under one name: names carry a digest of the content)."""
    if (id(sc._jsc), name) in _SHIPPED_MODELS:
        return
    shipped = Path(tempfile.gettempdir()) / name
    if not shipped.exists():
        shipped.write_bytes(payload)
    sc.addFile(str(shipped))
    _SHIPPED_MODELS.add((id(sc._jsc), name))


def _explain_task_failure(exc: Exception, url: str, key: str) -> str:
    text = str(exc)
    for marker in ("StorageAuthError", "StorageNotFoundError", "StorageUnreachableError"):
        if marker in text:
            line = next(ln for ln in text.splitlines() if marker in ln)
            return f"a Spark task could not read scene {key!r} from {url}: {line.strip()}"
    if "ModuleNotFoundError" in text:
        line = next(ln for ln in text.splitlines() if "ModuleNotFoundError" in ln)
        return (
            f"a Spark executor lacks a Python package ({line.strip()}): executors need numpy, "
            f"pillow, onnxruntime (and azure-storage-file-datalake for ADLS scenes)"
        )
    last = [ln for ln in text.splitlines() if ln.strip()][-1:] or [type(exc).__name__]
    return f"Spark scoring of {key!r} failed: {last[0].strip()}"


# --------------------------------------------------------------------------------------------
# Egress


def scores_table(grid):
    """The probability grid as an Arrow table: y, x, p_<class>..., label (one row per window),
    then where the grid has them box_x0, box_y0, box_x1, box_y1 (pixels from the window's
    origin) and centredness."""
    import pyarrow as pa

    ys, xs = np.meshgrid(np.asarray(grid.ys), np.asarray(grid.xs), indexing="ij")
    probs = np.asarray(grid.probs, dtype=np.float32).reshape(-1, len(grid.classes))
    columns = {
        "y": pa.array(ys.ravel().astype(np.int32)),
        "x": pa.array(xs.ravel().astype(np.int32)),
    }
    for index, name in enumerate(grid.classes):
        safe = "".join(ch if ch.isalnum() else "_" for ch in str(name))
        columns[f"p_{safe}"] = pa.array(probs[:, index])
    labels = pa.DictionaryArray.from_arrays(
        pa.array(probs.argmax(axis=1).astype(np.int32)), pa.array([str(c) for c in grid.classes])
    )
    columns["label"] = labels.cast(pa.string())
    for name, values in grid.refinement_columns().items():
        columns[name] = pa.array(np.asarray(values, dtype=np.float32))
    return pa.table(columns)


def write_scores_parquet(grid, storage, key: str) -> int:
    """Egress: write the grid as Parquet under ``key`` (atomically); returns bytes written."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(scores_table(grid), buffer, compression="zstd")
    buffer.seek(0)
    return storage.write(key, buffer)
