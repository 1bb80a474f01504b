"""CIFAR-style ResNet (He et al. 2016, section 4.2) taking raw uint8 NHWC windows.

Depth ``6n + 2`` (20 by default, the size of the published model); three stages of ``n`` basic
blocks at widths ``w, 2w, 4w``. The network casts, scales and normalises its input itself, so the
exported ONNX file takes the window bytes as they are and no caller can forget the normalisation.
Permuting NHWC to NCHW gives a channels_last tensor, the fast layout on GPUs and oneDNN.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mlcore.model.box_head import BoxHead

# CIFAR-10 training-set statistics, in [0, 1] units.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            # Projection shortcut (option B); cheap and exports cleanly.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class WindowResNet(nn.Module):
    """ResNet for (N, window, window, 3) uint8 (or float in 0..255) input; returns logits (N, H).

    H output *heads*, by default one per class. With ``head_classes`` (the project class index
    of each head) a class may own several heads: the dataset's own classes (automobile and truck
    are two heads, car and negative). Learning truck vs. automobile as such is what keeps trucks
    from being called cars; :meth:`class_probs` sums the heads of each class."""

    def __init__(
        self,
        num_classes: int = 3,
        depth: int = 20,
        width: int = 16,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        head_classes=None,
        box_head: bool = False,
        box_pool: str = "mean",
    ):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56...), got {depth}")
        if width < 8:
            # Measured: a width-4 model's backward pass on the CPU corrupted the heap (double
            # free, segfault, or a hang) 3 runs in 3 with torch 2.13; width 8 never did.
            raise ValueError(f"width must be at least 8 channels, got {width}")
        if num_classes < 2:
            raise ValueError(f"need at least 2 classes, got {num_classes}")
        self.num_classes, self.depth, self.width = num_classes, depth, width
        head_classes = list(range(num_classes)) if head_classes is None else list(head_classes)
        if sorted(set(head_classes)) != list(range(num_classes)):
            raise ValueError(f"every class needs at least one head; head classes {head_classes}")
        self.head_classes = head_classes
        # (H, C) one-hot: class probabilities = head probabilities @ head_to_class.
        self.register_buffer("head_to_class", torch.eye(num_classes)[head_classes])
        blocks = (depth - 2) // 6
        # Buffers in 0..255 units so forward does one multiply-add per pixel.
        mean_t = torch.tensor(mean, dtype=torch.float32) * 255.0
        std_t = torch.tensor(std, dtype=torch.float32) * 255.0
        self.register_buffer("mean", mean_t.view(1, 1, 1, 3))
        self.register_buffer("inv_std", (1.0 / std_t).view(1, 1, 1, 3))
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        layers, in_planes = [], width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(in_planes, len(head_classes))
        # Box head (FCOS-like): where the window's object lies (4 offsets, in windows, from the
        # window's edges) and how well the window is centred on it (its IoU with the object).
        self.box_head = bool(box_head)
        self.box_pool = box_pool
        self.box = BoxHead(in_planes, box_pool) if box_head else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual branch: each block starts as identity (trains
        # faster in few steps, Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    @property
    def normalisation(self) -> dict:
        """Mean and std in [0, 1] units (what the export metadata records)."""
        mean = (self.mean.flatten() / 255.0).tolist()
        std = (1.0 / (self.inv_std.flatten() * 255.0)).tolist()
        return {"mean": mean, "std": std}

    def forward(self, images: torch.Tensor):
        """Head logits (N, H); with a box head a dict: ``logits``, ``boxes`` (N, 4) x0, y0, x1,
        y1 in pixels from the window's origin, ``centredness`` (N,) in [0, 1], and
        ``box_raw`` (N, 5), what the losses read (mlcore.model.export writes the first three)."""
        feats = self.trunk(images)
        pooled = F.adaptive_avg_pool2d(feats, 1).flatten(1)
        parts = None
        if self.box is not None and self.box.parts > 1:
            # (N, C, k, k) -> (N, k*k*C) part-major, row by row (mlcore.model.box_head)
            parts = F.adaptive_avg_pool2d(feats, self.box.parts).permute(0, 2, 3, 1).flatten(1)
        return self.heads_on(pooled, images.shape[1], parts)

    def trunk(self, images: torch.Tensor) -> torch.Tensor:
        """The convolutional trunk's feature map (N, C, H/4, W/4) of uint8 NHWC images of any
        size (a window, or a whole crop or tile for dense scoring)."""
        x = (images.float() - self.mean) * self.inv_std  # (N, H, W, 3) float
        x = x.permute(0, 3, 1, 2)  # NCHW shape, channels_last memory
        return self.layers(self.stem(x))

    def heads_on(self, pooled: torch.Tensor, window: int, parts: torch.Tensor | None = None):
        """The heads on pooled features (N, C) of ``window`` px windows: what :meth:`forward`
        returns (per window the pool is the global average, densely a block of the feature map:
        mlcore.inference.dense_scoring.window_means); a box head of parts (``box_pool``
        quadrants or grid4) reads ``parts`` (N, k*k*C), the parts' means side by side."""
        logits = self.fc(pooled)
        if self.box is None:
            return logits
        if self.box.parts > 1:
            if parts is None or parts.shape[1] != self.box.in_features:
                raise ValueError(f"a {self.box_pool} box head needs the means of its parts")
            raw = self.box(parts).float()
        else:
            raw = self.box(pooled).float()
        boxes, centredness = BoxHead.decode(raw, float(window))
        return {"logits": logits, "boxes": boxes, "centredness": centredness, "box_raw": raw}

    def class_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C) from head logits (N, H)."""
        return torch.softmax(logits.float(), dim=1) @ self.head_to_class

    def class_log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """log of :meth:`class_probs`, computed stably (log-sum-exp over each class's heads)."""
        logp = torch.log_softmax(logits.float(), dim=1)  # (N, H)
        mask = torch.where(self.head_to_class.T > 0, 0.0, float("-inf"))  # (C, H)
        return torch.logsumexp(logp[:, None, :] + mask[None], dim=2)


class ProbabilityModel(nn.Module):
    """Wraps a logits model with a softmax (summed per class over its heads): what the exported
    file computes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = logits_of(self.model(images))
        if hasattr(self.model, "class_probs"):
            return self.model.class_probs(logits)
        return torch.softmax(logits.float(), dim=1)


def logits_of(output):
    """The head logits of a model's output (a tensor, or the dict of a model with a box head)."""
    return output["logits"] if isinstance(output, dict) else output


def build_model(num_classes: int = 3, depth: int = 20, width: int = 16, **kw) -> WindowResNet:
    return WindowResNet(num_classes=num_classes, depth=depth, width=width, **kw)
