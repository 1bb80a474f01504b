"""TIFF scenes read a tile (or strip) at a time with tifffile (imagecodecs decodes every codec).

BigTIFF, tiled, striped and pyramidal files (the full-resolution level) are read segment by
segment and written into the scene a tile at a time (``write_rgb``, positioned writes), so memory
holds one tile and a bounded chunk, never the image and never a whole row of tiles: a 2.5 GP
picture 610,351 px wide in 4096 px tiles would need a 7.5 GB row. libvips' libtiff knows fewer
codecs and gives black pixels for the others (LERC, JPEG-XL, JPEG 2000...), so TIFF comes here.

Before any pixel is decoded, ``check_segments`` refuses a file whose tiles or strips lie beyond
its end (truncated), whose compressed bytes cannot hold the pixels the header declares, or whose
real data is too small for the scene it would become: the tile table is the file's own word, so
empty tiles count as no data and tiles sharing (or overlapping) byte ranges count those bytes
once, and the scene is measured as stored (24-bit RGB, whatever the file's bit depth). While
decoding, a JPEG tile whose frame is larger than its tile is refused before it is decoded, and
JPEG tiles whose data runs out (the decoder fills the rest with flat grey) are refused as
corrupt, as plain JPEG files are (mlcore.ingest.scenes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import tifffile

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# One decoded tile or strip at most (an 8192 x 8192 RGB tile): a 1-gigapixel image stored as a
# single compressed strip would otherwise be decoded whole. With a segment's coded bytes capped
# at twice its raw size (MAX_CODED_PER_RAW) and the output chunk below, an import holds at most
# about 0.65 GB of pixels and coded data, whatever the image's width.
MAX_SEGMENT_BYTES = 192 * 1024 * 1024
# Coded bytes per raw byte a segment may hold (+1 MiB of headers): LZW's and JPEG's worst case
# on noise is about 1.4; more is padding that would only be read into memory.
MAX_CODED_PER_RAW = 2
# Compressed bytes read per pass (tifffile's default is 256 MB).
READ_BUFFER_BYTES = 16 * 1024 * 1024
# Decoded tiles are gathered into a chunk of a row of tiles (the whole row when it fits) before
# they are written: the most the import holds besides the tile being decoded.
CHUNK_BYTES = 64 * 1024 * 1024
# Tiles are converted to RGB this many output bytes at a time (a grey or palette tile triples).
SLAB_BYTES = 8 * 1024 * 1024
# A scene is stored as 24-bit RGB whatever the file's bit depth. It may be at most this many
# times the image data the file really holds (each byte range counted once, empty tiles as
# nothing): deflate's 1032:1, times 3 for 8-bit grey or palette that the scene stores as RGB.
# What goes beyond is made of structure, not data: empty or shared tiles, or 1-bit pixels that
# become 24-bit (labeling.ingest.image_checks applies it to PNG).
MAX_STORED_RATIO = 3 * 1032
# The most a codec can compress (raw bytes per coded byte): deflate 1032:1, LZW ~1,370:1 with
# 12-bit codes, PackBits 128 bytes in 2, baseline JPEG one bit per 8x8 block of 3 samples.
# Codecs without a known floor (zstd, webp, lerc...) are not checked this way.
MAX_RATIO = {1: 1, 5: 1400, 8: 1032, 32946: 1032, 32773: 64, 6: 1536, 7: 1536}
PALETTE, MINISWHITE, SEPARATED, YCBCR = 3, 0, 5, 6
JPEG_CODECS = {6, 7, 34892, 33007}
# libjpeg decodes the blocks a scan does not cover as flat mid-grey, 128 in every sample
# (mlcore.ingest.scenes.JPEG_FILL), and only warns.
JPEG_FILL = 128


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


def _raw_segment_bytes(page: tifffile.TiffPage) -> int:
    """Bytes of one tile or strip as the codec outputs it (rows padded to whole bytes)."""
    rows, cols = page.chunks[0], page.chunks[1]
    samples = page.samplesperpixel if page.planarconfig == 1 else 1
    return rows * -(-cols * samples * page.bitspersample // 8)


def check_segments(page: tifffile.TiffPage, file_size: int, name: str) -> None:
    """Refuse a truncated file, one whose coded bytes cannot cover its declared pixels, or one
    whose real data is too small for the scene it would be stored as."""
    kind = "tile" if page.is_tiled else "strip"
    width, height = page.imagewidth, page.imagelength
    expected = int(np.prod(page.chunked))
    listed = min(len(page.dataoffsets), len(page.databytecounts))
    if listed < expected:
        raise TiffSceneError(
            f"{name} is truncated: its {width}x{height} pixels need {expected:,} {kind}s, it "
            f"lists {listed:,}"
        )
    # Only the first ``expected`` entries are ever decoded: extra ones are no image data.
    offsets = np.asarray(page.dataoffsets[:expected], np.uint64)
    counts = np.asarray(page.databytecounts[:expected], np.uint64)
    present = counts > 0  # empty (sparse) segments: GDAL writes these for no-data areas
    size = np.uint64(file_size)
    beyond = present & ((offsets > size) | (counts > size - np.minimum(offsets, size)))
    if beyond.any():
        i = int(np.flatnonzero(beyond)[0])
        raise TiffSceneError(
            f"{name} is truncated: its {kind} {i} ends at byte {int(offsets[i]) + int(counts[i]):,}"
            f", beyond the end of the file ({file_size:,} bytes)"
        )
    raw_segment = _raw_segment_bytes(page)
    too_big = counts > np.uint64(MAX_CODED_PER_RAW * raw_segment + 2**20)
    if too_big.any():
        i = int(np.flatnonzero(too_big)[0])
        raise TiffSceneError(
            f"{name} is corrupt: its {kind} {i} holds {int(counts[i]):,} bytes for "
            f"{raw_segment:,} bytes of pixels; save it again (gdal_translate, or vips tiffsave)"
        )
    # The bytes the file really holds: byte ranges sorted by start, each byte counted once.
    starts = offsets[present].astype(np.int64)
    order = np.argsort(starts, kind="stable")
    starts = starts[order]
    ends = starts + counts[present].astype(np.int64)[order]
    reached = np.concatenate([starts[:1], np.maximum.accumulate(ends)[:-1]])
    real = int(np.clip(ends - np.maximum(starts, reached), 0, None).sum())
    shared = int((starts < reached).sum())
    n_present = int(present.sum())
    stored = width * height * 3
    if real * MAX_STORED_RATIO < stored:
        empty = expected - n_present
        how = [f"{empty:,} of its {expected:,} {kind}s are empty"] if empty else []
        if shared:
            how.append(f"{shared:,} {kind}s reuse bytes of other {kind}s")
        raise TiffSceneError(
            f"{name} cannot be a scene: its {width}x{height} pixels would be stored as "
            f"{stored / 1e6:,.0f} MB of RGB from only {real:,} bytes of image data"
            f"{' (' + ', '.join(how) + ')' if how else ''}; a scene may be at most "
            f"{MAX_STORED_RATIO:,} times the data it is made from. Crop the picture to where it "
            f"has data, or save it again with every {kind} written (e.g. gdal_translate without "
            "SPARSE_OK)"
        )
    ratio = MAX_RATIO.get(page.compression)
    if ratio is None:
        return
    raw = raw_segment * n_present
    if page.compression == 1:
        raw = min(raw, height * -(-width * page.samplesperpixel * page.bitspersample // 8))
    if real * ratio < raw:
        raise TiffSceneError(
            f"{name} is truncated: its {real:,} bytes of {page.compression.name} data cannot "
            f"hold the {width}x{height} pixels its header declares"
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


def _put_rgb(dst: np.ndarray, tile: np.ndarray, page: tifffile.TiffPage) -> None:
    """Write ``tile`` (h, w, samples) as stored into ``dst`` (h, w, 3) uint8, a slab of rows at
    a time: a grey or palette tile would otherwise make temporaries several times its size."""
    rows = max(1, SLAB_BYTES // max(1, tile.shape[1] * 3))
    for r0 in range(0, tile.shape[0], rows):
        dst[r0 : r0 + rows] = _to_rgb8(tile[r0 : r0 + rows], page)


def _jpeg_frame(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the frame header of the JPEG stream ``data``; None when it has
    none before its scan (the tables-only header of old-style JPEG)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > end:
                return None
            return int.from_bytes(data[pos + 5 : pos + 7], "big"), int.from_bytes(
                data[pos + 7 : pos + 9], "big"
            )
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _fill_rows(tile: np.ndarray) -> int:
    """How many rows at the bottom of a decoded JPEG tile are the decoder's flat grey fill."""
    if tile.dtype != np.uint8 or not (tile[-1, -1] == JPEG_FILL).all():
        return 0
    not_fill = np.flatnonzero(~(tile == JPEG_FILL).all(axis=(1, 2)))
    return len(tile) - (int(not_fill[-1]) + 1 if len(not_fill) else 0)


