"""Where this installation's demo data lives (configuration, not work): the shared CIFAR-10 zip
that serves as the demo tile library and the Mona Lisa that is the demo collage's target.

Forms, pages and the upload checks ask here whether the demo is available; the jobs in
workers.data_jobs read the same paths. Both are None when the shared data folder (see
mlcore.data.datasets.find_shared_data, overridable with $MLCORE_SHARED_DATA) lacks the file."""

from __future__ import annotations

from pathlib import Path

from mlcore.data.datasets import find_shared_data

DEMO_TILES_FILE = "cifar10-jpg.zip"
DEMO_TARGET_FILE = "mona_lisa.jpg"


def _shared_file(name: str) -> Path | None:
    folder = find_shared_data()
    path = folder / name if folder else None
    return path if path and path.exists() else None


def demo_tiles_path() -> Path | None:
    """The shared CIFAR-10 zip of the demo, when this installation has it."""
    return _shared_file(DEMO_TILES_FILE)


def demo_target_path() -> Path | None:
    """The demo collage's target picture, when this installation has it."""
    return _shared_file(DEMO_TARGET_FILE)
