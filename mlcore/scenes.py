"""Scenes: the large images that get scored, in their scoring format.

A scene is stored for scoring as ``.npy`` uint8 (H, W, 3) in C order: a band of rows is then one
contiguous byte range, so a scoring task reads exactly its strip (plus the window overlap) from
local disk or from remote storage, without decoding the whole picture.

* ``image_to_npy`` converts an uploaded picture (JPEG, PNG, TIFF...) into that format;
* ``validate_scene_image`` checks an upload before anything is stored;
* ``ArrayScene`` / ``NpyScene`` are the readers (``.height``, ``.width``, ``.read_rows(y0, y1)``)
  that ``scoring.score_scene`` and ``deepzoom.generate_dzi`` consume.
"""

from __future__ import annotations

import ast
import os
import struct
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

NPY_MAGIC = b"\x93NUMPY"
DEFAULT_MAX_PIXELS = 1_000_000_000  # 1 gigapixel (3 GB as uint8 RGB): far above PIL's default
_PIL_LIMIT_LOCK = threading.Lock()


class SceneError(ValueError):
    """A scene image or file that cannot be used (the message says what and what to do)."""


# --------------------------------------------------------------------------------------------
# Decoding uploads


def _open_image(src, max_pixels: int | None) -> Image.Image:
    """Open ``src`` with PIL, enforcing ``max_pixels`` with our own clear error.

    PIL's own decompression-bomb guard uses the global ``Image.MAX_IMAGE_PIXELS``; it is lifted for
    the ``open`` call (under a lock) so that our explicit limit is the one that applies.
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(src)
        except Image.UnidentifiedImageError as exc:
            raise SceneError(
                f"{_name(src)} is not an image PIL can read (JPEG, PNG, TIFF, WebP, BMP...)"
            ) from exc
        except OSError as exc:
            raise SceneError(f"{_name(src)} cannot be opened: {exc}") from exc
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    pixels = im.width * im.height
    if pixels > limit:
        im.close()
        raise SceneError(
            f"{_name(src)} is {im.width}x{im.height} = {pixels:,} pixels, above the limit of "
            f"{limit:,}; cut it into smaller scenes or raise the limit (max_pixels)"
        )
    return im


def _name(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return getattr(src, "name", "the image")


def _load_fully(im: Image.Image, src) -> None:
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        # PIL reports truncation as OSError("image file is truncated ...").
        raise SceneError(f"{_name(src)} is corrupt or truncated: {exc}") from exc
    if im.format in ("JPEG", "MPO"):
        _refuse_decoder_fill(im, src)


# libjpeg decodes the blocks a scan does not cover (its data ran into a marker or ended early, as
# junk scan data does) as all-zero coefficients: exactly mid-grey, 128 in every channel (127 for
# inverted Adobe CMYK), and only warns; PIL does not pass the warning on.
JPEG_FILL = (127, 128)
FILL_BAND_ROWS = 256


def _refuse_decoder_fill(im: Image.Image, src) -> None:
    """Refuse a JPEG whose bottom half or more is exactly the decoder's grey fill: it is corrupt
    or padded. A 600-byte header declaring 12000x12000 followed by 300 kB of random (byte-stuffed)
    scan data passes the bytes-per-block check and decodes to 145 rows of noise over 11,855 rows
    of grey, 432 MB of pixels. (A genuine picture that is mostly flat mid-grey is refused too; it
    is no scene to detect anything in.)"""
    fill_from = _decoder_fill_start(im)
    if fill_from <= im.height // 2:
        raise SceneError(
            f"{_name(src)} is corrupt or padded: rows {fill_from} to {im.height - 1} of its "
            f"{im.width}x{im.height} pixels are the flat grey a JPEG decoder fills in where the "
            "compressed data is missing or broken; save the picture again from its original"
        )


def _decoder_fill_start(im: Image.Image) -> int:
    """The first row of the run of fill rows at the bottom (``im.height``: none). Read from the
    bottom up a band at a time; a real picture stops at its last row."""
    corner = np.asarray(im.crop((im.width - 1, im.height - 1, im.width, im.height))).reshape(-1)
    if not np.isin(corner, JPEG_FILL).all():
        return im.height
    fill_row = np.tile(corner, im.width)
    for y1 in range(im.height, 0, -FILL_BAND_ROWS):
        y0 = max(0, y1 - FILL_BAND_ROWS)
        band = np.asarray(im.crop((0, y0, im.width, y1))).reshape(y1 - y0, -1)
        is_fill = (band == fill_row).all(axis=1)
        if not is_fill.all():
            return y0 + int(np.flatnonzero(~is_fill)[-1]) + 1
    return 0


def validate_scene_image(path, max_pixels: int | None = None) -> tuple[int, int, str]:
    """Decode ``path`` (or a binary file object) fully and return (width, height, format).

    Raises ``SceneError`` naming the problem for non-images, corrupt or truncated files and
    images above ``max_pixels``. A ``.npy`` scene is checked by its header and size.
    """
    if isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(".npy"):
        with open(path, "rb") as f:
            header = read_npy_header(f.read(65536 + 16), str(path))
        expected = header.data_offset + header.height * header.width * 3
        if Path(path).stat().st_size < expected:
            raise SceneError(f"{path} is truncated: {expected} bytes expected")
        return header.width, header.height, "NPY"
    im = _open_image(path, max_pixels)
    try:
        fmt = im.format or "unknown"
        _load_fully(im, path)
        return im.width, im.height, fmt
    finally:
        im.close()


def _write_npy_header(f: BinaryIO, height: int, width: int) -> None:
    np.lib.format.write_array_header_1_0(
        f, {"descr": "|u1", "fortran_order": False, "shape": (height, width, 3)}
    )


def image_to_npy(
    src, dst, max_pixels: int | None = None, rows_per_chunk: int = 1024
) -> tuple[int, int]:
    """Decode the picture ``src`` (path or binary file) into a scoring ``.npy`` at ``dst``.

    ``dst`` is a path (written under a temporary name, then renamed) or a writable binary file.
    The image is converted to RGB (alpha dropped, greyscale and palette expanded) and written
    as a header followed by rows, a band at a time, so no second full copy is held in memory.
    Returns (width, height).
    """
    im = _open_image(src, max_pixels)
    try:
        _load_fully(im, src)
        rgb = im if im.mode == "RGB" else im.convert("RGB")
        width, height = rgb.size

        def write(f: BinaryIO) -> None:
            _write_npy_header(f, height, width)
            for y0 in range(0, height, rows_per_chunk):
                y1 = min(height, y0 + rows_per_chunk)
                f.write(rgb.crop((0, y0, width, y1)).tobytes())

        if isinstance(dst, (str, os.PathLike)):
            dst = Path(dst)
            tmp = dst.with_name(f".{dst.name}.tmp")
            try:
                with open(tmp, "wb") as f:
                    write(f)
                os.replace(tmp, dst)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            write(dst)
        return width, height
    finally:
        im.close()


def array_to_npy(array: np.ndarray, dst) -> None:
    """Write an RGB uint8 (H, W, 3) array as a scoring ``.npy`` (path or binary file)."""
    arr = _check_rgb(array)
    if isinstance(dst, (str, os.PathLike)):
        dst = Path(dst)
        tmp = dst.with_name(f".{dst.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(arr))
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        np.save(dst, np.ascontiguousarray(arr))


# --------------------------------------------------------------------------------------------
# Readers


def _check_rgb(array) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise SceneError(f"a scene must be uint8 (H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


def _check_rows(y0: int, y1: int, height: int) -> None:
    if not 0 <= y0 <= y1 <= height:
        raise SceneError(f"rows [{y0}, {y1}) are outside the scene's 0..{height}")


class ArrayScene:
    """A scene already in memory (uint8 (H, W, 3))."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = _check_rgb(array)

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows [y0, y1) as uint8 (y1 - y0, W, 3) (a view)."""
        _check_rows(y0, y1, self.height)
        return self.array[y0:y1]


class NpyHeader:
    """Shape and data offset of a scene ``.npy``."""

    def __init__(self, height: int, width: int, data_offset: int) -> None:
        self.height, self.width, self.data_offset = height, width, data_offset


def read_npy_header(prefix: bytes, name: str = "scene") -> NpyHeader:
    """Parse the header at the start of a ``.npy`` (``prefix`` must contain all of it).

    Accepts only what a scene may be: uint8, C order, shape (H, W, 3).
    """
    if len(prefix) < 10 or not prefix.startswith(NPY_MAGIC):
        raise SceneError(f"{name} is not a .npy file (convert the picture with image_to_npy)")
    major = prefix[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", prefix[8:10])
        start = 10
    elif major in (2, 3):
        (hlen,) = struct.unpack("<I", prefix[8:12])
        start = 12
    else:
        raise SceneError(f"{name}: unsupported .npy version {major}")
    if len(prefix) < start + hlen:
        raise SceneError(f"{name}: .npy header is truncated")
    try:
        header = ast.literal_eval(prefix[start : start + hlen].decode("latin1"))
    except (ValueError, SyntaxError) as exc:
        raise SceneError(f"{name}: unreadable .npy header") from exc
    shape = tuple(header.get("shape", ()))
    if (
        np.dtype(header.get("descr")) != np.uint8
        or header.get("fortran_order")
        or len(shape) != 3
        or shape[2] != 3
    ):
        raise SceneError(
            f"{name}: a scene .npy must be uint8 (H, W, 3) in C order, got "
            f"{header.get('descr')} {shape} fortran_order={header.get('fortran_order')}"
        )
    return NpyHeader(int(shape[0]), int(shape[1]), start + hlen)


class NpyScene:
    """A scene ``.npy`` read a band of rows at a time.

    ``NpyScene(storage, key)`` reads through ``storage.read_range(key, offset, length)``;
    ``NpyScene(path)`` reads a local file. The header is parsed once; ``read_rows`` then fetches
    exactly the bytes of the requested rows. Instances hold no open file, so they pickle (Spark).
    """

    def __init__(self, storage_or_path, key: str | None = None) -> None:
        if hasattr(storage_or_path, "read_range"):
            if key is None:
                raise SceneError("NpyScene(storage, key): the key of the scene is required")
            self.storage, self.key, self.path = storage_or_path, key, None
            name = key
        else:
            self.storage, self.key = None, None
            self.path = Path(storage_or_path) / key if key is not None else Path(storage_or_path)
            name = str(self.path)
            if not self.path.is_file():
                raise SceneError(f"scene file {self.path} does not exist")
        self.name = name
        prefix = self._read(0, 128)
        if len(prefix) >= 10 and prefix.startswith(NPY_MAGIC):
            need = (
                (10 + struct.unpack("<H", prefix[8:10])[0])
                if prefix[6] == 1
                else (12 + struct.unpack("<I", prefix[8:12])[0])
            )
            if need > len(prefix):
                prefix = self._read(0, need)
        self.header = read_npy_header(prefix, name)

    def _read(self, offset: int, length: int) -> bytes:
        if self.storage is not None:
            return self.storage.read_range(self.key, offset, length)
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def width(self) -> int:
        return self.header.width

    @property
    def row_bytes(self) -> int:
        return self.header.width * 3

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows [y0, y1) as uint8 (y1 - y0, W, 3), reading only their byte range."""
        _check_rows(y0, y1, self.height)
        length = (y1 - y0) * self.row_bytes
        data = self._read(self.header.data_offset + y0 * self.row_bytes, length) if length else b""
        if len(data) != length:
            raise SceneError(
                f"{self.name} is truncated: rows [{y0}, {y1}) need {length} bytes, got {len(data)}"
            )
        return np.frombuffer(data, dtype=np.uint8).reshape(y1 - y0, self.width, 3)


def open_scene(source, key: str | None = None):
    """A reader for ``source``: a reader as is, an array, a ``.npy`` (path or storage + key),
    or any picture file (decoded into memory)."""
    if hasattr(source, "read_rows"):
        return source
    if isinstance(source, np.ndarray):
        return ArrayScene(source)
    if isinstance(source, Image.Image):
        return ArrayScene(np.asarray(source.convert("RGB")))
    if hasattr(source, "read_range"):
        return NpyScene(source, key)
    path = Path(source) / key if key is not None else Path(source)
    with open(path, "rb") as f:
        is_npy = f.read(6) == NPY_MAGIC
    if is_npy:
        return NpyScene(path)
    im = _open_image(path, None)
    try:
        _load_fully(im, path)
        return ArrayScene(np.asarray(im.convert("RGB")))
    finally:
        im.close()


__all__ = [
    "ArrayScene",
    "NpyScene",
    "SceneError",
    "array_to_npy",
    "image_to_npy",
    "open_scene",
    "read_npy_header",
    "validate_scene_image",
]
