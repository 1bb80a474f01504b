"""Spark scoring benchmark: single process vs Spark local[2], balanced vs original split.

Scene: the demo collage (Mona Lisa from CIFAR-10 test tiles, 2560x3968) when ../shared/data is
there, else random pixels of the same size. Model: a ResNet-20 (random weights: timing does not
depend on them) exported with mlcore.model.export. Prints a table and writes
bench/results/spark.json.

    .venv/bin/python bench/bench_spark.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mlcore.inference.scoring import load_scorer, score_scene  # noqa: E402
from mlcore.ingest.scenes import NpyScene  # noqa: E402
from mlcore.storage import LocalStorage  # noqa: E402
from workers.spark_score import get_spark, score_scene_on_spark, stop_spark  # noqa: E402


def make_scene(quick: bool) -> tuple[np.ndarray, str]:
    if not quick:
        try:
            from mlcore.data.collage import demo_collage

            collage = demo_collage()
            return collage.image, "demo collage (Mona Lisa of CIFAR-10 test tiles)"
        except Exception as exc:  # noqa: BLE001 - fall back to a synthetic scene of the same size
            print(f"demo collage unavailable ({exc}); using random pixels")
    height, width = (640, 640) if quick else (3968, 2560)
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return pixels, "random pixels"


def make_model(path: Path) -> str:
    import torch

    from mlcore.model.export import export_onnx
    from mlcore.model.network import build_model

    torch.manual_seed(0)
    export_onnx(build_model(num_classes=3, depth=20), path, ["negative", "car", "boat"])
    return "ResNet-20 (random init) via mlcore.model.export.export_onnx"


def spread(timings: list[dict]) -> dict:
    seconds = [t["seconds"] for t in timings]
    windows = [t["windows"] for t in timings]
    return {
        # Deterministic part of the imbalance: the most loaded partition vs the average one.
        "windows_max_over_mean": max(windows) / statistics.mean(windows),
        "partitions": len(seconds),
        "max_s": max(seconds),
        "median_s": statistics.median(seconds),
        "max_over_median": max(seconds) / statistics.median(seconds),
        # Share of a one-executor-per-partition cluster kept busy until the slowest strip ends.
        "split_efficiency": statistics.mean(seconds) / max(seconds),
        "windows_per_partition": [t["windows"] for t in timings],
    }


def measure(quick: bool, step: int = 16, batch_size: int = 1024, strips: int = 12) -> dict:
    """Score one scene single-process and on Spark local[2]; the result dict (see main)."""
    args = argparse.Namespace(quick=quick, step=step, batch_size=batch_size, strips=strips)
    work = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    try:
        return _measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(args, work: Path) -> dict:
    storage = LocalStorage(work)
    pixels, scene_kind = make_scene(args.quick)
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    storage.write("scene.npy", buffer.getvalue())
    model_path = work / "resnet20.onnx"
    model_kind = make_model(model_path)
    scene = NpyScene(storage, "scene.npy")

    scorer = load_scorer(model_path)
    score_scene(scorer, NpyScene(storage, "scene.npy"), args.step, args.batch_size,
                rows_per_strip=2)  # fmt: skip  # warm-up (small)
    start = time.perf_counter()
    single = score_scene(scorer, scene, args.step, args.batch_size)
    single_s = time.perf_counter() - start
    windows = single.probs.shape[0] * single.probs.shape[1]

    spark = get_spark("local[2]", conf={"spark.ui.enabled": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    try:
        common = dict(master="local[2]", batch_size=args.batch_size)
        # Warm-up: ships the model, starts the Python workers, loads ONNX Runtime in each.
        score_scene_on_spark(storage.root_url, "scene.npy", str(model_path), args.step,
                             partitions=4, **common)  # fmt: skip
        start = time.perf_counter()
        grid, balanced = score_scene_on_spark(
            storage.root_url, "scene.npy", str(model_path), args.step, **common
        )
        spark_s = time.perf_counter() - start
        split = dict(partitions=args.strips, **common)
        url, model = storage.root_url, str(model_path)
        grid12, balanced12 = score_scene_on_spark(url, "scene.npy", model, args.step, **split)
        _, original = score_scene_on_spark(
            url, "scene.npy", model, args.step, original_split=True, **split
        )
    finally:
        stop_spark(spark)

    exact = bool(
        np.array_equal(grid.probs, single.probs) and np.array_equal(grid12.probs, single.probs)
    )
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "scene": {
            "kind": scene_kind,
            "height": int(pixels.shape[0]),
            "width": int(pixels.shape[1]),
        },
        "model": model_kind,
        "step": args.step,
        "windows": windows,
        "single_process": {"seconds": single_s, "windows_per_s": windows / single_s},
        "spark_local2": {
            "seconds": spark_s,
            "windows_per_s": windows / spark_s,
            "partitions": balanced.n_partitions,
        },
        "efficiency_spark_over_single": single_s / spark_s,
        "equal_to_single_process": exact,
        "balanced_split": spread(balanced12.partition_timings),
        "original_split": spread(original.partition_timings),
        "balanced_split_default": spread(balanced.partition_timings),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small random scene (smoke run)")
    parser.add_argument("--step", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--strips", type=int, default=12, help="strips of the original split")
    args = parser.parse_args()
    result = measure(args.quick, args.step, args.batch_size, args.strips)
    windows, model_kind = result["windows"], result["model"]
    single_s = result["single_process"]["seconds"]
    spark_s = result["spark_local2"]["seconds"]
    parts, exact = result["spark_local2"]["partitions"], result["equal_to_single_process"]
    print(f"\nscene {result['scene']} | {model_kind} | step {args.step} | {windows} windows")
    print(f"{'run':34} {'seconds':>9} {'windows/s':>10}")
    print(f"{'single process (ORT, all cores)':34} {single_s:9.2f} {windows / single_s:10.0f}")
    print(f"{'Spark local[2], ' + str(parts) + ' balanced parts':34} "
          f"{spark_s:9.2f} {windows / spark_s:10.0f}")  # fmt: skip
    print(f"efficiency (Spark / single): {single_s / spark_s:.2f}; identical grids: {exact}")
    print(f"\n{args.strips} partitions{'':14} {'time max/median':>15} {'mean/max':>9} "
          f"{'windows max/mean':>16}  windows per part")  # fmt: skip
    for name in ("balanced_split", "original_split"):
        s = result[name]
        print(f"{name:26} {s['max_over_median']:15.2f} {s['split_efficiency']:9.2f} "
              f"{s['windows_max_over_mean']:16.2f}  "
              f"{min(s['windows_per_partition'])}..{max(s['windows_per_partition'])}")  # fmt: skip
    out = REPO / "bench" / "results" / "spark.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


def run(quick: bool = False) -> list[dict]:
    """Rows for bench/run_all.py (step 32 on the demo collage: the same comparison, 4x faster
    than the default step 16 of ``main``)."""
    from bench.common import row

    result = measure(quick, step=32)
    single, spark = result["single_process"], result["spark_local2"]
    scene = result["scene"]
    what = (
        f"{scene['kind']}, {scene['height']}x{scene['width']}, step {result['step']}, "
        f"{result['windows']:,} windows, {spark['partitions']} partitions; grids identical: "
        f"{result['equal_to_single_process']}"
    )
    bal, orig = result["balanced_split"], result["original_split"]
    return [
        row(
            "Spark local[2] vs single process (scoring)",
            spark["windows_per_s"],
            "windows/s",
            "single process score_scene, ORT on all cores",
            single["windows_per_s"],
            ">= 0.80x",
            spark["windows_per_s"] / single["windows_per_s"] >= 0.80,
            what,
        ),
        row(
            "Spark split efficiency, balanced vs original strips",
            bal["split_efficiency"],
            "mean/max task time",
            "original split (equal strips, remainder on the last)",
            orig["split_efficiency"],
            "",
            None,
            f"{result['balanced_split']['partitions']} partitions each",
        ),
    ]


if __name__ == "__main__":
    main()
