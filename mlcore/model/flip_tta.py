"""Flip test-time augmentation inside the model file (``TrainConfig.flip_tta``): the exported graph
scores each window and its left-right mirror image and averages them (logits; the mirror's box
mirrored back, x0, x1 -> window - x1, window - x0; centredness), so every scorer of the file (CLI,
jobs, Spark executors, other ONNX runtimes) does it without knowing. Twice the network's work per
window; measured in docs/model-quality.md#flip-test-time-augmentation (bench/bench_flip_tta.py).
Per window only: a dense graph has no flip, so a model is trained for one or the other."""

from __future__ import annotations

import torch


class FlipAveraged(torch.nn.Module):
    """``net`` (a WindowResNet, or any network with its outputs) on a window and its mirror."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def class_probs(self, logits):
        return self.net.class_probs(logits)

    def forward(self, images):
        both = self.net(torch.cat([images, torch.flip(images, dims=[2])]))
        if not isinstance(both, dict):
            plain, mirror = both.chunk(2)
            return (plain + mirror) / 2
        n, window = images.shape[0], images.shape[2]
        out = {"logits": (both["logits"][:n] + both["logits"][n:]) / 2}
        if "boxes" in both:
            x0, y0, x1, y1 = both["boxes"][n:].unbind(1)
            mirrored_back = torch.stack([window - x1, y0, window - x0, y1], dim=1)
            out["boxes"] = (both["boxes"][:n] + mirrored_back) / 2
        if "centredness" in both:
            out["centredness"] = (both["centredness"][:n] + both["centredness"][n:]) / 2
        return out
