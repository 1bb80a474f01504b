"""The int8 sibling of a model file, and which of the two a CPU scores (issue 37.3).

After a model file is calibrated (mlcore.inference.calibration) it gets an int8 copy beside it
(``model.onnx`` -> ``model.int8.onnx``, and for a file scored densely its dense graph's copy
``model.dense.int8.onnx``, which the int8 file names as its ``dense_model``), quantized on the
calibration scene (mlcore.inference.quantization). The copy is kept only if it loses no more
than :data:`INT8_MARGIN` of the calibration scene's object F1 at the fp32 file's own thresholds
(the same thresholds score both: a version has one set); the fp32 file then names it
(``int8_model``) and records the check (``int8_check``), kept or not.

Which file is scored: :func:`scoring_file`, the one rule of the CLI and the scoring jobs (Spark
decides on the driver and ships the chosen files, so every partition of a run scores the same
graph). ``auto``: the int8 copy on CPUs with int8 dot-product units (VNNI, AMX), where ONNX
Runtime runs it about twice as fast (docs/speed.md, "Reduced precision scoring"); fp32
elsewhere, where its u8s8 kernels are slower and may saturate. ``MLCORE_SCORING_PRECISION``
(auto, fp32, int8) overrides it, e.g. for a cluster of mixed CPUs. Reported figures (the demo's,
the benches') are fp32's unless a bench says otherwise.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import numpy as np

PRECISION_ENV = "MLCORE_SCORING_PRECISION"
PRECISIONS = ("auto", "fp32", "int8")
# The promotion margin (docs/loop.md): about twice a retrain's seed-to-seed spread of the same
# figure, so an int8 copy within it is as good as the fp32 file by what can be measured.
INT8_MARGIN = 0.01
INT8_UNITS = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo flags
CALIBRATION_WINDOWS = 2048  # per-window files: windows of the calibration scene's grid
CALIBRATION_TILE_PX = 1024  # dense graphs: the calibration scene cut into tiles at most this


@functools.cache
def int8_units() -> tuple[str, ...]:
    """This CPU's int8 dot-product units (Linux /proc/cpuinfo flags); () where unknown. Read
    once a process: the CPU does not change under it."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    return tuple(unit for unit in INT8_UNITS if unit in flags)


def int8_sibling_path(model_path) -> Path | None:
    """The int8 copy an fp32 model file names (``int8_model``) when it lies beside it."""
    from mlcore.model.onnx_file import read_metadata

    path = Path(model_path)
    if path.suffix != ".onnx" or not path.is_file():
        return None
    name = read_metadata(path).get("int8_model")
    if not isinstance(name, str) or Path(name).name != name:
        return None
    sibling = path.with_name(name)
    return sibling if sibling.is_file() else None


def scoring_precision(precision: str | None = None) -> str:
    """``precision``, else $MLCORE_SCORING_PRECISION, else auto; refused in words if unknown."""
    value = (precision or os.environ.get(PRECISION_ENV) or "auto").strip().lower()
    if value not in PRECISIONS:
        raise ValueError(
            f"scoring precision must be one of {', '.join(PRECISIONS)}, not {value!r} "
            f"(the --precision option or ${PRECISION_ENV})"
        )
    return value


def scoring_file(model_path, precision: str | None = None) -> Path:
    """The file to score for ``model_path``: its int8 sibling when there is one and ``precision``
    (:func:`scoring_precision`) is int8, or auto on a CPU with int8 units; else the file."""
    path = Path(model_path)
    chosen = scoring_precision(precision)
    if chosen == "fp32":
        return path
    sibling = int8_sibling_path(path)
    if sibling is not None and (chosen == "int8" or int8_units()):
        return sibling
    return path


