"""Checks an uploaded picture must pass before it is decoded in full.

A JPEG whose header declares 12000 x 12000 pixels but whose compressed data is a few hundred
bytes decodes without an error: libjpeg pads what is missing with grey and only warns, and PIL
does not surface that warning. Such a file would turn a 600-byte upload into a 432 MB scene.
Huffman-coded JPEG spends at least one bit per 8x8 block (the DC code of its first scan), so
compressed data shorter than blocks / 8 bytes cannot cover the image: it is refused as truncated
before anything is decoded or stored. Arithmetic-coded JPEG has no such floor and is refused."""

from __future__ import annotations

import mmap
from pathlib import Path

# Start-of-frame markers: Huffman (C0-C3, C5-C7) and arithmetic (C9-CB, CD-CF) coding.
HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}
ARITHMETIC_FRAMES = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length


class ImageCheckError(ValueError):
    """The picture cannot be a scene; the message says why (it names the file as given)."""


def check_picture(path: Path, name: str) -> None:
    """Refuse a JPEG whose data cannot cover its declared size (other formats: no-op here;
    PIL reports their truncation itself)."""
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return
        f.seek(0)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _check_jpeg(data, name)


def _check_jpeg(data, name: str) -> None:
    frame, coded, pos, end = None, 0, 2, len(data)
    while pos < end:
        if data[pos] != 0xFF:
            raise ImageCheckError(f"{name} is corrupt: a JPEG marker was expected at byte {pos}")
        while pos < end and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= end:
            break
        marker, pos = data[pos], pos + 1
        if marker == 0xD9:  # end of image
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
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffed byte or restart marker
                    pos += 2
                    continue
                break
            coded += pos - start
    if frame is None:
        return  # no frame header: PIL refuses the file with its own message
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
