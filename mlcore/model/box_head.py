"""The box head: where a window's object lies and how well the window is centred on it.

Five numbers per window from the pooled trunk features (FCOS-like, Tian et al. 2019): the object's
box edges x0, y0, x1, y1 as offsets from the window's own edges in window units, and a centredness
logit whose sigmoid is the predicted IoU of the window with its object. Zero-initialised, so a new
head starts at "the window is the box" and IoU 0.5. Its targets come from the canvases' tile
origins (mlcore.train.training.TorchWindowGather._box_targets); mlcore.model.export writes
its outputs as ``boxes`` and ``centredness``; mlcore.inference.postprocess ranks and moves boxes
by them.
"""

from __future__ import annotations

import torch
from torch import nn

OUTPUTS = 5  # x0, y0, x1, y1 offsets + the centredness logit
# What the box head reads, by name -> parts a side: "mean", the window's one average (what the
# class head reads); "quadrants", the averages of its 2 x 2 quadrants side by side (row by row:
# top-left, top-right, bottom-left, bottom-right; 4x the features); "grid4", of its 4 x 4
# sixteenths (16x). Why: run densely, a window has no zero-padded border to tell it where its
# edges are, so one mean says what is in the window but hardly where (measured: docs/speed.md,
# "Training for dense scoring").
BOX_POOLS = {"mean": 1, "quadrants": 2, "grid4": 4}


class BoxHead(nn.Linear):
    """A linear layer on the pooled features (its weights stay ``box.weight`` / ``box.bias`` in
    checkpoints), with the decoding and the loss that belong to it."""

    def __init__(self, in_features: int, pool: str = "mean"):
        if pool not in BOX_POOLS:
            raise ValueError(f"box_pool must be one of {list(BOX_POOLS)}, not {pool!r}")
        super().__init__(in_features * BOX_POOLS[pool] ** 2, OUTPUTS)
        self.parts = BOX_POOLS[pool]  # parts a side it reads
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    @staticmethod
    def widened(weight: torch.Tensor, in_features: int) -> torch.Tensor:
        """A mean-pool head's weight (5, C) as a head of k parts' (5, kC) with the same outputs
        (the mean is the average of the parts' means), so a head of parts fine-tuned from a
        start with a mean head starts where that head was."""
        k = in_features // weight.shape[1]
        if k * weight.shape[1] != in_features or k not in {p * p for p in BOX_POOLS.values()}:
            raise ValueError(f"cannot widen a box head of {weight.shape[1]} to {in_features}")
        return weight.repeat(1, k) / k

    @staticmethod
    def decode(raw: torch.Tensor, window: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes (N, 4) x0, y0, x1, y1 in pixels from the window's origin, centredness (N,))."""
        unit = torch.tensor([0.0, 0.0, 1.0, 1.0], device=raw.device)
        return (raw[:, :4] + unit) * window, torch.sigmoid(raw[:, 4])


def box_loss_per_window(raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smooth L1 on the four edge offsets plus cross-entropy of the centredness with the IoU,
    one value per window (the caller weighs windows whose tile is known)."""
    raw = raw.float()
    edges = nn.functional.smooth_l1_loss(raw[:, :4], target[:, :4], beta=0.1, reduction="none")
    centred = nn.functional.binary_cross_entropy_with_logits(
        raw[:, 4], target[:, 4], reduction="none"
    )
    return edges.sum(1) + centred
