"""Deep Zoom (DZI) pyramids of scenes, as OpenSeadragon reads them, written by libvips' dzsave.

Output: ``<name>.dzi`` (XML: TileSize, Overlap, Format, Size) and tiles
``<name>_files/<level>/<col>_<row>.<format>``. Level ``L = ceil(log2(max(W, H)))`` is the full
image, each lower level halves it (rounding up), down to level 0 (1x1). A tile of nominal size
``tile_size`` carries ``overlap`` extra pixels on every side that has a neighbour.

dzsave reads the scene's ``.npy`` as a stream (a TIFF header in front of its pixel bytes, read a
strip at a time), shrinks each level by 2x2 means and encodes tiles on every core, so memory
stays a few strips of tiles whatever the scene's size; a scene in remote storage is read by byte
ranges. Into a folder (local storage) it writes in place; otherwise into a scratch folder, the
tiles then going through ``write(key, data)`` (so the app can target any storage). Either way
the ``.dzi`` descriptor comes last, so a pyramid with a descriptor is complete.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips
import tifffile

from mlcore.ingest.scenes import NPY_MAGIC, ArrayScene, NpyScene, open_scene
from mlcore.progress import Progress, report

FORMATS = {"jpg": "jpg", "jpeg": "jpg", "png": "png"}
Writer = Callable[[str, bytes], None]


class DeepZoomError(ValueError):
    """Bad pyramid parameters (the message says what and what to do)."""


@dataclass
class DziInfo:
    """What ``generate_dzi`` wrote."""

    name: str
    width: int
    height: int
    tile_size: int
    overlap: int
    format: str
    levels: int
    n_tiles: int

    @property
    def dzi_key(self) -> str:
        return f"{self.name}.dzi"

    @property
    def files_prefix(self) -> str:
        return f"{self.name}_files"


def level_count(width: int, height: int) -> int:
    """Number of levels of the pyramid: ``ceil(log2(max(w, h))) + 1``."""
    return max(0, math.ceil(math.log2(max(width, height, 1)))) + 1


def level_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """(width, height) of every level, index = level number (0 is 1x1, the last is full size)."""
    n = level_count(width, height)
    sizes = []
    for level in range(n):
        scale = 2 ** (n - 1 - level)
        sizes.append((max(1, math.ceil(width / scale)), max(1, math.ceil(height / scale))))
    return sizes


def tile_bounds(col: int, row: int, width: int, height: int, tile_size: int, overlap: int):
    """Pixel box (x0, y0, x1, y1) of tile (col, row) of a width x height level, overlap included."""
    x0 = max(0, col * tile_size - overlap)
    y0 = max(0, row * tile_size - overlap)
    x1 = min(width, (col + 1) * tile_size + overlap)
    y1 = min(height, (row + 1) * tile_size + overlap)
    return x0, y0, x1, y1


def dzi_xml(width: int, height: int, tile_size: int, overlap: int, fmt: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
        f'TileSize="{tile_size}" Overlap="{overlap}" Format="{fmt}">\n'
        f'  <Size Width="{width}" Height="{height}"/>\n'
        "</Image>\n"
    )


def directory_writer(root: str | os.PathLike) -> Writer:
    """A ``write(key, data)`` that stores under ``root`` (each file via a temporary name)."""
    root = Path(root)

    def write(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    return write


def storage_writer(storage, prefix: str = "") -> Writer:
    """A ``write(key, data)`` that stores ``prefix + key`` via ``storage.write``."""

    def write(key: str, data: bytes) -> None:
        storage.write(prefix + key, data)

    return write


STRIP_BYTES = 1024 * 1024  # what libvips asks the scene for at a time


def _tiff_header(width: int, height: int, scratch: Path) -> tuple[bytes, int]:
    """The header of an uncompressed, striped RGB BigTIFF of this size (tifffile writes it; the
    pixel data it leaves out would follow at the returned offset) and its rows per strip."""
    rows = max(1, STRIP_BYTES // (width * 3))
    path = scratch / "header.tif"
    # Without data tifffile writes the header and leaves the pixels a hole (a sparse file).
    tifffile.imwrite(path, shape=(height, width, 3), dtype=np.uint8, photometric="rgb",
                     bigtiff=True, rowsperstrip=rows)  # fmt: skip
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        start = int(page.dataoffsets[0])
        if (
            page.is_contiguous is None
            or int(page.dataoffsets[-1]) + int(page.databytecounts[-1])
            != start + height * width * 3
        ):  # pragma: no cover - tifffile lays strips out in order
            raise DeepZoomError("unexpected TIFF layout for the scene's pixels")
    with open(path, "rb") as f:
        header = f.read(start)
    path.unlink()
    return header, rows


def _npy_source(scene: NpyScene, scratch: Path) -> pyvips.SourceCustom:
    """The ``.npy`` scene as a stream libvips reads like a TIFF file: a TIFF header, then the
    scene's pixel bytes as they lie (same row order). libvips maps a raw file whole, which would
    put every page of the scene in this process's memory; a stream costs a strip at a time."""
    header, _rows = _tiff_header(scene.width, scene.height, scratch)
    size = len(header) + scene.height * scene.row_bytes
    local = scene.path
    if local is None and hasattr(scene.storage, "local_path"):
        local = scene.storage.local_path(scene.key)  # None for remote storage
    handle = open(local, "rb") if local is not None else None  # noqa: SIM115
    state = {"pos": 0}

    def read(length: int) -> bytes:
        pos = state["pos"]
        if pos < len(header):
            data = header[pos : pos + length]
        else:
            offset = scene.header.data_offset + pos - len(header)
            length = min(length, size - pos)
            if handle is not None:
                handle.seek(offset)
                data = handle.read(length)
            else:
                data = scene.storage.read_range(scene.key, offset, length) if length else b""
        state["pos"] = pos + len(data)
        return data

    def seek(offset: int, whence: int) -> int:
        base = {0: 0, 1: state["pos"], 2: size}[whence]
        state["pos"] = base + offset
        return state["pos"]

    source = pyvips.SourceCustom()
    source.on_read(read)
    source.on_seek(seek)
    source.handle = handle  # closed with the source
    return source


