"""Train the window classifier on training canvases (PyTorch; CUDA when present, CPU otherwise).

The input pipeline never touches Python per window: the canvases are packed once into one flat
uint8 tensor on the training device, and each batch is a single gather computed from random window
origins (index arithmetic, no unfold, no copies of the canvases), followed by augmentation of the
whole batch on the device. On a GPU the batch never leaves GPU memory.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from mlcore.data.windows import FULL_COVERAGE, NO_HEAD, SPLITS, WindowSampler, coverage_weights
from mlcore.model.box_head import BoxHead, box_loss_per_window
from mlcore.model.network import WindowResNet, build_model, logits_of
from mlcore.progress import Progress, report
from mlcore.train.options import TrainOptions

CHECKPOINT_FORMAT = "mlcore-window-resnet-v1"
RESUME_FORMAT = "mlcore-resume-v1"
RESUME_FILE = "resume.pt"  # written into the run's output folder every checkpoint_every steps
# Options that change neither the weights nor the draws: a resume may differ in them.
RESUME_FREE_OPTIONS = ("threads", "log_every", "val_windows")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# On the CPU torch.compile takes about a minute for ResNet-20 (cold cache) and then trains
# faster than eager (fused batch norm / ReLU / residual adds; see docs/profiling.md). "auto" uses
# it for runs of at least this many windows (hours of CPU time, e.g. the "full" profile), where
# the minute is surely repaid; shorter runs (the "quick" profile, fine-tunes) stay eager.
COMPILE_MIN_WINDOWS = 1_000_000
logger = logging.getLogger(__name__)


@dataclass
class TrainConfig(TrainOptions):
    """Everything that decides a training run. ``steps`` is used unless ``epochs`` is set (one
    epoch = the number of distinct training windows on the step grid / batch size)."""

    depth: int = 20
    width: int = 16
    window: int = 32
    step: int = 8
    batch_size: int = 128
    steps: int = 2000
    epochs: float | None = None
    optimizer: str = "sgd"  # "sgd" (nesterov momentum) | "adamw"
    lr: float = 0.1
    schedule: str = "onecycle"  # "onecycle" (warm-up then cosine) | "cosine" | "constant"
    warmup_fraction: float = 0.2
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    # Autocast to bfloat16: "auto" = on CUDA, and on a CPU with bf16 units (AMX or AVX512-BF16,
    # where it trains ~1.5-1.8x faster: docs); True = always; False = float32. The choice and its
    # reason are recorded (TrainResult.precision, the checkpoint, the starting model's card).
    bf16: bool | str = "auto"
    channels_last: bool = True
    # torch.compile: "auto" = on for CUDA, and on the CPU only for runs long enough to repay the
    # compile time (COMPILE_MIN_WINDOWS windows); True/False; or a torch.compile mode name
    # ("default", "reduce-overhead" = CUDA graphs, "max-autotune", "max-autotune-no-cudagraphs").
    compile: str | bool = "auto"
    hflip: bool = True
    vflip: bool = False  # off by default: cars and boats are not upside down; on for aerial scenes
    jitter: int = 4  # random window shift in px (off the step grid), clamped to the split region
    brightness: float = 0.1  # +- fraction of 255 added per image
    contrast: float = 0.1  # +- fraction of contrast change per image
    # Share of the draws per class (relative numbers, e.g. {"negative": 2}); unnamed classes 1.
    # Equal shares give each of the 8 negative CIFAR-10 source classes ~4% of a batch, so the
    # hard ones (trucks, airplanes) are rarely seen; the scene is ~86% negative.
    class_shares: dict | None = None
    # Or just the negative class's share of the draws (the positives split the rest equally).
    negative_share: float | None = None
    # The reviewed windows' (exact samples') share of the draws, whatever the canvases' size
    # (mlcore.data.windows.WindowSampler); None: by their weight alone, as one window among all.
    correction_share: float | None = None
    # A fine-tune's result is (1 - parent_mix) x its weights + parent_mix x its start's (weight
    # averaging with the parent, WiSE-FT: Wortsman et al. 2022), to keep what the parent knew of
    # scenes the reviewed ones do not show. 0: the fine-tuned weights alone. Heads the start
    # lacks keep their trained weights.
    parent_mix: float = 0.0
    # One output head per source class of the dataset (truck apart from automobile) where the
    # canvases know them. Off by default: in the quick profile's budget it measured worse on the
    # calibration scene (object F1 0.54/0.55 vs 0.64/0.60, one seed each; docs/model-quality.md).
    source_heads: bool = False
    # Windows whose centre class covers less than min_coverage of them do not teach the centre
    # rule: "drop" leaves them out of the loss, "linear" weights every window by its coverage,
    # "none" trains on all (as before).
    # Measured: docs/model-quality.md#training-on-the-question-asked-and-the-recipe.
    coverage: str = "drop"
    min_coverage: float = 0.4
    # A box head beside the classes (mlcore.model.network): the object's box relative to the window
    # (smooth L1) and the window's IoU with it (centredness, cross-entropy), learnt on every
    # window of a mixed canvas whose top tile is known; post-processing ranks by p x IoU.
    box_head: bool = False
    box_loss_weight: float = 1.0
    # What the box head reads (mlcore.model.box_head.BOX_POOLS): "mean", "quadrants" or "grid4"
    # (the means of the window's 2 x 2 or 4 x 4 parts, which keep where in the window the
    # features lie: measured for dense scoring in docs/speed.md). A start's head of parts is
    # kept; a start's mean head starts a head of parts at the same outputs (BoxHead.widened).
    box_pool: str = "mean"
    # Train for dense scoring (mlcore.inference.dense_scoring; issue 37): 0 = isolated windows
    # (each zero-padded by its convs, as per-window scoring sees it); N = crops of N px run
    # through the trunk once, every window of the crop (at ``step``) pooled from the crop's
    # feature map exactly as dense scoring pools it, the loss on those outputs. A step's crops
    # hold about ``batch_size`` windows' pixels (the same compute as a per-window step). A model
    # trained so exports a dense graph beside its model file: it is scored densely.
    dense_crop: int = 0
    # Flip test-time augmentation in the exported model file (mlcore.model.flip_tta): each window
    # scored with its mirror image, averaged, at twice the scoring work. Off by default: measured
    # in docs/model-quality.md#flip-test-time-augmentation. Per window only (not with dense_crop).
    flip_tta: bool = False
    val_fraction: float = 0.1
    val_windows: int = 2048
    log_every: int = 10
    threads: int | None = None  # CPU threads for torch (None: torch's default)
    mean: list[float] | None = None  # normalisation in [0, 1] units (None: CIFAR-10 statistics)
    std: list[float] | None = None


@dataclass
class TrainResult:
    model: WindowResNet
    history: list[dict]
    val_accuracy: float | None
    windows_per_s: float
    classes: list[str] = field(default_factory=list)
    config: TrainConfig = field(default_factory=TrainConfig)
    # {"dtype": "bfloat16" | "float32", "reason": why} (see resolve_precision)
    precision: dict = field(default_factory=dict)
    resumed_from_step: int = 0  # > 0 when the run continued a resumable checkpoint
    earlier_seconds: float = 0.0  # training time of the pieces before the resume

    def save_checkpoint(self, path) -> Path:
        return save_checkpoint(
            path, self.model, self.classes, self.config, self.history, precision=self.precision
        )


def cpu_bf16_units() -> str | None:
    """The bf16 units of this CPU that torch's kernels (oneDNN) use, or None."""
    cpu = getattr(torch, "cpu", None)
    probes = (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        try:
            if getattr(cpu, probe)():
                return name
        except (AttributeError, RuntimeError):  # an older torch without the probe
            continue
    return None


def resolve_precision(config: TrainConfig, device: torch.device) -> dict:
    """Whether this run autocasts to bfloat16, and why: {"dtype", "reason"}."""
    value = config.bf16
    if isinstance(value, str):
        value = {"true": True, "false": False, "auto": "auto"}.get(value.strip().lower(), value)
    if value not in (True, False, "auto"):
        raise ValueError(f"bf16 must be auto, true or false, not {config.bf16!r}")
    if value is False:
        return {"dtype": "float32", "reason": "bf16=false asked"}
    if device.type == "cuda":
        return {"dtype": "bfloat16", "reason": f"bf16={str(value).lower()} on CUDA"}
    if device.type != "cpu":
        return {"dtype": "float32", "reason": f"no bf16 autocast on {device.type}"}
    units = cpu_bf16_units()
    if value is True:
        how = f"the CPU has {units} units" if units else "no bf16 units: emulated, slow"
        return {"dtype": "bfloat16", "reason": f"bf16=true asked ({how})"}
    if units == "AMX":
        # Measured on an AMX host against float32, same seed (docs/speed.md, "bf16 training on
        # the CPU"): the first model's calibration-scene F1 within the promotion margin, faster.
        return {"dtype": "bfloat16", "reason": "auto: the CPU has AMX units (bf16 measured "
                "against float32 on the calibration scene: docs/speed.md)"}  # fmt: skip
    if units:
        # AVX512-BF16 without AMX: its speed-up measured 0.90x to 1.55x (docs/speed.md), so a
        # person turns it on.
        return {"dtype": "float32", "reason": f"auto: the CPU has {units} units but no AMX (bf16 "
                "is not reliably faster there: docs/speed.md); bf16=true uses them"}  # fmt: skip
    return {"dtype": "float32", "reason": "auto: the CPU has no bf16 units (AMX or AVX512-BF16)"}


def compile_mode(config: TrainConfig, device: torch.device, total_steps: int) -> str | None:
    """The torch.compile mode this run uses, or None for eager."""
    value = config.compile
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if value is False:
        return None
    if value is True:
        return "default"
    if value == "auto":
        if device.type == "cuda":
            return "default"
        long_run = total_steps * config.batch_size >= COMPILE_MIN_WINDOWS
        return "default" if long_run else None
    if value in COMPILE_MODES:
        return value
    raise ValueError(
        f"compile must be 'auto', true, false or one of {COMPILE_MODES}, not {value!r}"
    )


def resolve_class_shares(config: TrainConfig, classes) -> dict | None:
    """``class_shares``, or the shares that give the negative class ``negative_share``."""
    from mlcore.inference.postprocess import default_negative

    negative = default_negative(classes)
    if config.negative_share is None or negative is None or config.class_shares:
        return config.class_shares
    share = float(config.negative_share)
    if not 0 < share < 1:
        raise ValueError(f"negative_share must be in (0, 1), got {share}")
    positives = [c for c in classes if c != negative]
    return {c: (1 - share) / len(positives) for c in positives} | {negative: share}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


class TorchWindowGather:
    """Torch twin of :class:`WindowSampler` that samples and gathers on the training device.

    The canvases are packed into one flat uint8 tensor (and their label maps into another); a
    window is addressed by ``offset[c] + ((y + dy) * width[c] + (x + dx)) * 3 + channel``, so a
    batch is one gather over any mix of canvases. Origins are drawn from the sampler's tables
    (same distribution) by bisection of their running sum, with a torch generator on the device,
    so nothing syncs with the host.
    """

    def __init__(self, sampler: WindowSampler, device: torch.device):
        self.sampler, self.device = sampler, device
        self.window, self.step = sampler.window, sampler.step
        sizes = [a.size for a in sampler.arrays]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.flat = torch.empty(int(sum(sizes)), dtype=torch.uint8, device=device)
        self.flat_labels = torch.empty(int(sum(sizes)) // 3, dtype=torch.uint8, device=device)
        self.flat_heads = torch.empty(int(sum(sizes)) // 3, dtype=torch.uint8, device=device)
        self.flat_coverage = torch.empty(int(sum(sizes)) // 3, dtype=torch.uint8, device=device)
        # Tile origins (y, x) per pixel for box targets; -1 where unknown (not a mixed canvas).
        self.flat_tiles = torch.full((2, int(sum(sizes)) // 3), -1, dtype=torch.int16,
                                     device=device)  # fmt: skip
        for origins, offset, size in zip(sampler.tile_origins, offsets, sizes):
            if origins is not None:
                pixels = slice(int(offset) // 3, (int(offset) + size) // 3)
                self.flat_tiles[:, pixels].copy_(torch.from_numpy(origins.reshape(2, -1)))
        self.tile_h, self.tile_w = sampler.tile_size
        layers = zip(
            sampler.arrays, sampler.label_maps, sampler.head_maps, sampler.coverage_maps,
            offsets, sizes,
        )  # fmt: skip
        for array, labels, heads, coverage, offset, size in layers:
            pixels = slice(int(offset) // 3, (int(offset) + size) // 3)
            self.flat[int(offset) : int(offset) + size].copy_(_flat_tensor(array))
            self.flat_labels[pixels].copy_(_flat_tensor(labels))
            self.flat_heads[pixels].copy_(_flat_tensor(heads))
            self.flat_coverage[pixels].copy_(_flat_tensor(coverage))
        self.offsets = torch.as_tensor(offsets, device=device)
        self.widths = torch.as_tensor([a.shape[1] for a in sampler.arrays], device=device)
        # An exact canvas's scene context around each window (Canvas.context): dense crops see it.
        self.context = torch.as_tensor([int(getattr(c, "context", 0)) for c in sampler.canvases],
                                       dtype=torch.int64, device=device)  # fmt: skip
        w = self.window
        ar = torch.arange(w, device=device)
        self.dy = ar.view(1, w, 1, 1)
        self.dx_ch = ar.view(1, 1, w, 1) * 3 + torch.arange(3, device=device).view(1, 1, 1, 3)
        self.tables = {}
        for split in SPLITS:
            t = sampler.tables[split]
            self.tables[split] = {
                name: torch.as_tensor(getattr(t, name), device=device)
                for name in ("canvas", "y", "x", "label", "ylo", "yhi", "xlo", "xhi")
            } | {"cdf": torch.as_tensor(t.cdf, dtype=torch.float64, device=device)}
            self.tables[split]["n"] = t.n_windows

    def sample(
        self, batch_size: int, generator: torch.Generator, split: str = "train", jitter: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(uint8 windows, class labels, head labels with -1 where only the class is known)."""
        return self.sample_batch(batch_size, generator, split, jitter)[:3]

    def sample_batch(
        self, batch_size: int, generator: torch.Generator, split: str = "train", jitter: int = 0
    ) -> WindowBatch:
        """:meth:`sample` plus each window's loss weight (its coverage, by the sampler's rule:
        a jittered window can move off the centre of its tile) and its box targets."""
        t = self.tables[split]
        if t["n"] == 0:
            raise ValueError(f"no {split!r} windows: the canvases are too small to hold out a band")
        dev = self.device
        u = torch.rand(batch_size, generator=generator, device=dev, dtype=torch.float64)
        rows = torch.searchsorted(t["cdf"], u * t["cdf"][-1]).clamp_(max=t["n"] - 1)
        canvas, y, x = t["canvas"][rows], t["y"][rows], t["x"][rows]
        labels = t["label"][rows]
        width = self.widths[canvas]
        if jitter > 0:
            shift = torch.randint(
                -jitter, jitter + 1, (2, batch_size), generator=generator, device=dev
            )
            y = torch.minimum(torch.maximum(y + shift[0], t["ylo"][rows]), t["yhi"][rows])
            x = torch.minimum(torch.maximum(x + shift[1], t["xlo"][rows]), t["xhi"][rows])
        centre_labels, heads, weights, box_target, box_weight = self._targets(canvas, y, x)
        if jitter > 0:
            labels = centre_labels
        base = (self.offsets[canvas] + (y * width + x) * 3).view(-1, 1, 1, 1)
        index = base + self.dy * width.view(-1, 1, 1, 1) * 3 + self.dx_ch
        return WindowBatch(self.flat[index], labels, heads, weights, box_target, box_weight)

    def _targets(self, canvas, y, x):
        """Class under each window's centre, head (-1 unknown), coverage-rule weight and box
        targets of the windows at (canvas, y, x)."""
        half = self.window // 2
        centre = self.offsets[canvas] // 3 + (y + half) * self.widths[canvas] + (x + half)
        labels = self.flat_labels[centre].long()
        heads = self.flat_heads[centre].long()
        heads = torch.where(heads == NO_HEAD, -1, heads)
        share = self.flat_coverage[centre].float() / FULL_COVERAGE
        weights = coverage_weights(share, self.sampler.coverage, self.sampler.min_coverage)
        box_target, box_weight = self._box_targets(centre, y, x)
        return labels, heads, weights, box_target, box_weight

    def sample_crops(
        self, n_crops: int, crop: int, generator: torch.Generator, split: str = "train",
        jitter: int = 0,
    ) -> WindowBatch:  # fmt: skip
        """Crops for dense training (TrainConfig.dense_crop): ``images`` uint8 (n, crop, crop,
        3) and the targets of each crop's windows on its ``step`` grid, (n * g * g, ...) in
        row-major order (g = crop_grid(crop)).

        A crop is placed around a window drawn as :meth:`sample_batch` draws one (class shares,
        canvas weights), that window on its grid at a random place, the whole crop shifted by up
        to ``jitter`` px. It sees only its split region's pixels (zeros elsewhere, like a scene's
        edge: no train crop sees the held-out band; a reviewed window of an exact canvas is seen
        with the scene context its tile kept, Canvas.context, and zeros beyond); its windows
        outside the region weigh 0."""
        t = self.tables[split]
        if t["n"] == 0:
            raise ValueError(f"no {split!r} windows: the canvases are too small to hold out a band")
        dev, w, step = self.device, self.window, self.step
        g = crop_grid(crop, w, step)
        u = torch.rand(n_crops, generator=generator, device=dev, dtype=torch.float64)
        rows = torch.searchsorted(t["cdf"], u * t["cdf"][-1]).clamp_(max=t["n"] - 1)
        canvas = t["canvas"][rows]
        ylo, yhi, xlo, xhi = (t[k][rows].view(-1, 1) for k in ("ylo", "yhi", "xlo", "xhi"))
        place = torch.randint(0, g, (2, n_crops), generator=generator, device=dev) * step
        cy, cx = t["y"][rows] - place[0], t["x"][rows] - place[1]
        if jitter > 0:
            shift = torch.randint(-jitter, jitter + 1, (2, n_crops), generator=generator,
                                  device=dev)  # fmt: skip
            cy, cx = cy + shift[0], cx + shift[1]
        span = torch.arange(crop, device=dev)
        py, px = cy.view(-1, 1) + span, cx.view(-1, 1) + span  # (n, crop) pixel rows / cols
        margin = self.context[canvas].view(-1, 1)  # pixels seen beyond the labelled region
        seen_y = (py >= ylo - margin) & (py < yhi + w + margin)
        seen_x = (px >= xlo - margin) & (px < xhi + w + margin)
        py = torch.minimum(torch.maximum(py, ylo - margin), yhi + w + margin - 1)
        px = torch.minimum(torch.maximum(px, xlo - margin), xhi + w + margin - 1)
        width = self.widths[canvas].view(-1, 1, 1, 1)
        index = (self.offsets[canvas].view(-1, 1, 1, 1)
                 + (py.view(-1, crop, 1, 1) * width + px.view(-1, 1, crop, 1)) * 3
                 + torch.arange(3, device=dev))  # fmt: skip
        seen = (seen_y.view(-1, crop, 1, 1) & seen_x.view(-1, 1, crop, 1)).to(torch.uint8)
        images = self.flat[index] * seen
        grid = torch.arange(g, device=dev) * step
        wy = (cy.view(-1, 1, 1) + grid.view(1, g, 1)).expand(-1, g, g)
        wx = (cx.view(-1, 1, 1) + grid.view(1, 1, g)).expand(-1, g, g)
        inside = (wy >= ylo.view(-1, 1, 1)) & (wy <= yhi.view(-1, 1, 1))
        inside &= (wx >= xlo.view(-1, 1, 1)) & (wx <= xhi.view(-1, 1, 1))
        wy = torch.minimum(torch.maximum(wy, ylo.view(-1, 1, 1)), yhi.view(-1, 1, 1))
        wx = torch.minimum(torch.maximum(wx, xlo.view(-1, 1, 1)), xhi.view(-1, 1, 1))
        every = canvas.view(-1, 1, 1).expand(-1, g, g).reshape(-1)
        labels, heads, weights, box_target, box_weight = self._targets(
            every, wy.reshape(-1), wx.reshape(-1)
        )
        inside = inside.reshape(-1).float()
        return WindowBatch(images, labels, heads, weights * inside, box_target,
                           box_weight * inside)  # fmt: skip

    def _box_targets(self, centre, y, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 5) targets of the box head, in window units: the top tile's edges minus the
        window's (x0, y0, x1 - 1, y1 - 1, as the head predicts them) and the window's IoU with
        the tile; (B,) weight, 1 where the tile is known."""
        ty = self.flat_tiles[0, centre].long()
        tx = self.flat_tiles[1, centre].long()
        known = ty >= 0
        w, th, tw = float(self.window), self.tile_h, self.tile_w
        x0, y0 = (tx - x).float() / w, (ty - y).float() / w
        x1, y1 = (tx + tw - x).float() / w - 1, (ty + th - y).float() / w - 1
        inter_w = (torch.minimum(tx + tw, x + self.window) - torch.maximum(tx, x)).clamp(min=0)
        inter_h = (torch.minimum(ty + th, y + self.window) - torch.maximum(ty, y)).clamp(min=0)
        inter = (inter_w * inter_h).float()
        iou = inter / (self.window**2 + th * tw - inter)
        target = torch.stack([x0, y0, x1, y1, iou], 1)
        return torch.where(known.view(-1, 1), target, 0.0), known.float()


class WindowBatch(NamedTuple):
    """One training batch: uint8 windows, class and head labels, the coverage rule's loss
    weights and the box head's targets (see TorchWindowGather._box_targets)."""

    images: torch.Tensor
    labels: torch.Tensor
    heads: torch.Tensor
    weights: torch.Tensor
    box_target: torch.Tensor
    box_weight: torch.Tensor


# torch 2.13's CPU backward of a width-8 trunk on dense crops segfaults (3 runs in 3 here,
# 2026-12-06); width 16, every profile's network but tiny's, trains.
DENSE_MIN_WIDTH = 16


def crop_grid(crop: int, window: int, step: int) -> int:
    """Windows per side of a dense-training crop: its ``step`` grid from its corner, which must
    end at the crop's far edge (so a flipped crop holds the same windows)."""
    if crop < window or (crop - window) % step:
        raise ValueError(
            f"dense_crop must be the window ({window}) plus a multiple of the step ({step}) "
            f"px, e.g. {window + 8 * step}; got {crop}"
        )
    return (crop - window) // step + 1


def crops_per_batch(config: TrainConfig) -> int:
    """Crops per step: about ``batch_size`` windows' pixels (a per-window step's compute)."""
    return max(1, round(config.batch_size * config.window**2 / config.dense_crop**2))


class DenseCrops(nn.Module):
    """A WindowResNet over whole crops: the trunk once per crop, then every window of the crop's
    grid pooled from the feature map (mlcore.inference.dense_scoring.window_means, what dense
    scoring computes) and the model's heads on it; outputs (n * g * g, ...) as ``forward``'s."""

    def __init__(self, model: WindowResNet, crop: int, step: int, window: int):
        super().__init__()
        from mlcore.inference.dense_scoring import trunk_geometry

        self.model, self.window = model, window
        self.stride = trunk_geometry(model)[0]
        if step % self.stride or window % self.stride:
            raise ValueError(
                f"dense training needs the step ({step}) and window ({window}) on the trunk's "
                f"{self.stride} px grid"
            )
        cells = torch.arange(crop_grid(crop, window, step)) * (step // self.stride)
        self.register_buffer("cells", cells, persistent=False)

    def forward(self, crops: torch.Tensor):
        from mlcore.inference.dense_scoring import part_means, window_means

        feats = self.model.trunk(crops).float().permute(0, 2, 3, 1)  # (n, h, w, C)
        block, channels = self.window // self.stride, feats.shape[-1]
        pooled = window_means(feats, self.cells, self.cells, block).reshape(-1, channels)
        parts = None
        if self.model.box is not None and self.model.box.parts > 1:
            parts = part_means(feats, self.cells, self.cells, block, self.model.box.parts)
            parts = parts.reshape(-1, parts.shape[-2] * channels)
        return self.model.heads_on(pooled, self.window, parts)


def augment_crops(batch: WindowBatch, config: TrainConfig, generator: torch.Generator):
    """:func:`augment` of dense-training crops: a flipped crop's windows are its grid's mirror
    images, so each window's targets move to the mirrored place (box targets flipped too)."""
    images, n, dev = batch.images.float(), batch.images.shape[0], batch.images.device
    g = crop_grid(images.shape[1], config.window, config.step)
    targets = {name: getattr(batch, name).view(n, g, g, *getattr(batch, name).shape[1:])
               for name in ("labels", "heads", "weights", "box_target", "box_weight")}  # fmt: skip
    for axis, on in ((2, config.hflip), (1, config.vflip)):
        if not on:
            continue
        flip = torch.rand(n, generator=generator, device=dev) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(axis), images)
        for name, value in targets.items():
            shape = (n,) + (1,) * (value.ndim - 1)
            value = torch.where(flip.view(shape), value.flip(axis), value)
            if name == "box_target":
                a, b = (0, 2) if axis == 2 else (1, 3)  # x0/x1 or y0/y1, in window units
                swapped = torch.stack([-value[..., b], -value[..., a]], -1)
                value = value.clone()
                value[..., [a, b]] = torch.where(flip.view(n, 1, 1, 1), swapped, value[..., [a, b]])
            targets[name] = value
    flat = {name: value.reshape(n * g * g, *value.shape[3:]) for name, value in targets.items()}
    return augment(images, config, generator, flips=False), batch._replace(**flat)


def _flat_tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # read-only memmaps are only read (copied) here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(array).reshape(-1))


def augment(
    images: torch.Tensor, config: TrainConfig, generator: torch.Generator, flips: bool = True
) -> torch.Tensor:
    """Flips (unless ``flips`` is off: the caller flipped) and brightness/contrast jitter of a
    uint8 NHWC batch; returns float in 0..255."""
    x = images.float()
    n, dev = x.shape[0], x.device

    def coin() -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=dev) < 0.5).view(n, 1, 1, 1)

    if flips and config.hflip:
        x = torch.where(coin(), x.flip(2), x)
    if flips and config.vflip:
        x = torch.where(coin(), x.flip(1), x)
    if config.contrast > 0 or config.brightness > 0:
        u = torch.rand(2, n, 1, 1, 1, generator=generator, device=dev) * 2 - 1
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + config.contrast * u[0]) + mean + config.brightness * 255 * u[1]
        x = x.clamp_(0, 255)
    return x


def augment_batch(batch: WindowBatch, config: TrainConfig, generator: torch.Generator):
    """:func:`augment` of the windows, with the box targets flipped along with them."""
    if config.hflip or config.vflip:
        x = batch.images.float()
        n, dev = x.shape[0], x.device
        target = batch.box_target.clone()
        for axis, on in ((2, config.hflip), (1, config.vflip)):
            if not on:
                continue
            flip = torch.rand(n, generator=generator, device=dev) < 0.5
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(axis), x)
            a, b = (0, 2) if axis == 2 else (1, 3)  # x0/x1 or y0/y1, in window units
            swapped = torch.stack([-target[:, b], -target[:, a]], 1)
            target[:, [a, b]] = torch.where(flip.view(n, 1), swapped, target[:, [a, b]])
        return augment(x, config, generator, flips=False), batch._replace(box_target=target)
    return augment(batch.images, config, generator), batch


def head_loss(model: WindowResNet, smoothing: float):
    """Loss on head logits: cross-entropy on the source class where it is known; where only the
    class is (corrections, single-class canvases), the negative log of the class probability
    (the sum over its heads), smoothed the same way."""
    fine = nn.CrossEntropyLoss(label_smoothing=smoothing, reduction="none")

    def loss(logits: torch.Tensor, labels: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        log_class = model.class_log_probs(logits)
        picked = log_class.gather(1, labels.view(-1, 1)).squeeze(1)
        coarse = -(1 - smoothing) * picked - smoothing * log_class.mean(1)
        return torch.where(heads >= 0, fine(logits, heads.clamp(min=0)), coarse)

    return loss


def class_loss(smoothing: float):
    """Per-window smoothed cross-entropy on the class (one head per class)."""
    ce = nn.CrossEntropyLoss(label_smoothing=smoothing, reduction="none")
    return lambda logits, labels, heads: ce(logits.float(), labels)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of per-window losses by weight; a batch of weight 0 gives 0 (no step direction)."""
    return (losses * weights).sum() / weights.sum().clamp(min=1e-6)


def box_loss(raw: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The box head's loss (mlcore.model.box_head), averaged over the windows whose tile is
    known."""
    return weighted_mean(box_loss_per_window(raw, target), weight)


def _forward_backward(net, x, batch, loss_fn, optimizer, device, autocast, box_weight=1.0):
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        out = net(x)
    logits = logits_of(out)
    loss = weighted_mean(loss_fn(logits.float(), batch.labels, batch.heads), batch.weights)
    if isinstance(out, dict) and box_weight > 0:
        loss = loss + box_weight * box_loss(out["box_raw"], batch.box_target, batch.box_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss


def _lr_lambda(config: TrainConfig, total: int) -> Callable[[int], float]:
    warm = max(1, int(config.warmup_fraction * total)) if config.schedule == "onecycle" else 0

    def factor(step: int) -> float:
        if config.schedule == "constant":
            return 1.0
        if step < warm:
            return 0.04 + 0.96 * step / warm
        progress_ = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))

    if config.schedule not in ("onecycle", "cosine", "constant"):
        raise ValueError(f"schedule must be onecycle, cosine or constant, not {config.schedule!r}")
    return factor


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)  # no weight decay on BN and biases
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # fused=True: one kernel over all parameters instead of a few small ops per tensor (the
    # per-tensor loop was ~8% of a CPU step, see docs/profiling.md).
    fused = {"fused": True} if all(p.device.type in ("cpu", "cuda") for p in decay) else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=True, **fused
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, **fused)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', not {config.optimizer!r}")


