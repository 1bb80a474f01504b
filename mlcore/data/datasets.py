"""Labelled image datasets: loaders, class mapping, CIFAR-10 download.

Supported sources (``load_dataset`` detects which):

* the official CIFAR-10 python archive ``cifar-10-python.tar.gz`` (the pickled batches are read
  straight from the tar, nothing is extracted) or its extracted ``cifar-10-batches-py/`` folder;
* an image folder, as a directory or a zip: ``<split>/<class>/*.jpg|png`` or ``<class>/*.jpg|png``
  (zip members are decoded in memory, nothing is extracted);
* a ``.npz`` written by ``LabelledImages.save_npz``.

Size policy: every image is brought to the dataset's tile size, which is ``tile_size`` when given,
else the size of the first image decoded. Images of another size are *resized* (bicubic), not
rejected, so a folder of mixed photo sizes still loads; the number of resized images is logged.
Images that cannot be decoded (corrupt, truncated, not an image) are skipped with a warning naming
the member and recorded in ``LabelledImages.skipped``; the rest loads.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from mlcore.progress import Progress, report

log = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE_NAME = "cifar-10-python.tar.gz"
CIFAR10_FOLDER_NAME = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCHES = ("test_batch",)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
SPLITS = ("train", "test", "all")


class DatasetError(ValueError):
    """The dataset path or its content cannot be used (the message says why and what to do)."""


@dataclass
class LabelledImages:
    """Images with one class label each.

    ``images`` uint8 (N, h, w, 3); ``labels`` int64 (N,) indexing ``class_names``; ``ids`` N stable
    strings (archive member or batch:index); ``skipped`` [(member, reason)] for inputs not loaded.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    ids: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # After a class mapping: the dataset's own class names and each image's index into them
    # (automobile and truck both map to project classes; the model can still learn them apart).
    sources: list[str] | None = None
    source_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.class_names = [str(c) for c in self.class_names]
        self.ids = [str(i) for i in self.ids]
        self.skipped = [(str(m), str(r)) for m, r in self.skipped]
        if (self.sources is None) != (self.source_labels is None):
            raise DatasetError("sources and source_labels go together")
        if self.sources is not None:
            self.sources = [str(c) for c in self.sources]
            self.source_labels = np.asarray(self.source_labels, dtype=np.int64).reshape(-1)
            if len(self.source_labels) != len(self.images):
                raise DatasetError("one source label per image is needed")
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] != 3:
            raise DatasetError(
                f"images must be uint8 (N, h, w, 3), got {self.images.dtype} {self.images.shape}"
            )
        n = len(self.images)
        if len(self.labels) != n or len(self.ids) != n:
            raise DatasetError(
                f"{n} images but {len(self.labels)} labels and {len(self.ids)} ids: they must match"
            )
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DatasetError(
                f"labels must index class_names (0..{len(self.class_names) - 1}), "
                f"got range {self.labels.min()}..{self.labels.max()}"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def tile_size(self) -> tuple[int, int]:
        """(h, w) of every image."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def counts(self) -> dict[str, int]:
        """Number of images per class name, in ``class_names`` order (zeros included)."""
        per_label = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(per_label[i]) for i, name in enumerate(self.class_names)}

    def subset(self, selector) -> LabelledImages:
        """Images selected by a boolean mask, an index array, or a class name / list of names.

        Class names keep the full ``class_names`` list (labels stay comparable across subsets).
        """
        if isinstance(selector, str):
            selector = [selector]
        sel = np.asarray(selector)
        if sel.dtype.kind in "US":
            unknown = [s for s in sel.tolist() if s not in self.class_names]
            if unknown:
                raise DatasetError(f"unknown class(es) {unknown}; known: {self.class_names}")
            wanted = [self.class_names.index(s) for s in sel.tolist()]
            sel = np.isin(self.labels, wanted)
        if sel.dtype == bool:
            if len(sel) != len(self):
                raise DatasetError(f"mask of length {len(sel)} for {len(self)} images")
            index = np.flatnonzero(sel)
        else:
            index = sel.astype(np.int64).reshape(-1)
        return LabelledImages(
            images=self.images[index],
            labels=self.labels[index],
            class_names=list(self.class_names),
            ids=[self.ids[i] for i in index.tolist()],
            skipped=list(self.skipped),
            sources=self.sources,
            source_labels=self.source_labels[index] if self.sources is not None else None,
        )

    def source_to_class(self) -> list[str] | None:
        """The project class of each source class (None without sources)."""
        if self.sources is None:
            return None
        out: list[str | None] = [None] * len(self.sources)
        for s, c in zip(self.source_labels.tolist(), self.labels.tolist()):
            out[s] = self.class_names[c]
        return [c if c is not None else "" for c in out]

    def images_of(self, class_name: str) -> np.ndarray:
        """All images of one class (a copy), uint8 (n, h, w, 3)."""
        if class_name not in self.class_names:
            raise DatasetError(f"unknown class {class_name!r}; known: {self.class_names}")
        return self.images[self.labels == self.class_names.index(class_name)]

    def save_npz(self, path: str | os.PathLike) -> None:
        """Write to ``path`` (.npz, uncompressed: small dense images), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        skipped = np.array(self.skipped, dtype=str).reshape(-1, 2)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    images=self.images,
                    labels=self.labels,
                    class_names=np.array(self.class_names, dtype=str),
                    ids=np.array(self.ids, dtype=str),
                    skipped=skipped,
                    **(
                        {"sources": np.array(self.sources, dtype=str),
                         "source_labels": self.source_labels}
                        if self.sources is not None
                        else {}
                    ),
                )  # fmt: skip
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> LabelledImages:
        """Read a file written by ``save_npz`` (no pickle is involved)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    images=z["images"],
                    labels=z["labels"],
                    class_names=z["class_names"].tolist(),
                    ids=z["ids"].tolist(),
                    skipped=[tuple(r) for r in z["skipped"].tolist()],
                    sources=z["sources"].tolist() if "sources" in z else None,
                    source_labels=z["source_labels"] if "source_labels" in z else None,
                )
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"{path} is not a LabelledImages .npz file: {exc}") from exc


# --------------------------------------------------------------------------------------------
# CIFAR-10 official python format


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain containers and numpy arrays.

    The official batches are pickles; refusing every other global keeps a tampered archive from
    running code when it is loaded.
    """

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "bytearray"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}, which is not allowed")


