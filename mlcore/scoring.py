"""Score every window of a scene: numpy + ONNX Runtime only (no PyTorch, no MXNet needed).

Windows are copied straight from the scene strip into one preallocated uint8 batch buffer (the
model normalises inside its graph), the batch is carried across strips so every batch but the last
is full, and the next strip is read in a background thread while the current one is scored. Peak
memory is one or two strips plus the (small) probability grid, whatever the scene size.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from mlcore.progress import Progress, report
from mlcore.windows import full_window_view, grid_positions

STRIP_BYTES = 64 * 1024 * 1024  # automatic strip height: about this many pixel bytes per strip


@runtime_checkable
class Scorer(Protocol):
    classes: list[str]
    window: int

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, window, window, 3) -> float32 probabilities (B, len(classes))."""


class OnnxScorer:
    """ONNX Runtime session over a model file in the format of ARCHITECTURE.md."""

    def __init__(self, path, providers=None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file {self.path} does not exist")
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider",) if p in available]
            providers.append("CPUExecutionProvider")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        # No busy-waiting between runs: with batches of hundreds of windows a run is long, and
        # spinning threads only take the cores from the window gathering, the strip reader and
        # other processes (10% fewer windows/s with 2 threads on the loaded 2-core dev machine).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ValueError(
                f"model file {self.path} is corrupt or not an ONNX model ({exc}); "
                "re-export it or restore the model version"
            ) from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)":
            raise ValueError(
                f"{self.path}: expected one uint8 NHWC input 'images', got "
                f"{[(i.name, i.type) for i in inputs]}"
            )
        self.input_name = inputs[0].name
        self.output_name = self.session.get_outputs()[0].name
        if "classes" not in meta:
            raise ValueError(f"{self.path} has no 'classes' metadata: export it with mlcore.export")
        self.classes = list(json.loads(meta["classes"]))
        shape_window = inputs[0].shape[1]
        self.window = int(meta.get("window", shape_window))
        self.metadata = dict(meta)
        # Calibrated per-class thresholds (mlcore.calibration), None for an uncalibrated model.
        self.thresholds = json.loads(meta["thresholds"]) if "thresholds" in meta else None
        self.providers = self.session.get_providers()

    def predict(self, images: np.ndarray) -> np.ndarray:
        if (
            images.dtype != np.uint8
            or images.ndim != 4
            or images.shape[1:]
            != (
                self.window,
                self.window,
                3,
            )
        ):
            raise ValueError(
                f"expected uint8 windows (B, {self.window}, {self.window}, 3), "
                f"got {images.dtype} {images.shape}"
            )
        out = self.session.run([self.output_name], {self.input_name: images})[0]
        return np.asarray(out, dtype=np.float32)


def load_scorer(path, **kwargs) -> Scorer:
    """Open a model file: ONNX directly, other formats through their engine (engines registry)."""
    from mlcore.engines import engine_for_model_file, get_engine

    path = Path(path)
    engine = engine_for_model_file(path)
    if engine is not None:
        return get_engine(engine).load_scorer(path)
    return OnnxScorer(path, **kwargs)


@dataclass
class ScoreGrid:
    """Probabilities of every window: ``probs[i, j]`` is the window at (ys[i], xs[j])."""

    ys: np.ndarray
    xs: np.ndarray
    probs: np.ndarray  # float32 (R, K, C)
    classes: list[str]
    window: int
    step: int

    def __post_init__(self):
        self.ys = np.asarray(self.ys, dtype=np.int64)
        self.xs = np.asarray(self.xs, dtype=np.int64)
        self.probs = np.asarray(self.probs, dtype=np.float32)
        self.classes = list(self.classes)
        expected = (len(self.ys), len(self.xs), len(self.classes))
        if self.probs.shape != expected:
            raise ValueError(f"probs has shape {self.probs.shape}, expected {expected}")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ys), len(self.xs)

    def save(self, path) -> Path:
        """Write a .npz atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            ys=self.ys,
            xs=self.xs,
            probs=self.probs,
            classes=np.array(json.dumps(self.classes)),
            window=np.int64(self.window),
            step=np.int64(self.step),
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> ScoreGrid:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"score grid {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    data["ys"],
                    data["xs"],
                    data["probs"],
                    json.loads(str(data["classes"])),
                    int(data["window"]),
                    int(data["step"]),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable score grid: {exc}") from exc

    def to_rows(self) -> dict[str, np.ndarray]:
        """Columns for Parquet egress, one entry per window in row-major order:
        ``y, x, p_<class>..., label`` (label = the most probable class)."""
        yy, xx = np.meshgrid(self.ys, self.xs, indexing="ij")
        flat = self.probs.reshape(-1, len(self.classes))
        columns: dict[str, np.ndarray] = {"y": yy.ravel(), "x": xx.ravel()}
        for k, name in enumerate(self.classes):
            columns[f"p_{name}"] = flat[:, k]
        columns["label"] = np.asarray(self.classes, dtype=object)[flat.argmax(1)]
        return columns


class _Batcher:
    """Fills one preallocated uint8 batch from strips; results land in ``out[dest]``."""

    def __init__(self, scorer: Scorer, batch_size: int, out: np.ndarray):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        w = scorer.window
        self.scorer, self.out = scorer, out
        self.buffer = np.empty((batch_size, w, w, 3), dtype=np.uint8)
        self.dest = np.empty(batch_size, dtype=np.int64)
        self.fill = 0

    def add_strip(self, strip: np.ndarray, local_rows, xs: np.ndarray, first_index: int) -> None:
        view = full_window_view(strip, self.scorer.window)  # zero-copy
        size, k = len(self.buffer), len(xs)
        runs = _regular_runs(xs)
        for i, r in enumerate(local_rows):
            row = view[r]  # (W - w + 1, w, w, 3) view
            for a, b, x0, stride in runs:
                j = a
                while j < b:
                    n = min(b - j, size - self.fill)
                    x = x0 + (j - a) * stride
                    # A strided view of n windows, copied once into the batch. (np.take would
                    # first copy the whole row of every-pixel windows: W x 3 KB per window row.)
                    self.buffer[self.fill : self.fill + n] = row[
                        x : x + (n - 1) * stride + 1 : stride
                    ]
                    start = first_index + i * k + j
                    self.dest[self.fill : self.fill + n] = np.arange(start, start + n)
                    self.fill += n
                    j += n
                    if self.fill == size:
                        self.flush()

    def flush(self) -> None:
        if self.fill:
            self.out[self.dest[: self.fill]] = self.scorer.predict(self.buffer[: self.fill])
            self.fill = 0


def _regular_runs(xs: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Split increasing origins into arithmetic runs ``(first, end, x0, stride)``: origins
    ``xs[first:end] == x0 + stride * arange(end - first)``. A step grid is one run (plus the
    clamped last origin), so a row of windows is gathered by a few strided copies."""
    xs = np.asarray(xs, dtype=np.int64)
    runs, a, k = [], 0, len(xs)
    diffs = np.diff(xs)
    while a < k:
        if a == k - 1 or diffs[a] <= 0:
            runs.append((a, a + 1, int(xs[a]), 1))
            a += 1
            continue
        d = diffs[a]
        b = a + 1
        while b < k - 1 and diffs[b] == d:
            b += 1
        runs.append((a, b + 1, int(xs[a]), int(d)))
        a = b + 1
    return runs


