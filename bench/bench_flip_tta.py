"""Flip test-time augmentation (issue 36.4): does scoring each window and its mirror image and
averaging them pay its cost? The demo's first model exported as is and with the flip inside its
graph (mlcore.model.flip_tta: the file ``TrainConfig.flip_tta`` exports), side by side in one
run: windows/s (alternating rounds) and object F1 / AP@0.5 on the calibration scene and the two
collages, each file with thresholds calibrated on the calibration scene with its own scores.

**The rule, fixed before the first run**: flip TTA pays if it raises the *calibration scene's*
object F1 by >= 0.01 (about twice one retrain's seed-to-seed spread, docs/loop.md) for its cost,
which is 2x the network's work per window. The collages are reported, never chosen on.

    nice -n 5 .venv/bin/python bench/bench_flip_tta.py --demo var/exp/demo --json docs/flip_tta.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_int8_scoring import COLLAGES, figures, windows_per_s  # noqa: E402
from bench.common import REPO  # noqa: E402

PAYS_IF_CALIBRATION_F1_GAIN = 0.01


def export_flip_tta(checkpoint: Path, path: Path) -> Path:
    """The model file the product writes for the checkpoint with ``flip_tta`` set."""
    from mlcore.model.scoring_files import export_scoring_files
    from mlcore.train.training import load_checkpoint

    model, payload = load_checkpoint(checkpoint)
    config = payload["config"] | {"flip_tta": True}
    return export_scoring_files(model.eval(), path, payload["classes"], config)[0]


def main(argv=None) -> int:
    import numpy as np
    from PIL import Image

    from mlcore.data.canvases import CanvasSet
    from mlcore.data.collage import load_ground_truth

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", default="var/exp/demo")
    parser.add_argument("--rounds", type=int, default=2, help="speed rounds (alternating)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    demo = REPO / args.demo
    cset = CanvasSet.load(demo / "canvases")
    models = {
        "plain": demo / "model" / "model.onnx",
        "flip TTA": export_flip_tta(
            demo / "model" / "checkpoint.pt", demo / "flip_tta" / "model.flip.onnx"
        ),  # fmt: skip
    }
    collages = {
        name: (np.asarray(Image.open(demo / f"collage-{name}.png").convert("RGB")),
               load_ground_truth(demo / f"collage-{name}.json"))
        for name in COLLAGES
    }  # fmt: skip
    load = {"before": os.getloadavg()}
    speed: dict[str, list] = {name: [] for name in models}
    for round_ in range(args.rounds):
        for name, path in models.items():
            rate, n = windows_per_s(path, args.threads, collages["mona_lisa"][0])
            speed[name].append(round(rate, 1))
            print(f"round {round_} {name}: {rate:.0f} windows/s ({n} windows)", flush=True)
    rows = {}
    for name, path in models.items():
        rows[name], _ = figures(path, args.threads, cset, collages)
        rows[name]["windows_per_s"] = speed[name]
        print(f"{name}: {rows[name]}", flush=True)
    load["after"] = os.getloadavg()
    gain = rows["flip TTA"]["calibration_object_f1"] - rows["plain"]["calibration_object_f1"]
    pays = gain >= PAYS_IF_CALIBRATION_F1_GAIN
    print(
        f"calibration-scene F1 gain {gain:+.4f}: flip TTA "
        f"{'pays' if pays else 'does not pay'} (rule: >= +{PAYS_IF_CALIBRATION_F1_GAIN})"
    )
    result = {
        "command": "nice -n 5 .venv/bin/python bench/bench_flip_tta.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "threads": args.threads, "load_average": load,
        "rule": f"pays if calibration-scene object F1 gains >= {PAYS_IF_CALIBRATION_F1_GAIN}",
        "calibration_f1_gain": round(gain, 4), "pays": pays, "rows": rows,
    }  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
