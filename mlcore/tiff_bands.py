"""TIFF scenes read a band of rows at a time with tifffile (imagecodecs decodes every codec).

BigTIFF, tiled, striped and pyramidal files (the full-resolution level) are read segment by
segment, so memory holds one band of tile rows, never the image. libvips' libtiff knows fewer
codecs and gives black pixels for the others (LERC, JPEG-XL, JPEG 2000...), so TIFF comes here.

Before any pixel is decoded, ``check_segments`` refuses a file whose tiles or strips lie beyond
its end (truncated) or whose compressed bytes cannot hold the pixels the header declares.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import tifffile

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# One decoded tile or strip at most: a 1-gigapixel image stored as a single compressed strip
# would otherwise be decoded whole.
MAX_SEGMENT_BYTES = 256 * 1024 * 1024
# Compressed bytes read per pass (tifffile's default is 256 MB).
READ_BUFFER_BYTES = 16 * 1024 * 1024
# The most a codec can compress (raw bytes per coded byte): deflate 1032:1, LZW ~1,370:1 with
# 12-bit codes, PackBits 128 bytes in 2, baseline JPEG one bit per 8x8 block of 3 samples.
# Codecs without a known floor (zstd, webp, lerc...) are not checked this way.
MAX_RATIO = {1: 1, 5: 1400, 8: 1032, 32946: 1032, 32773: 64, 6: 1536, 7: 1536}
PALETTE, MINISWHITE, SEPARATED, YCBCR = 3, 0, 5, 6
JPEG_CODECS = {6, 7, 34892, 33007}


class TiffSceneError(ValueError):
    """A TIFF that cannot be a scene; the message names the file and says why."""


def is_tiff(path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in TIFF_MAGICS


def full_resolution_page(tif: tifffile.TiffFile, name: str) -> tifffile.TiffPage:
    """The first image's largest level (a pyramid's base, a plain file's only page)."""
    try:
        page = tif.series[0].levels[0].pages[0]
    except (IndexError, AttributeError) as exc:
        raise TiffSceneError(f"{name} holds no image") from exc
    if not isinstance(page, tifffile.TiffPage):
        page = page.keyframe
    return page


def describe(page: tifffile.TiffPage, name: str) -> None:
    """Refuse layouts that cannot be read band by band as RGB."""
    if page.imagedepth > 1:
        raise TiffSceneError(f"{name} is a volume ({page.imagedepth} slices deep), not a picture")
    if page.planarconfig == 2 and page.samplesperpixel > 1:
        raise TiffSceneError(
            f"{name} stores its {page.samplesperpixel} colour planes one after the other "
            "(PlanarConfiguration 2), which cannot be read band by band; save it pixel-"
            "interleaved (gdal_translate -co INTERLEAVE=PIXEL, or vips tiffsave)"
        )
    if page.photometric == SEPARATED:
        raise TiffSceneError(f"{name} is CMYK; save it as RGB")
    if page.photometric == YCBCR and page.compression not in JPEG_CODECS:
        raise TiffSceneError(f"{name} is YCbCr without JPEG compression; save it as RGB")
    if page.dtype is None or page.dtype.kind not in "ub" or page.dtype.itemsize > 2:
        raise TiffSceneError(
            f"{name} has {page.bitspersample}-bit {page.dtype} samples; scenes are 8- or 16-bit "
            "unsigned RGB or grey (scale it, e.g. gdal_translate -ot Byte -scale)"
        )
    segment = int(np.prod(page.chunks)) * page.dtype.itemsize
    if segment > MAX_SEGMENT_BYTES:
        raise TiffSceneError(
            f"{name} is stored in {'tiles' if page.is_tiled else 'strips'} of "
            f"{segment / 2**20:,.0f} MiB each (decoded); save it tiled (gdal_translate -co "
            "TILED=YES, or vips tiffsave --tile) so it can be read a band at a time"
        )


