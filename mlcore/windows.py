"""Windows are views, never files.

A canvas (or a scene strip) is stored once; a 32x32 window is a strided view into it. Training
samples random window origins per batch and copies only the batch. numpy only: Spark executors and
the MXNet virtualenv import this module.

Train/validation split: the bottom band of every canvas (``val_fraction`` of its height, at least
one window tall) is held out. Train window origins keep ``y + window <= band_top`` and validation
origins ``y >= band_top``, so no train window shares a pixel with a validation window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SPLITS = ("train", "val")


def window_view(canvas: np.ndarray, window: int = 32, step: int = 8) -> np.ndarray:
    """Zero-copy view of all windows of ``canvas`` (H, W, 3) on a ``step`` grid.

    Returns shape (ny, nx, window, window, 3) with ``view[i, j] == canvas[i*step:i*step+window,
    j*step:j*step+window]``. Only origins ``0, step, 2*step, ...`` that fit are included (no edge
    clamping here; use :func:`grid_positions` with fancy indexing for edge-covering grids).
    """
    _check_image(canvas, window)
    full = sliding_window_view(canvas, (window, window), axis=(0, 1))  # (H-w+1, W-w+1, 3, w, w)
    return full.transpose(0, 1, 3, 4, 2)[::step, ::step]


def full_window_view(image: np.ndarray, window: int) -> np.ndarray:
    """Zero-copy view of the windows at every pixel origin: shape (H-w+1, W-w+1, w, w, 3)."""
    _check_image(image, window)
    return sliding_window_view(image, (window, window), axis=(0, 1)).transpose(0, 1, 3, 4, 2)


def grid_positions(length: int, window: int, step: int) -> np.ndarray:
    """Window origins ``0, step, 2*step, ...`` along one axis, edge-covering.

    The last origin is clamped to ``length - window`` so the right/bottom edge is always covered
    (it may then be closer than ``step`` to the previous one). Origin ``i`` equals
    ``min(i * step, length - window)``. A ``length`` shorter than ``window`` has no window: that
    raises ValueError (pad the image first if you must score it).
    """
    if window <= 0 or step <= 0:
        raise ValueError(f"window and step must be positive, got window={window}, step={step}")
    if length < window:
        raise ValueError(
            f"an axis of {length} px is shorter than the {window} px window: no window fits; "
            "pad or enlarge the image"
        )
    span = length - window
    count = -(-span // step) + 1  # ceil(span / step) + 1
    return np.minimum(np.arange(count, dtype=np.int64) * step, span)


def _check_image(image: np.ndarray, window: int) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got shape {image.shape}")
    if image.shape[0] < window or image.shape[1] < window:
        raise ValueError(
            f"image of {image.shape[0]}x{image.shape[1]} px is smaller than the {window} px window"
        )


@dataclass(frozen=True)
class OriginTable:
    """Per-canvas window origins of one split, as arithmetic progressions (no per-window arrays).

    Origin ``(i, j)`` of canvas ``c`` is ``(y0[c] + min(i*step, yspan[c]), min(j*step, xspan[c]))``
    for ``i < ny[c]``, ``j < nx[c]``. ``prob[c]`` is the chance a sampled window comes from ``c``.
    """

    canvas: np.ndarray  # int64 (M,) index into canvas_set.canvases
    label: np.ndarray  # int64 (M,)
    y0: np.ndarray
    yspan: np.ndarray
    ny: np.ndarray
    xspan: np.ndarray
    nx: np.ndarray
    prob: np.ndarray  # float64 (M,), sums to 1 (empty table: no entries)

    @property
    def n_windows(self) -> int:
        return int((self.ny * self.nx).sum())


class WindowSampler:
    """Random windows from a set of training canvases, gathered without per-window copies.

    ``canvas_set`` is anything with ``.canvases`` whose entries have ``.class_name``, ``.array``
    (uint8 (H, W, 3), possibly a memmap) and ``.weight``. ``classes`` fixes the label order.

    Sampling is class-balanced (each class present in a split is equally likely); within a class a
    canvas is chosen in proportion to ``weight * number_of_windows``, so correction canvases with a
    higher weight are seen more often per pixel. A canvas shorter than two windows cannot be split
    and serves training only.
    """

    def __init__(
        self,
        canvas_set,
        classes,
        window: int = 32,
        step: int = 8,
        val_fraction: float = 0.1,
        seed: int = 0,
    ):
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.classes = list(classes)
        self.window = int(window)
        self.step = int(step)
        self.val_fraction = float(val_fraction)
        self.seed = seed
        self.canvases = list(canvas_set.canvases)
        self.arrays = [c.array for c in self.canvases]
        if not self.canvases:
            raise ValueError("the canvas set has no canvases: build training canvases first")
        index = {name: i for i, name in enumerate(self.classes)}
        rows: dict[str, list] = {s: [] for s in SPLITS}
        for ci, canvas in enumerate(self.canvases):
            if canvas.class_name not in index:
                raise ValueError(
                    f"canvas {ci} has class {canvas.class_name!r}, not one of {self.classes}"
                )
            array = canvas.array
            _check_image(array, self.window)
            height, width = array.shape[:2]
            weight = float(getattr(canvas, "weight", 1.0) or 0.0)
            if weight < 0:
                raise ValueError(f"canvas {ci} has a negative weight {weight}")
            band_top = self._band_top(height)
            xspan = width - self.window
            nx = len(grid_positions(width, self.window, self.step))
            regions = {"train": (0, band_top), "val": (band_top, height)}
            for split, (top, bottom) in regions.items():
                if bottom - top < self.window:
                    continue
                yspan = bottom - top - self.window
                ny = len(grid_positions(bottom - top, self.window, self.step))
                label = index[canvas.class_name]
                rows[split].append((ci, label, top, yspan, ny, xspan, nx, weight))
        self.tables = {s: self._table(rows[s]) for s in SPLITS}
        if self.tables["train"].n_windows == 0:
            raise ValueError("no training windows: every canvas is smaller than one window")

    def _band_top(self, height: int) -> int:
        """First pixel row of the held-out band (== height when the canvas is train-only)."""
        if self.val_fraction == 0 or height < 2 * self.window:
            return height
        band = max(self.window, int(round(height * self.val_fraction)))
        return height - min(band, height - self.window)

    @staticmethod
    def _table(rows) -> OriginTable:
        arr = np.array(rows, dtype=np.float64).reshape(-1, 8)
        ci, label, y0, yspan, ny, xspan, nx, weight = (arr[:, k] for k in range(8))
        mass = weight * ny * nx
        prob = np.zeros(len(arr))
        labels = label.astype(np.int64)
        present = [c for c in np.unique(labels) if mass[labels == c].sum() > 0]
        for c in present:
            sel = labels == c
            prob[sel] = mass[sel] / mass[sel].sum() / len(present)
        as_int = lambda a: a.astype(np.int64)  # noqa: E731
        return OriginTable(
            as_int(ci), labels, as_int(y0), as_int(yspan), as_int(ny), as_int(xspan), as_int(nx),
            prob,
        )  # fmt: skip

    def n_windows(self, split: str = "train") -> int:
        """Number of distinct windows on the step grid of ``split``."""
        return self.tables[self._split(split)].n_windows

    @staticmethod
    def _split(split: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return split

    def sample_origins(
        self, batch_size: int, rng: np.random.Generator, split: str = "train"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``batch_size`` window origins: (canvas index, y, x, label), all int64 (B,)."""
        table = self.tables[self._split(split)]
        if table.n_windows == 0:
            raise ValueError(f"no {split!r} windows: the canvases are too small to hold out a band")
        rows = rng.choice(len(table.prob), size=batch_size, p=table.prob)
        iy = (rng.random(batch_size) * table.ny[rows]).astype(np.int64)
        ix = (rng.random(batch_size) * table.nx[rows]).astype(np.int64)
        ys = table.y0[rows] + np.minimum(iy * self.step, table.yspan[rows])
        xs = np.minimum(ix * self.step, table.xspan[rows])
        return table.canvas[rows], ys, xs, table.label[rows]

    def gather(self, canvas_idx: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Copy the windows at the given origins into one uint8 (B, w, w, 3) batch.

        One fancy-indexing gather per distinct canvas (not per window).
        """
        out = np.empty((len(ys), self.window, self.window, 3), dtype=np.uint8)
        for ci in np.unique(canvas_idx):
            sel = np.flatnonzero(canvas_idx == ci)
            view = full_window_view(self.arrays[ci], self.window)
            out[sel] = view[ys[sel], xs[sel]]
        return out

    def sample(
        self, batch_size: int, rng: np.random.Generator, split: str = "train"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Random batch: (uint8 (B, window, window, 3), int64 labels (B,))."""
        canvas_idx, ys, xs, labels = self.sample_origins(batch_size, rng, split)
        return self.gather(canvas_idx, ys, xs), labels
