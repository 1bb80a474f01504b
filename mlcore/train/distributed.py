"""Data-parallel training over several processes or GPUs, launched with ``torchrun``.

    torchrun --nproc_per_node 4 -m mlcore.train.distributed --canvases DIR --classes
        car,boat,negative \\ --out model_dir --config '{"steps": 3000}'

Every rank samples its own windows (its generator is seeded with the rank), the global batch
``config.batch_size`` is split evenly over the ranks, and DistributedDataParallel averages the
gradients, so N ranks follow the same loss curve as one process with the same global batch.
Backend: nccl on CUDA (one GPU per rank, ``LOCAL_RANK``), gloo on CPU. Rank 0 writes the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch  # mlcore/__init__.py has set the OpenMP wait policy before this first torch import
import torch.distributed as dist

from mlcore.train.training import TrainConfig, TrainResult, train


def _device(config: TrainConfig) -> torch.device:
    want_cuda = config.device.startswith("cuda") or (
        config.device == "auto" and torch.cuda.is_available()
    )
    if want_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def train_distributed(
    canvas_set, classes, config: TrainConfig | dict | None = None, progress=None, init_state=None
) -> TrainResult:
    """Run inside a ``torchrun`` worker: join the process group, train, leave the group.

    Returns the rank's TrainResult (the weights are identical on every rank)."""
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    device = _device(config)
    backend = "nccl" if device.type == "cuda" else "gloo"
    own_group = not dist.is_initialized()
    if own_group:
        if "RANK" not in os.environ:
            raise RuntimeError(
                "train_distributed must run under torchrun (RANK/WORLD_SIZE are not set); "
                "use mlcore.train.training.train for a single process"
            )
        dist.init_process_group(backend=backend)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cpu" and config.threads is None:
            # Ranks share the machine's cores: do not oversubscribe them.
            config.threads = max(1, (os.cpu_count() or 1) // world)
        return train(
            canvas_set,
            classes,
            config,
            progress if rank == 0 else None,
            init_state,
            device=device,
            rank=rank,
            world_size=world,
        )
    finally:
        if own_group:
            dist.destroy_process_group()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--canvases", required=True, help="training canvas directory")
    parser.add_argument("--classes", required=True, help="comma-separated class names")
    parser.add_argument("--out", required=True, help="directory for model.onnx + checkpoint.pt")
    parser.add_argument("--config", default="{}", help="TrainConfig options as JSON")
    args = parser.parse_args(argv)
    from mlcore.data.canvases import CanvasSet

    canvas_set = CanvasSet.load(args.canvases, mmap=True)
    classes = args.classes.split(",")
    result = train_distributed(canvas_set, classes, json.loads(args.config))
    if int(os.environ.get("RANK", 0)) == 0:
        from mlcore.engines import get_engine

        out = Path(args.out)
        exported = get_engine("torch").export(result, out)
        (out / "history.json").write_text(json.dumps(result.history))
        print(json.dumps({"model": str(exported.scoring), "val_accuracy": result.val_accuracy}))


if __name__ == "__main__":
    main()