def init_payload(init_state) -> dict | None:
    """The checkpoint dict behind ``init_state`` (a path or a checkpoint dict), else None (a
    bare state dict, which carries no architecture)."""
    if isinstance(init_state, (str, os.PathLike)):
        return read_checkpoint(init_state)
    if isinstance(init_state, dict) and "state_dict" in init_state:
        return init_state
    return None


def follow_init_architecture(
    config: TrainConfig, payload: dict | None, classes, log
) -> TrainConfig:
    """A start (a parent version or the starting model) decides the architecture: its depth
    and width, and source-class heads when its heads are not our classes (the starting model's
    CIFAR-10 heads: our classes become sums of them). A retrain with another profile (tiny
    after quick) then fine-tunes the network it has instead of failing to load it."""
    if payload is None:
        return config
    arch = payload.get("architecture", {})
    updates = {k: int(arch[k]) for k in ("depth", "width") if arch.get(k) is not None}
    if arch.get("box_head"):  # a box head once learnt is kept
        updates["box_head"] = True
    if arch.get("box_pool", "mean") != "mean":  # and so is where it reads from
        updates["box_pool"] = arch["box_pool"]
    heads = arch.get("heads") or []
    if heads and list(heads) != list(classes):
        updates["source_heads"] = True
    changed = {k: v for k, v in updates.items() if getattr(config, k) != v}
    if changed:
        log(f"architecture of the starting point kept: {changed}")
        config = TrainConfig.from_dict(config.to_dict() | changed)
    return config


