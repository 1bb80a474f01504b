"""Photomosaic ("collage") generator with exact ground truth.

``make_collage`` rebuilds a target picture from small labelled tiles: for each placement it picks
the tile whose colour layout (a 4x4 grid of mean colours in CIE Lab, where Euclidean distance
roughly follows perceived difference) best matches that spot of the target, with each tile used
at most ``max_reuse`` times. Tiles are pasted unchanged (no colour blending), so what a detector
sees on the collage is exactly the dataset's image.

Modes:

* ``grid``: a regular grid of ``cols`` x ``rows`` tiles, nothing overlaps;
* ``collage``: tiles at jittered positions that partly cover each other, laid out like the
  training canvases (``canvases.plan_positions``: a jittered covering pass, which leaves no pixel
  uncovered, plus some random extras, all pasted in a random order).

The ground truth lists every placed tile: ``{id, label, x, y, w, h, order, visible}`` where
``visible`` is the fraction of its pixels still on top after all pastes, computed exactly from an
owner map (which paste owns each pixel). Everything is deterministic for a seed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mlcore.data.canvases import plan_positions
from mlcore.data.datasets import (
    ClassMapping,
    LabelledImages,
    apply_mapping,
    find_shared_data,
    load_dataset,
)
from mlcore.progress import Progress, report

MODES = ("grid", "collage")
FEATURE_GRID = 4


class CollageError(ValueError):
    """Bad collage input (the message says what was wrong and what to do)."""


@dataclass
class Collage:
    """``image`` uint8 (H, W, 3); ``ground_truth`` one dict per placed tile, in paste order."""

    image: np.ndarray
    ground_truth: list[dict]
    classes: list[str]
    tile_size: tuple[int, int]
    mode: str

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def save(self, image_path: str | os.PathLike, ground_truth_path: str | os.PathLike) -> None:
        """Write the image (format from the suffix; PNG keeps it lossless) and the ground truth."""
        Image.fromarray(self.image).save(image_path)
        save_ground_truth(self.ground_truth, ground_truth_path)


# --------------------------------------------------------------------------------------------
# Colour features


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 or [0, 255] float sRGB (..., 3) -> CIE Lab (D65) float32 (..., 3)."""
    c = np.asarray(rgb, dtype=np.float32) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ],
        dtype=np.float32,
    )
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )
    return lab.astype(np.float32)


def _block_edges(length: int, blocks: int) -> np.ndarray:
    return np.round(np.linspace(0, length, blocks + 1)).astype(np.int64)


