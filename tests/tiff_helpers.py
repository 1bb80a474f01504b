"""TIFF scenes for the tests, written without holding them in memory: a tiled BigTIFF (tifffile,
tile by tile), a pyramidal TIFF (libvips tiffsave of a computed image), a GeoTIFF; the pixel
pattern they all carry can be recomputed for any box, so tests compare without a full decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyvips
import tifffile


def pattern(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """The scenes' pixels in rows [y0, y1) and columns [x0, x1): uint8 (h, w, 3)."""
    y, x = np.mgrid[y0:y1, x0:x1]
    return np.stack([x & 255, y & 255, ((x + y) >> 3) & 255], axis=-1).astype(np.uint8)


def write_tiled_bigtiff(path: Path, height: int, width: int, tile: int = 256,
                        compression: str = "deflate", **kwargs) -> Path:  # fmt: skip
    """A tiled BigTIFF of ``pattern``, written one tile at a time."""

    def tiles():
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                block = np.zeros((tile, tile, 3), np.uint8)
                part = pattern(y, min(height, y + tile), x, min(width, x + tile))
                block[: part.shape[0], : part.shape[1]] = part
                yield block

    tifffile.imwrite(
        path, tiles(), shape=(height, width, 3), dtype=np.uint8, tile=(tile, tile),
        photometric="rgb", compression=compression, bigtiff=True, **kwargs,
    )  # fmt: skip
    return path


def write_pyramidal_tiff(path: Path, height: int, width: int) -> Path:
    """A tiled, JPEG-compressed pyramidal TIFF of ``pattern`` (libvips: a page per level, full
    resolution first), computed by libvips strip by strip."""
    xy = pyvips.Image.xyz(width, height)
    x, y = xy[0], xy[1]
    image = (x & 255).bandjoin([y & 255, ((x + y) >> 3) & 255]).cast("uchar")
    image = image.copy(interpretation="srgb")
    image.tiffsave(str(path), tile=True, pyramid=True, compression="jpeg", Q=95,
                   tile_width=256, tile_height=256)  # fmt: skip
    return path


# A GeoTIFF's tags: 0.5 m pixels of UTM zone 33N with the top-left corner at (500000, 4650000).
GEO_ORIGIN, GEO_PIXEL, GEO_EPSG = (500_000.0, 4_650_000.0), 0.5, 32633


def write_geotiff(path: Path, height: int, width: int) -> Path:
    geokeys = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, GEO_EPSG]
    return write_tiled_bigtiff(
        path, height, width, tile=128,
        extratags=[
            (33550, "d", 3, (GEO_PIXEL, GEO_PIXEL, 0.0)),
            (33922, "d", 6, (0.0, 0.0, 0.0, *GEO_ORIGIN, 0.0)),
            (34735, "H", len(geokeys), geokeys),
        ],
    )  # fmt: skip


# --- hostile TIFFs: a tile table written byte by byte, as no library would write it ----------


def write_raw_bigtiff(path: Path, width: int, height: int, tile: int, blobs: list[bytes],
                      table: list[tuple[int, int, int] | None], *, compression: int = 8,
                      photometric: int = 2, samples: int = 3, bits: int = 8) -> Path:  # fmt: skip
    """A tiled little-endian BigTIFF whose tile table is exactly ``table``: per tile (in row
    order) ``(blob, start, length)``, bytes ``start:start + length`` of ``blobs[blob]`` (each
    blob is stored once, so tiles naming the same blob share or overlap their bytes), or None
    for an empty tile (offset and byte count 0)."""
    import struct

    data = bytearray(b"II+\x00\x08\x00\x00\x00" + bytes(8))  # header; IFD offset patched below
    where = []
    for blob in blobs:
        where.append(len(data))
        data += blob
    offsets = [0 if t is None else where[t[0]] + t[1] for t in table]
    counts = [0 if t is None else t[2] for t in table]
    data += bytes(-len(data) % 8)
    ifd = len(data)
    entries = [  # (tag, type, values): 3 SHORT, 4 LONG, 16 LONG8
        (256, 4, [width]), (257, 4, [height]), (258, 3, [bits] * samples),
        (259, 3, [compression]), (262, 3, [photometric]), (277, 3, [samples]),
        (284, 3, [1]), (322, 4, [tile]), (323, 4, [tile]),
        (324, 16, offsets), (325, 16, counts),
    ]  # fmt: skip
    formats = {3: "H", 4: "I", 16: "Q"}
    arrays = ifd + 8 + 20 * len(entries) + 8
    body, extra = bytearray(struct.pack("<Q", len(entries))), bytearray()
    for tag, kind, values in entries:
        packed = struct.pack(f"<{len(values)}{formats[kind]}", *values)
        if len(packed) <= 8:
            value = packed.ljust(8, b"\x00")
        else:
            value = struct.pack("<Q", arrays + len(extra))
            extra += packed + bytes(-len(packed) % 8)
        body += struct.pack("<HHQ", tag, kind, len(values)) + value
    body += bytes(8)  # no next IFD
    data += body + extra
    struct.pack_into("<Q", data, 8, ifd)
    path.write_bytes(bytes(data))
    return path
