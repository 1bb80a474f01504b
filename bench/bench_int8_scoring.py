"""Reduced precision scoring (issue 37.3): a first model's fp32 file against the int8 copy the
product gives it (mlcore.inference.int8_sibling: quantized on the calibration scene, kept if it
holds up there), each scored as the product scores it (densely where the file says so), side by
side in one run: windows/s over the whole Mona Lisa collage (alternating rounds, so a
neighbour's load hits both alike), and object F1 / COCO AP@0.5 / AP@[.5:.95] on the Mona Lisa and
rocket collages at step 16 at the file's own thresholds (a version has one set: the int8 copy
scores with the fp32 file's), plus how far the int8 grid is from the fp32 grid. Says which int8
units the CPU has.

    .venv/bin/python bench/bench_int8_scoring.py --demo var/exp/demo --rounds 3 \\
        --json docs/int8_scoring.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, cpu_model  # noqa: E402

COLLAGES = ("mona_lisa", "rocket")
STEP = 16  # the demo's scoring step
THREADS = 2


def score(path: Path, picture):
    from mlcore.inference.model_file_scoring import score_with_model_file
    from mlcore.ingest.scenes import ArrayScene

    grid, dense = score_with_model_file(path, ArrayScene(picture), STEP, threads=THREADS,
                                        batch_size=1024)  # fmt: skip
    return grid, dense


def figures(grid, truth, thresholds) -> dict:
    from mlcore.eval.evaluation import evaluate_grid

    metrics = evaluate_grid(grid, truth, thresholds, "negative")
    return {"f1": round(metrics["object"]["overall"]["f1"], 4),
            "ap50": round(metrics["coco"]["ap50"], 4),
            "ap": round(metrics["coco"]["ap"], 4)}  # fmt: skip


def agreement(reference, grid) -> dict:
    """How far a grid's outputs are from the fp32 grid's, window by window."""
    import numpy as np

    same_top = reference.probs.argmax(-1) == grid.probs.argmax(-1)
    out = {
        "top_class_agreement": round(float(same_top.mean()), 4),
        "mean_abs_prob_diff": round(float(np.abs(reference.probs - grid.probs).mean()), 5),
        "max_abs_prob_diff": round(float(np.abs(reference.probs - grid.probs).max()), 4),
    }
    if reference.boxes is not None and grid.boxes is not None:
        diff = np.abs(reference.boxes - grid.boxes)
        out |= {"mean_abs_box_diff_px": round(float(diff.mean()), 3),
                "max_abs_box_diff_px": round(float(diff.max()), 3)}  # fmt: skip
    return out


def main(argv=None) -> int:
    import numpy as np
    from PIL import Image

    from mlcore.data.canvases import CanvasSet
    from mlcore.data.collage import load_ground_truth
    from mlcore.inference.int8_sibling import int8_sibling_path, int8_units, write_int8_sibling
    from mlcore.model.onnx_file import read_metadata, sibling_files

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", default="var/exp/demo", help="a `mlcore demo` folder")
    parser.add_argument("--rounds", type=int, default=3, help="speed rounds (alternating)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    demo = REPO / args.demo
    cset = CanvasSet.load(demo / "canvases")
    # A copy of the demo's files: the int8 copy is made afresh, the demo left as it is.
    work = demo / "int8-bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    source = demo / "model" / "model.onnx"
    for path in [source, *sibling_files(source)]:
        shutil.copy2(path, work / path.name)
    fp32 = work / "model.onnx"
    started = time.perf_counter()
    check = write_int8_sibling(fp32, cset, STEP)
    print(f"int8 copy in {time.perf_counter() - started:.1f} s: {check}", flush=True)
    int8 = int8_sibling_path(fp32)
    if int8 is None:
        print("the int8 copy did not hold up on the calibration scene: nothing to compare")
    files = {"fp32": fp32} | ({"int8": int8} if int8 else {})
    thresholds = read_metadata(fp32)["thresholds"]
    collages = {
        name: (np.asarray(Image.open(demo / f"collage-{name}.png").convert("RGB")),
               load_ground_truth(demo / f"collage-{name}.json"))
        for name in COLLAGES
    }  # fmt: skip

    score(fp32, collages["mona_lisa"][0][:256])  # warm-up: first-call costs hit neither row
    rates: dict[str, list] = {name: [] for name in files}
    load = {"before": os.getloadavg()}
    picture = collages["mona_lisa"][0]
    for round_ in range(args.rounds):
        for name, path in files.items():
            begun = time.perf_counter()
            grid, dense = score(path, picture)
            rate = grid.probs.shape[0] * grid.probs.shape[1] / (time.perf_counter() - begun)
            rates[name].append(round(rate, 1))
            how = f"dense ({dense.name})" if dense else "per window"
            print(f"round {round_} {name}: {rate:,.0f} windows/s, {how}", flush=True)
    load["after_speed"] = os.getloadavg()

    rows, grids = {}, {}
    for name, path in files.items():
        row = {"file": path.name, "file_bytes": path.stat().st_size, "windows_per_s": rates[name]}
        grids[name] = {}
        for collage, (image, truth) in collages.items():
            grids[name][collage], dense = score(path, image)
            row[collage] = figures(grids[name][collage], truth, thresholds)
        row["scoring"] = f"dense ({dense.name})" if dense else "per window"
        if name != "fp32":
            row["vs_fp32"] = {c: agreement(grids["fp32"][c], grids[name][c]) for c in COLLAGES}
        rows[name] = row
    if "int8" in rows:
        mean = {n: sum(r["windows_per_s"]) / len(r["windows_per_s"]) for n, r in rows.items()}
        ratios = [round(i / f, 2) for i, f in zip(rates["int8"], rates["fp32"])]
        rows["int8"]["speed_vs_fp32"] = {"mean": round(mean["int8"] / mean["fp32"], 2),
                                         "by_round": ratios}  # fmt: skip
    load["after"] = os.getloadavg()

    print("\nfile | windows/s (rounds) | Mona Lisa F1 / AP@0.5 / AP | rocket F1 / AP@0.5 / AP")
    for name, row in rows.items():
        cells = [", ".join(f"{r:,.0f}" for r in row["windows_per_s"])]
        for collage in COLLAGES:
            f = row[collage]
            cells.append(f"{f['f1']:.3f} / {f['ap50']:.3f} / {f['ap']:.3f}")
        print(" | ".join([name, *cells]))
    if "int8" in rows:
        print(f"int8 / fp32 windows/s: {rows['int8']['speed_vs_fp32']}")
    result = {
        "command": ".venv/bin/python bench/bench_int8_scoring.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": cpu_model(), "int8_units": int8_units(), "cores_online": os.cpu_count(),
        "threads": THREADS, "onnxruntime": __import__("onnxruntime").__version__,
        "model": str(source.relative_to(REPO)) if source.is_relative_to(REPO) else str(source),
        "thresholds": thresholds, "int8_check": check, "step": STEP,
        "speed_windows": "the whole Mona Lisa collage, step 16, as the product scores the file",
        "load_average": load, "rows": rows,
    }  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