def tile_features(tiles: np.ndarray, grid: int = FEATURE_GRID) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, grid*grid*3) float32 mean Lab colour of each block."""
    n, h, w, _ = tiles.shape
    out = np.empty((n, grid, grid, 3), dtype=np.float32)
    ye, xe = _block_edges(h, grid), _block_edges(w, grid)
    for start in range(0, n, 2048):
        lab = srgb_to_lab(tiles[start : start + 2048])
        for i in range(grid):
            for j in range(grid):
                block = lab[:, ye[i] : ye[i + 1], xe[j] : xe[j + 1]]
                out[start : start + 2048, i, j] = block.mean(axis=(1, 2))
    return out.reshape(n, -1)


def spot_features(
    target_lab: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    tile_hw: tuple[int, int],
    grid: int = FEATURE_GRID,
) -> np.ndarray:
    """Mean Lab colour of each block of each (y, x) tile-sized spot (via an integral image)."""
    h, w = tile_hw
    integral = np.zeros((target_lab.shape[0] + 1, target_lab.shape[1] + 1, 3), dtype=np.float64)
    integral[1:, 1:] = target_lab.astype(np.float64).cumsum(0).cumsum(1)
    ye, xe = _block_edges(h, grid), _block_edges(w, grid)
    y0 = ys[:, None] + ye[None, :-1]
    y1 = ys[:, None] + ye[None, 1:]
    x0 = xs[:, None] + xe[None, :-1]
    x1 = xs[:, None] + xe[None, 1:]
    a, b = y0[:, :, None], y1[:, :, None]
    c, d = x0[:, None, :], x1[:, None, :]
    sums = integral[b, d] - integral[a, d] - integral[b, c] + integral[a, c]
    area = ((b - a) * (d - c))[..., None]
    return (sums / area).astype(np.float32).reshape(len(ys), -1)


# --------------------------------------------------------------------------------------------
# Matching with a reuse limit


def assign_tiles(
    spot_feats: np.ndarray,
    tile_feats: np.ndarray,
    max_reuse: int,
    rng: np.random.Generator,
    candidates: int = 64,
    progress: Progress | None = None,
) -> np.ndarray:
    """Pick a tile for every spot: nearest colour layout among tiles used < ``max_reuse`` times.

    Greedy in a random spot order (so no image region gets first pick systematically). The
    ``candidates`` nearest tiles of each spot are found in one batched matrix product; a spot whose
    candidates are all used up falls back to a search over every still-available tile.
    """
    n_spots, n_tiles = len(spot_feats), len(tile_feats)
    if max_reuse * n_tiles < n_spots:
        raise CollageError(
            f"{n_spots} placements but only {n_tiles} tiles x max_reuse {max_reuse}: "
            "raise max_reuse, use fewer columns, or give more tiles"
        )
    k = min(candidates, n_tiles)
    tile_sq = (tile_feats.astype(np.float32) ** 2).sum(1)
    cand = np.empty((n_spots, k), dtype=np.int64)
    chunk = 1024
    for start in range(0, n_spots, chunk):
        s = spot_feats[start : start + chunk]
        dist = tile_sq[None, :] - 2.0 * (s @ tile_feats.T)  # + |s|^2, constant per row
        part = (
            np.argpartition(dist, k - 1, axis=1)[:, :k]
            if k < n_tiles
            else np.tile(np.arange(n_tiles), (len(s), 1))
        )
        order = np.take_along_axis(dist, part, 1).argsort(1)
        cand[start : start + chunk] = np.take_along_axis(part, order, 1)
        report(progress, min(start + chunk, n_spots), n_spots, "matching tiles")
    used = np.zeros(n_tiles, dtype=np.int64)
    choice = np.empty(n_spots, dtype=np.int64)
    for spot in rng.permutation(n_spots).tolist():
        for t in cand[spot].tolist():
            if used[t] < max_reuse:
                break
        else:
            available = np.flatnonzero(used < max_reuse)
            d = tile_sq[available] - 2.0 * (tile_feats[available] @ spot_feats[spot])
            t = int(available[np.argmin(d)])
        used[t] += 1
        choice[spot] = t
    return choice


# --------------------------------------------------------------------------------------------
# The generator


def _as_rgb_array(target) -> np.ndarray:
    if isinstance(target, (str, os.PathLike)):
        with Image.open(target) as im:
            return np.asarray(im.convert("RGB"))
    if isinstance(target, Image.Image):
        return np.asarray(target.convert("RGB"))
    arr = np.asarray(target)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise CollageError(
            f"target must be an RGB uint8 (H, W, 3) array, got {arr.dtype} {arr.shape}"
        )
    return arr


# A target up to this many pixels is decoded whole (48 MB as RGB), as it always was; a larger one
# is shrunk while libvips decodes it, so a picture's size never becomes memory (a 13000x13000
# 1-bit PNG of a few kB took 1.7 GB decoded whole).
TARGET_DECODE_MAX_PIXELS = 16_000_000


def _target_at_collage_size(target, tile_hw, cols: int, max_pixels: int | None) -> np.ndarray:
    """The target (path, PIL image or array) resized to its collage's (height, width, 3); a
    collage above ``max_pixels`` is refused from the target's header, before any decoding."""
    if isinstance(target, (str, os.PathLike)):
        from mlcore.ingest.scene_decode import read_header, read_shrunk

        header = read_header(target)
        target_hw = (header.height, header.width)
    else:
        target = _as_rgb_array(target)
        target_hw = target.shape[:2]
    if max_pixels is not None:
        check_collage_size(target_hw, tile_hw, cols, max_pixels)
    height, width = collage_size(target_hw, tile_hw, cols)
    if not isinstance(target, np.ndarray):
        if target_hw[0] * target_hw[1] <= TARGET_DECODE_MAX_PIXELS:
            target = _as_rgb_array(target)
        else:  # twice the collage's size: the bicubic step below still averages over pixels
            target = read_shrunk(target, 2 * width, 2 * height)
    return np.asarray(Image.fromarray(target).resize((width, height), Image.Resampling.BICUBIC))


