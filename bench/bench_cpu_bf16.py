"""bf16 autocast on the CPU (issue 36.2): training windows/s and validation accuracy of the quick
profile's network (ResNet-20 width 16, batch 128, its threads) in float32 and in bfloat16, side
by side in one process (alternating rounds, so a neighbour's load hits both alike), on mixed
CIFAR-10 canvases of the train split. Says which bf16 units the CPU has (torch.cpu probes).

    .venv/bin/python bench/bench_cpu_bf16.py --steps 100 --rounds 2 --json var/cpu_bf16.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA / "cifar10-jpg.zip"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=300, help="train images per class")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)

    from mlcore.data.canvases import build_canvas_set
    from mlcore.data.datasets import load_dataset
    from mlcore.train.pretrain import _first_per_class
    from mlcore.train.profiles import profile_config
    from mlcore.train.training import cpu_bf16_units, train

    images = _first_per_class(load_dataset(args.data, split="train"), args.per_class)
    classes = list(images.class_names)
    cset = build_canvas_set(images, classes, layout="mixed", seed=0)
    quick = profile_config("quick")
    quick.pop("negative_share", None)  # CIFAR-10's ten classes have no negative class
    rows = []
    for round_ in range(args.rounds):
        for bf16 in (False, True):
            config = quick | {"steps": args.steps, "bf16": bf16, "device": "cpu", "seed": 0}
            result = train(cset, classes, config, log=lambda line: None)
            rows.append({"round": round_, "precision": result.precision["dtype"],
                         "windows_per_s": round(result.windows_per_s, 1),
                         "val_accuracy": result.val_accuracy})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    mean = {
        p: sum(r["windows_per_s"] for r in rows if r["precision"] == p) / args.rounds
        for p in ("float32", "bfloat16")
    }
    figures = {
        "cpu_bf16_units": cpu_bf16_units(),
        "threads": quick.get("threads"),
        "cores_online": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "network": f"ResNet-{quick.get('depth', 20)} width {quick.get('width', 16)}, "
        f"batch {quick['batch_size']}",
        "steps_per_run": args.steps,
        "rows": rows,
        "mean_windows_per_s": {k: round(v, 1) for k, v in mean.items()},
        "speedup_bf16": round(mean["bfloat16"] / mean["float32"], 2),
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "rows"}, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
