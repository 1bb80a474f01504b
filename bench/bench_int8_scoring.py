"""Reduced precision scoring (issue 37.3): the demo's first model in fp32 and as int8 copies
(ONNX Runtime static QDQ quantization, activation ranges from windows of the canvas set's
calibration scene only), side by side in one run: per-window scoring windows/s (same batch, same
threads, alternating rounds so a neighbour's load hits all alike) and object F1 / COCO AP@0.5 on
the Mona Lisa and rocket collages at step 16, each model with thresholds calibrated on the
calibration scene with its own scores (never on the collages). The int8 copies: all nodes, and
the box head's nodes left in fp32. Says which int8 / bf16 units the CPU has.

    nice -n 5 .venv/bin/python bench/bench_int8_scoring.py --demo var/exp/demo --rounds 2 \\
        --json docs/int8_scoring.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO  # noqa: E402

COLLAGES = ("mona_lisa", "rocket")
STEP = 16  # the demo's scoring step
BATCH = 1024  # as bench_dense_transfer and the calibration
SPEED_ROWS = 1024  # pixel rows of the Mona Lisa collage scored for windows/s


def cpu_units() -> list[str]:
    """The int8 / bf16 flags of /proc/cpuinfo that ONNX Runtime's kernels can use."""
    wanted = ("avx2", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split())
    except (OSError, IndexError):
        return []
    return [f for f in wanted if f in flags]


