"""A small box-head network that is not near-identity (varied BatchNorm statistics, a spread
classifier), exported per window and densely: what the dense scoring tests score."""

from __future__ import annotations

import torch

from mlcore.inference.dense_scoring import export_dense_onnx
from mlcore.model.export import export_onnx
from mlcore.model.network import build_model


def varied_model(n_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(n_classes, depth=8, width=8, box_head=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # not the near-identity of a fresh net
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.uniform_(-0.2, 0.2)
        torch.nn.init.normal_(model.fc.weight, std=0.05)
    return model.eval()


def export_flagged(model, folder, classes):
    """``model.onnx`` flagged with its dense sibling ``model.dense.onnx`` in ``folder``:
    (per-window path, dense path)."""
    per_window = export_onnx(model, folder / "model.onnx", classes)
    dense = export_dense_onnx(model, folder / "model.dense.onnx", classes,
                              per_window_path=per_window)  # fmt: skip
    return per_window, dense
