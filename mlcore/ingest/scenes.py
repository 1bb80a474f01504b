"""Scenes: the large images that get scored, in their scoring format.

A scene is stored for scoring as ``.npy`` uint8 (H, W, 3) in C order: a band of rows is then one
contiguous byte range, so a scoring task reads exactly its strip (plus the window overlap) from
local disk or from remote storage, without decoding the whole picture.

* ``image_to_npy`` streams a picture (JPEG, PNG, TIFF, BigTIFF, tiled or pyramidal TIFF) into that
  format a band at a time (``mlcore.ingest.scene_decode``), so memory does not grow with the
picture; * ``validate_scene_image`` checks an upload from its header, before anything is stored;
* ``ArrayScene`` / ``NpyScene`` are the readers (``.height``, ``.width``, ``.read_rows(y0, y1)``)
  that ``scoring.score_scene`` and ``deepzoom.generate_dzi`` consume.
"""

from __future__ import annotations

import ast
import os
import shutil
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image

from mlcore.progress import report

if TYPE_CHECKING:
    from mlcore.ingest.scene_decode import Header

NPY_MAGIC = b"\x93NUMPY"
# 2.5 gigapixels (7.5 GB as uint8 RGB): what one machine scores strip by strip and stores.
DEFAULT_MAX_PIXELS = 2_500_000_000


class SceneError(ValueError):
    """A scene image or file that cannot be used (the message says what and what to do)."""


def _decode():
    """mlcore.ingest.scene_decode, imported when a picture is decoded: it needs libvips and
    tifffile, which Spark executors and the MXNet virtualenv (they read .npy strips only) do
    without."""
    from mlcore.ingest import scene_decode

    return scene_decode


# --------------------------------------------------------------------------------------------
# Checking and converting pictures, never holding one whole