def _unpickle_batch(data: bytes, member: str) -> dict:
    try:
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise DatasetError(f"{member}: not a readable CIFAR pickle batch ({exc})") from exc
    if not isinstance(obj, dict):
        raise DatasetError(
            f"{member}: expected a dict in the CIFAR batch, got {type(obj).__name__}"
        )
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch_names(split: str | None) -> tuple[str, ...]:
    split = split or "all"
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "train":
        return CIFAR10_TRAIN_BATCHES
    if split == "test":
        return CIFAR10_TEST_BATCHES
    return CIFAR10_TRAIN_BATCHES + CIFAR10_TEST_BATCHES


def _decode_cifar(batches: dict[str, bytes], meta: bytes, split: str | None) -> LabelledImages:
    meta_dict = _unpickle_batch(meta, "batches.meta")
    names = meta_dict.get("label_names")
    if names is None:
        raise DatasetError("batches.meta has no 'label_names'")
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    images, labels, ids = [], [], []
    for batch_name in _cifar_batch_names(split):
        if batch_name not in batches:
            raise DatasetError(
                f"CIFAR batch {batch_name!r} missing (found {sorted(batches)}); "
                "the archive is incomplete: download it again"
            )
        d = _unpickle_batch(batches[batch_name], batch_name)
        data = np.asarray(d["data"], dtype=np.uint8)
        n = data.shape[0]
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(f"{batch_name}: data must be (N, 3072), got {data.shape}")
        # Row-major planes: 1024 red, 1024 green, 1024 blue values per image.
        images.append(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(d["labels"], dtype=np.int64))
        ids.extend(f"{batch_name}:{i}" for i in range(n))
    return LabelledImages(
        images=np.ascontiguousarray(np.concatenate(images)),
        labels=np.concatenate(labels),
        class_names=class_names,
        ids=ids,
    )


def load_cifar10_archive(path: str | os.PathLike, split: str | None = None) -> LabelledImages:
    """Load the official ``cifar-10-python.tar.gz``, reading batches straight from the tar.

    ``split``: "train" (50,000), "test" (10,000) or "all"/None (train then test).
    """
    wanted = set(_cifar_batch_names(split)) | {"batches.meta"}
    batches: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = PurePosixPath(member.name).name
                if member.isfile() and base in wanted:
                    f = tar.extractfile(member)
                    if f is not None:
                        batches[base] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable tar archive ({exc})") from exc
    if "batches.meta" not in batches:
        raise DatasetError(f"{path}: no batches.meta inside; is it the CIFAR-10 python archive?")
    meta = batches.pop("batches.meta")
    return _decode_cifar(batches, meta, split)


