"""Dense scoring of the demo's first model (issue 37.1): object F1, AP@0.5 and AP@[.5:.95] on the
Mona Lisa and rocket collages at step 16, per window vs dense, of the model as the demo trained it
and after a short fine-tune that trains for dense scoring (TrainConfig.dense_crop: crops through
the trunk once, each window pooled from the crop's feature map as dense scoring pools it).

Each row's thresholds are calibrated on the canvas set's calibration scene, scored the way the row
scores (never on the collages). Needs a finished `python -m mlcore demo --out DEMO`.

    nice -n 5 .venv/bin/python bench/bench_dense_transfer.py --demo var/exp/demo --crop 96 \\
        --steps 400 --seed 0 --json docs/dense_transfer.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO  # noqa: E402

COLLAGES = ("mona_lisa", "rocket")
STEP = 16  # the demo's scoring step


def export_both(model, classes, window: int, folder: Path) -> Path:
    """model.onnx flagged for dense scoring, with model.dense.onnx beside it."""
    from mlcore.inference.dense_scoring import export_dense_onnx
    from mlcore.model.export import export_onnx

    path = export_onnx(model, folder / "model.onnx", classes, window)
    export_dense_onnx(model, folder / "model.dense.onnx", classes, window=window,
                      per_window_path=path)  # fmt: skip
    return path


def score(path: Path, image, mode: str):
    from mlcore.inference.dense_scoring import dense_scorer_for, score_scene_dense
    from mlcore.inference.scoring import OnnxScorer, score_scene
    from mlcore.ingest.scenes import ArrayScene

    reader = ArrayScene(image)
    if mode == "dense":
        return score_scene_dense(dense_scorer_for(path, STEP), reader, STEP)
    return score_scene(OnnxScorer(path), reader, STEP, batch_size=1024)


def figures(path: Path, mode: str, cset, collages) -> dict:
    from mlcore.eval.evaluation import evaluate_grid
    from mlcore.inference.calibration import calibrate_thresholds

    image, truth = cset.calibration
    started = time.perf_counter()
    grid = score(path, image, mode)
    calibration = calibrate_thresholds(grid, truth)
    dev = evaluate_grid(grid, truth, calibration["thresholds"], "negative")
    row = {"thresholds": calibration["thresholds"], "calibration_f1": calibration["f1"],
           "calibration_object_f1": round(dev["object"]["overall"]["f1"], 4),
           "calibration_ap50": round(dev["coco"]["ap50"], 4),
           "calibration_ap": round(dev["coco"]["ap"], 4)}  # fmt: skip
    for name, (picture, truth) in collages.items():
        grid = score(path, picture, mode)
        metrics = evaluate_grid(grid, truth, calibration["thresholds"], "negative")
        row[f"{name}_f1"] = round(metrics["object"]["overall"]["f1"], 4)
        row[f"{name}_ap50"] = round(metrics["coco"]["ap50"], 4)
        row[f"{name}_ap"] = round(metrics["coco"]["ap"], 4)  # AP@[.5:.95]: how tight the boxes are
    row["seconds"] = round(time.perf_counter() - started, 1)
    print(f"  {mode}: {row}", flush=True)
    return row


def main(argv=None) -> int:
    import numpy as np
    from PIL import Image

    from mlcore.data.canvases import CanvasSet
    from mlcore.data.collage import load_ground_truth
    from mlcore.train.profiles import profile_config
    from mlcore.train.training import TrainConfig, load_checkpoint, read_checkpoint, train

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", default="var/exp/demo")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another training option of the fine-tune")  # fmt: skip
    parser.add_argument(
        "--dev",
        action="store_true",
        help="the calibration scene's figures only (to choose a variant on)",
    )
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    demo = REPO / args.demo
    extra = dict(item.split("=", 1) for item in args.set)
    extra = {k: json.loads(v) for k, v in extra.items()}
    tag = "".join(f"-{k}{v}" for k, v in sorted(extra.items()))
    out = demo / f"dense-crop{args.crop}-steps{args.steps}{tag}-seed{args.seed}"
    cset = CanvasSet.load(demo / "canvases")
    checkpoint = demo / "model" / "checkpoint.pt"
    payload = read_checkpoint(checkpoint)
    classes, window = payload["classes"], int(payload["config"]["window"])

    # The quick profile's fine-tune (what a retrain uses), with dense crops; a finished one is
    # reused (its timing kept in train.json). Not averaged with the parent: the parent was
    # trained per window, and this fine-tune is what teaches the net its neighbours.
    config = TrainConfig.from_dict(
        payload["config"] | profile_config("quick", finetune=True)
        | {"dense_crop": args.crop, "steps": args.steps, "seed": args.seed, "parent_mix": 0.0}
        | extra
    )  # fmt: skip
    tuned = out / "dense" / "checkpoint.pt"
    if not tuned.exists():
        started = time.perf_counter()
        result = train(cset, classes, config, init_state=checkpoint, log=print)
        info = {"train_seconds": round(time.perf_counter() - started, 1),
                "windows_per_s": round(result.windows_per_s, 1),
                "val_accuracy": result.val_accuracy}  # fmt: skip
        result.save_checkpoint(tuned)
        (out / "dense" / "train.json").write_text(json.dumps(info, indent=2) + "\n")
    info = json.loads((out / "dense" / "train.json").read_text())

    collages = {} if args.dev else {
        name: (np.asarray(Image.open(demo / f"collage-{name}.png").convert("RGB")),
               load_ground_truth(demo / f"collage-{name}.json"))
        for name in COLLAGES
    }  # fmt: skip
    rows = {}
    for name, source in (("original", checkpoint), ("dense fine-tune", tuned)):
        model, _ = load_checkpoint(source)
        path = export_both(model, classes, window, out / name.replace(" ", "-"))
        for mode in ("per-window", "dense"):
            print(f"{name}, {mode}", flush=True)
            rows[f"{name} {mode}"] = figures(path, mode, cset, collages)

    keys = ("calibration_object_f1", "calibration_ap50", "calibration_ap")
    keys += () if args.dev else ("mona_lisa_f1", "mona_lisa_ap50", "mona_lisa_ap", "rocket_f1",
                                 "rocket_ap50", "rocket_ap")  # fmt: skip
    print("\n" + " | ".join(["model, scoring", *keys, "calibration F1 per class"]))
    for name, row in rows.items():
        cal = " ".join(f"{c} {v:.3f}" for c, v in row["calibration_f1"].items())
        print(" | ".join([name] + [f"{row[k]:.3f}" for k in keys] + [cal]))
    result_json = {
        "demo": args.demo, "crop": args.crop, "steps": args.steps, "seed": args.seed,
        "set": extra,
        "step": STEP, "config": config.to_dict(), **info, "rows": rows,
    }  # fmt: skip
    (out / "result.json").write_text(json.dumps(result_json, indent=2) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(result_json, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