def calibration_windows(image: np.ndarray, window: int, step: int, n: int, seed: int = 0):
    """``n`` windows of the scene's grid at ``step``, drawn without replacement (uint8)."""
    from mlcore.data.windows import full_window_view, grid_positions

    ys = grid_positions(image.shape[0], window, step)
    xs = grid_positions(image.shape[1], window, step)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(ys) * len(xs), size=min(n, len(ys) * len(xs)), replace=False))
    view = full_window_view(image, window)
    return np.stack([view[ys[i // len(xs)], xs[i % len(xs)]] for i in picks])


def calibration_tiles(image: np.ndarray, tile: int = CALIBRATION_TILE_PX) -> list[np.ndarray]:
    """The scene cut into tiles of at most ``tile`` px a side (a dense graph's samples)."""
    height, width = image.shape[:2]
    return [np.ascontiguousarray(image[y : y + tile, x : x + tile])
            for y in range(0, height, tile) for x in range(0, width, tile)]  # fmt: skip


def held_out_f1_at(grid, truth, thresholds: dict) -> float:
    """The calibration scene's object F1 (mean over the positive classes) of its ``grid`` at
    the given per-class ``thresholds``."""
    from mlcore.eval.metrics import object_metrics
    from mlcore.inference.postprocess import default_negative, detections

    negative = default_negative(grid.classes)
    dets = detections(grid, thresholds=thresholds, negative=negative)
    per_class = object_metrics(dets, truth, grid.classes, negative=negative)["per_class"]
    return round(float(np.mean([per_class[c]["f1"] for c in thresholds])), 4)


def _scored(model_path, image, step: int):
    """The scene's grid, ``model_path`` scored as it says (densely or per window)."""
    from mlcore.inference.model_file_scoring import score_with_model_file
    from mlcore.ingest.scenes import ArrayScene

    return score_with_model_file(model_path, ArrayScene(image), step, batch_size=1024)[0]


def check_words(check: dict | None) -> str:
    """An int8 check (:func:`write_int8_sibling`) in words, for logs and the CLI."""
    if not check:
        return "none made (not calibrated)"
    verdict = "kept" if check["kept"] else f"not kept (it loses more than {check['margin']})"
    return (f"{verdict}: calibration-scene F1 {check['int8_f1']} vs fp32 {check['fp32_f1']}, "
            f"{check['seconds']} s")  # fmt: skip


def write_int8_sibling(model_path, canvas_set, step: int = 16, margin: float = INT8_MARGIN,
                       fp32_grid=None):  # fmt: skip
    """Quantize the calibrated fp32 file ``model_path`` (and its dense graph) on the canvas
    set's calibration scene, check it there against the fp32 file (its grid of that scene,
    ``fp32_grid``, scored here when not given), and keep it beside the file (named in its
    ``int8_model``) if it loses at most ``margin``; else delete it. Records and returns the
    check: ``{"kept", "fp32_f1", "int8_f1", "margin", "files", "seconds"}``."""
    from mlcore.inference.dense_scoring import dense_model_path
    from mlcore.inference.quantization import quantize_model_file
    from mlcore.model.onnx_file import read_metadata, write_metadata

    started = time.perf_counter()
    path = Path(model_path)
    meta = read_metadata(path)
    thresholds = meta.get("thresholds")
    if not thresholds or canvas_set.calibration is None:
        raise ValueError(f"{path} is not calibrated on a calibration scene: calibrate it first")
    image, truth = canvas_set.calibration
    image = np.asarray(image)
    int8 = path.with_name(f"{path.stem}.int8.onnx")
    windows = calibration_windows(image, int(meta["window"]), step, CALIBRATION_WINDOWS)
    quantize_model_file(path, int8, windows)
    files = [int8]
    dense = dense_model_path(path)
    if dense is not None:
        dense_int8 = path.with_name(f"{path.stem}.dense.int8.onnx")
        quantize_model_file(dense, dense_int8, calibration_tiles(image))
        write_metadata(int8, {"dense_model": dense_int8.name})
        files.append(dense_int8)
    fp32_grid = fp32_grid if fp32_grid is not None else _scored(path, image, step)
    fp32_f1 = held_out_f1_at(fp32_grid, truth, thresholds)
    int8_f1 = held_out_f1_at(_scored(int8, image, step), truth, thresholds)
    kept = int8_f1 >= fp32_f1 - margin
    check = {"kept": kept, "fp32_f1": fp32_f1, "int8_f1": int8_f1, "margin": margin,
             "files": [f.name for f in files] if kept else [],
             "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    if not kept:
        for each in files:
            each.unlink(missing_ok=True)
    write_metadata(path, {"int8_check": check} | ({"int8_model": int8.name} if kept else {}))
    return check
