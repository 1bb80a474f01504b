"""Spark scoring (Spark local mode, real executors' Python workers) against single-process
scoring; Parquet egress; scenes read by executors through ADLS (the local DFS stand-in)."""

from __future__ import annotations

import socket
import time
import uuid

import numpy as np
import pandas as pd
import pytest
from adls_standin import DEFAULT_KEY, AdlsStandIn
from spark_helpers import LOCAL_MASTER, local_spark_session, put_scene, tiny_onnx_model

from mlcore.inference.scoring import load_scorer, score_scene
from mlcore.ingest.scenes import NpyScene
from mlcore.storage import StorageAuthError, StorageNotFoundError, storage_from_url
from workers.spark_score import (
    RESULTS_PREFIX,
    STALE_RESULTS_S,
    SparkScoringError,
    balanced_partitions,
    delete_results,
    get_spark,
    original_partitions,
    score_scene_on_spark,
    stop_spark,
    write_scores_parquet,
)

MASTER = LOCAL_MASTER
HEIGHT, WIDTH, STEP = 216, 328, 16  # 12 window rows (last one clamped) x 20 columns


@pytest.fixture(scope="module")
def spark():
    session = local_spark_session()
    yield session
    stop_spark(session)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return tiny_onnx_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture
def scene_store(tmp_path):
    store = storage_from_url(str(tmp_path / "store"))
    put_scene(store, "scenes/s.npy", HEIGHT, WIDTH)
    return store


def test_spark_scores_equal_single_process(spark, scene_store, model_path):
    scorer = load_scorer(model_path)
    expected = score_scene(scorer, NpyScene(scene_store, "scenes/s.npy"), STEP, batch_size=64)
    reports = []
    grid, info = score_scene_on_spark(
        scene_store.root_url,
        "scenes/s.npy",
        str(model_path),
        STEP,
        master=MASTER,
        batch_size=50,
        partitions=5,
        progress=lambda done, total, message="": reports.append((done, total)),
    )
    np.testing.assert_array_equal(grid.ys, expected.ys)
    np.testing.assert_array_equal(grid.xs, expected.xs)
    assert grid.ys[-1] == HEIGHT - 32 and grid.xs[-1] == WIDTH - 32
    np.testing.assert_array_equal(grid.probs, expected.probs)
    assert grid.classes == expected.classes and (grid.window, grid.step) == (32, STEP)
    assert info.n_partitions == 5 and len(info.partition_timings) == 5
    assert (
        sum(t["windows"] for t in info.partition_timings)
        == grid.probs.shape[0] * grid.probs.shape[1]
    )
    assert reports[-1] == (grid.ys.size * grid.xs.size,) * 2
    assert all(done <= total for done, total in reports)
    # The partitions' results came through the storage (not collect()) and are gone from it.
    assert scene_store.list(RESULTS_PREFIX) == []


def test_a_runs_result_files_and_those_a_day_old_are_deleted(tmp_path):
    store = storage_from_url(str(tmp_path))
    now, day_ago = time.time_ns(), time.time_ns() - int(STALE_RESULTS_S * 1e9) - 10**9
    run, other = f"{RESULTS_PREFIX}{now}-1-", f"{RESULTS_PREFIX}{now}-2-"
    old = f"{RESULTS_PREFIX}{day_ago}-3-00003.npz"
    for key in (f"{run}00000.npz", f"{run}00001.npz", f"{other}00000.npz", old, "scenes/kept.npy"):
        store.write(key, b"x")
    delete_results(store, run, stale_after_s=STALE_RESULTS_S)
    # Another running job's file and the user's key stay.
    assert store.list() == sorted([f"{other}00000.npz", "scenes/kept.npy"])
    delete_results(store, other)
    assert store.list() == ["scenes/kept.npy"]


def test_spark_carries_a_box_heads_outputs_bit_for_bit(spark, scene_store, tmp_path):
    from helpers_boxes import export_box_model

    model = export_box_model(tmp_path / "refined.onnx", classes=["negative", "car", "boat"])
    scorer = load_scorer(model)
    expected = score_scene(scorer, NpyScene(scene_store, "scenes/s.npy"), STEP, batch_size=64)
    grid, info = score_scene_on_spark(
        scene_store.root_url, "scenes/s.npy", str(model), STEP, master=MASTER, batch_size=50,
        partitions=5,
    )  # fmt: skip
    assert info.n_partitions == 5 and expected.boxes is not None
    for name in ("probs", "boxes", "centredness"):
        np.testing.assert_array_equal(getattr(grid, name), getattr(expected, name))
    write_scores_parquet(grid, scene_store, "scores/refined.parquet")
    frame = pd.read_parquet(scene_store.local_path("scores/refined.parquet"))
    boxes = ["box_x0", "box_y0", "box_x1", "box_y1"]
    assert list(frame.columns) == ["y", "x", "p_negative", "p_car", "p_boat", "label", *boxes,
                                   "centredness"]  # fmt: skip
    np.testing.assert_array_equal(frame["centredness"].to_numpy(), grid.centredness.ravel())


