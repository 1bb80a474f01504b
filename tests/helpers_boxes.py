"""A window classifier with a box head whose every output is known in closed form, exported with
torch.onnx through mlcore.model.export (the path a trained box head takes).

logits from the window's mean colour (red -> the first class, green -> the second, grey -> the
last, the negative), boxes = the window shifted by OFFSET, centredness = the mean of the blue
channel / 255 (grey noise varies it from window to window). Without a head the same module
returns its logits only: the same backbone, an old single-output model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

OFFSET = (3.0, 5.0)  # the box head's answer: the object lies 3 px right and 5 px down
CLASSES = ["car", "boat", "negative"]


class ColourBoxModel(nn.Module):
    def __init__(self, window: int = 32, boxes: bool = True, centredness: bool = True):
        super().__init__()
        self.window, self.boxes, self.centredness = window, boxes, centredness
        weights = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [-10.0, -10.0, 0.0]])
        self.register_buffer("weights", weights)
        self.register_buffer("bias", torch.tensor([0.0, 0.0, 2.0]))
        dx, dy = OFFSET
        self.register_buffer("shift", torch.tensor([dx, dy, dx + window, dy + window]))

    def forward(self, images):
        mean = images.float().mean(dim=(1, 2)) / 255.0  # (N, 3) RGB in [0, 1]
        logits = mean @ self.weights + self.bias
        if not (self.boxes or self.centredness):
            return logits
        out = {"logits": logits}
        if self.boxes:
            out["boxes"] = mean[:, :1] * 0 + self.shift  # (N, 4), the batch size stays dynamic
        if self.centredness:
            out["centredness"] = mean[:, 2:3]  # (N, 1): the exporter flattens it
        return out


def export_box_model(path, boxes=True, centredness=True, classes=CLASSES, window=32) -> Path:
    from mlcore.model.export import export_onnx

    model = ColourBoxModel(window, boxes, centredness)
    return export_onnx(model, path, classes, window)


def expected_outputs(windows: np.ndarray) -> dict[str, np.ndarray]:
    """What the model computes, in numpy (float64)."""
    mean = windows.reshape(len(windows), -1, 3).astype(np.float64).mean(1) / 255.0
    logits = mean @ np.array([[10.0, 0, 0], [0, 10.0, 0], [-10.0, -10.0, 0]]) + [0, 0, 2.0]
    e = np.exp(logits - logits.max(1, keepdims=True))
    dx, dy = OFFSET
    window = windows.shape[1]
    return {
        "probs": e / e.sum(1, keepdims=True),
        "boxes": np.tile([dx, dy, dx + window, dy + window], (len(windows), 1)),
        "centredness": mean[:, 2],
    }
