"""Training canvases: large images made of tiles scattered with overlap, cut into windows.

The idea (from the published pipeline): paste the images of one class at random positions, with
overlap, onto a big canvas. Any window cut anywhere from a car canvas then shows car content,
including partial and overlapping cars, which is what a sliding window sees on a scene. The default
here is *mixed* canvases (``build_canvas_set``): tiles of every class on one canvas and a per-pixel
label map, so a window is labelled by the tile under its centre, as on a scene. Windows are never
stored: the sampler takes views into the canvases.

Layout of one canvas (``plan_positions``):

1. a *jittered covering pass*: a grid with pitch ``p = pitch_fraction * tile`` (default 0.75), each
   cell's tile moved by a random offset in ``[0, tile - p]`` on each axis (the first row/column sits
   at 0, the last is clamped to the border). Every cell then always covers its own ``p x p`` block
   of a grid shifted by ``tile - p``, so the canvas has no empty pixel whatever the jitter;
2. ``extra_fraction`` (default 0.25) more tiles at uniformly random positions;
3. all pastes in one random order, so overlaps fall either way and no grid pattern shows.

Tiles of a class are used in shuffled rounds (each image once per round), so every image appears
about equally often. Everything is deterministic for a seed; ``rebuild_from_manifest`` re-creates a
canvas bit-exactly from its manifest entry and the source images (an audit).

On disk (``CanvasSet.save``): one ``.npy`` uint8 (H, W, 3) per canvas (disk use = raw bytes + 128 B
header; a mixed canvas adds its label map, and its source map if it has source heads, compressed:
about 0.5% of the canvas's bytes each) and ``manifest.json`` with every placement ``[image_id, y,
x, order]``. Canvas files are immutable and uniquely named; ``manifest.json`` is replaced
atomically and is the commit point, so a reader never sees a half-written set. Tiles of correction
canvases (cropped from scenes, so not in any dataset) are kept beside them in ``<name>.tiles.npz``
so those canvases can be audited too.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlcore.data.datasets import LabelledImages
from mlcore.progress import Progress, report

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "mlcore.canvases/1"
KINDS = ("original", "correction")
LAYOUTS = ("scatter", "mixed", "exact")
MIXED = "mixed"  # class_name of a mixed canvas: its labels are in its label map
CALIBRATION_COPIES = 4  # pastes of each held-out image in the calibration scene
# Share of each class held out for the calibration scene (projects, the demo, pretraining, bench).
CALIBRATION_FRACTION = 0.05
# How much more often a reviewed window is drawn than a canvas window when a training profile sets
# no correction_share (the tiny one); quick and full draw a fixed share of each batch from them
# instead, which makes the weight moot there. 50, not 5: at 5 a few hundred corrections were ~3% of
# the samples and moved F1 by < 0.02.
CORRECTION_WEIGHT = 50.0


class CanvasError(ValueError):
    """Bad canvas input or an unreadable canvas set (the message says what and what to do)."""


Placement = tuple[str, int, int, int]  # (image_id, y, x, paste order)


@dataclass
class Canvas:
    """One canvas: ``array`` uint8 (H, W, 3) (a memmap after ``CanvasSet.load(mmap=True)``)."""

    class_name: str
    array: np.ndarray
    weight: float = 1.0
    kind: str = "original"
    placements: list[Placement] = field(default_factory=list)
    name: str = ""
    # Source tiles of correction canvases: (ids, uint8 (n, h, w, 3)); None for dataset canvases.
    tiles: tuple[list[str], np.ndarray] | None = None
    # How windows are cut from it (LAYOUTS): "scatter" one class, any window; "mixed" tiles of
    # every class, each window labelled by ``label_map`` at its centre (scene-like); "exact"
    # reviewed windows side by side, sampled only at their own origins, as they were reviewed.
    layout: str = "scatter"
    # "mixed" only: uint8 (H, W), per pixel the index (into the set's classes) of the top tile.
    label_map: np.ndarray | None = None
    # "mixed" with source classes only: uint8 (H, W), per pixel the index into the set's
    # ``heads`` of the top tile's source class (the dataset's own class: truck, automobile...).
    source_map: np.ndarray | None = None
    # "exact" only: px of the scene kept around each reviewed window (its tile is the window
    # plus this margin a side; the placement is the window's origin). Training for dense
    # scoring sees a window among its real neighbours, as dense scoring will; per window it
    # changes nothing.
    context: int = 0

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    def n_windows(self, window: int = 32, step: int = 8) -> int:
        """Number of ``window`` x ``window`` windows at ``step`` that fit inside this canvas."""
        return n_windows_in(self.height, self.width, window, step)


def n_windows_in(height: int, width: int, window: int, step: int) -> int:
    """Windows of size ``window`` at stride ``step`` fully inside a height x width image."""
    if window > height or window > width:
        return 0
    return ((height - window) // step + 1) * ((width - window) // step + 1)


# --------------------------------------------------------------------------------------------
# Layout and pasting


def _axis_starts(length: int, tile: int, pitch: int, rng: np.random.Generator, n_other: int):
    """Jittered covering starts for one axis, shape (n, n_other): see the module docstring."""
    n = max(1, math.ceil((length - tile) / pitch) + 1)
    base = np.arange(n)[:, None] * pitch
    jitter = rng.integers(0, tile - pitch + 1, size=(n, n_other))
    jitter[0, :] = 0
    return np.minimum(base + jitter, length - tile)


def plan_positions(
    height: int,
    width: int,
    tile_hw: tuple[int, int],
    rng: np.random.Generator,
    pitch_fraction: float = 0.75,
    extra_fraction: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (ys, xs), in paste order, that cover a height x width canvas completely."""
    th, tw = tile_hw
    if height < th or width < tw:
        raise CanvasError(f"canvas {height}x{width} is smaller than the tile {th}x{tw}")
    if not 0 < pitch_fraction <= 1:
        raise CanvasError(f"pitch_fraction must be in (0, 1], got {pitch_fraction}")
    ph = max(1, int(round(th * pitch_fraction)))
    pw = max(1, int(round(tw * pitch_fraction)))
    n_y = max(1, math.ceil((height - th) / ph) + 1)
    n_x = max(1, math.ceil((width - tw) / pw) + 1)
    ys = _axis_starts(height, th, ph, rng, n_x)  # (n_y, n_x)
    xs = _axis_starts(width, tw, pw, rng, n_y).T  # (n_y, n_x)
    n_extra = int(round(extra_fraction * n_y * n_x))
    ys = np.concatenate([ys.reshape(-1), rng.integers(0, height - th + 1, n_extra)])
    xs = np.concatenate([xs.reshape(-1), rng.integers(0, width - tw + 1, n_extra)])
    order = rng.permutation(len(ys))
    return ys[order].astype(np.int64), xs[order].astype(np.int64)