def test_partitions_are_balanced_and_contiguous(spark, scene_store, model_path):
    for rows, parts in [(12, 5), (250, 8), (7, 20), (1, 4)]:
        ranges = balanced_partitions(rows, parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == rows
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        sizes = [hi - lo for lo, hi in ranges]
        assert max(sizes) - min(sizes) <= 1 and len(ranges) == min(rows, parts)
    # The published split puts the whole remainder on the last strip.
    assert [hi - lo for lo, hi in original_partitions(250, 12)] == [20] * 11 + [30]
    _, info = score_scene_on_spark(
        scene_store.root_url, "scenes/s.npy", str(model_path), STEP, master=MASTER
    )
    windows = [t["windows"] for t in info.partition_timings]
    assert info.n_partitions == min(12, 4 * spark.sparkContext.defaultParallelism)
    assert max(windows) - min(windows) <= 20  # at most one window row (20 columns)


def test_parquet_egress_readable_by_pandas_and_spark(spark, scene_store, model_path):
    grid, _ = score_scene_on_spark(
        scene_store.root_url, "scenes/s.npy", str(model_path), STEP, master=MASTER, partitions=3
    )
    written = write_scores_parquet(grid, scene_store, "scores/s.parquet")
    assert written == scene_store.size("scores/s.parquet")
    path = scene_store.local_path("scores/s.parquet")
    frame = pd.read_parquet(path)
    assert list(frame.columns) == ["y", "x", "p_negative", "p_car", "p_boat", "label"]
    assert len(frame) == grid.ys.size * grid.xs.size
    row = frame.iloc[len(grid.xs) + 3]  # window (ys[1], xs[3])
    assert (row.y, row.x) == (grid.ys[1], grid.xs[3])
    np.testing.assert_array_equal(
        row[["p_negative", "p_car", "p_boat"]].to_numpy(np.float32), grid.probs[1, 3]
    )
    assert row.label == grid.classes[int(grid.probs[1, 3].argmax())]
    from_spark = spark.read.parquet(str(path))
    assert from_spark.count() == len(frame)
    assert from_spark.columns == list(frame.columns)
    first = from_spark.orderBy("y", "x").first()
    assert (first.y, first.x) == (0, 0) and first.p_car == pytest.approx(float(grid.probs[0, 0, 1]))


def test_executors_read_scene_through_adls(spark, model_path, monkeypatch):
    with AdlsStandIn() as adls:
        monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", adls.endpoint)
        monkeypatch.setenv("AZURE_STORAGE_KEY", DEFAULT_KEY)
        url = f"abfss://scenes{uuid.uuid4().hex[:6]}@devstoreaccount1.dfs.core.windows.net/demo"
        store = storage_from_url(url, create=True)
        put_scene(store, "s.npy", HEIGHT, WIDTH, seed=7)
        expected = score_scene(load_scorer(model_path), NpyScene(store, "s.npy"), STEP)
        before = len(adls.requests)
        grid, info = score_scene_on_spark(
            url, "s.npy", str(model_path), STEP, master=MASTER, partitions=4
        )
        np.testing.assert_array_equal(grid.probs, expected.probs)
        assert store.list(RESULTS_PREFIX) == []  # written by the executors, read and deleted
        ranged_reads = [p for m, p in adls.requests[before:] if m == "GET" and "s.npy" in p]
        assert len(ranged_reads) >= info.n_partitions  # each task fetched its own strip

        # Executors that get a wrong key (through executorEnv, as real secrets travel) fail
        # with a message naming the storage error, not a hang or a bare Py4J trace.
        wrong = "d3Jvbmcga2V5IGZvciB0aGUgYWNjb3VudA=="
        with pytest.raises(SparkScoringError, match="StorageAuthError"):
            score_scene_on_spark(
                url,
                "s.npy",
                str(model_path),
                STEP,
                master=MASTER,
                partitions=2,
                executor_env={"AZURE_STORAGE_KEY": wrong},
            )
        assert store.list(RESULTS_PREFIX) == []
        monkeypatch.setenv("AZURE_STORAGE_KEY", wrong)
        with pytest.raises(StorageAuthError, match="AZURE_STORAGE_KEY"):
            score_scene_on_spark(url, "s.npy", str(model_path), STEP, master=MASTER)


def test_missing_scene_and_model_errors(spark, scene_store, model_path):
    with pytest.raises(StorageNotFoundError, match="scenes/nope.npy"):
        score_scene_on_spark(
            scene_store.root_url, "scenes/nope.npy", str(model_path), STEP, master=MASTER
        )
    with pytest.raises(SparkScoringError, match="models/none.onnx"):
        score_scene_on_spark(
            scene_store.root_url, "scenes/s.npy", "models/none.onnx", STEP, master=MASTER
        )


def test_unreachable_master_fails_fast_naming_it(spark):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(SparkScoringError, match=f"spark://127.0.0.1:{port}"):
        get_spark(f"spark://127.0.0.1:{port}")
    assert time.monotonic() - start < 60


def test_a_progress_callback_that_raises_stops_the_spark_job(spark, tmp_path, model_path):
    """workers.runner's progress raises JobAbandoned once the job was cancelled or declared
    dead: the Spark job is cancelled and that very exception is what the call raises (it used
    to die with the reporting thread while the scoring ran on and returned a grid)."""
    store = storage_from_url(str(tmp_path / "store"))
    put_scene(store, "scenes/long.npy", 16 * 100 + 16, WIDTH)  # 100 window rows: 100 tasks

    class Stopped(Exception):
        pass

    calls = []

    def progress(done, total, message=""):
        calls.append((done, total))
        if done < total:
            raise Stopped("job 7 is failed (cancelled): it stops here")

    with pytest.raises(Stopped):
        score_scene_on_spark(store.root_url, "scenes/long.npy", str(model_path), STEP,
                             master=MASTER, partitions=100, progress=progress)  # fmt: skip
    assert len(calls) == 1 and calls[0][0] < calls[0][1], calls
    # The same session scores the next job to its end.
    grid, info = score_scene_on_spark(store.root_url, "scenes/long.npy", str(model_path), STEP,
                                      master=MASTER, partitions=100)  # fmt: skip
    assert grid.probs.shape[:2] == (100, 20) and info.n_partitions == 100
