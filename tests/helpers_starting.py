"""A small starting model for tests: the shipped one's format (10 CIFAR-10 heads, checkpoint,
ONNX, card with sha256), at depth 8 / width 8 so tests stay fast."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mlcore.model.export import export_onnx
from mlcore.model.network import build_model
from mlcore.model.starting_model import CARD_FILE, CHECKPOINT_FILE, ONNX_FILE, sha256_of
from mlcore.train.training import TrainConfig, save_checkpoint

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_starting_model(directory: Path, seed: int = 0, window: int = 32) -> Path:
    torch.manual_seed(seed)
    model = build_model(len(CIFAR10), depth=8, width=8)
    model.heads = list(CIFAR10)
    with torch.no_grad():  # a distinct, non-zero head per class, so copies are recognisable
        model.fc.weight.normal_(0, 1)
        model.fc.bias.normal_(0, 1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
    directory.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(depth=8, width=8, window=window)
    save_checkpoint(directory / CHECKPOINT_FILE, model, CIFAR10, config)
    export_onnx(model, directory / ONNX_FILE, CIFAR10, window)
    files = {n: {"sha256": sha256_of(directory / n)} for n in (CHECKPOINT_FILE, ONNX_FILE)}
    card = {"name": "test-starting-model", "git_commit": "test", "files": files,
            "figures": {"summary": {"aligned_10way_accuracy": 0.1}}}  # fmt: skip
    (directory / CARD_FILE).write_text(json.dumps(card))
    return directory
