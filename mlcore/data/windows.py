"""Windows are views, never files.

A canvas (or a scene strip) is stored once; a 32x32 window is a strided view into it. Training
samples random window origins per batch and copies only the batch. numpy only: Spark executors and
the MXNet virtualenv import this module.

Train/validation split: the bottom band of every canvas (``val_fraction`` of its height, at least
one window tall) is held out. Train window origins keep ``y + window <= band_top`` and validation
origins ``y >= band_top``, so no train window shares a pixel with a validation window. Exact
samples (reviewed windows) are never held out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SPLITS = ("train", "val")
NO_HEAD = 255  # head map value: the source class is unknown (only the class is)
FULL_COVERAGE = 255  # coverage map unit: 255 = the centre's class fills the whole window
COVERAGE_MODES = ("drop", "linear", "none")


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


@functools.lru_cache(maxsize=64)
def _area_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights of area averaging: output pixel i is the mean of the input span
    [i * src / dst, (i + 1) * src / dst), partial pixels weighted by their overlap."""
    edges = np.arange(dst + 1, dtype=np.float64) * (src / dst)
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(src, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
    matrix = overlap / overlap.sum(axis=1, keepdims=True)
    matrix.flags.writeable = False
    return matrix


def resize_windows(windows: np.ndarray, size: int) -> np.ndarray:
    """uint8 (B, s, s, 3) windows -> uint8 (B, size, size, 3) by area averaging (a scene's
    object-size windows shown to a model of another window; docs/own-data.md). Deterministic:
    float64 sums rounded to the nearest integer, each window on its own, so the result does not
    depend on how windows are batched. Same size: returned as is."""
    windows = np.asarray(windows)
    if windows.ndim != 4 or windows.shape[1] != windows.shape[2] or windows.shape[3] != 3:
        raise ValueError(f"expected square windows (B, s, s, 3), got {windows.shape}")
    src = windows.shape[1]
    if src == size:
        return windows
    if src % size == 0:  # a whole factor: block means (the same bytes as the products, faster)
        f = src // size
        blocks = windows.reshape(len(windows), size, f, size, f, 3)
        means = blocks.sum(axis=(2, 4), dtype=np.uint32) / float(f * f)
        return np.rint(means).astype(np.uint8)
    m = _area_matrix(src, int(size))
    planes = windows.transpose(0, 3, 1, 2).astype(np.float64)  # (B, 3, s, s)
    out = np.matmul(np.matmul(m, planes), m.T)  # (B, 3, size, size)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


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


def coverage_map(label_map: np.ndarray, window: int) -> np.ndarray:
    """uint8 (H, W): at each pixel, the share (in 1/255) of the window *centred* there (origin
    = pixel - window // 2) whose pixels have the label of that centre pixel. Where no window
    centred there fits, ``FULL_COVERAGE``.

    A window whose centre class covers only a sliver of it does not teach the centre rule (the
    question the metrics ask): the model would learn "car" for a window that mostly shows a
    boat. One integral image per label present, so the cost is a few passes over the map."""
    labels = np.asarray(label_map)
    height, width = labels.shape
    half = window // 2
    out = np.full((height, width), FULL_COVERAGE, dtype=np.uint8)
    if height < window or width < window:
        return out
    ny, nx = height - window + 1, width - window + 1  # window origins that fit
    centre = labels[half : half + ny, half : half + nx]
    share = np.empty((ny, nx), dtype=np.float32)
    for value in np.unique(centre):
        mask = np.zeros((height + 1, width + 1), dtype=np.int32)
        np.cumsum(np.cumsum(labels == value, axis=0, dtype=np.int32), axis=1, out=mask[1:, 1:])
        boxes = (
            mask[window:, window:] - mask[:-window, window:]
            - mask[window:, :-window] + mask[:-window, :-window]
        )  # fmt: skip
        sel = centre == value
        share[sel] = boxes[sel]
    # Rounded down, so "share >= t" never admits a window below t (exact when 255 t is whole).
    out[half : half + ny, half : half + nx] = np.floor(share * (FULL_COVERAGE / window**2))
    return out


def coverage_weights(share, mode: str, min_coverage: float):
    """Loss weight of windows whose centre class covers ``share`` (0..1, numpy or torch) of
    them: "drop" 0 below ``min_coverage`` else 1, "linear" the share itself, "none" 1."""
    if mode == "linear":
        return share * 1.0
    if mode == "drop" and min_coverage > 0:
        return (share >= min_coverage) * 1.0
    return share * 0.0 + 1.0


@dataclass(frozen=True)
class OriginTable:
    """Every window origin of one split, as flat arrays (one entry per window on the step grid).

    Entry ``k`` is the window at (``y[k]``, ``x[k]``) of canvas ``canvas[k]``, labelled ``label[k]``
    (for a mixed canvas: the class under its centre). A jittered copy stays inside
    ``[ylo, yhi] x [xlo, xhi]`` (its split region; a point for exact samples). ``prob[k]`` is the
    chance entry ``k`` is drawn; ``cdf`` its running sum, for drawing by bisection.
    """

    canvas: np.ndarray  # int64 (M,) index into canvas_set.canvases
    y: np.ndarray
    x: np.ndarray
    label: np.ndarray  # int64 (M,)
    ylo: np.ndarray
    yhi: np.ndarray
    xlo: np.ndarray
    xhi: np.ndarray
    prob: np.ndarray  # float64 (M,), sums to 1 (empty table: no entries)
    cdf: np.ndarray

    @property
    def n_windows(self) -> int:
        return len(self.canvas)


class WindowSampler:
    """Random windows from a set of training canvases, gathered without per-window copies.

    ``canvas_set`` is anything with ``.canvases`` whose entries have ``.class_name``, ``.array``
    (uint8 (H, W, 3), possibly a memmap), ``.weight`` and optionally ``.layout`` / ``.label_map``
    / ``.placements`` (see :class:`mlcore.data.canvases.Canvas`). ``classes`` fixes the label order.

    Layouts: a "scatter" canvas gives every window on the step grid its class; a "mixed" one
    labels each window by its label map at the window centre (the truth the scene metrics use);
    an "exact" one (reviewed windows) gives only the windows at its placements, each exactly as
    reviewed, never jittered, never held out.

    Sampling: each class present gets ``class_shares`` of the draws (default: equal shares);
    within a class a window is drawn in proportion to its canvas's ``weight``, so a correction
    with weight 50 is drawn 50 times as often as one original window of its class. With
    ``correction_share`` the exact samples (reviewed windows) get that share of the draws
    together, in proportion to their weights, and the canvases the rest by the rule above: what
    a reviewer taught is then seen as often however large the canvases are (with weights alone,
    200 answers among 330,000 canvas windows were about 2% of a batch, and a 50-step fine-tune
    kept half of them).

    Coverage (mixed canvases): ``coverage="drop"`` leaves windows whose centre class covers
    less than ``min_coverage`` of them out of the tables, and :meth:`loss_weights` gives a
    jittered window that became such a window weight 0; ``"linear"`` keeps every window and
    weights it by its coverage; ``"none"`` teaches the centre rule everywhere. Exact samples
    (reviewed windows) and single-class canvases always have full coverage.
    """

    def __init__(
        self,
        canvas_set,
        classes,
        window: int = 32,
        step: int = 8,
        val_fraction: float = 0.1,
        seed: int = 0,
        class_shares: dict | None = None,
        min_coverage: float = 0.0,
        coverage: str = "drop",
        correction_share: float | None = None,
    ):
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if coverage not in COVERAGE_MODES:
            raise ValueError(f"coverage must be one of {COVERAGE_MODES}, got {coverage!r}")
        if not 0.0 <= min_coverage <= 1.0:
            raise ValueError(f"min_coverage must be in [0, 1], got {min_coverage}")
        if correction_share is not None and not 0.0 < correction_share < 1.0:
            raise ValueError(f"correction_share must be in (0, 1), got {correction_share}")
        self.correction_share = correction_share
        self.coverage = coverage
        self.min_coverage = float(min_coverage)
        # Coverage maps cost a pass per class over every mixed canvas: only when a rule reads them.
        self._weighs_coverage = coverage == "linear" or (coverage == "drop" and min_coverage > 0)
        self.classes = list(classes)
        self.window = int(window)
        self.step = int(step)
        self.val_fraction = float(val_fraction)
        self.seed = seed
        self.canvases = list(canvas_set.canvases)
        self.arrays = [c.array for c in self.canvases]
        if not self.canvases:
            raise ValueError("the canvas set has no canvases: build training canvases first")
        unknown = sorted(set(class_shares or {}) - set(self.classes))
        if unknown:
            raise ValueError(
                f"class_shares names unknown classes {unknown}; classes: {self.classes}"
            )
        self.class_shares = dict(class_shares or {})
        set_classes = list(getattr(canvas_set, "classes", self.classes))
        head_lut = self._heads(getattr(canvas_set, "heads", None))
        self.label_maps: list[np.ndarray] = []
        self.head_maps: list[np.ndarray] = []
        self.coverage_maps: list[np.ndarray] = []
        # Per pixel, the origin (y, x) of the tile on top there (-1: unknown): box targets.
        self.tile_origins: list[np.ndarray | None] = []
        tile_size = tuple(getattr(canvas_set, "tile_size", None) or (self.window, self.window))
        self.tile_size = (int(tile_size[0]), int(tile_size[1]))
        parts: dict[str, list] = {s: [] for s in SPLITS}
        for ci, canvas in enumerate(self.canvases):
            array = canvas.array
            _check_image(array, self.window)
            weight = float(getattr(canvas, "weight", 1.0) or 0.0)
            if weight < 0:
                raise ValueError(f"canvas {ci} has a negative weight {weight}")
            layout = getattr(canvas, "layout", "scatter")
            self.label_maps.append(self._label_map(ci, canvas, layout, set_classes))
            if layout == "mixed" and self._weighs_coverage:
                self.coverage_maps.append(coverage_map(self.label_maps[-1], self.window))
            else:
                self.coverage_maps.append(np.full(array.shape[:2], FULL_COVERAGE, np.uint8))
            self.tile_origins.append(self._tile_origins(canvas, layout, tile_size))
            source_map = getattr(canvas, "source_map", None)
            if layout == "mixed" and source_map is not None:
                self.head_maps.append(head_lut[np.asarray(source_map)])
            else:  # no source class known: trained on its class alone
                self.head_maps.append(np.full(array.shape[:2], NO_HEAD, dtype=np.uint8))
            for split, part in self._origins(ci, canvas, layout).items():
                parts[split].append(part + (np.full(len(part[0]), weight),))
        self.tables = {s: self._table(parts[s]) for s in SPLITS}
        if self.tables["train"].n_windows == 0:
            raise ValueError("no training windows: every canvas is smaller than one window")

    def _heads(self, set_heads) -> np.ndarray:
        """Set ``heads`` (names) and ``head_classes`` (class index of each): the set's source
        classes of our classes, then one head for each class without one. Returns the lookup
        from the set's head index to ours (``NO_HEAD`` where unknown)."""
        lut = np.full(256, NO_HEAD, dtype=np.uint8)
        self.heads, self.head_classes = [], []
        for k, (name, cls) in enumerate(set_heads or []):
            if cls in self.classes:
                lut[k] = len(self.heads)
                self.heads.append(name)
                self.head_classes.append(self.classes.index(cls))
        for c, name in enumerate(self.classes):
            if c not in self.head_classes:
                self.heads.append(name)
                self.head_classes.append(c)
        if len(self.heads) >= NO_HEAD:
            raise ValueError(f"at most {NO_HEAD - 1} source classes, got {len(self.heads)}")
        return lut

    @property
    def fine(self) -> bool:
        """Whether some class has several heads (the model learns source classes)."""
        return len(self.heads) > len(self.classes)

    def heads_at(self, canvas_idx: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Head (source class) of the windows at these origins, -1 where only the class is known."""
        out = self._at_centres(self.head_maps, canvas_idx, ys, xs)
        return np.where(out == NO_HEAD, -1, out)

    @staticmethod
    def _tile_origins(canvas, layout, tile_size) -> np.ndarray | None:
        """int16 (2, H, W): y and x of the top tile's origin at every pixel of a mixed canvas
        (pasted again in order from its placements), -1 where no tile lies; None otherwise."""
        placements = getattr(canvas, "placements", None) or []
        if layout != "mixed" or not placements:
            return None
        height, width = canvas.array.shape[:2]
        th, tw = tile_size
        origins = np.full((2, height, width), -1, dtype=np.int16)
        for placement in sorted(placements, key=lambda p: p[3]):
            y, x = int(placement[1]), int(placement[2])
            origins[0, y : y + th, x : x + tw] = y
            origins[1, y : y + th, x : x + tw] = x
        return origins

    def _label_map(self, ci, canvas, layout, set_classes) -> np.ndarray:
        """uint8 (H, W) label of every pixel in ``self.classes`` order."""
        height, width = canvas.array.shape[:2]
        if layout == "mixed":
            lut = np.array([self._index(ci, name) for name in set_classes], dtype=np.uint8)
            return lut[np.asarray(canvas.label_map)]
        if layout not in ("scatter", "exact"):
            raise ValueError(f"canvas {ci} has an unknown layout {layout!r}")
        return np.full((height, width), self._index(ci, canvas.class_name), dtype=np.uint8)

    def _index(self, ci: int, name: str) -> int:
        if name not in self.classes:
            raise ValueError(f"canvas {ci} has class {name!r}, not one of {self.classes}")
        return self.classes.index(name)

    def _origins(self, ci, canvas, layout) -> dict[str, tuple]:
        """Per split: (canvas, y, x, ylo, yhi, xlo, xhi) arrays of this canvas's windows."""
        height, width = canvas.array.shape[:2]
        w = self.window
        if layout == "exact":
            ys = np.array([p[1] for p in canvas.placements], dtype=np.int64)
            xs = np.array([p[2] for p in canvas.placements], dtype=np.int64)
            ok = (ys + w <= height) & (xs + w <= width)
            ys, xs = ys[ok], xs[ok]
            full = np.full(len(ys), ci)
            return {"train": (full, ys, xs, ys, ys, xs, xs)}
        band_top = self._band_top(height)
        xs_grid = grid_positions(width, w, self.step)
        out = {}
        for split, (top, bottom) in {"train": (0, band_top), "val": (band_top, height)}.items():
            if bottom - top < w:
                continue
            ys_grid = top + grid_positions(bottom - top, w, self.step)
            yy, xx = np.meshgrid(ys_grid, xs_grid, indexing="ij")
            yy, xx = yy.ravel(), xx.ravel()
            n = len(yy)
            out[split] = (
                np.full(n, ci), yy, xx, np.full(n, top), np.full(n, bottom - w),
                np.zeros(n, dtype=np.int64), np.full(n, width - w),
            )  # fmt: skip
        return out

    def _band_top(self, height: int) -> int:
        """First pixel row of the held-out band (== height when the canvas is train-only)."""
        if self.val_fraction == 0 or height < 2 * self.window:
            return height
        band = max(self.window, int(round(height * self.val_fraction)))
        return height - min(band, height - self.window)

    def _table(self, parts) -> OriginTable:
        cols = [np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in range(8)]
        canvas, y, x, ylo, yhi, xlo, xhi, weight = cols
        canvas, y, x = canvas.astype(np.int64), y.astype(np.int64), x.astype(np.int64)
        if self.coverage == "drop" and self.min_coverage > 0 and len(canvas):
            keep = self.loss_weights(canvas, y, x) > 0
            canvas, y, x, ylo, yhi, xlo, xhi, weight = (
                a[keep] for a in (canvas, y, x, ylo, yhi, xlo, xhi, weight)
            )
        label = self.labels_at(canvas, y, x)
        exact = np.array([getattr(c, "layout", "scatter") == "exact" for c in self.canvases])
        exact = exact[canvas] if len(canvas) else np.zeros(0, dtype=bool)
        share = self.correction_share
        if share is None or not weight[exact].sum() or not weight[~exact].sum():
            prob = self._class_balanced(label, weight, np.ones(len(canvas), dtype=bool))
        else:
            prob = self._class_balanced(label, weight, ~exact) * (1.0 - share)
            prob[exact] = weight[exact] / weight[exact].sum() * share
        as_int = lambda a: a.astype(np.int64)  # noqa: E731
        cdf = np.cumsum(prob)
        return OriginTable(
            canvas, y, x, label, as_int(ylo), as_int(yhi), as_int(xlo), as_int(xhi), prob, cdf
        )

    def _class_balanced(self, label, weight, among) -> np.ndarray:
        """Draw chances over the entries ``among`` (others 0): ``class_shares`` per class,
        weight-proportional within a class; they sum to 1."""
        prob = np.zeros(len(label))
        present = [c for c in np.unique(label[among]) if weight[among & (label == c)].sum() > 0]
        shares = np.array([float(self.class_shares.get(self.classes[c], 1.0)) for c in present])
        shares = shares / shares.sum() if len(present) else shares
        for c, share in zip(present, shares):
            sel = among & (label == c)
            prob[sel] = weight[sel] / weight[sel].sum() * share
        return prob

    def labels_at(self, canvas_idx: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Label of the windows at these origins: the class under each window's centre."""
        return self._at_centres(self.label_maps, canvas_idx, ys, xs)

    def coverage_at(self, canvas_idx: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Share (0..1) of each window covered by the class under its centre."""
        return self._at_centres(self.coverage_maps, canvas_idx, ys, xs) / FULL_COVERAGE

    def loss_weights(self, canvas_idx: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """float (B,) weight of each window in the loss, by the sampler's coverage rule."""
        return coverage_weights(self.coverage_at(canvas_idx, ys, xs), self.coverage,
                                self.min_coverage)  # fmt: skip

    def _at_centres(self, maps, canvas_idx, ys, xs) -> np.ndarray:
        """``maps[canvas]`` read at each window's centre pixel (origin + window // 2)."""
        half = self.window // 2
        out = np.empty(len(canvas_idx), dtype=np.int64)
        for ci in np.unique(canvas_idx):
            sel = np.flatnonzero(canvas_idx == ci)
            out[sel] = maps[ci][ys[sel] + half, xs[sel] + half]
        return out

    def n_windows(self, split: str = "train") -> int:
        """Number of distinct windows on the step grid of ``split``."""
        return self.tables[self._split(split)].n_windows

    @staticmethod
    def _split(split: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return split

    def sample_origins(
        self, batch_size: int, rng: np.random.Generator, split: str = "train", jitter: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``batch_size`` window origins: (canvas index, y, x, label), all int64 (B,).

        ``jitter``: shift each origin by up to that many px off the step grid, inside its split
        region (exact samples stay put); the label follows the shifted window's centre."""
        table = self.tables[self._split(split)]
        if table.n_windows == 0:
            raise ValueError(f"no {split!r} windows: the canvases are too small to hold out a band")
        rows = np.minimum(np.searchsorted(table.cdf, rng.random(batch_size) * table.cdf[-1]),
                          table.n_windows - 1)  # fmt: skip
        canvas, ys, xs = table.canvas[rows], table.y[rows], table.x[rows]
        if jitter <= 0:
            return canvas, ys, xs, table.label[rows]
        shift = rng.integers(-jitter, jitter + 1, size=(2, batch_size))
        ys = np.clip(ys + shift[0], table.ylo[rows], table.yhi[rows])
        xs = np.clip(xs + shift[1], table.xlo[rows], table.xhi[rows])
        return canvas, ys, xs, self.labels_at(canvas, ys, xs)

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
        self, batch_size: int, rng: np.random.Generator, split: str = "train", jitter: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Random batch: (uint8 (B, window, window, 3), int64 labels (B,))."""
        canvas_idx, ys, xs, labels = self.sample_origins(batch_size, rng, split, jitter)
        return self.gather(canvas_idx, ys, xs), labels
