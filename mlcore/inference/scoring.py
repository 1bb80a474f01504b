"""Score every window of a scene: numpy + ONNX Runtime only (no PyTorch, no MXNet needed).

Windows are copied straight from the scene strip into one preallocated uint8 batch buffer (the
model normalises inside its graph), the batch is carried across strips so every batch but the last
is full, and the next strip is read in a background thread while the current one is scored. Peak
memory is one or two strips plus the (small) probability grid, whatever the scene size.

Besides ``probs`` a model file may output ``boxes`` and ``centredness`` (ARCHITECTURE.md, "model
file"); they are scored alongside and land in the grid. A model without them gives a grid
without them, which post-processing reads as "box = the window, centredness = 1".

Objects of any size (docs/own-data.md): with ``scene_window`` s other than the model's window w,
each scoring window is s x s scene pixels, resized to w x w by area averaging before the network,
and the grid (origins, ``window``, ``step``, ``boxes``) is in scene pixels, so that everything
downstream (NMS, detections, metrics, the queue's crops) never sees the model's scale.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from mlcore.data.windows import full_window_view, grid_positions, resize_windows
from mlcore.progress import Progress, report

STRIP_BYTES = 64 * 1024 * 1024  # automatic strip height: about this many pixel bytes per strip
# The outputs a model file may have beyond "probs", and the shape of one window's value.
REFINEMENTS = {"boxes": (4,), "centredness": ()}


@runtime_checkable
class Scorer(Protocol):
    classes: list[str]
    window: int

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, window, window, 3) -> float32 probabilities (B, len(classes))."""


def scorer_outputs(scorer) -> tuple[str, ...]:
    """The outputs a scorer gives: "probs", then those of REFINEMENTS it has (a scorer without
    ``output_names``, e.g. another engine's, gives probs only)."""
    return tuple(getattr(scorer, "output_names", ("probs",)))


