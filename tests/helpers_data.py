"""Helpers for the data-side tests (datasets, canvases, collage, scenes, deep zoom)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    env = os.environ.get("MLCORE_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def shared_data_file(name: str) -> Path:
    """A file of the shared data folder; a missing one fails the test (never a skip)."""
    path = shared_data_dir() / name
    if not path.exists():
        pytest.fail(f"{path} is missing: put the shared data there or set MLCORE_SHARED_DATA")
    return path


CIFAR_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def cifar_batch(rng: np.random.Generator, n: int, batch_label: str) -> tuple[dict, np.ndarray]:
    """A batch dict in the official format, and its images as (n, 32, 32, 3) for checking."""
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # R plane, G plane, B plane, row-major
    labels = rng.integers(0, 10, size=n).tolist()
    batch = {
        b"batch_label": batch_label.encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{batch_label}_{i}.png".encode() for i in range(n)],
    }
    return batch, images


def write_fake_cifar(root: Path, per_batch: int = 3, n_test: int = 4, seed: int = 0):
    """Write a tiny CIFAR-10 python archive and its extracted folder under ``root``.

    Returns (tar path, folder path, {batch name: (images, labels)}).
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    truth = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch, images = cifar_batch(rng, n_test if name == "test_batch" else per_batch, name)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        truth[name] = (images, np.array(batch[b"labels"]))
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_cases_per_batch": per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    tar_path = root / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return tar_path, folder, truth


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def image_folder_zip(
    path: Path,
    counts: dict[str, int],
    size: int = 32,
    split: str | None = None,
    extra: dict[str, bytes] | None = None,
    seed: int = 0,
) -> Path:
    """A zip in the image-folder layout: <class>/<i>.jpg (or <split>/<class>/<i>.jpg), `counts`
    images per class of random pixels, plus `extra` members (e.g. a corrupt file)."""
    import zipfile

    rng = np.random.default_rng(seed)
    prefix = f"{split}/" if split else ""
    with zipfile.ZipFile(path, "w") as zf:
        for name, n in counts.items():
            for i in range(n):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                zf.writestr(f"{prefix}{name}/{i:04d}.jpg", jpeg_bytes(pixels))
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
    return path


def scene_png(width: int = 96, height: int = 64, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return png_bytes(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first part of an image file: a header that opens, pixels that do not decode."""
    return data[: max(64, int(len(data) * keep))]


def storage_files(root: Path) -> list[str]:
    """Every file under a local storage root (relative paths), temporary ones included."""
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())


def run_worker_burst(*queue_names: str) -> None:
    """Run the queued jobs for real: an RQ SimpleWorker in burst mode in this process (jobs that
    the jobs enqueue, such as the deep-zoom tiles after a scene import, run in the same burst)."""
    import django_rq
    from rq import SimpleWorker

    queues = [django_rq.get_queue(name) for name in (queue_names or ("default",))]
    SimpleWorker(queues, connection=queues[0].connection).work(burst=True)