def load_init_state(model: nn.Module, init_state, log: Callable[[str], None]) -> dict:
    """Fine-tune start: copy the backbone; copy each output head whose name the start has too
    (a CIFAR-10 head of the starting model, a class of the parent), so a class made of source
    classes starts as the sum of their heads; heads the start lacks are freshly initialised.
    Returns what did not come from the start: {state key: None (all of it) or its fresh rows}."""
    payload = init_payload(init_state)
    state = payload["state_dict"] if payload is not None else init_state
    start_heads = list((payload or {}).get("architecture", {}).get("heads") or [])
    start_heads = start_heads or list((payload or {}).get("classes") or [])
    own = model.state_dict()
    # The head -> class map belongs to the model being trained, never to its starting point.
    state = {k: v for k, v in state.items() if k != "head_to_class"}
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = [k for k in own if k not in state and k != "head_to_class"]
    unexpected = [k for k in state if k not in own]
    if "box.weight" in state and own.get("box.weight") is not None:
        if own["box.weight"].shape[1] != state["box.weight"].shape[1]:  # a mean head -> parts
            log("the start's box head widened to read the parts of the window")
            widened = BoxHead.widened(state["box.weight"], own["box.weight"].shape[1])
            state = state | {"box.weight": widened}
            backbone = backbone | {"box.weight": widened}
    wrong = [k for k, v in backbone.items() if k in own and own[k].shape != v.shape]
    fresh: dict = {}
    if missing and all(k.startswith(("fc.", "box.")) for k in missing):
        if any(k.startswith("box.") for k in missing):
            log("a new box head (the start has none)")
        fresh.update({k: None for k in missing})
        missing = []
    if unexpected or wrong or missing:
        raise ValueError(
            "the initial state does not fit this model (different depth or width?): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, other shape {wrong[:5]}"
        )
    own.update(backbone)
    heads = list(getattr(model, "heads", []) or [])
    if start_heads and heads and "fc.weight" in state:
        kept = [h for h in heads if h in start_heads]
        for row, name in enumerate(heads):
            if name in start_heads:
                src = start_heads.index(name)
                own["fc.weight"][row] = state["fc.weight"][src]
                own["fc.bias"][row] = state["fc.bias"][src]
        new = [h for h in heads if h not in start_heads]
        if new:
            log(f"new output heads {new} (the start has {start_heads}); kept {kept}")
            rows = [heads.index(h) for h in new]
            fresh.update({"fc.weight": rows, "fc.bias": rows})
    elif "fc.weight" in state and own["fc.weight"].shape == state["fc.weight"].shape:
        own.update({k: v for k, v in state.items() if k.startswith("fc.")})
    else:
        log("fine-tune: the classifier head was re-initialised (the class list changed)")
        fresh.update({k: None for k in own if k.startswith("fc.")})
    model.load_state_dict(own)
    return fresh


