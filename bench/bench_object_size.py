"""Objects of any size (issue 34.3): the same model on the Mona Lisa collage drawn with 32 px
tiles (scored as today) and drawn twice as large (scored with an object size of 64: windows of 64
scene pixels resized to 32), object F1 side by side. By default no training: the model is the
shipped starting model with its heads mapped to car / boat / negative (mlcore.model.starting_model.
as_project_model), so the figures isolate the scale handling, not a fine-tune. ``--model`` scores
with a trained model file instead (the demo's first model, var/exp/demo/model/model.onnx written
by ``python -m mlcore demo --out var/exp/demo``) and adds its calibrated thresholds (chosen on its
calibration scene, stored in the file) to the thresholds the figures are given at: the issue's
target is the 2x scenes within 0.03 object F1 of the 1x one there. ``--seeds``: collage layouts
(which tile goes where), for the spread.

The 2x scenes: the 1x collage enlarged by pixel repetition (np.kron: the resized windows are
the 1x windows exactly), the 1x collage enlarged by bicubic interpolation (same placements,
blurred), and a collage built from tiles enlarged by bicubic interpolation (its own placements).

    .venv/bin/python bench/bench_object_size.py --cols 40 --json var/object_size.json
    .venv/bin/python bench/bench_object_size.py --cols 40 --seeds 0 1 2 \
        --model var/exp/demo/model/model.onnx --json docs/object_size_demo.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def doubled_truth(truth: list[dict]) -> list[dict]:
    return [dict(b, x=2 * b["x"], y=2 * b["y"], w=2 * b["w"], h=2 * b["h"]) for b in truth]


def scenes_of(target, tiles, big_tiles, cols: int, seed: int) -> list[tuple]:
    """(name, image, truth, object size) of the 1x collage of layout ``seed`` and its 2x kin."""
    from PIL import Image

    from mlcore.data.collage import make_collage

    one = make_collage(target, tiles, cols=cols, seed=seed)
    two = make_collage(target, big_tiles, cols=cols, seed=seed)
    size2 = (2 * one.width, 2 * one.height)
    return [
        ("1x collage, object size 32", one.image, one.ground_truth, None),
        ("1x collage x2 (pixel repetition), object size 64",
         np.kron(one.image, np.ones((2, 2, 1), np.uint8)), doubled_truth(one.ground_truth), 64),
        ("1x collage x2 (bicubic), object size 64",
         np.asarray(Image.fromarray(one.image).resize(size2, Image.BICUBIC)),
         doubled_truth(one.ground_truth), 64),
        ("collage of 64 px (bicubic) tiles, object size 64", two.image, two.ground_truth, 64),
    ]  # fmt: skip


def spread(rows: list[dict], key: str) -> dict:
    values = [r[key] for r in rows]
    return {"mean": round(statistics.fmean(values), 4), "min": min(values), "max": max(values),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}  # fmt: skip


def main(argv=None) -> dict:
    from PIL import Image

    from mlcore.cli import _tiles
    from mlcore.data.datasets import LabelledImages
    from mlcore.eval.evaluation import evaluate_grid
    from mlcore.inference.scoring import OnnxScorer, scene_geometry, score_scene
    from mlcore.ingest.scenes import ArrayScene
    from mlcore.model.export import export_onnx
    from mlcore.model.onnx_file import read_metadata
    from mlcore.model.starting_model import as_project_model, verified_file
    from mlcore.train.pretrain import DEMO_CLASSES, DEMO_HEADS
    from mlcore.train.training import read_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cols", type=int, default=40, help="collage width in tiles")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="collage layouts")
    parser.add_argument("--target", default=str(DATA / "mona_lisa.jpg"))
    parser.add_argument("--tiles", default=str(DATA / "cifar10-jpg.zip"))
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--model", help="a car / boat / negative model file with calibrated "
                        "thresholds (default: the starting model, heads mapped)")  # fmt: skip
    parser.add_argument("--work", default=str(REPO / "var" / "bench-object-size"))
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tiles = _tiles(args.tiles, None, "negative")
    big_tiles = np.stack(
        [np.asarray(Image.fromarray(t).resize((64, 64), Image.BICUBIC)) for t in tiles.images]
    )
    big_tiles = LabelledImages(big_tiles, tiles.labels, tiles.class_names, tiles.ids)
    thresholds: list = list(args.thresholds)
    if args.model:
        model_path = Path(args.model)
        calibrated = read_metadata(model_path)["thresholds"]
        if not calibrated:
            parser.error(f"{model_path} has no calibrated thresholds: calibrate it first")
        thresholds.append(calibrated)
    else:
        model = as_project_model(read_checkpoint(verified_file()), DEMO_CLASSES, DEMO_HEADS)
        model_path = export_onnx(model, work / "starting-car-boat.onnx", DEMO_CLASSES, 32)
    scorer = OnnxScorer(model_path)
    rows = []
    for seed in args.seeds:
        for name, image, truth, size in scenes_of(args.target, tiles, big_tiles, args.cols, seed):
            window, step = scene_geometry(32, size, 16)
            started = time.perf_counter()
            grid = score_scene(scorer, ArrayScene(image), step, scene_window=window)
            seconds = time.perf_counter() - started
            row = {"scene": name, "seed": seed, "size": f"{image.shape[1]} x {image.shape[0]}",
                   "objects": sum(1 for b in truth if b["label"] in ("car", "boat")),
                   "windows": int(grid.probs.shape[0] * grid.probs.shape[1]),
                   "seconds": round(seconds, 1)}  # fmt: skip
            for thr in thresholds:
                m = evaluate_grid(grid, truth, thresholds=thr, negative="negative", coco=False)
                key = "calibrated" if isinstance(thr, dict) else thr
                row[f"object F1 @{key}"] = round(m["object"]["overall"]["f1"], 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if k.startswith("object F1 @")]
    summary = []
    for name in dict.fromkeys(r["scene"] for r in rows):
        of_scene = [r for r in rows if r["scene"] == name]
        first = [r for r in rows if r["scene"] == rows[0]["scene"]]  # the 1x scene, same seeds
        item = {"scene": name, "seeds": [r["seed"] for r in of_scene]}
        for key in keys:
            item[key] = spread(of_scene, key)
            diffs = [{"d": round(r[key] - f[key], 4)} for r, f in zip(of_scene, first)]
            item[f"{key} minus 1x"] = spread(diffs, "d")
        summary.append(item)
        print(json.dumps(item), flush=True)
    out = {"model": str(args.model or "starting model, heads mapped to car / boat / negative"),
           "thresholds": [t for t in thresholds], "cols": args.cols, "rows": rows,
           "summary": summary}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