def _segments(
    tif: tifffile.TiffFile, page: tifffile.TiffPage, name: str
) -> Iterator[tuple[int, int, np.ndarray | None]]:
    """(y, x, segment) for every tile or strip in the file's order, one decoded at a time: the
    segment as stored (h, w, samples), clipped to the image, or None where it is empty.

    A JPEG segment whose frame is larger than its tile is refused before it is decoded (libjpeg
    would decode the whole frame: a few bytes can declare 65535 x 65535). JPEG segments whose
    bottom rows are the decoder's grey fill are counted; when half of the image is fill, the
    file is refused, as a plain JPEG is (mlcore.ingest.scenes)."""
    width, height = page.imagewidth, page.imagelength
    seg_h, seg_w = page.chunks[0], page.chunks[1]
    jpeg = page.compression in JPEG_CODECS
    args = {"_fullsize": page.is_tiled}
    if jpeg:
        args.update(jpegtables=page.jpegtables, jpegheader=page.jpegheader)
    decode, fill = page.decode, 0
    segments = tif.filehandle.read_segments(  # in index order (row by row), not file order
        page.dataoffsets, page.databytecounts, length=int(np.prod(page.chunked)),
        sort=False, buffersize=READ_BUFFER_BYTES, flat=True,
    )  # fmt: skip
    try:
        for data, index in segments:
            if jpeg and data:
                frame = _jpeg_frame(data)
                if frame is not None and (frame[0] > seg_h or frame[1] > seg_w):
                    raise TiffSceneError(
                        f"{name} is corrupt: its {'tile' if page.is_tiled else 'strip'} {index} "
                        f"holds a JPEG of {frame[1]}x{frame[0]} pixels, larger than its "
                        f"{seg_w}x{seg_h} {'tile' if page.is_tiled else 'strip'}"
                    )
            segment, position, _shape = decode(data, index, **args)
            y, x = int(position[2]), int(position[3])
            if segment is None:
                yield y, x, None
                continue
            tile = segment[0, : height - y, : width - x]
            if jpeg:
                fill += _fill_rows(tile) * tile.shape[1]
                if 2 * fill >= width * height:
                    raise TiffSceneError(
                        f"{name} is corrupt or padded: half of its {width}x{height} pixels or "
                        "more are the flat grey a JPEG decoder fills in where a tile's "
                        "compressed data is missing or broken; save the picture again from its "
                        "original"
                    )
            yield y, x, tile
    except TiffSceneError:
        raise
    except (ValueError, RuntimeError, OSError, IndexError) as exc:
        # imagecodecs raises its codecs' own errors (e.g. JpegError, a ValueError)
        raise TiffSceneError(f"{name} is corrupt or truncated: {exc}") from exc