def _name(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return getattr(src, "name", "the image")


# libvips builds the deep-zoom pyramid a full-width strip at a time, about 3.5 KB per pixel column
# (measured: 338 MB at 90k px wide, 1.28 GB at 360k): this side keeps every step under 1 GB.
MAX_SIDE = 262_144


def _header(path, name: str, max_pixels: int | None) -> Header:
    """The picture's header with the pixel limit applied (a decompression bomb stops here)."""
    decode = _decode()
    try:
        header = decode.read_header(path, name)
    except decode.DecodeError as exc:
        raise SceneError(str(exc)) from None
    if max(header.width, header.height) > MAX_SIDE:
        raise SceneError(
            f"{name} is {header.width}x{header.height}: a side above {MAX_SIDE:,} px is not "
            "accepted (its deep-zoom pyramid would need more than 1 GB of memory); cut it into "
            "smaller scenes"
        )
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    pixels = header.width * header.height
    if pixels > limit:
        raise SceneError(
            f"{name} is {header.width}x{header.height} = {pixels:,} pixels, above the limit of "
            f"{limit:,}; cut it into smaller scenes or raise the limit (max_pixels)"
        )
    return header


# libjpeg decodes the blocks a scan does not cover (its data ran into a marker or ended early, as
# junk scan data does) as all-zero coefficients: exactly mid-grey, 128 in every channel (127 for
# inverted Adobe CMYK), and only warns.
JPEG_FILL = (127, 128)
FILL_BAND_ROWS = 256


def _refuse_decoder_fill(scene: NpyScene, name: str) -> None:
    """Refuse a JPEG whose bottom half or more is exactly the decoder's grey fill: it is corrupt
    or padded. A 600-byte header declaring 12000x12000 followed by 300 kB of random (byte-stuffed)
    scan data passes the bytes-per-block check and decodes to 145 rows of noise over 11,855 rows
    of grey, 432 MB of pixels. (A genuine picture that is mostly flat mid-grey is refused too; it
    is no scene to detect anything in.)"""
    fill_from = _decoder_fill_start(scene)
    if fill_from <= scene.height // 2:
        raise SceneError(
            f"{name} is corrupt or padded: rows {fill_from} to {scene.height - 1} of its "
            f"{scene.width}x{scene.height} pixels are the flat grey a JPEG decoder fills in where "
            "the compressed data is missing or broken; save the picture again from its original"
        )


def _decoder_fill_start(scene: NpyScene) -> int:
    """The first row of the run of fill rows at the bottom (``scene.height``: none). Read from
    the bottom up a band at a time; a real picture stops at its last row."""
    height = scene.height
    corner = scene.read_rows(height - 1, height)[0, -1]
    if not np.isin(corner, JPEG_FILL).all():
        return height
    for y1 in range(height, 0, -FILL_BAND_ROWS):
        y0 = max(0, y1 - FILL_BAND_ROWS)
        is_fill = (scene.read_rows(y0, y1) == corner).all(axis=(1, 2))
        if not is_fill.all():
            return y0 + int(np.flatnonzero(~is_fill)[-1]) + 1
    return 0


@contextmanager
def _as_path(src):
    """A path for ``src``: itself, or a temporary copy of a binary file object."""
    if isinstance(src, (str, os.PathLike)):
        yield Path(src)
        return
    with tempfile.NamedTemporaryFile(prefix="scene-src-") as tmp:
        src.seek(0)
        shutil.copyfileobj(src, tmp, 8 * 1024 * 1024)
        tmp.flush()
        yield Path(tmp.name)


def validate_scene_image(path, max_pixels: int | None = None) -> tuple[int, int, str]:
    """Check ``path`` from its header and return (width, height, format); nothing is decoded.

    Raises ``SceneError`` for non-images, TIFFs whose tiles lie past the end of the file (or
    whose bytes cannot hold the declared pixels) and images above ``max_pixels``. Damage inside
    compressed data shows only when decoding: ``image_to_npy`` refuses it then. A ``.npy``
    scene is checked by its header and size.
    """
    if isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(".npy"):
        with open(path, "rb") as f:
            header = read_npy_header(f.read(65536 + 16), str(path))
        expected = header.data_offset + header.height * header.width * 3
        if Path(path).stat().st_size < expected:
            raise SceneError(f"{path} is truncated: {expected} bytes expected")
        return header.width, header.height, "NPY"
    header = _header(path, _name(path), max_pixels)
    decode = _decode()
    try:
        decode.check_structure(path, _name(path))
    except decode.DecodeError as exc:
        raise SceneError(str(exc)) from None
    return header.width, header.height, header.format


def _write_npy_header(f: BinaryIO, height: int, width: int) -> None:
    np.lib.format.write_array_header_1_0(
        f, {"descr": "|u1", "fortran_order": False, "shape": (height, width, 3)}
    )


def _stream_to_npy(path: Path, name: str, header: Header, out: Path, progress, band_bytes) -> None:
    def on_rows(done: int) -> None:
        report(progress, done, header.height, f"rows {done:,} of {header.height:,}")

    with open(out, "wb") as f:
        _write_npy_header(f, header.height, header.width)
        decode = _decode()
        try:
            done = decode.write_rgb(path, f, name, band_bytes or decode.BAND_BYTES, on_rows)
        except decode.DecodeError as exc:
            raise SceneError(str(exc)) from None
    if done != header.height:
        raise SceneError(f"{name} is truncated: {done:,} of its {header.height:,} rows decoded")
    if header.format == "JPEG":
        _refuse_decoder_fill(NpyScene(out), name)


def image_to_npy(
    src, dst, max_pixels: int | None = None, progress=None, band_bytes: int | None = None
) -> tuple[int, int]:
    """Stream the picture ``src`` (path or binary file) into a scoring ``.npy`` at ``dst``.

    The picture is decoded a band of rows at a time and each band written out at once, so peak
    memory does not grow with the picture. ``dst`` is a path (written under a temporary name,
    then renamed; removed on any failure) or a writable binary file. ``band_bytes``: about how
    many bytes of RGB a band holds (JPEG, PNG; a TIFF is written tile by tile). Converted
    to RGB: alpha dropped, grey and palette expanded, 16-bit scaled to 8. Returns (width,
    height).
    """
    name = _name(src)
    with _as_path(src) as path:
        header = _header(path, name, max_pixels)
        if isinstance(dst, (str, os.PathLike)):
            dst = Path(dst)
            tmp = dst.with_name(f".{dst.name}.tmp")
            try:
                _stream_to_npy(path, name, header, tmp, progress, band_bytes)
                os.replace(tmp, dst)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            with tempfile.TemporaryDirectory(prefix="scene-") as scratch:
                tmp = Path(scratch) / "pixels.npy"
                _stream_to_npy(path, name, header, tmp, progress, band_bytes)
                with open(tmp, "rb") as f:
                    shutil.copyfileobj(f, dst, 8 * 1024 * 1024)
    return header.width, header.height


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
    or any picture file (decoded into memory: for small pictures)."""
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
    decode = _decode()
    try:
        return ArrayScene(np.concatenate(list(decode.iter_bands(path))))
    except decode.DecodeError as exc:
        raise SceneError(str(exc)) from None


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