def predict_outputs(scorer, images: np.ndarray) -> dict[str, np.ndarray]:
    """{output name: float32 (B, ...)} of one batch, for every output of ``scorer``."""
    if hasattr(scorer, "predict_all"):
        return scorer.predict_all(images)
    return {"probs": scorer.predict(images)}


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
        names = [o.name for o in self.session.get_outputs()]
        # "probs" by name; an older file's first output whatever its name.
        self.output_name = "probs" if "probs" in names else names[0]
        self.output_names = ("probs", *(n for n in REFINEMENTS if n in names))
        if "classes" not in meta:
            raise ValueError(
                f"{self.path} has no 'classes' metadata: export it with mlcore.model.export"
            )
        self.classes = list(json.loads(meta["classes"]))
        shape_window = inputs[0].shape[1]
        self.window = int(meta.get("window", shape_window))
        self.metadata = dict(meta)
        # Calibrated per-class thresholds (mlcore.inference.calibration), None for an uncalibrated
        # model.
        self.thresholds = json.loads(meta["thresholds"]) if "thresholds" in meta else None
        self.providers = self.session.get_providers()

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._check(images)
        out = self.session.run([self.output_name], {self.input_name: images})[0]
        return np.asarray(out, dtype=np.float32)

    def predict_all(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """{"probs": (B, C), and where the model has them "boxes": (B, 4) x0, y0, x1, y1 in
        pixels from the window's origin, "centredness": (B,)}, all float32, in one run."""
        self._check(images)
        names = [self.output_name, *self.output_names[1:]]
        values = self.session.run(names, {self.input_name: images})
        out = {"probs": np.asarray(values[0], dtype=np.float32)}
        for name, value in zip(self.output_names[1:], values[1:]):
            shape = (len(images), *REFINEMENTS[name])
            value = np.asarray(value, dtype=np.float32)
            if value.size != int(np.prod(shape)):
                raise ValueError(f"{self.path}: output {name!r} has shape {value.shape}, "
                                 f"expected {shape}")  # fmt: skip
            out[name] = value.reshape(shape)  # a (B, 1) centredness becomes (B,)
        return out

    def _check(self, images: np.ndarray) -> None:
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
    """Probabilities of every window: ``probs[i, j]`` is the window at (ys[i], xs[j]). From a
    model with refinements also ``boxes[i, j]`` (x0, y0, x1, y1 of its object in pixels from
    the window's origin) and ``centredness[i, j]``; None where the model has none."""

    ys: np.ndarray
    xs: np.ndarray
    probs: np.ndarray  # float32 (R, K, C)
    classes: list[str]
    window: int
    step: int
    boxes: np.ndarray | None = None  # float32 (R, K, 4)
    centredness: np.ndarray | None = None  # float32 (R, K)

    def __post_init__(self):
        self.ys = np.asarray(self.ys, dtype=np.int64)
        self.xs = np.asarray(self.xs, dtype=np.int64)
        self.probs = np.asarray(self.probs, dtype=np.float32)
        self.classes = list(self.classes)
        expected = (len(self.ys), len(self.xs), len(self.classes))
        if self.probs.shape != expected:
            raise ValueError(f"probs has shape {self.probs.shape}, expected {expected}")
        for name, tail in REFINEMENTS.items():
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float32)
            if value.shape != expected[:2] + tail:
                raise ValueError(f"{name} has shape {value.shape}, expected {expected[:2] + tail}")
            setattr(self, name, value)

    def refinements(self) -> dict[str, np.ndarray]:
        """{name: array} of the refinements this grid has."""
        return {n: getattr(self, n) for n in REFINEMENTS if getattr(self, n) is not None}

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
            **self.refinements(),
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
                # A grid saved before refinements existed has none.
                refinements = {n: data[n] for n in REFINEMENTS if n in data.files}
                return cls(
                    data["ys"],
                    data["xs"],
                    data["probs"],
                    json.loads(str(data["classes"])),
                    int(data["window"]),
                    int(data["step"]),
                    **refinements,
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable score grid: {exc}") from exc

    def to_rows(self) -> dict[str, np.ndarray]:
        """Columns for Parquet egress, one entry per window in row-major order:
        ``y, x, p_<class>..., label`` (label = the most probable class), then where the grid has
        them ``box_x0, box_y0, box_x1, box_y1`` and ``centredness``."""
        yy, xx = np.meshgrid(self.ys, self.xs, indexing="ij")
        flat = self.probs.reshape(-1, len(self.classes))
        columns: dict[str, np.ndarray] = {"y": yy.ravel(), "x": xx.ravel()}
        for k, name in enumerate(self.classes):
            columns[f"p_{name}"] = flat[:, k]
        columns["label"] = np.asarray(self.classes, dtype=object)[flat.argmax(1)]
        return columns | self.refinement_columns()

    def refinement_columns(self) -> dict[str, np.ndarray]:
        """``box_x0, box_y0, box_x1, box_y1, centredness`` (those the grid has), row-major."""
        columns = {}
        if self.boxes is not None:
            flat = self.boxes.reshape(-1, 4)
            for k, name in enumerate(("box_x0", "box_y0", "box_x1", "box_y1")):
                columns[name] = flat[:, k]
        if self.centredness is not None:
            columns["centredness"] = self.centredness.reshape(-1)
        return columns


def scene_geometry(window: int, object_size: int | None, step: int) -> tuple[int, int]:
    """(scene window, scene step) in scene pixels for a model of ``window`` px and objects of
    ``object_size`` px on the scene (None: the window, today's behaviour); ``step`` is the scoring
    step at the model's scale, scaled with the window (at least 1 px)."""
    size = int(object_size or window)
    if size < 1 or window < 1 or step < 1:
        raise ValueError(
            f"object size, window and step must be positive, got {size}, {window}, {step}"
        )
    return size, max(1, int(round(step * size / window)))


def output_arrays(scorer, n: int) -> dict[str, np.ndarray]:
    """Empty float32 results for ``n`` windows, one array per output of ``scorer``."""
    tails = {"probs": (len(scorer.classes),)} | REFINEMENTS
    return {name: np.empty((n, *tails[name]), dtype=np.float32) for name in scorer_outputs(scorer)}


class _Batcher:
    """Fills one preallocated uint8 batch from strips; each output lands in ``out[name][dest]``."""

    def __init__(
        self,
        scorer: Scorer,
        batch_size: int,
        out: dict[str, np.ndarray],
        scene_window: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.scorer, self.out = scorer, out
        # Windows are cut at the scene's size and resized to the model's at flush.
        self.size = int(scene_window or scorer.window)
        s = self.size
        self.buffer = np.empty((batch_size, s, s, 3), dtype=np.uint8)
        self.dest = np.empty(batch_size, dtype=np.int64)
        self.fill = 0

    def add_strip(self, strip: np.ndarray, local_rows, xs: np.ndarray, first_index: int) -> None:
        view = full_window_view(strip, self.size)  # zero-copy
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
            dest = self.dest[: self.fill]
            w = self.scorer.window
            images = resize_windows(self.buffer[: self.fill], w)
            if len(self.out) == 1:  # probs only: the one call every scorer has
                self.out["probs"][dest] = self.scorer.predict(images)
            else:
                results = predict_outputs(self.scorer, images)
                if "boxes" in results and self.size != w:  # model pixels -> scene pixels
                    results["boxes"] = results["boxes"] * np.float32(self.size / w)
                for name, values in self.out.items():
                    values[dest] = results[name]
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
    scorer: Scorer,
    strip: np.ndarray,
    row_starts,
    xs,
    batch_size: int = 512,
    scene_window: int | None = None,
) -> dict[str, np.ndarray]:
    """Score the windows at (row_starts x xs) of ``strip`` (pixel rows ``[row_starts[0],
    row_starts[-1] + window)`` of the scene; ``row_starts`` absolute). ``scene_window``: the
    windows' size in the scene (default the model's), each resized to the model's window.
    Every output of the scorer, float32: {"probs": (R, K, C), and where the model has them
    "boxes": (R, K, 4) in scene pixels, "centredness": (R, K)}."""
    row_starts = np.asarray(row_starts, dtype=np.int64)
    xs = np.asarray(xs, dtype=np.int64)
    w = int(scene_window or scorer.window)
    _check_strip(strip, w)
    shape = (len(row_starts), len(xs))
    if len(row_starts) == 0 or len(xs) == 0:
        return {n: a.reshape(*shape, *a.shape[1:]) for n, a in output_arrays(scorer, 0).items()}
    local = row_starts - row_starts[0]
    if strip.shape[0] < local[-1] + w or xs.min() < 0 or xs.max() + w > strip.shape[1]:
        raise ValueError(
            f"strip of {strip.shape[0]}x{strip.shape[1]} px does not hold windows at rows "
            f"{row_starts[0]}..{row_starts[-1]} and columns {xs.min()}..{xs.max()} (window {w})"
        )
    out = output_arrays(scorer, len(row_starts) * len(xs))
    batcher = _Batcher(scorer, batch_size, out, w)
    batcher.add_strip(strip, local, xs, 0)
    batcher.flush()
    return {name: a.reshape(*shape, *a.shape[1:]) for name, a in out.items()}


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
    scene_window: int | None = None,
) -> ScoreGrid:
    """Score every window of ``reader`` (``.height``, ``.width``, ``.read_rows(y0, y1)``).

    ``scene_window``: the windows' size in scene pixels (default the model's window; see
    :func:`scene_geometry`), ``step`` in scene pixels too; the grid is in scene pixels.

    Reads strip by strip (``rows_per_strip`` window rows each; auto: ~64 MB of pixels), so a scene
    larger than memory works. Batches run across strip boundaries, which makes the result
    independent of the strip height, bit for bit.
    """
    w = int(scene_window or scorer.window)
    ys = grid_positions(int(reader.height), w, step)
    xs = grid_positions(int(reader.width), w, step)
    rows = rows_per_strip or auto_rows_per_strip(int(reader.width), w, step)
    out = output_arrays(scorer, len(ys) * len(xs))
    batcher = _Batcher(scorer, batch_size, out, w)
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
    shaped = {name: a.reshape(len(ys), len(xs), *a.shape[1:]) for name, a in out.items()}
    return ScoreGrid(ys, xs, shaped.pop("probs"), scorer.classes, w, step, **shaped)