def _pwrite(fd: int, data: np.ndarray, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def write_rgb(path, name: str, out, on_rows=None) -> int:
    """Write the full-resolution image as uint8 RGB rows (H, W, 3, C order) into the open file
    ``out`` from its current position; returns the rows written.

    Tiles are gathered into a chunk of their row of tiles (the whole row when it is under
    CHUNK_BYTES, else as many tiles as fit, at least one) and the chunk is written at its place
    with positioned writes; a segment whose RGB alone exceeds the chunk is written a slab of
    rows at a time. Memory holds one tile and one chunk whatever the width. ``on_rows(rows)``
    is called as rows are finished."""
    tif, page = open_checked(path, name)
    with tif:
        width, height = page.imagewidth, page.imagelength
        seg_h, seg_w = min(page.chunks[0], height), page.chunks[1]
        row_bytes = width * 3
        out.flush()
        fd, base = out.fileno(), out.tell()
        os.ftruncate(fd, base + height * row_bytes)  # empty tiles stay zeros (a hole)
        direct = seg_h * min(seg_w, width) * 3 > CHUNK_BYTES
        if seg_h * row_bytes <= CHUNK_BYTES:
            cols = width
        else:
            cols = max(1, CHUNK_BYTES // (seg_h * seg_w * 3)) * seg_w
        chunk = None if direct else np.zeros((seg_h, min(cols, width), 3), np.uint8)
        rows = max(1, SLAB_BYTES // (min(seg_w, width) * 3))  # direct: a slab at a time
        slab = np.empty((rows, min(seg_w, width), 3), np.uint8) if direct else None
        key = None  # (y, first column) of the chunk being filled

        def flush() -> None:
            y, x0 = key
            h, w = min(seg_h, height - y), min(cols, width - x0)
            if w == width:
                _pwrite(fd, chunk[:h], base + y * row_bytes)
            else:
                for r in range(h):
                    _pwrite(fd, chunk[r, :w], base + (y + r) * row_bytes + x0 * 3)
            chunk[:] = 0

        done = 0
        for y, x, tile in _segments(tif, page, name):
            if y > done and on_rows is not None:
                on_rows(y)
            done = max(done, y)
            if direct:
                if tile is None:
                    continue
                h, w = tile.shape[:2]
                for r0 in range(0, h, rows):
                    part = slab[: min(rows, h - r0), :w]
                    _put_rgb(part, tile[r0 : r0 + rows], page)
                    if w == width:  # a strip: its rows are contiguous in the scene
                        _pwrite(fd, part, base + (y + r0) * row_bytes)
                        continue
                    for r, row in enumerate(part):
                        _pwrite(fd, row, base + (y + r0 + r) * row_bytes + x * 3)
                continue
            here = (y, x - x % cols)
            if here != key:
                if key is not None:
                    flush()
                key = here
            if tile is not None:
                x1 = x - here[1]
                _put_rgb(chunk[: tile.shape[0], x1 : x1 + tile.shape[1]], tile, page)
        if key is not None:
            flush()
        out.seek(base + height * row_bytes)
        if on_rows is not None:
            on_rows(height)
        return height


def iter_bands(path, name: str) -> Iterator[np.ndarray]:
    """The full-resolution image as consecutive uint8 (rows, W, 3) bands, top to bottom: one
    row of tiles (or strips) at a time. For pictures read into memory whole (open_scene);
    the import writes with ``write_rgb``, which never holds a row of tiles."""
    tif, page = open_checked(path, name)
    with tif:
        width, height = page.imagewidth, page.imagelength
        seg_h = min(page.chunks[0], height)
        band = np.zeros((seg_h, width, 3), np.uint8)
        band_y = 0
        for y, x, tile in _segments(tif, page, name):
            if y != band_y:
                yield band[: min(seg_h, height - band_y)].copy()
                band[:] = 0
                band_y = y
            if tile is not None:
                _put_rgb(band[: tile.shape[0], x : x + tile.shape[1]], tile, page)
        yield band[: min(seg_h, height - band_y)].copy()
