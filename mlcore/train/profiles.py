"""Named training profiles shared by the CLI, the app's jobs and the benchmarks.

`quick` finishes in minutes on a 2-core CPU, `full` is meant for a GPU, `tiny` is for tests,
`pretrain` makes the starting model (`python -m mlcore pretrain`).
`start` says where a project's first model starts: "starting-model" (the shipped starting
model, fine-tuned with the `from_start` overrides) or "scratch" (random weights: the tiny
profile, whose depth-8 network is not the starting model's). `finetune` overrides apply when
training starts from a previous model version."""

from __future__ import annotations

# A retrain draws half of its windows from the reviewed ones (mlcore.data.windows.WindowSampler):
# with their weight alone they were ~2% of a batch and a short fine-tune kept half of them; at a
# quarter a 150-step fine-tune kept 83-88% of the default strategy's answers, at a half 95-99% at
# the same calibration-scene F1 (bench/bench_loop.py on dev seeds 100-101,
# docs/loop.md#measured-loop).
CORRECTION_SHARE = 0.5
# A retrain's weights end as 3/4 its own and 1/4 its parent's: chosen on dev seeds 100-101 and
# the calibration scene by a rule written before the run (docs/loop.md, "Fine-tunes that keep
# what the model knew"): +0.015 mean paired F1 change against +0.000 without it, corrections
# still sticking 98.5% (random) and 97.0% (default); at 1/2 they stuck only 79%.
PARENT_MIX = 0.25

TRAIN_PROFILES: dict[str, dict] = {
    "tiny": {
        "config": {"depth": 8, "width": 8, "batch_size": 32, "steps": 12, "val_windows": 64,
                   "log_every": 2, "threads": 1},
        "finetune": {"steps": 8, "lr": 0.02},
        "start": "scratch",
    },
    "quick": {
        "config": {"depth": 20, "width": 16, "batch_size": 128, "steps": 1400, "val_windows": 1024,
                   "log_every": 20, "threads": 2, "negative_share": 0.5},
        "finetune": {"steps": 400, "lr": 0.02, "warmup_fraction": 0.1,
                     "correction_share": CORRECTION_SHARE, "parent_mix": PARENT_MIX},
        "start": "starting-model",
        "from_start": {"lr": 0.05, "warmup_fraction": 0.1, "box_head": True},
    },
    "full": {
        "config": {"depth": 20, "width": 16, "batch_size": 256, "steps": 12000,
                   "val_windows": 4096, "log_every": 50, "negative_share": 0.5},
        "finetune": {"steps": 3000, "lr": 0.02, "warmup_fraction": 0.1,
                     "correction_share": CORRECTION_SHARE, "parent_mix": PARENT_MIX},
        "start": "starting-model",
        "from_start": {"lr": 0.05, "warmup_fraction": 0.1, "box_head": True},
    },
    "pretrain": {
        "config": {"depth": 20, "width": 16, "batch_size": 256, "steps": 6000,
                   "val_windows": 4096, "log_every": 50},
        "finetune": {},
        "start": "scratch",
    },
}  # fmt: skip
STARTS = ("starting-model", "scratch")


def profile_start(name: str, from_scratch: bool = False) -> str:
    """Where a first model of profile ``name`` starts: "starting-model" or "scratch"."""
    _check(name)
    return "scratch" if from_scratch else TRAIN_PROFILES[name].get("start", "scratch")


def _check(name: str) -> None:
    if name not in TRAIN_PROFILES:
        raise ValueError(f"unknown training profile {name!r}; choose one of {list(TRAIN_PROFILES)}")


def profile_config(name: str, finetune: bool = False, start: bool = False, **overrides) -> dict:
    """Options of profile ``name`` (plus its fine-tune overrides, or with ``start`` those for a
    first model fine-tuned from the starting model), then ``overrides``."""
    _check(name)
    profile = TRAIN_PROFILES[name]
    config = dict(profile["config"])
    if finetune:
        config.update(profile["finetune"])
    elif start:
        config.update(profile.get("from_start", {}))
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config