def paste_tiles(
    canvas: np.ndarray, tiles: np.ndarray, tile_index: np.ndarray, ys: np.ndarray, xs: np.ndarray
) -> None:
    """Paste ``tiles[tile_index[k]]`` at (ys[k], xs[k]) in order k = 0, 1, ... (later on top)."""
    th, tw = tiles.shape[1:3]
    # A plain loop of slice assignments: each is one memcpy per tile row, about 1 us a tile, and
    # the paste order (which tile ends on top) stays explicit. Fancy-indexed scatter with
    # duplicate targets has no defined order in numpy.
    for k, y, x in zip(tile_index.tolist(), ys.tolist(), xs.tolist()):
        canvas[y : y + th, x : x + tw] = tiles[k]


def _tile_cycle(n_images: int, n_needed: int, rng: np.random.Generator, start_perm=None):
    """Indices into the images for ``n_needed`` pastes: shuffled rounds, each image once a round."""
    rounds = [start_perm] if start_perm is not None else []
    have = sum(len(r) for r in rounds)
    while have < n_needed:
        perm = rng.permutation(n_images)
        rounds.append(perm)
        have += n_images
    return np.concatenate(rounds)[:n_needed]


def scatter_canvas(
    tiles: np.ndarray,
    height: int,
    width: int,
    rng: np.random.Generator,
    pitch_fraction: float = 0.75,
    extra_fraction: float = 0.25,
    tile_index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Build one canvas from ``tiles`` (n, h, w, 3).

    Returns (canvas, tile_index, ys, xs) where pastes happened in array order. ``tile_index`` may
    be given to choose which tile goes to each position (cycled if too short).
    """
    ys, xs = plan_positions(height, width, tiles.shape[1:3], rng, pitch_fraction, extra_fraction)
    if tile_index is None:
        tile_index = _tile_cycle(len(tiles), len(ys), rng)
    elif len(tile_index) < len(ys):
        tile_index = np.resize(tile_index, len(ys))
    else:
        tile_index = tile_index[: len(ys)]
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    paste_tiles(canvas, tiles, tile_index, ys, xs)
    return canvas, tile_index, ys, xs


# --------------------------------------------------------------------------------------------
# The set


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)[:40] or "class"


def _canvas_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class CanvasSet:
    """Training canvases of every project class.

    ``classes``: project class names (the model's outputs, in order); ``canvases``: list of
    ``Canvas``; ``tile_size``: (h, w) of the tiles; ``meta``: free JSON-able provenance (dataset
    path, mapping, seed) stored in the manifest.
    """

    def __init__(
        self,
        classes: Sequence[str],
        canvases: Sequence[Canvas] = (),
        tile_size: tuple[int, int] = (32, 32),
        canvas_size: int | tuple[int, int] = 1024,
        pitch_fraction: float = 0.75,
        extra_fraction: float = 0.25,
        seed: int = 0,
        meta: Mapping | None = None,
        calibration: tuple[np.ndarray, list[dict]] | None = None,
        heads: Sequence[Sequence[str]] | None = None,
    ) -> None:
        self.classes = list(classes)
        # [(source class, project class)]: what the source maps of mixed canvases index, so the
        # model can learn the dataset's own classes (see mlcore.model.network.WindowResNet).
        self.heads = [(str(a), str(b)) for a, b in heads] if heads else None
        self.calibration = calibration
        self.canvases = list(canvases)
        self.tile_size = (int(tile_size[0]), int(tile_size[1]))
        self.canvas_size = _canvas_size(canvas_size)
        self.pitch_fraction = pitch_fraction
        self.extra_fraction = extra_fraction
        self.seed = int(seed)
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return len(self.canvases)

    def __repr__(self) -> str:
        per = {c: sum(1 for k in self.canvases if k.class_name == c) for c in self.classes}
        return f"CanvasSet(classes={self.classes}, canvases={per}, tile_size={self.tile_size})"

    def of_class(self, class_name: str) -> list[Canvas]:
        return [c for c in self.canvases if c.class_name == class_name]

    def n_windows(self, window: int = 32, step: int = 8, class_name: str | None = None) -> int:
        """Total windows at ``step`` over all canvases (or those of one class)."""
        return sum(
            c.n_windows(window, step)
            for c in self.canvases
            if class_name is None or c.class_name == class_name
        )

    def nbytes(self) -> int:
        return sum(c.array.nbytes for c in self.canvases)

    def _new_name(self, kind: str, class_name: str) -> str:
        return f"{kind}-{_slug(class_name)}-{len(self.canvases):05d}-{secrets.token_hex(4)}"

    # -- corrections ------------------------------------------------------------------------

    def append(
        self,
        class_name: str,
        images: np.ndarray,
        ids: Sequence[str],
        weight: float = 1.0,
        kind: str = "correction",
        seed: int | None = None,
        layout: str = "scatter",
        context: int = 0,
    ) -> list[Canvas]:
        """Add ``images`` (n, h, w, 3) of ``class_name`` on new canvases.

        ``layout="exact"`` (what reviewed windows use): the tiles sit side by side without
        overlap and the sampler cuts each one only at its own origin, so every tile is trained
        on exactly as given, with its label; with ``context`` each image is the window plus
        that many px of its scene a side (the window at its centre), seen only by training for
        dense scoring. ``"scatter"``: canvases sized to the number of tiles (about one covering
        cell per tile, up to the set's canvas size), scattered with overlap, every tile pasted
        at least once. Returns the new canvases.
        """
        if layout not in ("scatter", "exact"):
            raise CanvasError(f"append takes layout 'scatter' or 'exact', got {layout!r}")
        context = int(context)
        if context < 0 or (context and layout != "exact"):
            raise CanvasError(f"context is px >= 0 around exact tiles only, got {context}")
        if class_name not in self.classes:
            raise CanvasError(
                f"class {class_name!r} is not one of this canvas set's classes {self.classes}; "
                "a new class needs a new canvas set (and a new model)"
            )
        if kind not in KINDS:
            raise CanvasError(f"kind must be one of {KINDS}, got {kind!r}")
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise CanvasError(
                f"images must be uint8 (n, h, w, 3), got {images.dtype} {images.shape}"
            )
        expected = (self.tile_size[0] + 2 * context, self.tile_size[1] + 2 * context)
        if tuple(images.shape[1:3]) != expected:
            raise CanvasError(
                f"tiles are {images.shape[1]}x{images.shape[2]} but this set uses "
                f"{self.tile_size[0]}x{self.tile_size[1]}"
                + (f" plus {context} px of context a side" if context else "")
                + ": crop them at the window size"
            )
        ids = [str(i) for i in ids]
        if len(ids) != len(images):
            raise CanvasError(f"{len(images)} images but {len(ids)} ids")
        if not len(images):
            return []
        if layout == "exact":
            return self._append_exact(class_name, images, ids, float(weight), kind, context)
        rng = np.random.default_rng(
            seed if seed is not None else [self.seed, len(self.canvases), len(images)]
        )
        th, tw = self.tile_size
        ph = max(1, int(round(th * self.pitch_fraction)))
        pw = max(1, int(round(tw * self.pitch_fraction)))
        max_h, max_w = self.canvas_size
        cells_full = (math.ceil((max_h - th) / ph) + 1) * (math.ceil((max_w - tw) / pw) + 1)
        order = rng.permutation(len(images))
        new: list[Canvas] = []
        for start in range(0, len(images), cells_full):
            chunk = order[start : start + cells_full]
            side = math.ceil(math.sqrt(len(chunk)))
            height = min(max_h, (side - 1) * ph + th)
            width = min(max_w, (side - 1) * pw + tw)
            tiles = images[chunk]
            # Each tile of the chunk first (covering cells are shuffled, so this is no pattern).
            first = rng.permutation(len(chunk))
            n_cells = (math.ceil((height - th) / ph) + 1) * (math.ceil((width - tw) / pw) + 1)
            n_total = n_cells + int(round(self.extra_fraction * n_cells))
            tile_index = _tile_cycle(len(chunk), n_total, rng, start_perm=first)
            array, tile_index, ys, xs = scatter_canvas(
                tiles, height, width, rng, self.pitch_fraction, self.extra_fraction, tile_index
            )
            chunk_ids = [ids[i] for i in chunk.tolist()]
            canvas = Canvas(
                class_name=class_name,
                array=array,
                weight=float(weight),
                kind=kind,
                placements=_placements(chunk_ids, tile_index, ys, xs),
                name=self._new_name(kind, class_name),
                tiles=(chunk_ids, np.ascontiguousarray(tiles)),
            )
            self.canvases.append(canvas)
            new.append(canvas)
        return new

    @property
    def calibration(self) -> tuple[np.ndarray, list[dict]] | None:
        """A scene-like picture of held-out images and its ground truth (collage format): the
        data thresholds are calibrated on, which no training window ever shows."""
        return self._calibration

    @calibration.setter
    def calibration(self, value) -> None:
        import hashlib

        self._calibration = value
        # Its files are named by content (hashed once here): a new scene is a new file.
        digest = hashlib.sha1(np.ascontiguousarray(value[0]).tobytes()).hexdigest() if value else ""
        self._calibration_name = f"calibration-{digest[:12]}"

    def _append_exact(self, class_name, images, ids, weight, kind, context=0) -> list[Canvas]:
        th, tw = images.shape[1:3]  # the window plus its context a side
        per_row = max(1, self.canvas_size[1] // tw)
        per_canvas = per_row * max(1, self.canvas_size[0] // th)
        new: list[Canvas] = []
        for start in range(0, len(images), per_canvas):
            chunk = images[start : start + per_canvas]
            chunk_ids = list(ids[start : start + per_canvas])
            cols = min(per_row, len(chunk))
            rows = math.ceil(len(chunk) / cols)
            array = np.zeros((rows * th, cols * tw, 3), dtype=np.uint8)
            k = np.arange(len(chunk))
            ys, xs = (k // cols) * th, (k % cols) * tw
            paste_tiles(array, chunk, k, ys, xs)
            canvas = Canvas(
                class_name=class_name,
                array=array,
                weight=weight,
                kind=kind,
                # The windows' origins: where the sampler cuts each one.
                placements=_placements(chunk_ids, k, ys + context, xs + context),
                name=self._new_name(kind, class_name),
                tiles=(chunk_ids, np.ascontiguousarray(chunk)),
                layout="exact",
                context=context,
            )
            self.canvases.append(canvas)
            new.append(canvas)
        return new

    # -- persistence ------------------------------------------------------------------------

    def manifest(self) -> dict:
        """The JSON-able manifest (what ``save`` writes as manifest.json)."""
        return {
            "format": MANIFEST_FORMAT,
            "classes": self.classes,
            "tile_size": list(self.tile_size),
            "canvas_size": list(self.canvas_size),
            "pitch_fraction": self.pitch_fraction,
            "extra_fraction": self.extra_fraction,
            "seed": self.seed,
            "meta": self.meta,
            "heads": [list(h) for h in self.heads] if self.heads else None,
            "calibration": (
                {
                    "file": f"{self._calibration_name}.npy",
                    "truth_file": f"{self._calibration_name}.json",
                }
                if self.calibration is not None
                else None
            ),  # fmt: skip
            "canvases": [
                {
                    "name": c.name,
                    "file": f"{c.name}.npy",
                    "tiles_file": f"{c.name}.tiles.npz" if c.tiles is not None else None,
                    "labels_file": f"{c.name}.labels.npz" if c.label_map is not None else None,
                    "sources_file": (f"{c.name}.sources.npz" if c.source_map is not None else None),
                    "layout": c.layout,
                    **({"context": c.context} if c.context else {}),
                    "class_name": c.class_name,
                    "kind": c.kind,
                    "weight": c.weight,
                    "height": c.height,
                    "width": c.width,
                    "placements": [list(p) for p in c.placements],
                }
                for c in self.canvases
            ],
        }

    def save(self, directory: str | os.PathLike, prune: bool = True) -> Path:
        """Write the set into ``directory`` (created if needed) and return the manifest path.

        Canvas files are written under a temporary name then renamed; files already present
        (same unique name) are not rewritten, so saving after ``append`` only writes the new
        canvases. ``manifest.json`` is replaced last, atomically. With ``prune``, canvas files no
        longer referenced by the manifest are removed afterwards.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for c in self.canvases:
            if not c.name:
                c.name = self._new_name(c.kind, c.class_name)
            target = directory / f"{c.name}.npy"
            if not target.exists():
                _atomic_write(target, lambda f, a=c.array: np.save(f, np.ascontiguousarray(a)))
            for suffix, layer in ((".labels.npz", c.label_map), (".sources.npz", c.source_map)):
                layer_target = directory / f"{c.name}{suffix}"
                if layer is not None and not layer_target.exists():
                    _atomic_write(layer_target, lambda f, m=layer: _save_layer(f, m))
            if c.tiles is not None:
                tiles_target = directory / f"{c.name}.tiles.npz"
                if not tiles_target.exists():
                    ids, tiles = c.tiles
                    _atomic_write(
                        tiles_target,
                        lambda f, i=ids, t=tiles: np.savez(f, ids=np.array(i, dtype=str), images=t),
                    )
        if self.calibration is not None:
            name = self._calibration_name
            if not (directory / f"{name}.json").exists():
                image, truth = self.calibration
                _atomic_write(directory / f"{name}.npy", lambda f: np.save(f, image))
                payload = json.dumps(truth, separators=(",", ":")).encode()
                _atomic_write(directory / f"{name}.json", lambda f: f.write(payload))
        manifest = self.manifest()
        manifest_path = directory / MANIFEST_NAME
        data = json.dumps(manifest, separators=(",", ":")).encode()
        _atomic_write(manifest_path, lambda f: f.write(data))
        if prune:
            keep = {MANIFEST_NAME}
            if manifest["calibration"]:
                keep |= set(manifest["calibration"].values())
            for entry in manifest["canvases"]:
                keep.add(entry["file"])
                for extra in ("tiles_file", "labels_file", "sources_file"):
                    if entry.get(extra):
                        keep.add(entry[extra])
            for p in directory.iterdir():
                stale_calibration = p.name.startswith("calibration-")
                ours = p.name.endswith((".npy", ".npz")) or stale_calibration
                if p.is_file() and p.name not in keep and ours:
                    p.unlink(missing_ok=True)
        return manifest_path

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True) -> CanvasSet:
        """Read a set written by ``save``; with ``mmap`` the arrays are read-only memmaps."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST_NAME
        try:
            manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError as exc:
            raise CanvasError(
                f"{directory} has no {MANIFEST_NAME}: not a canvas set (build one first)"
            ) from exc
        except json.JSONDecodeError as exc:
            raise CanvasError(f"{manifest_path} is not valid JSON: {exc}") from exc
        if manifest.get("format") != MANIFEST_FORMAT:
            raise CanvasError(
                f"{manifest_path}: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}"
            )
        canvases = []
        for entry in manifest["canvases"]:
            path = directory / entry["file"]
            try:
                array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
            except FileNotFoundError as exc:
                raise CanvasError(f"canvas file {path} listed in the manifest is missing") from exc
            if array.shape != (entry["height"], entry["width"], 3) or array.dtype != np.uint8:
                raise CanvasError(
                    f"{path}: {array.dtype} {array.shape}, manifest says uint8 "
                    f"({entry['height']}, {entry['width']}, 3)"
                )
            tiles = None
            if entry.get("tiles_file"):
                with np.load(directory / entry["tiles_file"], allow_pickle=False) as z:
                    tiles = (z["ids"].tolist(), z["images"])
            label_map, source_map = (
                _load_layer(directory / entry[key], (entry["height"], entry["width"]), mmap)
                if entry.get(key)
                else None
                for key in ("labels_file", "sources_file")
            )
            canvases.append(
                Canvas(
                    class_name=entry["class_name"],
                    array=array,
                    weight=float(entry["weight"]),
                    kind=entry["kind"],
                    placements=[
                        (str(i), int(y), int(x), int(o)) for i, y, x, o in entry["placements"]
                    ],
                    name=entry["name"],
                    tiles=tiles,
                    layout=entry.get("layout", "scatter"),
                    label_map=label_map,
                    source_map=source_map,
                    context=int(entry.get("context", 0)),
                )
            )
        calibration = None
        if manifest.get("calibration"):
            info = manifest["calibration"]
            calibration = (
                np.load(directory / info["file"], allow_pickle=False),
                json.loads((directory / info["truth_file"]).read_text()),
            )
        return cls(
            classes=manifest["classes"],
            canvases=canvases,
            tile_size=tuple(manifest["tile_size"]),
            canvas_size=tuple(manifest["canvas_size"]),
            pitch_fraction=manifest["pitch_fraction"],
            extra_fraction=manifest["extra_fraction"],
            seed=manifest["seed"],
            meta=manifest.get("meta"),
            calibration=calibration,
            heads=manifest.get("heads"),
        )


def _save_layer(f, layer: np.ndarray) -> None:
    # A label or source map is flat 32x32 patches of a few values: zlib stores it in about 1% of
    # its bytes, where a raw .npy would add 1 byte per pixel to the canvas's 3.
    np.savez_compressed(f, layer=np.ascontiguousarray(layer, dtype=np.uint8))


def _load_layer(path: Path, shape: tuple[int, int], mmap: bool) -> np.ndarray:
    """A label or source map: ``.labels.npz`` (compressed, read into memory) or the raw
    ``.labels.npy`` sets saved before compression (a memmap with ``mmap``)."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                layer = z["layer"]
        else:
            layer = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError as exc:
        raise CanvasError(f"{path} listed in the manifest is missing") from exc
    if layer.shape != shape or layer.dtype != np.uint8:
        raise CanvasError(f"{path}: {layer.dtype} {layer.shape}, manifest says uint8 {shape}")
    return layer


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _placements(ids: Sequence[str], tile_index, ys, xs) -> list[Placement]:
    return [
        (ids[k], y, x, order)
        for order, (k, y, x) in enumerate(zip(tile_index.tolist(), ys.tolist(), xs.tolist()))
    ]


# --------------------------------------------------------------------------------------------
# Building


def build_canvas_set(
    images: LabelledImages,
    classes: Sequence[str] | None = None,
    canvas_size: int | tuple[int, int] = 1024,
    n_windows_target: int | None = None,
    canvases_per_class: int | Mapping[str, int] | None = None,
    window: int = 32,
    step: int = 8,
    seed: int = 0,
    progress: Progress | None = None,
    pitch_fraction: float = 0.75,
    extra_fraction: float = 0.25,
    meta: Mapping | None = None,
    layout: str = "mixed",
    calibration_fraction: float = CALIBRATION_FRACTION,
    calibration_copies: int = CALIBRATION_COPIES,
) -> CanvasSet:
    """Training canvases of ``images`` (project class names, see ``datasets.apply_mapping``).

    ``layout="mixed"`` (default): tiles of every class scattered together, each window labelled
    by the tile under its centre, so training windows look like scene windows (a window that
    should fire is often only 40-50% its object; its neighbours hold a part of it). ``"scatter"``:
    the published pipeline's canvases, one class per canvas (every window 100% one class).

    ``calibration_fraction`` of each class's images (seeded) never reach a canvas: they form the
    set's calibration scene (``CanvasSet.calibration``, collage-like, with its ground truth), on
    which thresholds are calibrated (each image pasted ``calibration_copies`` times). Classes
    with under 20 held-out images hold none out.
    """
    if layout not in ("mixed", "scatter"):
        raise CanvasError(f"layout must be 'mixed' or 'scatter', got {layout!r}")
    train_images, held_out = split_calibration(images, calibration_fraction, seed)
    if held_out is not None:
        meta = dict(meta or {}) | {"calibration_copies": int(calibration_copies)}
    plan = _BuildPlan.checked(
        train_images, classes, canvas_size, n_windows_target=n_windows_target,
        canvases_per_class=canvases_per_class, window=window, step=step, seed=seed,
        progress=progress, pitch_fraction=pitch_fraction, extra_fraction=extra_fraction,
        meta=meta,
    )  # fmt: skip
    build = _build_mixed_canvases if layout == "mixed" else _build_scatter_canvases
    cset = build(train_images, plan)
    if held_out is not None:
        cset.calibration = calibration_scene(held_out, seed, calibration_copies)
    return cset


@dataclass(frozen=True)
class _BuildPlan:
    """The checked options both canvas builders share."""

    classes: list[str]
    height: int
    width: int
    tile_size: tuple[int, int]
    n_windows_target: int | None
    canvases_per_class: int | Mapping[str, int] | None
    window: int
    step: int
    seed: int
    progress: Progress | None
    pitch_fraction: float
    extra_fraction: float
    meta: Mapping | None

    @classmethod
    def checked(cls, images: LabelledImages, classes, canvas_size, **options) -> _BuildPlan:
        """Options for building canvases of ``images``; a CanvasError says what is wrong."""
        classes = list(classes) if classes is not None else list(images.class_names)
        unknown = [c for c in classes if c not in images.class_names]
        if unknown:
            raise CanvasError(f"classes {unknown} not in the images' classes {images.class_names}")
        counts = images.counts()
        empty = [c for c in classes if counts[c] == 0]
        if empty:
            raise CanvasError(f"no images of class(es) {empty}: every class needs some")
        height, width = _canvas_size(canvas_size)
        th, tw = images.tile_size
        if height < th or width < tw:
            raise CanvasError(f"canvas size {height}x{width} is smaller than the tiles {th}x{tw}")
        return cls(classes, height, width, (th, tw), **options)

    @property
    def pastes_per_canvas(self) -> int:
        """Pastes one canvas takes (the default count and the tile cycles need it)."""
        ys, _ = plan_positions(
            self.height, self.width, self.tile_size, np.random.default_rng(0),
            self.pitch_fraction, self.extra_fraction,
        )  # fmt: skip
        return len(ys)

    @property
    def windows_per_canvas(self) -> int:
        return n_windows_in(self.height, self.width, self.window, self.step)

    def positions(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return plan_positions(
            self.height, self.width, self.tile_size, rng, self.pitch_fraction, self.extra_fraction
        )

    def new_set(self, heads=None) -> CanvasSet:
        return CanvasSet(
            self.classes, tile_size=self.tile_size, canvas_size=(self.height, self.width),
            pitch_fraction=self.pitch_fraction, extra_fraction=self.extra_fraction,
            seed=self.seed, meta=self.meta, heads=heads,
        )  # fmt: skip


def split_calibration(
    images: LabelledImages, fraction: float, seed: int = 0, min_per_class: int = 20
) -> tuple[LabelledImages, LabelledImages | None]:
    """(training images, held-out images or None): ``fraction`` of every class, seeded.

    Drawn per *source* class where the images know theirs, so a project of CIFAR-10 mapped to
    car / boat / negative holds out exactly the images the starting model held out (drawn per
    CIFAR-10 class with the same seed): its calibration scene is never seen in pretraining."""
    if not 0 <= fraction < 1:
        raise CanvasError(f"calibration_fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng([seed, 7])
    held = []
    by_source = images.sources is not None
    groups = images.source_labels if by_source else images.labels
    for label in range(len(images.sources if by_source else images.class_names)):
        members = np.flatnonzero(groups == label)
        n = int(round(fraction * len(members)))
        if n >= min_per_class and n < len(members):
            held.append(rng.choice(members, n, replace=False))
    if not held:
        return images, None
    held_idx = np.sort(np.concatenate(held))
    keep = np.ones(len(images), dtype=bool)
    keep[held_idx] = False
    return images.subset(keep), images.subset(held_idx)


def _paste_with_labels(tiles, labels, tile_index, ys, xs, height, width):
    """Paste in order and return (canvas, label map, owner map: which paste owns each pixel)."""
    th, tw = tiles.shape[1:3]
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    label_map = np.empty((height, width), dtype=np.uint8)
    owner = np.empty((height, width), dtype=np.int32)
    for order, (k, y, x) in enumerate(zip(tile_index.tolist(), ys.tolist(), xs.tolist())):
        canvas[y : y + th, x : x + tw] = tiles[k]
        label_map[y : y + th, x : x + tw] = labels[k]
        owner[y : y + th, x : x + tw] = order
    return canvas, label_map, owner


def calibration_scene(
    images: LabelledImages, seed: int = 0, copies: int = CALIBRATION_COPIES
) -> tuple[np.ndarray, list[dict]]:
    """A collage-like scene of ``images`` (each pasted about ``copies`` times, at different places
    among different neighbours, overlapping like the demo collage: pitch 0.75, 10% extras) and
    its ground truth ``{id, label, x, y, w, h, order, visible}``.

    Copies because the held-out images are few (a CIFAR-10 project holds out 250 a class) and
    whether an object is found depends as much on where it lands on the scoring grid and what
    covers it as on the image: with one paste each, calibrated thresholds moved by up to 0.15
    between versions (bench/bench_loop.py measures the spread with 1 and with ``copies``)."""
    if copies < 1:
        raise CanvasError(f"calibration copies must be >= 1, got {copies}")
    th, tw = images.tile_size
    rng = np.random.default_rng([seed, 11])
    side_tiles = max(2, math.ceil(math.sqrt(len(images) * copies / 1.1)))
    pitch = max(1, int(round(th * 0.75)))
    height = width = (side_tiles - 1) * pitch + th
    ys, xs = plan_positions(height, width, (th, tw), rng, 0.75, 0.1)
    tile_index = _tile_cycle(len(images), len(ys), rng)
    names = list(images.class_names)
    canvas, _, owner = _paste_with_labels(
        images.images, images.labels, tile_index, ys, xs, height, width
    )
    visible = np.bincount(owner.reshape(-1), minlength=len(ys)) / float(th * tw)
    truth = [
        {
            "id": images.ids[k], "label": names[int(images.labels[k])], "x": int(x), "y": int(y),
            "w": int(tw), "h": int(th), "order": order, "visible": float(visible[order]),
        }
        for order, (k, y, x) in enumerate(zip(tile_index.tolist(), ys.tolist(), xs.tolist()))
    ]  # fmt: skip
    return canvas, truth


def _build_mixed_canvases(images: LabelledImages, plan: _BuildPlan) -> CanvasSet:
    """Canvases of all classes together; labels in a per-pixel label map."""
    classes, height, width = plan.classes, plan.height, plan.width
    th, tw = plan.tile_size
    # Only the wanted classes; the label map holds indices into ``classes``.
    wanted = np.isin(images.labels, [images.class_names.index(c) for c in classes])
    pool = images.subset(np.flatnonzero(wanted))
    remap = np.array([classes.index(n) if n in classes else 0 for n in pool.class_names])
    labels = remap[pool.labels].astype(np.uint8)
    heads, head_of = None, None
    if pool.sources is not None:
        present = sorted(set(pool.source_labels.tolist()))
        owner = pool.source_to_class()
        heads = [(pool.sources[k], owner[k]) for k in present]
        lut = np.full(len(pool.sources), 255, dtype=np.uint8)
        lut[present] = np.arange(len(present))
        head_of = lut[pool.source_labels]
    pastes_per_canvas = plan.pastes_per_canvas
    per = plan.canvases_per_class
    if per is not None:
        n = sum(per.values()) if isinstance(per, Mapping) else int(per) * len(classes)
    elif plan.n_windows_target is not None:
        n = math.ceil(plan.n_windows_target / max(1, plan.windows_per_canvas))
    else:
        n = math.ceil(len(pool) / pastes_per_canvas)
    n = max(1, int(n))
    cset = plan.new_set(heads=heads)
    rng = np.random.default_rng([plan.seed, 3])
    cycle = _tile_cycle(len(pool), n * pastes_per_canvas, rng)
    for k in range(n):
        ys, xs = plan.positions(rng)
        tile_index = np.resize(cycle[k * pastes_per_canvas : (k + 1) * pastes_per_canvas], len(ys))
        array, label_map, _ = _paste_with_labels(
            pool.images, labels, tile_index, ys, xs, height, width
        )
        source_map = None
        if head_of is not None:
            source_map = np.empty((height, width), dtype=np.uint8)
            for tile, y, x in zip(tile_index.tolist(), ys.tolist(), xs.tolist()):
                source_map[y : y + th, x : x + tw] = head_of[tile]
        cset.canvases.append(
            Canvas(
                class_name=MIXED,
                array=array,
                kind="original",
                placements=_placements(pool.ids, tile_index, ys, xs),
                name=cset._new_name("original", MIXED),
                layout="mixed",
                label_map=label_map,
                source_map=source_map,
            )
        )
        report(plan.progress, k + 1, n, f"canvas {k + 1}/{n} (mixed)")
    return cset


def _build_scatter_canvases(images: LabelledImages, plan: _BuildPlan) -> CanvasSet:
    """Scatter each class's images on its own canvases.

    ``images`` carry project class names (see ``datasets.apply_mapping``); ``plan.classes`` picks
    which get canvases. How many canvases per class, first that applies:

    * ``canvases_per_class``: an int for every class, or a dict class -> count;
    * ``n_windows_target``: total windows (``window`` at ``step``) over the set, shared equally
      between classes (each class gets ``ceil(target / n_classes / windows_per_canvas)``);
    * otherwise enough canvases for every image of the class to be pasted at least once.
    """
    classes, height, width = plan.classes, plan.height, plan.width
    counts = images.counts()
    pastes_per_canvas = plan.pastes_per_canvas
    per_canvas_windows = plan.windows_per_canvas
    per = plan.canvases_per_class
    counts_by_class: dict[str, int] = {}
    for c in classes:
        if per is not None:
            n = per[c] if isinstance(per, Mapping) else int(per)
        elif plan.n_windows_target is not None:
            if per_canvas_windows == 0:
                raise CanvasError(f"window {plan.window} does not fit in canvas {height}x{width}")
            n = math.ceil(plan.n_windows_target / len(classes) / per_canvas_windows)
        else:
            n = math.ceil(counts[c] / pastes_per_canvas)
        counts_by_class[c] = max(1, int(n))
    total = sum(counts_by_class.values())
    cset = plan.new_set()
    done = 0
    for class_number, c in enumerate(classes):
        label = images.class_names.index(c)
        member_index = np.flatnonzero(images.labels == label)
        tiles = images.images[member_index]
        ids = [images.ids[i] for i in member_index.tolist()]
        rng = np.random.default_rng([plan.seed, class_number])
        cycle = _tile_cycle(len(tiles), counts_by_class[c] * pastes_per_canvas, rng)
        for k in range(counts_by_class[c]):
            tile_index = cycle[k * pastes_per_canvas : (k + 1) * pastes_per_canvas]
            array, tile_index, ys, xs = scatter_canvas(
                tiles, height, width, rng, plan.pitch_fraction, plan.extra_fraction, tile_index
            )
            cset.canvases.append(
                Canvas(
                    class_name=c,
                    array=array,
                    weight=1.0,
                    kind="original",
                    placements=_placements(ids, tile_index, ys, xs),
                    name=cset._new_name("original", c),
                )
            )
            done += 1
            report(plan.progress, done, total, f"canvas {done}/{total} ({c})")
    return cset


def rebuild_from_manifest(
    entry: Mapping, images: LabelledImages | Mapping[str, np.ndarray]
) -> np.ndarray:
    """Re-create one canvas from its manifest entry and the source images (bit-exact audit).

    ``entry`` is one item of ``manifest["canvases"]``; ``images`` a ``LabelledImages`` holding the
    placed ids, or a mapping id -> uint8 (h, w, 3) (e.g. the correction tiles file).
    """
    if isinstance(images, LabelledImages):
        index = {i: k for k, i in enumerate(images.ids)}

        def tile(image_id: str) -> np.ndarray:
            return images.images[index[image_id]]
    else:

        def tile(image_id: str) -> np.ndarray:
            return np.asarray(images[image_id])

    canvas = np.zeros((entry["height"], entry["width"], 3), dtype=np.uint8)
    placements = sorted(entry["placements"], key=lambda p: p[3])
    margin = int(entry.get("context", 0))  # an exact tile's context: it starts before its window
    try:
        for image_id, y, x, _order in placements:
            t = tile(image_id)
            y, x = y - margin, x - margin
            canvas[y : y + t.shape[0], x : x + t.shape[1]] = t
    except KeyError as exc:
        raise CanvasError(
            f"image {exc} placed on canvas {entry.get('name')} is not in the images"
        ) from exc
    return canvas
