"""mlcore hot paths side by side with their baselines (CPU), plus the GPU part (``run_gpu``).

CPU figures (``run``):

* scoring: ``mlcore.inference.scoring.score_scene`` (strip reading, window gathering, batching,
  results) vs the bare ONNX Runtime session on ready-made batches of the same size, same session;
* scoring cost per window of a model with a box head (the ``boxes`` and ``centredness``
  outputs) vs the same backbone without it, both through ``score_scene``;
* peak RSS scoring a 20,000 x 20,000 scene ``.npy`` from disk, in a child process (VmHWM),
  vs the bytes of the scene itself (what loading it whole would cost at least);
* canvas preparation of the published-size training set (2.3 million windows at step 8 from
  canvases of cars, boats and negatives; CIFAR-10 from ../shared/data when present) vs the
  original approach of one PNG file per window, measured on a sample and extrapolated.

GPU figures (``run_gpu``, ``bench/run_all.py --gpu``): training windows/s with bf16 autocast,
channels_last, torch.compile and CUDA graphs, with the fraction of the card's bf16 peak; scoring
windows/s of a large scene end to end with ONNX Runtime's CUDA provider and with PyTorch.

    .venv/bin/python bench/bench_mlcore.py [--quick] [--gpu]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PYTHON, error_row, median_rate, row, run_json  # noqa: E402

PUBLISHED_WINDOWS = 2_300_000  # the published training set: 2.3 million windows at step 8
PUBLISHED_EPOCH_MIN = 27.0  # minutes per epoch, batch 128, one Tesla K80
CLASSES = ["car", "boat", "negative"]
RSS_LIMIT_MB = 2048


# -- shared fixtures ----------------------------------------------------------------------------


def export_resnet(path: Path, depth: int = 20, width: int = 16) -> Path:
    """A ResNet (random weights: speed does not depend on them) as the ONNX hand-off file."""
    import torch

    from mlcore.model.export import export_onnx
    from mlcore.model.network import build_model

    torch.manual_seed(0)
    return export_onnx(build_model(len(CLASSES), depth, width), path, CLASSES)


def write_scene_npy(path: Path, height: int, width: int, seed: int = 0, band: int = 512) -> Path:
    """A random-pixel scene written band by band (never whole in memory)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(height, width, 3))
    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, (band, width, 3), dtype=np.uint8)
    for y in range(0, height, band):
        n = min(band, height - y)
        out[y : y + n] = np.roll(block[:n], y // band * 97, axis=1)  # cheap, not repeating
    out.flush()
    del out
    return path


def disk_bytes(directory: Path) -> int:
    """Bytes the files under ``directory`` take on disk (allocated blocks, like ``du``)."""
    return sum(p.stat().st_blocks * 512 for p in directory.rglob("*") if p.is_file())


# -- scoring vs bare ONNX Runtime ---------------------------------------------------------------


def bench_scoring(work: Path, quick: bool) -> list[dict]:
    from mlcore.inference.scoring import OnnxScorer, score_scene
    from mlcore.ingest.scenes import ArrayScene

    batch, step = 1024, 16
    # 64 x (32 or 64) window origins: every batch of both paths is full (no ragged last batch).
    cols = 32 if quick else 64
    height, width = 32 + 63 * step, 32 + (cols - 1) * step
    scene = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    scorer = OnnxScorer(export_resnet(work / "resnet20.onnx"))
    ready = scene[:32, : 32 * batch // 32].reshape(32, -1, 32, 3).transpose(1, 0, 2, 3)
    ready = np.ascontiguousarray(np.resize(ready, (batch, 32, 32, 3)))
    n_windows = 64 * cols

    def bare() -> int:
        for _ in range(n_windows // batch):
            scorer.session.run([scorer.output_name], {scorer.input_name: ready})
        return n_windows

    def full() -> int:
        grid = score_scene(scorer, ArrayScene(scene), step, batch)
        return grid.probs.shape[0] * grid.probs.shape[1]

    bare(), full()  # warm-up: ORT allocations for this batch shape
    # Interleaved repeats, best of each: the machine is shared, the least disturbed run is the
    # closest to what the code can do, and both sides get the same treatment.
    rounds = 3 if quick else 6
    rates_bare, rates_full = [], []
    for _ in range(rounds):
        rates_bare.append(median_rate(bare, repeats=1))
        rates_full.append(median_rate(full, repeats=1))
    ours, base = max(rates_full), max(rates_bare)
    return [
        row(
            "CPU scoring, full path (score_scene) vs bare ORT",
            ours,
            "windows/s",
            f"bare ONNX Runtime session.run, batch {batch}",
            base,
            ">= 0.90x",
            ours / base >= 0.90,
            f"ResNet-20, {height}x{width} random scene, step {step}, batch {batch}, best of "
            f"{rounds} interleaved runs each",
        )
    ]


def bench_dense_scoring(work: Path, quick: bool) -> list[dict]:
    """The trunk over the scene once (mlcore.inference.dense_scoring) against the network once per
    window (score_scene), the same model and scene, at step 16 and 8, interleaved repeats."""
    import torch

    from mlcore.inference.dense_scoring import (
        export_dense_onnx,
        open_dense_scorer,
        score_scene_dense,
    )
    from mlcore.inference.scoring import OnnxScorer, score_scene
    from mlcore.ingest.scenes import ArrayScene
    from mlcore.model.export import export_onnx
    from mlcore.model.network import build_model

    torch.manual_seed(0)
    # the box head of a model trained for dense scoring (TrainConfig.box_pool: quadrants)
    model = build_model(len(CLASSES), depth=20, width=16, box_head=True, box_pool="quadrants")
    model = model.eval()
    per_window = export_onnx(model, work / "dense-per-window.onnx", CLASSES)
    export_dense_onnx(model, work / "dense-trunk.onnx", CLASSES, per_window_path=per_window)
    side = 512 if quick else 1024
    scene = ArrayScene(np.random.default_rng(2).integers(0, 256, (side, side, 3), dtype=np.uint8))
    scorer, dense = OnnxScorer(per_window), open_dense_scorer(per_window)
    rows = []
    for step in (16, 8):

        def windows(grid) -> int:
            return grid.probs.shape[0] * grid.probs.shape[1]

        def per_window_run(step=step) -> int:
            return windows(score_scene(scorer, scene, step, 1024))

        def dense_run(step=step) -> int:
            return windows(score_scene_dense(dense, scene, step))

        per_window_run(), dense_run()  # warm-up
        rounds = 2 if quick else 3
        slow = max(median_rate(per_window_run, repeats=1) for _ in range(rounds))
        fast = max(median_rate(dense_run, repeats=1) for _ in range(rounds))
        rows.append(row(
            f"CPU scoring step {step}: dense trunk vs per window", fast, "windows/s",
            f"per window (score_scene), step {step}", slow, ">= 3x at step 16",
            None if step != 16 else fast / slow >= 3,
            f"ResNet-20 w16 + quadrant box head (random weights), {side}x{side} random scene, "
            f"best of {rounds}",
        ))  # fmt: skip
    return rows


# px of windows a dense tile covers each way: 1024 (TILE_PX until 2026-12-06), then smaller ones
# (512 px: 0.81x the speed, measured 2026-12-06 on a 640-row scene, docs/speed.md)
DENSE_TILES = (1024, 768)


def dense_rss_child(scene_path: str, model_path: str, tile: int) -> dict:
    """Runs in a fresh process: score the scene from disk densely in tiles of ``tile`` px;
    report the peak RSS (ONNX Runtime's activations grow with the tile, the band read with the
    tile's height times the scene's width)."""
    from mlcore.inference.dense_scoring import open_dense_scorer, score_scene_dense
    from mlcore.ingest.scenes import NpyScene

    scorer = open_dense_scorer(model_path, threads=1)  # as one Spark task: a core each
    reader = NpyScene(scene_path)  # range reads, copied: as an executor reads from storage
    started = time.perf_counter()
    per = tile // 16
    grid = score_scene_dense(scorer, reader, 16, rows_per_strip=per, cols_per_tile=per)
    seconds = time.perf_counter() - started
    windows = int(grid.probs.shape[0] * grid.probs.shape[1])
    return {"peak_rss_mb": peak_rss_mb(), "windows": windows, "windows_per_s": windows / seconds}


def bench_dense_tiles(work: Path, quick: bool) -> list[dict]:
    """Dense scoring in smaller tiles (768 px) against 1024 px: memory against the halo's extra
    work, on two 1,104-row bands of a gigapixel scene's width (32,768 px), each run in its own
    one-thread process (a Spark task's), alternated."""
    import torch

    from mlcore.inference.dense_scoring import export_dense_onnx
    from mlcore.model.export import export_onnx
    from mlcore.model.network import build_model

    torch.manual_seed(0)
    model = build_model(len(CLASSES), depth=20, width=16, box_head=True, box_pool="grid4").eval()
    per_window = export_onnx(model, work / "tiles-per-window.onnx", CLASSES)
    export_dense_onnx(model, work / "tiles-dense.onnx", CLASSES, per_window_path=per_window)
    # Two full bands of the largest tile (its 1,024 px and a 40 px halo each side), so no tile
    # is cut short by the scene's height (the earlier 640-row scene cut the 1,024 px ones).
    width, height = (16384, 320) if quick else (32768, 2 * (DENSE_TILES[0] + 80))
    scene = write_scene_npy(work / "tiles-scene.npy", height, width)
    runs: dict[int, list[dict]] = {tile: [] for tile in DENSE_TILES}
    try:
        for _ in range(1 if quick else 2):
            for tile in DENSE_TILES:
                cmd = [PYTHON, __file__, "--dense-rss-child", scene, per_window, str(tile)]
                runs[tile].append(run_json(cmd, timeout=900))
    finally:
        scene.unlink(missing_ok=True)
    big = DENSE_TILES[0]
    rate = {t: max(r["windows_per_s"] for r in runs[t]) for t in DENSE_TILES}
    rss = {t: max(r["peak_rss_mb"] for r in runs[t]) for t in DENSE_TILES}
    return [
        row(f"dense scoring in {small} px tiles vs {big} px", rate[small], "windows/s",
            f"{big} px tiles", rate[big], ">= 0.9x", rate[small] / rate[big] >= 0.9,
            f"peak RSS {rss[small]:.0f} MB vs {rss[big]:.0f} MB (a process each); "
            f"{width} x {height} random scene from disk, step 16, ResNet-20 w16 + grid4 box "
            f"head, one thread, best of {len(runs[big])} alternated")
        for small in DENSE_TILES[1:]
    ]  # fmt: skip


# -- scoring cost of the box outputs --------------------------------------------------------------


def box_head_resnet(backbone):
    """``backbone`` (a WindowResNet) with a box head on its pooled features: two small linear
    layers giving ``boxes`` and ``centredness`` (random weights: speed does not depend on them).
    What a box-regressing model adds to scoring; the trained head is the training side's."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class BoxHeadResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.box = nn.Linear(backbone.fc.in_features, 4)
            self.centred = nn.Linear(backbone.fc.in_features, 1)

        def class_probs(self, logits):
            return self.backbone.class_probs(logits)

        def forward(self, images):
            # WindowResNet.forward up to its pooled features (the head needs them, not logits).
            b = self.backbone
            x = ((images.float() - b.mean) * b.inv_std).permute(0, 3, 1, 2)
            features = F.adaptive_avg_pool2d(b.layers(b.stem(x)), 1).flatten(1)
            return {
                "logits": b.fc(features),
                "boxes": self.box(features),
                "centredness": torch.sigmoid(self.centred(features)),
            }

    return BoxHeadResNet()


def bench_box_outputs(work: Path, quick: bool) -> list[dict]:
    import os

    import torch

    from mlcore.inference.scoring import OnnxScorer, score_scene
    from mlcore.ingest.scenes import ArrayScene
    from mlcore.model.export import export_onnx
    from mlcore.model.network import build_model

    batch, step = 1024, 16
    cols = 32 if quick else 64
    height, width = 32 + 63 * step, 32 + (cols - 1) * step
    scene = np.random.default_rng(2).integers(0, 256, (height, width, 3), dtype=np.uint8)
    torch.manual_seed(0)
    backbone = build_model(len(CLASSES)).eval()
    plain = OnnxScorer(export_onnx(backbone, work / "plain.onnx", CLASSES))
    boxed = OnnxScorer(export_onnx(box_head_resnet(backbone), work / "boxed.onnx", CLASSES))
    if boxed.output_names != ("probs", "boxes", "centredness"):
        raise RuntimeError(f"the box model's file has outputs {boxed.output_names}")

    def scorer_run(scorer):
        def once() -> int:
            grid = score_scene(scorer, ArrayScene(scene), step, batch)
            return grid.probs.shape[0] * grid.probs.shape[1]

        return once

    runs = {"plain": scorer_run(plain), "boxed": scorer_run(boxed)}
    for once in runs.values():
        once()  # warm-up: ORT allocations for this batch shape
    rounds = 3 if quick else 6
    rates: dict[str, list[float]] = {"plain": [], "boxed": []}
    load_before = os.getloadavg()[0]
    for _ in range(rounds):  # interleaved, best of each (see bench_scoring)
        for name, once in runs.items():
            rates[name].append(median_rate(once, repeats=1))
    load_after = os.getloadavg()[0]
    per_window = {name: 1e6 / max(values) for name, values in rates.items()}
    ratio = per_window["boxed"] / per_window["plain"]
    return [
        row(
            "CPU scoring cost per window, with box outputs vs without",
            per_window["boxed"],
            "us/window",
            "the same ResNet-20 backbone without the box head (probs only), same path",
            per_window["plain"],
            "<= 1.20x",
            ratio <= 1.20,
            f"score_scene, {height}x{width} random scene, step {step}, batch {batch}, best of "
            f"{rounds} interleaved runs each; box head: boxes (4) + centredness (1) on the "
            f"pooled features; 1-min load average {load_before:.1f} before, {load_after:.1f} "
            "after",
        )
    ]


# -- peak memory on a 20,000 x 20,000 scene (child process) -------------------------------------


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB: VmHWM of /proc/self/status (the high-water
    mark of this program's own address space). ``ru_maxrss`` is not used as such: Linux carries it
    over exec from the forking parent, so a child of a big parent would report the parent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(scene_path: str, model_path: str, step: int, batch: int) -> dict:
    """Runs in a fresh process: score the scene from disk; report the peak RSS."""
    from mlcore.inference.scoring import OnnxScorer, score_scene
    from mlcore.ingest.scenes import NpyScene

    started = time.perf_counter()
    scorer = OnnxScorer(model_path)
    reader = NpyScene(scene_path)
    grid = score_scene(scorer, reader, step, batch)
    return {
        "peak_rss_mb": peak_rss_mb(),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "windows": int(grid.probs.shape[0] * grid.probs.shape[1]),
        "height": reader.height,
        "width": reader.width,
        "seconds": time.perf_counter() - started,
        "finite": bool(np.isfinite(grid.probs).all()),
    }


def bench_peak_rss(work: Path, quick: bool) -> list[dict]:
    size = 20_000
    step = 400 if quick else 160  # memory does not depend on the step; the time does
    scene = write_scene_npy(work / "scene20k.npy", size, size)
    model = work / "resnet20.onnx"
    if not model.exists():
        export_resnet(model)
    scene_mb = scene.stat().st_size / 2**20
    try:
        cmd = [PYTHON, __file__, "--rss-child", scene, model, str(step), "1024"]
        res = run_json(cmd, timeout=900)
    finally:
        scene.unlink(missing_ok=True)
    peak = res["peak_rss_mb"]
    return [
        row(
            "peak RSS scoring a 20,000 x 20,000 scene",
            peak,
            "MB",
            "the scene's own bytes (loading it whole)",
            scene_mb,
            f"< {RSS_LIMIT_MB} MB",
            peak < RSS_LIMIT_MB,
            f"child process peak RSS (VmHWM) incl. Python + ORT; .npy on disk, {res['windows']:,} "
            f"windows at step {step} (the step changes the time, not the memory), "
            f"{res['seconds']:.0f} s",
        )
    ]


# -- canvas preparation vs PNG tiles ------------------------------------------------------------


def load_training_images(quick: bool):
    """CIFAR-10 train split mapped to car/boat/negative (shared data), else synthetic tiles."""
    from mlcore.data.datasets import ClassMapping, LabelledImages, apply_mapping, find_shared_data

    shared = find_shared_data()
    zip_path = shared / "cifar10-jpg.zip" if shared else None
    if zip_path is not None and zip_path.is_file():
        from mlcore.data.datasets import load_dataset

        ds = load_dataset(zip_path, split="train")
        return apply_mapping(ds, ClassMapping.cifar_default()), "CIFAR-10 train (50,000 JPEGs)"
    rng = np.random.default_rng(0)
    n = 3000
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n) % 3
    ids = [f"synthetic-{i}" for i in range(n)]
    return LabelledImages(images, labels, CLASSES, ids), "synthetic tiles (no shared data)"


def png_tiles_sample(cset, directory: Path, n: int, window: int = 32, step: int = 8):
    """The original approach on ``n`` windows: crop each window on the step grid and write it
    as its own PNG file in a per-class folder. Returns (seconds, bytes on disk)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for k in range(n):
        canvas = cset.canvases[k % len(cset.canvases)]
        ny = (canvas.height - window) // step + 1
        nx = (canvas.width - window) // step + 1
        y, x = int(rng.integers(ny)) * step, int(rng.integers(nx)) * step
        folder = directory / canvas.class_name
        if k < len(cset.canvases):
            folder.mkdir(parents=True, exist_ok=True)
        tile = np.asarray(canvas.array[y : y + window, x : x + window])
        Image.fromarray(tile).save(folder / f"{canvas.name}_{y}_{x}.png")
    return time.perf_counter() - started, disk_bytes(directory)


def bench_canvases(work: Path, quick: bool) -> list[dict]:
    from mlcore.data.canvases import build_canvas_set

    target = PUBLISHED_WINDOWS // 10 if quick else PUBLISHED_WINDOWS
    started = time.perf_counter()
    images, source = load_training_images(quick)
    loaded = time.perf_counter()
    cset = build_canvas_set(images, canvas_size=2048, n_windows_target=target)
    built = time.perf_counter()
    out = work / "canvases"
    cset.save(out)
    saved = time.perf_counter()
    total_s = saved - started
    windows = cset.n_windows(32, 8)
    raw = sum(int(c.array.nbytes) for c in cset.canvases)
    disk = disk_bytes(out)

    n_png = 500 if quick else 3000
    png_dir = work / "png_tiles"
    png_s, png_bytes = png_tiles_sample(cset, png_dir, n_png)
    shutil.rmtree(png_dir, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    png_total_s = png_s / n_png * windows
    png_total_bytes = png_bytes / n_png * windows
    size_note = "" if not quick else " (quick: 1/10 of the published size; no target)"
    breakdown = (
        f"{windows:,} windows in {len(cset.canvases)} canvases of 2048x2048 from {source}: "
        f"decode {loaded - started:.1f} s + scatter {built - loaded:.1f} s + save "
        f"{saved - built:.1f} s{size_note}"
    )
    extrapolated = f"one PNG per window, {n_png:,} written, extrapolated to {windows:,}"
    return [
        row(
            "canvas preparation time (published size)",
            total_s,
            "s",
            extrapolated,
            png_total_s,
            "< 30 s",
            None if quick else total_s < 30,
            breakdown,
        ),
        row(
            "canvas set disk use vs the canvases' bytes",
            disk / 2**20,
            "MB",
            "raw canvas bytes (H x W x 3 each)",
            raw / 2**20,
            "<= 1.1x",
            disk <= 1.1 * raw,
            "files: .npy canvases + compressed label maps + manifest.json with every placement",
        ),
        row(
            "canvas set disk use vs PNG tiles",
            disk / 2**20,
            "MB",
            extrapolated,
            png_total_bytes / 2**20,
            "",
            None,
            "the original inflated 200 MB of images into 8.9 GB of PNG tiles",
        ),
    ]


def run(quick: bool = False, only: list[str] | None = None) -> list[dict]:
    rows: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="bench-mlcore-"))
    try:
        for name, fn in (
            ("CPU scoring", bench_scoring),
            ("dense scoring", bench_dense_scoring),
            ("dense tiles", bench_dense_tiles),
            ("box outputs scoring cost", bench_box_outputs),
            ("peak RSS", bench_peak_rss),
            ("canvas preparation", bench_canvases),
        ):
            if only and name not in only:
                continue
            try:
                rows += fn(work, quick)
            except Exception as exc:  # noqa: BLE001 - shown in the table, never hidden
                rows.append(error_row(name, f"{type(exc).__name__}: {exc}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


# == GPU part ===================================================================================

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
BF16_PEAK_TFLOPS = {
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,  # how the SXM card names itself
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "H200": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
}


def bf16_peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak, from its name (longest matching key), or None."""
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return BF16_PEAK_TFLOPS[key]
    return None


def training_flops_per_window(depth: int = 20, width: int = 16, window: int = 32) -> float:
    """Forward FLOPs of one window (counted by torch's FlopCounterMode) x 3 for a training step
    (forward + backward for activations and weights)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mlcore.model.network import build_model

    model = build_model(len(CLASSES), depth, width)
    x = torch.zeros((8, window, window, 3), dtype=torch.uint8)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return 3.0 * counter.get_total_flops() / 8


class _Canvases:
    def __init__(self, canvases):
        self.canvases = canvases


def published_size_canvases(n_windows: int, size: int = 2048, seed: int = 0):
    """Random canvases holding ``n_windows`` windows at step 8 (speed depends on sizes only)."""
    from mlcore.data.canvases import Canvas, n_windows_in

    per = n_windows_in(size, size, 32, 8)
    count = max(len(CLASSES), -(-n_windows // per))
    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return _Canvases(
        [Canvas(CLASSES[k % 3], np.roll(block, k * 131, axis=0)) for k in range(count)]
    )


def gpu_training_variants(quick: bool) -> list[tuple[str, dict]]:
    base = {"bf16": False, "channels_last": False, "compile": False}
    variants = [
        ("fp32 eager", base),
        ("bf16 + channels_last", {**base, "bf16": True, "channels_last": True}),
        (
            "bf16 + channels_last + torch.compile",
            {**base, "bf16": True, "channels_last": True, "compile": "max-autotune-no-cudagraphs"},
        ),
        (
            "bf16 + channels_last + compile + CUDA graphs",
            {**base, "bf16": True, "channels_last": True, "compile": "max-autotune"},
        ),
    ]
    return variants[1::2] if quick else variants


def gpu_training(device, quick: bool, steps: int | None = None, batch_size: int = 1024,
                 n_windows: int = PUBLISHED_WINDOWS, variants=None) -> list[dict]:  # fmt: skip
    """Training windows/s of each variant on ``device`` (canvases in device memory, windows
    gathered and augmented there). Runs on any device; on the CPU it is the tested fallback."""
    import torch

    from mlcore.train.training import TrainConfig, train

    device = torch.device(device)
    canvases = published_size_canvases(n_windows)
    steps = steps or (60 if quick else 300)
    flops = training_flops_per_window()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = bf16_peak_tflops(name) if device.type == "cuda" else None
    rows, fp32_rate = [], None
    for label, opts in variants or gpu_training_variants(quick):
        config = TrainConfig(
            batch_size=batch_size, steps=steps, device=str(device), val_windows=0,
            log_every=steps, **opts,
        )  # fmt: skip
        try:
            result = train(canvases, CLASSES, config, device=device)
        except Exception as exc:  # noqa: BLE001 - one failing variant must not hide the others
            rows.append(error_row(f"GPU training, {label}", f"{type(exc).__name__}: {exc}"))
            continue
        rate = result.windows_per_s
        fp32_rate = fp32_rate or rate
        tflops = rate * flops / 1e12
        fraction = f"{tflops / peak:.1%} of the {peak:.0f} TFLOP/s bf16 peak" if peak else ""
        rows.append(
            row(
                f"GPU training, {label}",
                rate,
                "windows/s",
                "first variant (fp32 eager), same run",
                fp32_rate,
                ">= 50,000 windows/s",
                rate >= 50_000 if device.type == "cuda" else None,
                f"{name}, ResNet-20 at 32x32, batch {batch_size}, {steps} steps; "
                f"{tflops:.2f} TFLOP/s achieved ({flops / 1e6:.1f} MFLOP/window) {fraction}; "
                f"epoch of {PUBLISHED_WINDOWS:,} windows in {PUBLISHED_WINDOWS / rate:.0f} s",
            )
        )
    return rows


class TorchStripScorer:
    """Scores a scene with PyTorch on ``device``: each strip is uploaded once, its windows are
    gathered on the device by index arithmetic and scored in bf16 autocast, channels_last."""

    def __init__(self, model, classes, device, bf16: bool = True, compile_: bool = False):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.classes, self.window = list(classes), 32
        model = model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if compile_ else model
        self.bf16 = bf16 and self.device.type == "cuda"
        self._pinned = [(None, None), (None, None)]

    def _upload(self, pixels: np.ndarray, slot: int):
        """The strip's bytes on the device. CUDA: through two reused pinned buffers, so the copy
        is asynchronous and the next strip is read while this one is scored."""
        torch = self.torch
        if self.device.type != "cuda":
            with warnings.catch_warnings():  # read-only strip bytes are only read (indexed)
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                return torch.from_numpy(pixels)
        buf, event = self._pinned[slot]
        if buf is None or buf.numel() < pixels.size:
            buf = torch.empty(pixels.size, dtype=torch.uint8, pin_memory=True)
        elif event is not None:
            event.synchronize()  # the previous copy out of this buffer has finished
        buf[: pixels.size].numpy()[:] = pixels
        flat = buf[: pixels.size].to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pinned[slot] = (buf, event)
        return flat

    def score_scene(self, reader, step: int, batch_size: int = 8192, rows_per_strip=None):
        from mlcore.data.windows import grid_positions
        from mlcore.inference.scoring import ScoreGrid, auto_rows_per_strip

        torch, dev, w = self.torch, self.device, self.window
        ys = grid_positions(int(reader.height), w, step)
        xs = grid_positions(int(reader.width), w, step)
        rows = rows_per_strip or auto_rows_per_strip(int(reader.width), w, step)
        out = torch.empty((len(ys) * len(xs), len(self.classes)), dtype=torch.float32, device=dev)
        xs_t = torch.as_tensor(xs, device=dev)
        ar = torch.arange(w, device=dev)
        width3 = int(reader.width) * 3
        dx = (ar.view(1, 1, w, 1) * 3 + torch.arange(3, device=dev).view(1, 1, 1, 3)).view(-1)
        done = 0
        with torch.inference_mode():
            for a in range(0, len(ys), rows):
                b = min(a + rows, len(ys))
                y0 = int(ys[a])
                strip = np.ascontiguousarray(reader.read_rows(y0, int(ys[b - 1]) + w))
                flat = self._upload(strip.reshape(-1), a // rows % 2)
                local = torch.as_tensor(ys[a:b] - y0, device=dev)
                origins = (local.view(-1, 1) * width3 + xs_t.view(1, -1) * 3).view(-1)
                for s in range(0, len(origins), batch_size):
                    o = origins[s : s + batch_size]
                    index = o.view(-1, 1, 1) + (ar.view(1, w, 1) * width3 + dx.view(1, 1, -1))
                    images = flat[index].view(-1, w, w, 3)
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                        logits = self.model(images)
                    out[done + s : done + s + len(o)] = torch.softmax(logits.float(), dim=1)
                done += len(origins)
        probs = out.cpu().numpy().reshape(len(ys), len(xs), -1)
        return ScoreGrid(ys, xs, probs, self.classes, w, step)


def gpu_scoring(device, quick: bool, size: int | None = None, step: int = 8,
                batch_size: int = 8192, work: Path | None = None) -> list[dict]:  # fmt: skip
    """End-to-end scoring windows/s of a large scene .npy (strip reading included): ONNX
    Runtime's CUDA provider and PyTorch on ``device``; on the CPU it is the tested fallback."""
    import onnxruntime as ort
    import torch

    from mlcore.inference.scoring import OnnxScorer, score_scene
    from mlcore.ingest.scenes import NpyScene
    from mlcore.model.network import build_model

    device = torch.device(device)
    size = size or (8000 if quick else 20_000)
    own_work = work is None
    work = work or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    rows = []
    try:
        scene_path = write_scene_npy(work / "scene.npy", size, size)
        model_path = export_resnet(work / "resnet20.onnx")
        reader = NpyScene(scene_path)
        n = len(range(0, size - 32 + 1, step))  # approximate count for the note
        what = f"{size}x{size} scene .npy, step {step} (~{n * n:,} windows), batch {batch_size}"

        torch.manual_seed(0)
        torch_scorer = TorchStripScorer(build_model(len(CLASSES)), CLASSES, device)
        torch_scorer.score_scene(NpyScene(scene_path), 64, batch_size)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        grid = torch_scorer.score_scene(reader, step, batch_size)
        torch_rate = grid.probs.shape[0] * grid.probs.shape[1] / (time.perf_counter() - started)

        providers = ort.get_available_providers()
        ort_rate, ort_note = None, ""
        want = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
        if want in providers:
            scorer = OnnxScorer(
                model_path, providers=list(dict.fromkeys([want, "CPUExecutionProvider"]))
            )
            score_scene(scorer, NpyScene(scene_path), 64, batch_size)  # warm-up
            started = time.perf_counter()
            g2 = score_scene(scorer, reader, step, batch_size)
            ort_rate = g2.probs.shape[0] * g2.probs.shape[1] / (time.perf_counter() - started)
        else:
            ort_note = f"ONNX Runtime has no {want} here (pip install onnxruntime-gpu); "
        target = ">= 500,000 windows/s"
        on_gpu = device.type == "cuda"
        rows.append(
            row(
                "GPU scoring, PyTorch (bf16, channels_last, on-device gather)",
                torch_rate,
                "windows/s",
                "ONNX Runtime " + ("CUDA" if on_gpu else "CPU") + " provider, same scene",
                ort_rate,
                target,
                torch_rate >= 500_000 if on_gpu else None,
                f"{what}; {ort_note}".rstrip("; "),
            )
        )
        if ort_rate is not None:
            rows.append(
                row(
                    f"GPU scoring, ONNX Runtime {want}",
                    ort_rate,
                    "windows/s",
                    "PyTorch path above",
                    torch_rate,
                    target,
                    ort_rate >= 500_000 if on_gpu else None,
                    what,
                )
            )
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def run_gpu(quick: bool = False) -> list[dict]:
    """The GPU part; raises RuntimeError when there is no CUDA device (run_all reports it)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device on this machine (torch.cuda.is_available() is False)")
    rows: list[dict] = []
    for name, fn in (("GPU training", gpu_training), ("GPU scoring", gpu_scoring)):
        try:
            rows += fn("cuda", quick)
        except Exception as exc:  # noqa: BLE001 - shown in the table, never hidden
            rows.append(error_row(name, f"{type(exc).__name__}: {exc}"))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="the GPU part instead of the CPU part")
    parser.add_argument("--rss-child", nargs=4, metavar=("SCENE", "MODEL", "STEP", "BATCH"))
    parser.add_argument("--dense-rss-child", nargs=3, metavar=("SCENE", "MODEL", "TILE"))
    parser.add_argument("--only", nargs="+", metavar="BENCH",
                        help="only these CPU benches (their names in run())")  # fmt: skip
    args = parser.parse_args(argv)
    if args.dense_rss_child:
        scene, model, tile = args.dense_rss_child
        print(json.dumps(dense_rss_child(scene, model, int(tile))))
        return 0
    if args.rss_child:
        scene, model, step, batch = args.rss_child
        print(json.dumps(rss_child(scene, model, int(step), int(batch))))
        return 0
    from bench.common import fmt

    rows = run_gpu(args.quick) if args.gpu else run(args.quick, args.only)
    buf = io.StringIO()
    for r in rows:
        print(f"{r['name']}: {fmt(r['value'])} {r['unit']} vs {fmt(r['baseline_value'])} "
              f"({r['baseline']}) ratio {fmt(r['ratio'])} target {r['target']} "
              f"met {fmt(r['met'])}  {r['note']}", file=buf)  # fmt: skip
    print(buf.getvalue(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
