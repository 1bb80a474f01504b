"""The deep-zoom writer the app used before libvips (numpy halving + Pillow, one JPEG at a time,
single-threaded), kept only as the baseline that bench/bench_gigapixel.py measures libvips'
dzsave against (docs/speed.md#gigapixel-scenes). The app writes pyramids with
mlcore.ingest.deepzoom.

Output: ``<name>.dzi`` (XML: TileSize, Overlap, Format, Size) and tiles
``<name>_files/<level>/<col>_<row>.<format>``. Level ``L = ceil(log2(max(W, H)))`` is the full
image, each lower level halves it (rounding up), down to level 0 (1x1). A tile of nominal size
``tile_size`` carries ``overlap`` extra pixels on every side that has a neighbour.

Memory stays bounded for huge scenes: the full-size level is read from the scene reader one band
of tile rows at a time (``read_rows``, so a ``.npy`` scene is never loaded whole); each band is
cut into tiles and halved into the next level, which is kept in memory when small and otherwise in
a temporary ``.npy`` memmap on disk; lower levels are processed the same way from there.

Tiles go through ``write(key, data)`` (so the app can target any storage) or into a directory;
the ``.dzi`` descriptor is written last, so a pyramid with a descriptor is complete.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from mlcore.ingest.deepzoom import (  # the descriptor, the tile grid and the writers are shared
    DeepZoomError,
    DziInfo,
    Writer,
    directory_writer,
    dzi_xml,
    level_sizes,
    read_dzi,
    storage_writer,
    tile_bounds,
)
from mlcore.ingest.scenes import ArrayScene, open_scene
from mlcore.progress import Progress, report

FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG"}
IN_MEMORY_LEVEL_BYTES = 256 * 1024 * 1024
__all__ = ["generate_dzi", "read_dzi", "directory_writer", "storage_writer", "DeepZoomError"]


def _halve(band: np.ndarray) -> np.ndarray:
    """2x2 mean (rounded) of an (h, w, 3) band with even h; an odd width repeats the last column."""
    if band.shape[1] % 2:
        band = np.concatenate([band, band[:, -1:]], axis=1)
    b = band.astype(np.uint16)
    s = b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def _encode(tile: np.ndarray, pil_format: str, quality: int) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(np.ascontiguousarray(tile))
    if pil_format == "JPEG":
        im.save(buf, "JPEG", quality=quality)
    else:
        im.save(buf, "PNG", compress_level=3)
    return buf.getvalue()


def generate_dzi(
    source,
    out: Writer | str | os.PathLike,
    name: str = "scene",
    tile_size: int = 254,
    overlap: int = 1,
    fmt: str = "jpg",
    quality: int = 90,
    progress: Progress | None = None,
    tmp_dir: str | os.PathLike | None = None,
) -> DziInfo:
    """Write the DZI pyramid of ``source`` and return its ``DziInfo``.

    ``source``: a scene reader (``.height``, ``.width``, ``.read_rows``) such as ``NpyScene``, a
    uint8 (H, W, 3) array, a PIL image, or a path to a ``.npy`` or picture file.
    ``out``: ``write(key, data)`` or a directory. Keys: ``<name>.dzi`` and
    ``<name>_files/<level>/<col>_<row>.<fmt>``. ``tmp_dir`` holds the memmaps of big levels.
    """
    if fmt.lower() not in FORMATS:
        raise DeepZoomError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if tile_size < 1 or overlap < 0 or overlap >= tile_size:
        raise DeepZoomError(
            f"need tile_size >= 1 and 0 <= overlap < tile_size, got {tile_size}, {overlap}"
        )
    if "/" in name or name in ("", ".", ".."):
        raise DeepZoomError(f"name must be a plain file name, got {name!r}")
    pil_format = FORMATS[fmt.lower()]
    write: Writer = out if callable(out) else directory_writer(out)
    reader = open_scene(source)
    width, height = reader.width, reader.height
    sizes = level_sizes(width, height)
    top = len(sizes) - 1
    total = sum(math.ceil(w / tile_size) * math.ceil(h / tile_size) for w, h in sizes)
    done = 0
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="dzi-") as scratch:
        level_reader = reader
        for level in range(top, -1, -1):
            w, h = sizes[level]
            nxt = None
            if level > 0:
                nw, nh = sizes[level - 1]
                if nw * nh * 3 <= IN_MEMORY_LEVEL_BYTES:
                    nxt = np.empty((nh, nw, 3), dtype=np.uint8)
                else:
                    nxt = np.lib.format.open_memmap(
                        Path(scratch) / f"level-{level - 1}.npy", "w+", np.uint8, (nh, nw, 3)
                    )
            n_cols, n_rows = math.ceil(w / tile_size), math.ceil(h / tile_size)
            pending = np.empty((0, w, 3), dtype=np.uint8)  # an odd row carried to the next band
            out_row = 0
            for row in range(n_rows):
                band_y0 = max(0, row * tile_size - overlap)
                band_y1 = min(h, (row + 1) * tile_size + overlap)
                band = level_reader.read_rows(band_y0, band_y1)
                for col in range(n_cols):
                    x0, y0, x1, y1 = tile_bounds(col, row, w, h, tile_size, overlap)
                    tile = band[y0 - band_y0 : y1 - band_y0, x0:x1]
                    write(
                        f"{name}_files/{level}/{col}_{row}.{fmt}",
                        _encode(tile, pil_format, quality),
                    )
                done += n_cols
                report(progress, done, total, f"level {level}, tile row {row + 1}/{n_rows}")
                if nxt is not None:
                    core_y0, core_y1 = row * tile_size, min(h, (row + 1) * tile_size)
                    core = band[core_y0 - band_y0 : core_y1 - band_y0]
                    rows = np.concatenate([pending, core]) if len(pending) else core
                    last = row == n_rows - 1
                    if last and len(rows) % 2:
                        rows = np.concatenate([rows, rows[-1:]])  # odd height: repeat last row
                    even = len(rows) - len(rows) % 2
                    halved = _halve(rows[:even])
                    nxt[out_row : out_row + len(halved)] = halved
                    out_row += len(halved)
                    pending = rows[even:].copy()
            if nxt is not None:
                if out_row != len(nxt):  # pragma: no cover - guards the band bookkeeping
                    raise RuntimeError(f"level {level - 1}: wrote {out_row} rows of {len(nxt)}")
                if isinstance(nxt, np.memmap):
                    nxt.flush()
                level_reader = ArrayScene(nxt)
    write(f"{name}.dzi", dzi_xml(width, height, tile_size, overlap, fmt).encode())
    return DziInfo(name, width, height, tile_size, overlap, fmt, len(sizes), total)
