"""Objects of any size (issue 34.3): the same starting model on the Mona Lisa collage drawn with
32 px tiles (scored as today) and drawn twice as large (scored with an object size of 64: windows
of 64 scene pixels resized to 32), object F1 side by side. No training: the model is the shipped
starting model with its heads mapped to car / boat / negative (mlcore.model.starting_model.
as_project_model), so the figures isolate the scale handling, not a fine-tune.

The 2x scenes: the 1x collage enlarged by pixel repetition (np.kron: the resized windows are
the 1x windows exactly), the 1x collage enlarged by bicubic interpolation (same placements,
blurred), and a collage built from tiles enlarged by bicubic interpolation (its own placements).

    .venv/bin/python bench/bench_object_size.py --cols 40 --json var/object_size.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def doubled_truth(truth: list[dict]) -> list[dict]:
    return [dict(b, x=2 * b["x"], y=2 * b["y"], w=2 * b["w"], h=2 * b["h"]) for b in truth]


def main(argv=None) -> dict:
    from PIL import Image

    from mlcore.cli import _tiles
    from mlcore.data.collage import make_collage
    from mlcore.data.datasets import LabelledImages
    from mlcore.eval.evaluation import evaluate_grid
    from mlcore.inference.scoring import OnnxScorer, scene_geometry, score_scene
    from mlcore.ingest.scenes import ArrayScene
    from mlcore.model.export import export_onnx
    from mlcore.model.starting_model import as_project_model, verified_file
    from mlcore.train.pretrain import DEMO_CLASSES, DEMO_HEADS
    from mlcore.train.training import read_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cols", type=int, default=40, help="collage width in tiles")
    parser.add_argument("--target", default=str(DATA / "mona_lisa.jpg"))
    parser.add_argument("--tiles", default=str(DATA / "cifar10-jpg.zip"))
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--work", default=str(REPO / "var" / "bench-object-size"))
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tiles = _tiles(args.tiles, None, "negative")
    one = make_collage(args.target, tiles, cols=args.cols, seed=0)
    big_tiles = np.stack(
        [np.asarray(Image.fromarray(t).resize((64, 64), Image.BICUBIC)) for t in tiles.images]
    )
    two = make_collage(args.target, LabelledImages(big_tiles, tiles.labels, tiles.class_names,
                                                   tiles.ids), cols=args.cols, seed=0)  # fmt: skip
    model = as_project_model(read_checkpoint(verified_file()), DEMO_CLASSES, DEMO_HEADS)
    scorer = OnnxScorer(export_onnx(model, work / "starting-car-boat.onnx", DEMO_CLASSES, 32))
    size2 = (2 * one.width, 2 * one.height)
    scenes = [
        ("1x collage, object size 32", one.image, one.ground_truth, None),
        ("1x collage x2 (pixel repetition), object size 64",
         np.kron(one.image, np.ones((2, 2, 1), np.uint8)), doubled_truth(one.ground_truth), 64),
        ("1x collage x2 (bicubic), object size 64",
         np.asarray(Image.fromarray(one.image).resize(size2, Image.BICUBIC)),
         doubled_truth(one.ground_truth), 64),
        ("collage of 64 px (bicubic) tiles, object size 64", two.image, two.ground_truth, 64),
    ]  # fmt: skip
    rows = []
    for name, image, truth, size in scenes:
        window, step = scene_geometry(32, size, 16)
        started = time.perf_counter()
        grid = score_scene(scorer, ArrayScene(image), step, scene_window=window)
        seconds = time.perf_counter() - started
        row = {"scene": name, "size": f"{image.shape[1]} x {image.shape[0]}",
               "objects": sum(1 for b in truth if b["label"] in ("car", "boat")),
               "windows": int(grid.probs.shape[0] * grid.probs.shape[1]),
               "seconds": round(seconds, 1)}  # fmt: skip
        for thr in args.thresholds:
            m = evaluate_grid(grid, truth, thresholds=thr, negative="negative", coco=False)
            row[f"object F1 @{thr}"] = round(m["object"]["overall"]["f1"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return {"rows": rows}


if __name__ == "__main__":
    main()