def calibration_windows(image, window: int, n: int, seed: int):
    """``n`` windows of the calibration scene's step-16 grid, drawn without replacement."""
    import numpy as np

    from mlcore.data.windows import full_window_view, grid_positions

    ys = grid_positions(image.shape[0], window, STEP)
    xs = grid_positions(image.shape[1], window, STEP)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ys) * len(xs), size=min(n, len(ys) * len(xs)), replace=False)
    view = full_window_view(image, window)
    return np.stack([view[ys[i // len(xs)], xs[i % len(xs)]] for i in np.sort(picks)])


def figures(path: Path, threads: int, cset, collages) -> tuple[dict, dict]:
    """(row of figures, {collage: grid}); the calibrated thresholds are written onto ``path``."""
    from mlcore.eval.evaluation import evaluate_grid
    from mlcore.inference.calibration import calibrate_thresholds
    from mlcore.inference.scoring import load_scorer, score_scene
    from mlcore.ingest.scenes import ArrayScene
    from mlcore.model.onnx_file import write_metadata

    scorer = load_scorer(path, threads=threads)
    image, truth = cset.calibration
    grid = score_scene(scorer, ArrayScene(image), STEP, batch_size=BATCH)
    calibration = calibrate_thresholds(grid, truth)
    thresholds = calibration["thresholds"]
    dev = evaluate_grid(grid, truth, thresholds, "negative")
    row = {"thresholds": thresholds,
           "calibration_object_f1": round(dev["object"]["overall"]["f1"], 4),
           "calibration_ap50": round(dev["coco"]["ap50"], 4)}  # fmt: skip
    grids = {}
    for name, (picture, truth) in collages.items():
        grids[name] = score_scene(scorer, ArrayScene(picture), STEP, batch_size=BATCH)
        metrics = evaluate_grid(grids[name], truth, thresholds, "negative")
        row[f"{name}_f1"] = round(metrics["object"]["overall"]["f1"], 4)
        row[f"{name}_ap50"] = round(metrics["coco"]["ap50"], 4)
    if path.name != "model.onnx":  # the demo's own file keeps its metadata untouched
        write_metadata(path, {"thresholds": thresholds})
    return row, grids


def agreement(reference, grid) -> dict:
    """How far a grid's outputs are from the fp32 grid's, window by window."""
    import numpy as np

    same_top = reference.probs.argmax(-1) == grid.probs.argmax(-1)
    out = {
        "top_class_agreement": round(float(same_top.mean()), 4),
        "max_abs_prob_diff": round(float(np.abs(reference.probs - grid.probs).max()), 4),
    }
    if reference.boxes is not None and grid.boxes is not None:
        diff = np.abs(reference.boxes - grid.boxes)
        out |= {"mean_abs_box_diff_px": round(float(diff.mean()), 3),
                "max_abs_box_diff_px": round(float(diff.max()), 3)}  # fmt: skip
    if reference.centredness is not None and grid.centredness is not None:
        diff = np.abs(reference.centredness - grid.centredness)
        out["max_abs_centredness_diff"] = round(float(diff.max()), 4)
    return out


def windows_per_s(path: Path, threads: int, picture) -> tuple[float, int]:
    from mlcore.inference.scoring import load_scorer, score_scene
    from mlcore.ingest.scenes import ArrayScene

    scorer = load_scorer(path, threads=threads)
    reader = ArrayScene(picture[:SPEED_ROWS])
    score_scene(scorer, ArrayScene(picture[:64]), STEP, batch_size=BATCH)  # warm-up
    started = time.perf_counter()
    grid = score_scene(scorer, reader, STEP, batch_size=BATCH)
    n = grid.probs.shape[0] * grid.probs.shape[1]
    return n / (time.perf_counter() - started), n


def main(argv=None) -> int:
    import numpy as np
    from PIL import Image

    from mlcore.data.canvases import CanvasSet
    from mlcore.data.collage import load_ground_truth
    from mlcore.inference.quantization import quantize_model_file
    from mlcore.inference.scoring import load_scorer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", default="var/exp/demo")
    parser.add_argument("--rounds", type=int, default=2, help="speed rounds (alternating)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-windows", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0, help="which calibration windows")
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="the windows/s rounds only (a second look at noisy speed rows)",
    )
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    demo = REPO / args.demo
    cset = CanvasSet.load(demo / "canvases")
    fp32 = demo / "model" / "model.onnx"
    window = load_scorer(fp32).window
    out = demo / "int8"

    started = time.perf_counter()
    windows = calibration_windows(cset.calibration[0], window, args.calibration_windows, args.seed)
    models = {
        "fp32": fp32,
        "int8": quantize_model_file(fp32, out / "model.int8.onnx", windows),
        "int8, fp32 box head": quantize_model_file(
            fp32, out / "model.int8-fp32-head.onnx", windows, exclude_heads=True
        ),
    }
    quantize_seconds = round(time.perf_counter() - started, 1)
    print(f"quantized in {quantize_seconds} s", flush=True)

    collages = {
        name: (np.asarray(Image.open(demo / f"collage-{name}.png").convert("RGB")),
               load_ground_truth(demo / f"collage-{name}.json"))
        for name in COLLAGES
    }  # fmt: skip
    speed: dict[str, list] = {name: [] for name in models}
    load = {"before": os.getloadavg()}
    for round_ in range(args.rounds):
        for name, path in models.items():
            rate, n = windows_per_s(path, args.threads, collages["mona_lisa"][0])
            speed[name].append(round(rate, 1))
            print(f"round {round_} {name}: {rate:.0f} windows/s ({n} windows)", flush=True)
    load["after_speed"] = os.getloadavg()

    rows, grids = {}, {}
    for name, path in models.items():
        if args.speed_only:
            rows[name] = {"windows_per_s": speed[name]}
            continue
        rows[name], grids[name] = figures(path, args.threads, cset, collages)
        rows[name]["windows_per_s"] = speed[name]
        rows[name]["file_bytes"] = path.stat().st_size
        if name != "fp32":
            rows[name]["vs_fp32"] = {c: agreement(grids["fp32"][c], grids[name][c])
                                     for c in COLLAGES}  # fmt: skip
        print(f"{name}: {rows[name]}", flush=True)
    load["after"] = os.getloadavg()

    keys = () if args.speed_only else ("mona_lisa_f1", "mona_lisa_ap50", "rocket_f1", "rocket_ap50")
    print("\n" + " | ".join(["model", "windows/s (rounds)", *keys]))
    for name, row in rows.items():
        rates = ", ".join(f"{r:.0f}" for r in row["windows_per_s"])
        print(" | ".join([name, rates] + [f"{row[k]:.3f}" for k in keys]))
    result = {
        "command": "nice -n 5 .venv/bin/python bench/bench_int8_scoring.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu_units": cpu_units(), "cores_online": os.cpu_count(), "threads": args.threads,
        "onnxruntime": __import__("onnxruntime").__version__,
        "quantization": "static QDQ, uint8 activations, int8 per-channel weights, "
        f"{len(windows)} step-{STEP} windows of the calibration scene (seed {args.seed})",
        "step": STEP, "batch": BATCH,
        "speed_windows": f"Mona Lisa collage, first {SPEED_ROWS} pixel rows, step {STEP}",
        "quantize_seconds": quantize_seconds, "load_average": load, "rows": rows,
    }  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
