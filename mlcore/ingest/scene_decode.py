"""Scene pictures read without holding them: the header alone, or the pixels a band at a time.

TIFF (BigTIFF, tiled, pyramidal) goes through ``mlcore.ingest.tiff_bands`` (tifffile), which writes
tile by tile; JPEG, PNG and the rest libvips reads go through libvips in sequential mode, which
decodes top to bottom and keeps only the rows in flight. Either way peak memory is a tile or a
band, not the scene, and not a row of tiles.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyvips

from mlcore.ingest import tiff_bands

# libvips caches operations by file name: a file rewritten under the same name (an upload
# retried, a test) would come back as the old pixels.
pyvips.cache_set_max(0)

BAND_BYTES = 1024 * 1024  # rows per band: about this many bytes of RGB (libvips holds ~40x, wide)
VIPS_FORMATS = {"jpegload": "JPEG", "pngload": "PNG", "tiffload": "TIFF", "gifload": "GIF",
                "webpload": "WEBP", "heifload": "HEIF", "jp2kload": "JPEG2000"}  # fmt: skip


class DecodeError(ValueError):
    """A picture that cannot be read; the message names the file and says why."""


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    format: str  # "JPEG", "PNG", "TIFF", ... (what the upload checks compare against)


def _vips_open(path, name: str) -> tuple[pyvips.Image, object]:
    """(image, the stream it reads): libvips maps a file it opens itself, which would make the
    whole compressed file resident in this process; a stream of reads costs a buffer."""
    handle = open(path, "rb")  # noqa: SIM115 - lives as long as the image reads it
    source = pyvips.SourceCustom()
    source.on_read(handle.read)
    source.on_seek(lambda offset, whence: handle.seek(offset, whence))
    source.handle = handle
    try:
        image = pyvips.Image.new_from_source(source, "", access="sequential", fail_on="truncated")
        return image, source
    except pyvips.Error as exc:
        handle.close()
        reason = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else "unreadable"
        if "is not a known file format" in str(exc) or "not in a known format" in str(exc):
            raise DecodeError(
                f"{name} is not an image that can be read (JPEG, PNG, TIFF, WebP...)"
            ) from None
        raise DecodeError(f"{name} cannot be opened: {reason}") from None


def read_header(path, name: str | None = None) -> Header:
    """Width, height and format from the file's header; no pixel is decoded."""
    name = name or os.fspath(path)
    if tiff_bands.is_tiff(path):
        try:
            width, height = tiff_bands.image_size(path, name)
        except tiff_bands.TiffSceneError as exc:
            raise DecodeError(str(exc)) from None
        return Header(width, height, "TIFF")
    image, source = _vips_open(path, name)
    loader = image.get("vips-loader") if image.get_typeof("vips-loader") else ""
    source.handle.close()
    loader = loader.removesuffix("_source")
    return Header(image.width, image.height, VIPS_FORMATS.get(loader, loader or "unknown"))


def check_structure(path, name: str | None = None) -> None:
    """What can be checked without decoding, beyond the header: a TIFF's layout, and tiles or
    strips that lie past the end of the file (JPEG and PNG: labeling.ingest.image_checks)."""
    if tiff_bands.is_tiff(path):
        try:
            tif, _page = tiff_bands.open_checked(path, name or os.fspath(path))
        except tiff_bands.TiffSceneError as exc:
            raise DecodeError(str(exc)) from None
        tif.close()


def _vips_rgb8(image: pyvips.Image) -> pyvips.Image:
    """Any libvips image as 8-bit sRGB with three bands (alpha dropped, grey expanded)."""
    if image.hasalpha():
        image = image.extract_band(0, n=image.bands - 1)
    if image.interpretation not in ("srgb", "b-w") or image.format != "uchar":
        image = image.colourspace("srgb")
    if image.bands == 1:
        image = image.bandjoin([image, image])
    elif image.bands > 3:
        image = image.extract_band(0, n=3)
    return image.cast("uchar")


def read_shrunk(path, width: int, height: int, name: str | None = None) -> np.ndarray:
    """The picture shrunk to fit inside ``width`` x ``height`` (aspect kept, never enlarged),
    as uint8 (h, w, 3): libvips shrinks while it decodes (a JPEG at load, the rest as it
    streams), so memory follows the result, not the picture."""
    name = name or os.path.basename(os.fspath(path))
    try:
        image = pyvips.Image.thumbnail(os.fspath(path), int(width), height=int(height), size="down")
        image = _vips_rgb8(image)
        data = image.write_to_memory()
    except pyvips.Error as exc:
        reason = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else "unreadable"
        raise DecodeError(f"{name} cannot be read: {reason}") from None
    return np.ndarray(buffer=data, dtype=np.uint8, shape=(image.height, image.width, 3))


def _vips_bands(path, name: str, rows: int) -> Iterator[np.ndarray]:
    opened, source = _vips_open(path, name)
    image = _vips_rgb8(opened)
    width, height = image.width, image.height
    # One region fetched top to bottom: what sequential access allows (a new pipeline per band
    # would ask the decoder for rows it has already passed).
    region = pyvips.Region.new(image)
    for y0 in range(0, height, rows):
        h = min(rows, height - y0)
        try:
            data = region.fetch(0, y0, width, h)
        except pyvips.Error as exc:
            reason = str(exc).strip().splitlines()[-1].strip()
            raise DecodeError(f"{name} is corrupt or truncated: {reason}") from None
        yield np.frombuffer(data, np.uint8).reshape(h, width, 3)
    source.handle.close()


def iter_bands(path, name: str | None = None, band_bytes: int = BAND_BYTES) -> Iterator[np.ndarray]:
    """The picture as consecutive uint8 (rows, W, 3) bands from the top; raises DecodeError on
    a corrupt or truncated file (when the decoder reaches the damage)."""
    name = name or os.fspath(path)
    if tiff_bands.is_tiff(path):
        try:
            yield from tiff_bands.iter_bands(path, name)
        except tiff_bands.TiffSceneError as exc:
            raise DecodeError(str(exc)) from None
        return
    header = read_header(path, name)
    rows = max(1, band_bytes // max(1, header.width * 3))
    yield from _vips_bands(path, name, rows)


def write_rgb(path, out, name: str | None = None, band_bytes: int = BAND_BYTES,
              on_rows=None) -> int:  # fmt: skip
    """Write the picture as uint8 RGB rows (H, W, 3) into the open file ``out`` from its
    position; returns the rows written. A TIFF is written tile by tile at each tile's place
    (``tiff_bands.write_rgb``: a row of tiles of a very wide picture is never held); the rest
    in libvips bands of about ``band_bytes``. ``on_rows(rows)`` follows the progress."""
    name = name or os.fspath(path)
    if tiff_bands.is_tiff(path):
        try:
            return tiff_bands.write_rgb(path, name, out, on_rows)
        except tiff_bands.TiffSceneError as exc:
            raise DecodeError(str(exc)) from None
    done = 0
    for band in iter_bands(path, name, band_bytes):
        out.write(np.ascontiguousarray(band).data)
        done += len(band)
        if on_rows is not None:
            on_rows(done)
    return done