def check_segments(page: tifffile.TiffPage, file_size: int, name: str) -> None:
    """Refuse a truncated file, or one whose coded bytes cannot cover its declared pixels."""
    kind = "tile" if page.is_tiled else "strip"
    expected = int(np.prod(page.chunked))
    listed = min(len(page.dataoffsets), len(page.databytecounts))
    if listed < expected:
        raise TiffSceneError(
            f"{name} is truncated: its {page.imagewidth}x{page.imagelength} pixels need "
            f"{expected:,} {kind}s, it lists {listed:,}"
        )
    coded = present = 0
    for i, (offset, count) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=True)):
        if count == 0:  # a sparse (empty) segment: GDAL writes these for no-data areas
            continue
        if offset + count > file_size:
            raise TiffSceneError(
                f"{name} is truncated: its {kind} {i} ends at byte {offset + count:,}, beyond "
                f"the end of the file ({file_size:,} bytes)"
            )
        coded += count
        present += 1
    ratio = MAX_RATIO.get(page.compression)
    if ratio is None or present == 0:
        return
    raw = int(np.prod(page.chunks)) * page.dtype.itemsize * present
    if page.compression == 1:
        raw = min(raw, page.imagewidth * page.imagelength * page.samplesperpixel)
    if coded * ratio < raw:
        raise TiffSceneError(
            f"{name} is truncated: its {coded:,} bytes of {page.compression.name} data cannot "
            f"hold the {page.imagewidth}x{page.imagelength} pixels its header declares"
        )


def _open(path, name: str) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
        raise TiffSceneError(f"{name} is a corrupt or truncated TIFF: {exc}") from exc


def image_size(path, name: str) -> tuple[int, int]:
    """(width, height) of the full-resolution image, from the tags alone."""
    with _open(path, name) as tif:
        page = full_resolution_page(tif, name)
        return page.imagewidth, page.imagelength


def open_checked(path, name: str) -> tuple[tifffile.TiffFile, tifffile.TiffPage]:
    """Open ``path`` and return (file, full-resolution page), layout and bytes checked."""
    tif = _open(path, name)
    try:
        page = full_resolution_page(tif, name)
        describe(page, name)
        check_segments(page, os.path.getsize(path), name)
    except BaseException:
        tif.close()
        raise
    return tif, page


def _to_rgb8(band: np.ndarray, page: tifffile.TiffPage) -> np.ndarray:
    """(h, w, samples) as stored -> uint8 (h, w, 3)."""
    if page.photometric == PALETTE and page.colormap is not None:
        return (page.colormap.T[band[..., 0]] >> 8).astype(np.uint8)
    if band.dtype == np.uint16:
        band = (band >> 8).astype(np.uint8)
    elif band.dtype == bool:
        band = band.astype(np.uint8) * 255
    if page.photometric == MINISWHITE:
        band = 255 - band
    if band.shape[2] >= 3:
        return band[..., :3]  # RGB; alpha and any extra bands dropped
    return np.repeat(band[..., :1], 3, axis=2)  # grey (with or without alpha)


def iter_bands(path, name: str) -> Iterator[np.ndarray]:
    """The full-resolution image as consecutive uint8 (rows, W, 3) bands, top to bottom: one
    row of tiles (or strips) at a time."""
    tif, page = open_checked(path, name)
    with tif:
        width, height = page.imagewidth, page.imagelength
        seg_h = page.chunks[0] if page.is_tiled else page.rowsperstrip
        seg_h = min(seg_h or height, height)
        samples = page.samplesperpixel
        band = np.zeros((seg_h, width, samples), page.dtype)
        band_y = 0
        try:
            for data, index, _shape in page.segments(maxworkers=1, buffersize=READ_BUFFER_BYTES):
                y, x = index[2], index[3]
                if y != band_y:
                    yield _to_rgb8(band[: min(seg_h, height - band_y)], page)
                    band[:] = 0
                    band_y = y
                if data is None:  # sparse segment
                    continue
                tile = data[0]
                h = min(tile.shape[0], height - y)
                w = min(tile.shape[1], width - x)
                band[:h, x : x + w] = tile[:h, :w, :samples]
        except (ValueError, RuntimeError, OSError, IndexError) as exc:
            # imagecodecs raises its codecs' own errors (e.g. JpegError, a ValueError)
            raise TiffSceneError(f"{name} is corrupt or truncated: {exc}") from exc
        yield _to_rgb8(band[: min(seg_h, height - band_y)], page)
