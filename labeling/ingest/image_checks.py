"""Checks an uploaded picture must pass before it is decoded in full (the upload request never
decodes it: the import job streams it, mlcore.ingest.scenes.image_to_npy).

A JPEG whose header declares 12000 x 12000 pixels but whose compressed data is a few hundred
bytes decodes without an error: libjpeg pads what is missing with grey and only warns, and PIL
does not surface that warning. Such a file would turn a 600-byte upload into a 432 MB scene.
Huffman-coded JPEG spends at least one bit per 8x8 block (the DC code of its first scan), so
compressed data shorter than blocks / 8 bytes cannot cover the image: it is refused as truncated
before anything is decoded or stored. Arithmetic-coded JPEG has no such floor and is refused. A
JPEG that stops before its end-of-image marker is refused as truncated.

A PNG is walked chunk by chunk (no pixel is inflated): a chunk running past the end of the file,
a missing IEND or image data too short to inflate to the declared size (deflate cannot compress
more than 1032:1) is refused. The scene is stored as 24-bit RGB whatever the PNG's bit depth: a
1-bit 30000x30000 PNG of 109 kB inflates within deflate's bound yet would be stored as 2.7 GB,
so the stored size is bounded by the image data too (mlcore.ingest.tiff_bands.MAX_STORED_RATIO, the
rule TIFF follows). TIFF tiles and strips are checked by mlcore.ingest.tiff_bands."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from mlcore.ingest.tiff_bands import MAX_STORED_RATIO

# Start-of-frame markers: Huffman (C0-C3, C5-C7) and arithmetic (C9-CB, CD-CF) coding.
HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}
ARITHMETIC_FRAMES = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFLATE_MAX_RATIO = 1032
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


class ImageCheckError(ValueError):
    """The picture cannot be a scene; the message says why (it names the file as given)."""


def check_picture(path: Path, name: str) -> None:
    """Refuse a JPEG or PNG whose bytes cannot cover its declared size or that stops early
    (other formats: no-op here)."""
    with open(path, "rb") as f:
        start = f.read(8)
        if start.startswith(PNG_SIGNATURE):
            _check_png(f, Path(path).stat().st_size, name)
            return
        if not start.startswith(b"\xff\xd8"):
            return
        f.seek(0)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _check_jpeg(data, name)


def _check_png(f, size: int, name: str) -> None:
    """Walk the chunks after the signature: lengths and types only, the data is skipped."""
    pos, header, coded = 8, None, 0
    while True:
        f.seek(pos)
        head = f.read(8)
        if len(head) < 8:
            raise ImageCheckError(
                f"{name} is corrupt or truncated: its PNG data stops at byte {pos:,} without the "
                "IEND chunk"
            )
        length, kind = struct.unpack(">I4s", head)
        end = pos + 12 + length
        if end > size:
            raise ImageCheckError(
                f"{name} is corrupt or truncated: its {kind.decode('latin1')!r} chunk needs "
                f"bytes up to {end:,} but the file has {size:,}"
            )
        if kind == b"IHDR":
            header = struct.unpack(">IIBB", f.read(10))
        elif kind == b"IDAT":
            coded += length
        elif kind == b"IEND":
            break
        pos = end
    if header is None:
        raise ImageCheckError(f"{name} is corrupt: a PNG without its IHDR header chunk")
    width, height, depth, colour = header
    channels = PNG_CHANNELS.get(colour, 4)
    raw = height * (1 + -(-width * channels * depth // 8))  # a filter byte per row
    if coded * DEFLATE_MAX_RATIO < raw:
        raise ImageCheckError(
            f"{name} is truncated: its {coded:,} bytes of image data cannot inflate to the "
            f"{width}x{height} pixels its header declares (that needs at least "
            f"{-(-raw // DEFLATE_MAX_RATIO):,} bytes)"
        )
    stored = width * height * 3
    if coded * MAX_STORED_RATIO < stored:
        raise ImageCheckError(
            f"{name} cannot be a scene: its {width}x{height} {depth}-bit pixels would be stored "
            f"as {stored / 1e6:,.0f} MB of RGB from only {coded:,} bytes of image data; a scene "
            f"may be at most {MAX_STORED_RATIO:,} times the data it is made from. Crop the "
            "picture to where it has detail, or save it with 8-bit RGB pixels"
        )


# The scan is read once, front to back: pages already read are given back every 64 MiB, so a
# 1 GiB upload does not become 1 GiB of this web worker's resident memory.
RELEASE_BYTES = 64 * 1024 * 1024


def _release(data: mmap.mmap, start: int, pos: int) -> int:
    stop = pos - pos % mmap.PAGESIZE
    data.madvise(mmap.MADV_DONTNEED, start, stop - start)
    return stop


def _check_jpeg(data, name: str) -> None:
    frame, coded, pos, end, complete = None, 0, 2, len(data), False
    released = 0
    while pos < end:
        if data[pos] != 0xFF:
            raise ImageCheckError(f"{name} is corrupt: a JPEG marker was expected at byte {pos}")
        while pos < end and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= end:
            break
        marker, pos = data[pos], pos + 1
        if marker == 0xD9:  # end of image
            complete = True
            break
        if marker in STANDALONE or marker == 0xD8:
            continue
        if pos + 2 > end:
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            raise ImageCheckError(f"{name} is corrupt: a JPEG segment of length {length}")
        segment = data[pos + 2 : pos + length]
        pos += length
        if marker in ARITHMETIC_FRAMES:
            raise ImageCheckError(
                f"{name} is an arithmetic-coded JPEG, which is not supported: save it as a "
                "baseline or progressive JPEG (or as PNG or TIFF)"
            )
        if marker in HUFFMAN_FRAMES and frame is None and len(segment) >= 5:
            height = int.from_bytes(segment[1:3], "big")
            width = int.from_bytes(segment[3:5], "big")
            frame = (width, height)
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next real marker
            start = pos
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= end:
                    pos = end
                    break
                if pos - released > RELEASE_BYTES:
                    released = _release(data, released, pos)
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffed byte or restart marker
                    pos += 2
                    continue
                break
            coded += pos - start
    if frame is None:
        return  # no frame header: the decoder refuses the file with its own message
    if not complete:
        raise ImageCheckError(
            f"{name} is corrupt or truncated: its JPEG data stops at byte {end:,} before the "
            "end-of-image marker"
        )
    width, height = frame
    if height == 0:
        raise ImageCheckError(
            f"{name} declares its height later in the file (a DNL marker), which is not "
            "supported: save it again as an ordinary JPEG"
        )
    blocks = -(-width // 8) * -(-height // 8)
    needed = -(-blocks // 8)
    if coded < needed:
        raise ImageCheckError(
            f"{name} is truncated: its compressed pixel data ({coded:,} bytes) cannot cover the "
            f"{width}x{height} pixels its header declares (that needs at least {needed:,} bytes)"
        )