def load_cifar10_folder(path: str | os.PathLike, split: str | None = None) -> LabelledImages:
    """Load the extracted ``cifar-10-batches-py/`` folder (or its parent)."""
    folder = Path(path)
    if not (folder / "batches.meta").exists() and (folder / CIFAR10_FOLDER_NAME).is_dir():
        folder = folder / CIFAR10_FOLDER_NAME
    if not (folder / "batches.meta").exists():
        raise DatasetError(f"{path}: no batches.meta; is it the extracted CIFAR-10 python folder?")
    batches = {
        name: (folder / name).read_bytes()
        for name in _cifar_batch_names(split)
        if (folder / name).exists()
    }
    return _decode_cifar(batches, (folder / "batches.meta").read_bytes(), split)


# --------------------------------------------------------------------------------------------
# Image folders (directory or zip)


def _is_hidden(parts: Sequence[str]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


# A labelled image is a tile: anything far bigger is a mistake or a decompression bomb, refused
# before it is inflated (the member's declared size and the header's pixel count are checked).
MAX_TILE_BYTES = 16 * 1024 * 1024
MAX_TILE_PIXELS = 4096 * 4096


def _decode_image(data: bytes, tile_size: tuple[int, int] | None) -> tuple[np.ndarray, bool]:
    """Decode to RGB uint8, resized to ``tile_size`` if given; also says whether it was resized."""
    with Image.open(io.BytesIO(data)) as im:
        if im.width * im.height > MAX_TILE_PIXELS:
            raise ValueError(
                f"{im.width}x{im.height} pixels is too large for a labelled tile "
                f"(limit {MAX_TILE_PIXELS:,} pixels)"
            )
        im.load()
        if im.mode != "RGB":
            im = im.convert("RGB")
        resized = tile_size is not None and (im.height, im.width) != tuple(tile_size)
        if resized:
            im = im.resize((tile_size[1], tile_size[0]), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8), resized


# Skipped members named one by one, then one line with the count of the rest: a junk zip of
# 50,000 files wrote 100,000 lines to the worker log. LabelledImages.skipped keeps them all.
SKIPPED_NAMED = 20


def _warn_skipped(source: str, skipped: list[tuple[str, str]]) -> None:
    lines = [f"{source}: skipped {m}: {reason}" for m, reason in skipped[:SKIPPED_NAMED]]
    if len(skipped) > SKIPPED_NAMED:
        lines.append(
            f"{source}: skipped {len(skipped) - SKIPPED_NAMED:,} more members "
            f"({len(skipped):,} in all; the dataset's skipped list names each with its reason)"
        )
    for line in lines:
        warnings.warn(line, stacklevel=4)
        log.warning("%s", line)


def _load_image_members(
    members: list[str],
    read: callable,
    source: str,
    split: str | None,
    tile_size: tuple[int, int] | None,
    progress: Progress | None,
) -> LabelledImages:
    """Shared loader for directory and zip image folders; ``members`` are posix relative paths."""
    files = [m for m in members if not _is_hidden(PurePosixPath(m).parts)]
    depths = Counter(
        len(PurePosixPath(m).parts)
        for m in files
        if PurePosixPath(m).suffix.lower() in IMAGE_SUFFIXES
    )
    if not depths:
        raise DatasetError(
            f"{source}: no images found; expected <split>/<class>/*.jpg|png or <class>/*.jpg|png"
        )
    depth = depths.most_common(1)[0][0]
    if depth not in (2, 3):
        raise DatasetError(
            f"{source}: images are {depth - 1} folders deep; expected <split>/<class>/image "
            "or <class>/image"
        )
    skipped: list[tuple[str, str]] = []
    chosen: list[tuple[str, str]] = []  # (member, class)
    available_splits = set()
    for m in files:
        parts = PurePosixPath(m).parts
        if len(parts) != depth:
            skipped.append((m, "outside the <split>/<class>/ layout"))
            continue
        if depth == 3:
            available_splits.add(parts[0])
            if split not in (None, "all") and parts[0] != split:
                continue
        chosen.append((m, parts[-2]))
    if depth == 3 and split not in (None, "all") and split not in available_splits:
        raise DatasetError(f"{source}: no split {split!r}; found {sorted(available_splits)}")
    chosen.sort()
    class_names = sorted({c for _, c in chosen})
    class_index = {c: i for i, c in enumerate(class_names)}
    images: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[str] = []
    resized = 0
    total = len(chosen)
    for k, (m, cls) in enumerate(chosen):
        try:
            arr, was_resized = _decode_image(read(m), tile_size)
        except Exception as exc:  # PIL raises many types for bad data
            reason = f"not a readable image ({type(exc).__name__}: {exc})"
            skipped.append((m, reason))
            continue
        if tile_size is None:
            tile_size = arr.shape[:2]
        resized += was_resized
        images.append(arr)
        labels.append(class_index[cls])
        ids.append(m)
        if k % 1000 == 0 or k + 1 == total:
            report(progress, k + 1, total, "decoding images")
    _warn_skipped(source, skipped)
    if resized:
        log.info("%s: resized %d images to %s", source, resized, tile_size)
    if not images:
        raise DatasetError(f"{source}: none of the {total} images could be decoded")
    return LabelledImages(
        images=np.stack(images),
        labels=np.array(labels, dtype=np.int64),
        class_names=class_names,
        ids=ids,
        skipped=skipped,
    )


def load_image_folder(
    path: str | os.PathLike,
    split: str | None = None,
    tile_size: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> LabelledImages:
    """Load ``<split>/<class>/*.jpg|png`` (or ``<class>/*``) from a directory.

    ``split`` None or "all" loads every split; ``ids`` are the relative paths.
    """
    root = Path(path)
    members = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return _load_image_members(
        members, lambda m: (root / m).read_bytes(), str(path), split, tile_size, progress
    )


def load_image_zip(
    path: str | os.PathLike,
    split: str | None = None,
    tile_size: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> LabelledImages:
    """Load ``<split>/<class>/*.jpg|png`` members of a zip without extracting it."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path}: not a readable zip file ({exc})") from exc
    with zf:
        members = [i.filename for i in zf.infolist() if not i.is_dir()]

        def read(m: str) -> bytes:
            declared = zf.getinfo(m).file_size
            if declared > MAX_TILE_BYTES:
                raise ValueError(
                    f"{declared:,} bytes uncompressed is too large for a labelled tile "
                    f"(limit {MAX_TILE_BYTES:,})"
                )
            return zf.read(m)

        return _load_image_members(members, read, str(path), split, tile_size, progress)


def load_dataset(
    path: str | os.PathLike,
    split: str | None = None,
    tile_size: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> LabelledImages:
    """Load a dataset from any supported source, detected from the path.

    * ``.npz`` -> ``LabelledImages.load_npz`` (split ignored);
    * a tar archive (``.tar.gz``/``.tgz``/``.tar``) -> official CIFAR-10 python archive;
    * a folder containing ``batches.meta`` (or ``cifar-10-batches-py/``) -> CIFAR-10 folder;
    * a ``.zip`` or any other folder -> image folder.
    """
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{path} does not exist")
    if p.is_dir():
        if (p / "batches.meta").exists() or (p / CIFAR10_FOLDER_NAME / "batches.meta").exists():
            return load_cifar10_folder(p, split)
        return load_image_folder(p, split, tile_size, progress)
    name = p.name.lower()
    if name.endswith(".npz"):
        return LabelledImages.load_npz(p)
    if zipfile.is_zipfile(p):
        return load_image_zip(p, split, tile_size, progress)
    if name.endswith((".tar.gz", ".tgz", ".tar")) or tarfile.is_tarfile(p):
        return load_cifar10_archive(p, split)
    raise DatasetError(
        f"{path}: unknown dataset format; expected a CIFAR-10 python archive or folder, "
        "an image folder or zip (<split>/<class>/*.jpg), or a .npz from LabelledImages.save_npz"
    )


# --------------------------------------------------------------------------------------------
# Class mapping


@dataclass
class ClassMapping:
    """Map a dataset's source classes onto the project's classes.

    ``rename`` maps a source class to a project class (several sources may share one project
    class). Every other source class becomes ``negative``; with ``negative=None`` they are dropped.
    Project class order: positives in the order first given, then the negative class last.
    """

    rename: dict[str, str]
    negative: str | None = "negative"

    @classmethod
    def cifar_default(cls) -> ClassMapping:
        """automobile -> car, ship -> boat, the other eight CIFAR-10 classes -> negative."""
        return cls({"automobile": "car", "ship": "boat"}, negative="negative")

    @classmethod
    def parse(cls, spec: str, negative: str | None = "negative") -> ClassMapping:
        """Parse ``"automobile:car,ship:boat"`` (a bare name maps to itself)."""
        rename: dict[str, str] = {}
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            src, _, dst = item.partition(":")
            rename[src.strip()] = (dst or src).strip()
        if not rename:
            raise DatasetError(
                f"empty class mapping {spec!r}; write e.g. 'automobile:car,ship:boat'"
            )
        return cls(rename, negative)

    @property
    def project_classes(self) -> list[str]:
        positives = [c for c in dict.fromkeys(self.rename.values()) if c != self.negative]
        return positives + ([self.negative] if self.negative is not None else [])

    def map_name(self, source: str) -> str | None:
        """Project class of a source class, or None when it is dropped."""
        return self.rename.get(source, self.negative)


def apply_mapping(ds: LabelledImages, mapping: ClassMapping) -> LabelledImages:
    """Relabel ``ds`` with project class names (positives as given, negative last).

    Raises if the mapping names a source class the dataset does not have (a typo would otherwise
    silently turn a whole positive class into negatives).
    """
    missing = [s for s in mapping.rename if s not in ds.class_names]
    if missing:
        raise DatasetError(
            f"class mapping names {missing}, which the dataset does not have; "
            f"its classes are {ds.class_names}"
        )
    project = mapping.project_classes
    lookup = np.array(
        [
            project.index(m) if (m := mapping.map_name(name)) is not None else -1
            for name in ds.class_names
        ],
        dtype=np.int64,
    )
    new_labels = lookup[ds.labels] if len(ds) else ds.labels
    keep = new_labels >= 0
    index = np.flatnonzero(keep)
    return LabelledImages(
        images=ds.images[index] if not keep.all() else ds.images,
        labels=new_labels[index],
        class_names=project,
        ids=[ds.ids[i] for i in index.tolist()],
        skipped=list(ds.skipped),
        sources=list(ds.class_names),
        source_labels=ds.labels[index],
    )


# --------------------------------------------------------------------------------------------
# Download and shared data


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_cifar10(
    dest_dir: str | os.PathLike,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> Path:
    """Download the official CIFAR-10 python archive into ``dest_dir`` and return its path.

    The file is written under a temporary name, its MD5 checked, then renamed into place, so a
    partial download never looks complete. An existing file with the right checksum is reused.
    Without network, raises ``DatasetError`` saying where to put a manually downloaded copy.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / CIFAR10_ARCHIVE_NAME
    manual = (
        f"Download {CIFAR10_URL} on a machine with network and place it at {target} "
        f"(MD5 {md5}), or point the loader at an existing copy."
    )
    if target.exists():
        if _md5(target) == md5:
            return target
        raise DatasetError(
            f"{target} exists but its MD5 is not {md5}: delete it and retry. {manual}"
        )
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=CIFAR10_ARCHIVE_NAME, suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0)
                    done = 0
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        report(progress, done, total or done, "downloading CIFAR-10")
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DatasetError(f"could not download {url}: {exc}. {manual}") from exc
        if h.hexdigest() != md5:
            raise DatasetError(
                f"downloaded {url} but its MD5 is {h.hexdigest()}, expected {md5} "
                f"(corrupted or changed upstream); nothing was kept. {manual}"
            )
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def find_shared_data() -> Path | None:
    """The shared data folder: ``$MLCORE_SHARED_DATA`` if set, else ``<repo>/../shared/data``.

    Returns None when the folder does not exist.
    """
    env = os.environ.get("MLCORE_SHARED_DATA")
    candidate = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def concat(parts: Iterable[LabelledImages]) -> LabelledImages:
    """Concatenate datasets with identical ``class_names``."""
    parts = list(parts)
    if not parts:
        raise DatasetError("nothing to concatenate")
    names = parts[0].class_names
    for p in parts[1:]:
        if p.class_names != names:
            raise DatasetError(f"class names differ: {names} vs {p.class_names}")
    # Source classes survive only when every part has the same ones.
    first = parts[0].sources
    same_sources = first is not None and all(p.sources == first for p in parts)
    return LabelledImages(
        images=np.concatenate([p.images for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        class_names=list(names),
        ids=[i for p in parts for i in p.ids],
        skipped=[s for p in parts for s in p.skipped],
        sources=list(parts[0].sources) if same_sources else None,
        source_labels=np.concatenate([p.source_labels for p in parts]) if same_sources else None,
    )