def mix_with_parent(model: nn.Module, parent: dict, share: float, fresh: dict) -> None:
    """Weight averaging with the start: every float tensor becomes (1 - share) x its trained
    value + share x the start's (BatchNorm statistics too, as WiSE-FT does); what ``fresh``
    names (no start to return to) keeps its trained value."""
    own = model.state_dict()
    with torch.no_grad():
        for key, value in own.items():
            wholly_fresh = key in fresh and fresh[key] is None
            if key not in parent or not value.is_floating_point() or wholly_fresh:
                continue
            start = parent[key].to(value.device, value.dtype)
            mixed = value * (1.0 - share) + start * share
            rows = fresh.get(key)
            if rows:
                mixed[rows] = value[rows]
            value.copy_(mixed)


def evaluate(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, device, batch_size: int = 512
) -> float:
    """Accuracy of ``model`` on uint8 windows (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size]).to(device)
            logits = logits_of(model(x))
            if hasattr(model, "class_probs"):
                logits = model.class_probs(logits)
            pred = logits.argmax(1).cpu().numpy()
            correct += int((pred == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(images))


def train(
    canvas_set,
    classes,
    config: TrainConfig | dict | None = None,
    progress: Progress | None = None,
    init_state=None,
    log: Callable[[str], None] | None = None,
    *,
    device: torch.device | None = None,
    rank: int = 0,
    world_size: int = 1,
    checkpoint_dir=None,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> TrainResult:
    """Train a fresh model (or fine-tune ``init_state``: a state dict or checkpoint path).

    With ``world_size > 1`` (inside an initialised process group, see
    :mod:`mlcore.train.distributed`) each rank samples its own windows, the global batch is split
    over ranks and gradients are averaged by DistributedDataParallel.

    With ``checkpoint_every`` > 0 the whole training state (weights, optimizer, LR schedule,
    the parent's weights, every random generator, the step) is written to
    ``checkpoint_dir/resume.pt`` every that many steps, atomically; ``resume=True`` continues
    from it, and the result is the one an uninterrupted run gives."""
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    if config.flip_tta and config.dense_crop:  # before the training it would otherwise waste
        raise ValueError("flip_tta and dense_crop cannot go together: the dense graph scores "
                         "without the flip; choose one (docs/model-quality.md)")  # fmt: skip
    if not 0.0 <= config.parent_mix < 1.0:  # before the training it would otherwise waste
        raise ValueError(f"parent_mix must be in [0, 1), got {config.parent_mix}")
    classes = list(classes)
    log = log or logger.info
    if init_state is not None:
        payload = init_payload(init_state)  # a path is read once, here
        init_state = payload or init_state
        config = follow_init_architecture(config, payload, classes, log)
    device = device or resolve_device(config.device)
    precision = resolve_precision(config, device)
    if (checkpoint_every or resume) and checkpoint_dir is None:
        raise ValueError("checkpoint_every / resume need checkpoint_dir (the run's folder)")
    if (checkpoint_every or resume) and world_size > 1:
        raise ValueError("resumable checkpoints are for single-process runs (world_size 1)")
    resume_path = Path(checkpoint_dir) / RESUME_FILE if checkpoint_dir is not None else None
    state = read_resume_state(resume_path) if resume else None
    if config.threads and device.type == "cpu":
        torch.set_num_threads(int(config.threads))
    torch.manual_seed(config.seed)
    sampler = WindowSampler(
        canvas_set, classes, config.window, config.step, config.val_fraction, config.seed,
        class_shares=resolve_class_shares(config, classes),
        min_coverage=config.min_coverage, coverage=config.coverage,
        correction_share=config.correction_share,
    )  # fmt: skip
    total = config.total_steps(sampler.n_windows("train"))
    if config.batch_size % world_size:
        raise ValueError(f"batch_size {config.batch_size} must divide among {world_size} ranks")
    local_batch = config.batch_size // world_size

    dense = config.dense_crop > 0
    if dense:
        crop_grid(config.dense_crop, config.window, config.step)  # refuse a bad size up front
        if device.type == "cpu" and config.width < DENSE_MIN_WIDTH:
            raise ValueError(
                f"training for dense scoring (dense_crop) on the CPU needs a network at least "
                f"{DENSE_MIN_WIDTH} channels wide, this one is {config.width}: torch's CPU "
                "backward crashes on narrower ones; train it per window (dense_crop=0)"
            )
    norm = {k: v for k, v in (("mean", config.mean), ("std", config.std)) if v is not None}
    use_heads = config.source_heads and sampler.fine
    head_classes = sampler.head_classes if use_heads else None
    model = build_model(len(classes), config.depth, config.width, head_classes=head_classes,
                        box_head=config.box_head, box_pool=config.box_pool, **norm)  # fmt: skip
    model.heads = list(sampler.heads) if use_heads else list(classes)
    parent, fresh = None, {}
    if init_state is not None:
        fresh = load_init_state(model, init_state, log)
        if config.parent_mix:
            parent = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mode = compile_mode(config, device, total)
    net: nn.Module = model
    if dense:
        net = DenseCrops(model, config.dense_crop, config.step, config.window).to(device)
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(net, device_ids=ids)
    eager = net
    if mode is not None:
        net = torch.compile(net, mode=mode)

    gather = TorchWindowGather(sampler, device)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed * 1000 + rank + 1)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, total))
    if use_heads:
        loss_fn = head_loss(model, config.label_smoothing)
    else:  # one head per class: plain smoothed cross-entropy on the class
        loss_fn = class_loss(config.label_smoothing)
    autocast = precision["dtype"] == "bfloat16"

    history: list[dict] = []
    running = torch.zeros((), device=device)
    since_log = first = 0
    earlier_seconds = 0.0
    identity = None
    if checkpoint_every or resume:  # what a resume must share with the run it continues
        identity = {
            "config": {k: v for k, v in config.to_dict().items() if k not in RESUME_FREE_OPTIONS},
            "classes": classes, "total_steps": total, "precision": precision["dtype"],
            "data": _data_fingerprint(sampler), "init": _init_fingerprint(init_state),
        }  # fmt: skip
    if state is not None:
        check_resume_identity(resume_path, state["identity"], identity)
        first = state["step"]
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if parent is not None:
            parent = {k: v.to(parent[k].device) for k, v in state["parent"].items()}
        history, since_log = list(state["history"]), state["since_log"]
        running.fill_(state["running"])
        earlier_seconds = float(state.get("seconds", 0.0))
        generator.set_state(state["rng"]["generator"])
        _restore_global_rngs(state["rng"])
        log(f"resumed from {resume_path.name} at step {first} of {total}")
    started = timed_from = time.perf_counter()
    # Compiled runs (CUDA graphs above all) record/recompile during their first steps.
    warmup = min(total - 1, first + (1 if mode is None else 3))
    compiled = f", torch.compile mode {mode!r}" if mode else ""
    what = f"{local_batch} windows"
    step_windows = config.batch_size
    if dense:
        local_crops = max(1, crops_per_batch(config) // world_size)
        per_crop = crop_grid(config.dense_crop, config.window, config.step) ** 2
        step_windows = local_crops * world_size * per_crop
        what = (f"{local_crops} crops of {config.dense_crop} px ({per_crop} windows each, "
                "pooled from the crop's feature map: dense)")  # fmt: skip
    log(
        f"training {config.depth}-layer ResNet on {device} for {total} steps of {what}"
        f"{compiled}, {precision['dtype']} ({precision['reason']})"
    )
    model.train()
    for step in range(first + 1, total + 1):
        if dense:
            batch = gather.sample_crops(local_crops, config.dense_crop, generator, "train",
                                        config.jitter)  # fmt: skip
            x, batch = augment_crops(batch, config, generator)
        else:
            batch = gather.sample_batch(local_batch, generator, "train", config.jitter)
            if config.box_head:  # flips move the box targets too
                x, batch = augment_batch(batch, config, generator)
            else:
                x = augment(batch.images, config, generator)
        args = (x, batch, loss_fn, optimizer, device, autocast, config.box_loss_weight)
        try:
            loss = _forward_backward(net, *args)
        except Exception as exc:  # noqa: BLE001 - compiler missing/broken: train eagerly
            if net is eager or step > 1:
                raise
            log(f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly")
            net, mode, warmup = eager, None, min(total - 1, first + 1)
            loss = _forward_backward(net, *args)
        optimizer.step()
        scheduler.step()
        running += loss.detach()
        since_log += 1
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timed_from = time.perf_counter()  # the first steps pay for compilation and warm-up
        if step % config.log_every == 0 or step == total:
            mean_loss = running / since_log
            if world_size > 1:
                import torch.distributed as dist

                dist.all_reduce(mean_loss)
                mean_loss = mean_loss / world_size
            value = float(mean_loss)  # the only host sync of the loop
            history.append({"step": step, "loss": value, "lr": scheduler.get_last_lr()[0]})
            running.zero_()
            since_log = 0
        if checkpoint_every and (step % checkpoint_every == 0 or step == total):
            write_resume_state(resume_path, {
                "identity": identity, "step": step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "parent": parent, "history": history, "since_log": since_log,
                "running": float(running), "rng": _rng_states(generator),
                "seconds": earlier_seconds + time.perf_counter() - started,
            })  # fmt: skip
        if history and history[-1]["step"] == step:
            report(progress, step, total, f"loss {history[-1]['loss']:.4f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - timed_from
    timed_steps = max(1, total - warmup)
    ran = total - first > 1 and elapsed > 0  # a resume at the last step times nothing
    windows_per_s = timed_steps * step_windows / elapsed if ran else 0.0

    if parent is not None:
        mix_with_parent(model, parent, config.parent_mix, fresh)
        log(f"weights averaged with the parent's ({config.parent_mix:g} of the parent)")
    val_accuracy = None
    if sampler.n_windows("val") > 0 and config.val_windows > 0:
        rng = np.random.default_rng(config.seed + 7919)  # the same validation set every run
        val_x, val_y = sampler.sample(config.val_windows, rng, "val")
        val_accuracy = evaluate(model, val_x, val_y, device)
    log(
        f"trained in {time.perf_counter() - started:.1f}s, {windows_per_s:.0f} windows/s, "
        f"val accuracy {val_accuracy}"
    )
    model.eval()
    return TrainResult(
        model, history, val_accuracy, windows_per_s, classes, config, precision, first,
        earlier_seconds,
    )  # fmt: skip


# -- resumable training state -------------------------------------------------------------------


def _data_fingerprint(sampler: WindowSampler) -> str:
    """A digest of the canvases and their labels (a resume must train on the same data)."""
    import hashlib

    digest = hashlib.sha256()
    for layers in zip(sampler.arrays, sampler.label_maps, sampler.head_maps):
        for layer in layers:
            digest.update(str(layer.shape).encode())
            digest.update(np.ascontiguousarray(layer).data)
    return digest.hexdigest()[:16]


def _init_fingerprint(init_state) -> str | None:
    """A short digest of the start's weights (a resume must continue from the same start)."""
    if init_state is None:
        return None
    import hashlib

    state = init_state.get("state_dict", init_state) if isinstance(init_state, dict) else {}
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        digest.update(key.encode())
        if torch.is_tensor(value):
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def _rng_states(generator: torch.Generator) -> dict:
    """Every random generator a training step may touch: the sampling/augmentation generator,
    torch's global ones (CPU, CUDA), numpy's and Python's global ones."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(internal), gauss_next],
    }


def _restore_global_rngs(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, key, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


def write_resume_state(path: Path, state: dict) -> Path:
    """Write the training state atomically (temp file, then rename): an interruption while
    writing leaves the previous state whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": RESUME_FORMAT} | state
    payload["model"] = {k: v.detach().cpu().clone() for k, v in state["model"].items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_resume_state(path: Path) -> dict:
    """The state :func:`write_resume_state` wrote, with a clear error when there is none."""
    if not path.is_file():
        raise FileNotFoundError(
            f"nothing to resume: {path.parent} has no {path.name} (the run was started without "
            "checkpoints, or in another folder); start it again without --resume"
        )
    return _load_payload(
        path, RESUME_FORMAT,
        corrupt=lambda exc: f"{path.name} in {path.parent} is corrupt ({type(exc).__name__}); "
        "delete it and start again without --resume",
        foreign=f"{path} is not an mlcore resume checkpoint ({RESUME_FORMAT})",
    )  # fmt: skip


def _load_payload(path: Path, fmt: str, corrupt, foreign: str) -> dict:
    """A torch.load'ed dict of format ``fmt`` (weights only), or ValueError: ``corrupt(exc)`` when
    torch cannot read it, ``foreign`` when it is some other file."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise ValueError(corrupt(exc)) from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(foreign)
    return payload


def check_resume_identity(path: Path, saved: dict, current: dict) -> None:
    """Refuse to continue a checkpoint of another run: the result would be neither run's."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        if key == "config":
            old, new = saved.get(key) or {}, current.get(key) or {}
            differences += [
                f"{k} {old.get(k)!r} there, {new.get(k)!r} now"
                for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
            ]  # fmt: skip
        elif saved.get(key) != current.get(key):
            differences.append(f"{key} {saved.get(key)!r} there, {current.get(key)!r} now")
    if differences:
        raise ValueError(
            f"cannot resume from {path.name} in {path.parent}: it is a checkpoint of another "
            f"run ({'; '.join(differences[:6])}). Resume with the same options and data, or "
            "start afresh without --resume (or in another folder)"
        )


# -- checkpoints -------------------------------------------------------------------------------


def save_checkpoint(
    path, model: WindowResNet, classes, config: TrainConfig, history=None, precision=None
) -> Path:
    """Write state dict + classes + config + normalisation atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "config": config.to_dict(),
        "architecture": {
            "depth": model.depth,
            "width": model.width,
            "head_classes": model.head_classes,
            "heads": list(getattr(model, "heads", []) or []),
            "box_head": bool(getattr(model, "box_head", False)),
            "box_pool": getattr(model, "box_pool", "mean"),
        },  # fmt: skip
        "normalisation": model.normalisation,
        "history": list(history or []),
        "precision": dict(precision or {}),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path) -> dict:
    """Read a checkpoint dict, with a clear error for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return _load_payload(
        path, CHECKPOINT_FORMAT,
        corrupt=lambda exc: f"checkpoint {path} is corrupt or not a PyTorch file "
        f"({type(exc).__name__}: {exc}); retrain or restore the model version",
        foreign=f"{path} is not an mlcore checkpoint (expected {CHECKPOINT_FORMAT})",
    )  # fmt: skip


def load_checkpoint(path, device: str = "cpu") -> tuple[WindowResNet, dict]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, checkpoint dict)."""
    payload = read_checkpoint(path)
    arch, norm = payload["architecture"], payload["normalisation"]
    model = build_model(
        len(payload["classes"]), arch["depth"], arch["width"],
        head_classes=arch.get("head_classes"), box_head=arch.get("box_head", False),
        box_pool=arch.get("box_pool", "mean"), **norm,
    )  # fmt: skip
    model.heads = arch.get("heads") or list(payload["classes"])
    state = dict(payload["state_dict"])
    state.setdefault("head_to_class", model.head_to_class)  # checkpoints from before heads
    model.load_state_dict(state)
    return model.to(device).eval(), payload