def collage_size(
    target_hw: tuple[int, int], tile_hw: tuple[int, int], cols: int
) -> tuple[int, int]:
    """(height, width) of the collage of a (height, width) target: ``cols`` tiles wide, the
    target's aspect ratio, a whole number of tile rows. Known from the target's header alone."""
    (height, width), (th, tw) = target_hw, tile_hw
    rows = max(1, int(round(cols * (height / width) * tw / th)))
    return rows * th, cols * tw


def check_collage_size(target_hw, tile_hw, cols: int, max_pixels: int) -> None:
    """Refuse, before anything is allocated, a collage of more than ``max_pixels`` pixels: a tall
    target turns each column into many rows (400 columns on a 1x300 target: 49 gigapixels)."""
    height, width = collage_size(target_hw, tile_hw, cols)
    if height * width <= max_pixels:
        return
    fits = next(
        (c for c in range(cols - 1, 0, -1) if _pixels(target_hw, tile_hw, c) <= max_pixels), None
    )
    hint = f"use at most {fits} column(s)" if fits else "use a target closer to square"
    raise CollageError(
        f"a collage of {cols} columns of {tile_hw[1]}x{tile_hw[0]} tiles on this "
        f"{target_hw[1]}x{target_hw[0]} target would be {width}x{height} = "
        f"{width * height:,} pixels, above the limit of {max_pixels:,}; {hint}"
    )


def _pixels(target_hw, tile_hw, cols: int) -> int:
    height, width = collage_size(target_hw, tile_hw, cols)
    return height * width


def make_collage(
    target,
    tiles: LabelledImages,
    cols: int = 80,
    tile: int | None = None,
    mode: str = "collage",
    max_reuse: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    pitch_fraction: float = 0.75,
    extra_fraction: float = 0.1,
    max_pixels: int | None = None,
) -> Collage:
    """Build a photomosaic of ``target`` (path, PIL image or uint8 array) from ``tiles``.

    The output is ``cols`` tiles wide (``cols * tile`` pixels) with the target's aspect ratio,
    height a whole number of tile rows. ``tile`` defaults to the tiles' own size (tiles of another
    size are refused: resizing would change what the detector sees). ``max_reuse`` limits how
    often one tile is placed; default ``ceil(2 * placements / tiles)``. A collage above
    ``max_pixels`` (when given) is refused before it is built.
    """
    if mode not in MODES:
        raise CollageError(f"mode must be one of {MODES}, got {mode!r}")
    if len(tiles) == 0:
        raise CollageError("no tiles given")
    th, tw = tiles.tile_size
    if tile is not None and (tile, tile) != (th, tw):
        raise CollageError(f"tile={tile} but the tiles are {th}x{tw}; load them at that size")
    if cols < 1:
        raise CollageError(f"cols must be >= 1, got {cols}")
    resized = _target_at_collage_size(target, (th, tw), cols, max_pixels)
    height, width = resized.shape[:2]
    rows = height // th
    rng = np.random.default_rng(seed)
    if mode == "grid":
        gy, gx = np.mgrid[0:rows, 0:cols]
        ys, xs = (gy.reshape(-1) * th).astype(np.int64), (gx.reshape(-1) * tw).astype(np.int64)
    else:
        ys, xs = plan_positions(height, width, (th, tw), rng, pitch_fraction, extra_fraction)
    n = len(ys)
    if max_reuse is None:
        max_reuse = max(1, math.ceil(2 * n / len(tiles)))
    report(progress, 0, n, "colour features")
    t_feats = tile_features(tiles.images)
    s_feats = spot_features(srgb_to_lab(resized), ys, xs, (th, tw))
    choice = assign_tiles(s_feats, t_feats, max_reuse, rng, progress=progress)

    image = np.empty((height, width, 3), dtype=np.uint8)
    owner = np.full((height, width), -1, dtype=np.int32)
    for k, (t, y, x) in enumerate(zip(choice.tolist(), ys.tolist(), xs.tolist())):
        image[y : y + th, x : x + tw] = tiles.images[t]
        owner[y : y + th, x : x + tw] = k
        if k % 2000 == 0:
            report(progress, k, n, "pasting tiles")
    if (owner < 0).any():  # the layouts guarantee full cover; this guards future changes
        raise CollageError("internal error: the layout left pixels uncovered")
    visible_px = np.bincount(owner.reshape(-1), minlength=n)
    area = th * tw
    gt = [
        {
            "id": tiles.ids[t],
            "label": tiles.class_names[int(tiles.labels[t])],
            "x": int(x),
            "y": int(y),
            "w": int(tw),
            "h": int(th),
            "order": k,
            "visible": float(visible_px[k]) / area,
        }
        for k, (t, y, x) in enumerate(zip(choice.tolist(), ys.tolist(), xs.tolist()))
    ]
    report(progress, n, n, "done")
    return Collage(image, gt, list(tiles.class_names), (th, tw), mode)