def _check_strip(strip: np.ndarray, window: int) -> None:
    if strip.dtype != np.uint8 or strip.ndim != 3 or strip.shape[2] != 3:
        raise ValueError(f"expected uint8 pixels (H, W, 3), got {strip.dtype} {strip.shape}")


def score_strip(
    scorer: Scorer, strip: np.ndarray, row_starts, xs, batch_size: int = 512
) -> np.ndarray:
    """Score the windows at (row_starts x xs) of ``strip`` (pixel rows ``[row_starts[0],
    row_starts[-1] + window)`` of the scene; ``row_starts`` absolute). Returns float32 (R, K, C)."""
    row_starts = np.asarray(row_starts, dtype=np.int64)
    xs = np.asarray(xs, dtype=np.int64)
    w = scorer.window
    _check_strip(strip, w)
    if len(row_starts) == 0 or len(xs) == 0:
        return np.zeros((len(row_starts), len(xs), len(scorer.classes)), dtype=np.float32)
    local = row_starts - row_starts[0]
    if strip.shape[0] < local[-1] + w or xs.min() < 0 or xs.max() + w > strip.shape[1]:
        raise ValueError(
            f"strip of {strip.shape[0]}x{strip.shape[1]} px does not hold windows at rows "
            f"{row_starts[0]}..{row_starts[-1]} and columns {xs.min()}..{xs.max()} (window {w})"
        )
    out = np.empty((len(row_starts) * len(xs), len(scorer.classes)), dtype=np.float32)
    batcher = _Batcher(scorer, batch_size, out)
    batcher.add_strip(strip, local, xs, 0)
    batcher.flush()
    return out.reshape(len(row_starts), len(xs), -1)


def auto_rows_per_strip(width: int, window: int, step: int) -> int:
    """Window rows per strip so that a strip holds about STRIP_BYTES of pixels."""
    pixel_rows = STRIP_BYTES // max(1, width * 3)
    return max(1, (pixel_rows - window) // step + 1)


def score_scene(
    scorer: Scorer,
    reader,
    step: int,
    batch_size: int = 512,
    progress: Progress | None = None,
    rows_per_strip: int | None = None,
) -> ScoreGrid:
    """Score every window of ``reader`` (``.height``, ``.width``, ``.read_rows(y0, y1)``).

    Reads strip by strip (``rows_per_strip`` window rows each; auto: ~64 MB of pixels), so a scene
    larger than memory works. Batches run across strip boundaries, which makes the result
    independent of the strip height, bit for bit.
    """
    w = scorer.window
    ys = grid_positions(int(reader.height), w, step)
    xs = grid_positions(int(reader.width), w, step)
    rows = rows_per_strip or auto_rows_per_strip(int(reader.width), w, step)
    out = np.empty((len(ys) * len(xs), len(scorer.classes)), dtype=np.float32)
    batcher = _Batcher(scorer, batch_size, out)
    chunks = [(i, min(i + rows, len(ys))) for i in range(0, len(ys), rows)]

    def read(chunk):
        a, b = chunk
        strip = np.asarray(reader.read_rows(int(ys[a]), int(ys[b - 1]) + w))
        _check_strip(strip, w)
        expected = (int(ys[b - 1]) + w - int(ys[a]), int(reader.width))
        if strip.shape[:2] != expected:
            raise ValueError(f"read_rows({ys[a]}, {ys[b - 1] + w}) gave {strip.shape}")
        return strip

    report(progress, 0, len(ys), "scoring")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="strip-reader") as pool:
        pending = pool.submit(read, chunks[0])
        for n, (a, b) in enumerate(chunks):
            strip = pending.result()
            if n + 1 < len(chunks):
                pending = pool.submit(read, chunks[n + 1])  # overlap I/O with scoring
            batcher.add_strip(strip, ys[a:b] - ys[a], xs, a * len(xs))
            del strip
            report(progress, b, len(ys), f"scored {b} of {len(ys)} window rows")
    batcher.flush()
    return ScoreGrid(ys, xs, out.reshape(len(ys), len(xs), -1), scorer.classes, w, step)