def _vips_image(source, scratch: Path) -> tuple[pyvips.Image, object]:
    """(libvips image, the object that must outlive it) for a scene source."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            is_npy = f.read(6) == NPY_MAGIC
        source = NpyScene(source) if is_npy else open_scene(source)
    if isinstance(source, NpyScene):
        stream = _npy_source(source, scratch)
        return pyvips.Image.new_from_source(stream, "", access="sequential"), stream
    if not isinstance(source, np.ndarray):
        source = source.read_rows(0, source.height) if hasattr(source, "read_rows") else source
    arr = np.ascontiguousarray(ArrayScene(source).array)
    return pyvips.Image.new_from_array(arr, interpretation="srgb"), arr


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
    uint8 (H, W, 3) array, or a path to a ``.npy`` or picture file.
    ``out``: ``write(key, data)`` or a directory. Keys: ``<name>.dzi`` and
    ``<name>_files/<level>/<col>_<row>.<fmt>``. ``tmp_dir`` holds the scratch pyramid.
    """
    if fmt.lower() not in FORMATS:
        raise DeepZoomError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if tile_size < 1 or overlap < 0 or overlap >= tile_size:
        raise DeepZoomError(
            f"need tile_size >= 1 and 0 <= overlap < tile_size, got {tile_size}, {overlap}"
        )
    if "/" in name or name in ("", ".", ".."):
        raise DeepZoomError(f"name must be a plain file name, got {name!r}")
    suffix = FORMATS[fmt.lower()]
    # 4:2:0 chroma, as Pillow writes JPEG (libvips keeps full chroma from Q 90: 25% larger tiles)
    options = f"[Q={int(quality)},subsample_mode=on]" if suffix == "jpg" else "[compression=3]"
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="dzi-") as scratch:
        scratch = Path(scratch)
        # Into a folder: straight there (libvips writes the descriptor after the last tile);
        # through a writer: into scratch, then tile by tile.
        folder = None if callable(out) else Path(out)
        target = folder if folder is not None else scratch
        target.mkdir(parents=True, exist_ok=True)
        image, keep_alive = _vips_image(source, scratch)
        width, height = image.width, image.height
        image.set_progress(True)
        image.signal_connect(
            "eval", lambda _im, p: report(progress, int(p.percent), 200, "making the tiles")
        )
        try:
            image.dzsave(
                os.fspath(target / name), suffix=f".{suffix}{options}", tile_size=tile_size,
                overlap=overlap, depth="onepixel", layout="dz", keep="none",
            )  # fmt: skip
        except pyvips.Error as exc:
            raise DeepZoomError(f"libvips could not write the pyramid: {exc}") from None
        finally:
            if getattr(keep_alive, "handle", None) is not None:
                keep_alive.handle.close()
        (target / f"{name}_files" / "vips-properties.xml").unlink(missing_ok=True)
        descriptor = dzi_xml(width, height, tile_size, overlap, suffix).encode()
        if folder is not None:
            n_tiles = sum(1 for _ in (folder / f"{name}_files").rglob(f"*.{suffix}"))
            directory_writer(folder)(f"{name}.dzi", descriptor)  # ours replaces libvips' own
        else:
            files = sorted((scratch / f"{name}_files").rglob(f"*.{suffix}"))
            n_tiles = len(files)
            for i, path in enumerate(files):
                out(path.relative_to(scratch).as_posix(), path.read_bytes())
                path.unlink()  # scratch shrinks as storage fills
                if i % 256 == 0 or i == n_tiles - 1:
                    done = 100 + (100 * (i + 1)) // n_tiles
                    report(progress, done, 200, f"storing tile {i + 1:,} of {n_tiles:,}")
            out(f"{name}.dzi", descriptor)
    report(progress, 200, 200, f"{n_tiles:,} tiles")
    levels = level_count(width, height)
    return DziInfo(name, width, height, tile_size, overlap, suffix, levels, n_tiles)


def read_dzi(xml: str | bytes) -> dict:
    """Parse a ``.dzi`` descriptor into {tile_size, overlap, format, width, height}."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    if size is None:
        raise DeepZoomError("not a DZI descriptor: no <Size> element")
    return {
        "tile_size": int(root.get("TileSize")),
        "overlap": int(root.get("Overlap")),
        "format": root.get("Format"),
        "width": int(size.get("Width")),
        "height": int(size.get("Height")),
    }