# --------------------------------------------------------------------------------------------
# Ground truth helpers

GT_KEYS = ("id", "label", "x", "y", "w", "h", "order", "visible")


def save_ground_truth(gt: Sequence[dict], path: str | os.PathLike) -> None:
    """Write the ground truth as a JSON list (written to a temporary name, then renamed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps([{k: box[k] for k in GT_KEYS} for box in gt], separators=(",", ":")))
    os.replace(tmp, path)


def load_ground_truth(path: str | os.PathLike) -> list[dict]:
    """Read a ground-truth JSON list, checking every box has the expected keys."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise CollageError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise CollageError(f"{path}: expected a JSON list of boxes")
    for i, box in enumerate(data):
        missing = [k for k in GT_KEYS if k not in box]
        if missing:
            raise CollageError(f"{path}: box {i} lacks {missing}; each needs {list(GT_KEYS)}")
    return data


def ground_truth_objects(
    gt: Sequence[dict], classes: Sequence[str], min_visible: float = 0.5
) -> list[dict]:
    """The boxes a detector should find: label in ``classes`` and at least ``min_visible`` shown."""
    wanted = set(classes)
    return [b for b in gt if b["label"] in wanted and b["visible"] >= min_visible]


def demo_collage(
    data_dir: str | os.PathLike | None = None,
    cols: int = 80,
    mode: str = "collage",
    seed: int = 0,
    progress: Progress | None = None,
    target: str = "mona_lisa.jpg",
) -> Collage:
    """The reference scene: the Mona Lisa from CIFAR-10 test images mapped to car/boat/negative.

    ``data_dir`` defaults to ``find_shared_data()``; it must hold ``target`` and
    ``cifar10-jpg.zip``. 80 columns give a 2560-pixel-wide image. ``target="rocket.jpg"`` gives
    the held-out scene that calibration and the loop never see.
    """
    folder = Path(data_dir) if data_dir is not None else find_shared_data()
    if folder is None:
        raise CollageError(
            "no shared data folder: set MLCORE_SHARED_DATA to a folder with mona_lisa.jpg and "
            "cifar10-jpg.zip"
        )
    for name in (target, "cifar10-jpg.zip"):
        if not (folder / name).exists():
            raise CollageError(f"{folder / name} is missing; the demo needs it")
    tiles = apply_mapping(
        load_dataset(folder / "cifar10-jpg.zip", split="test"), ClassMapping.cifar_default()
    )
    return make_collage(folder / target, tiles, cols=cols, mode=mode, seed=seed, progress=progress)
