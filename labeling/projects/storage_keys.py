"""The app's view of storage: one configured backend (settings.STORAGE_URL) and the key layout.

Every key the app writes is built here, so the layout is in one place:

    projects/<project>/datasets/<dataset>/...     imported datasets (.npz) and their uploads
    projects/<project>/canvases/<class>/...        training canvases (.npy + manifest.json)
    projects/<project>/scenes/<scene>/...          image, pixels.npy, ground truth, dzi/,
                                                   scores/run-<run>.parquet (egress)
    projects/<project>/models/v<number>/...        checkpoint and ONNX / MXNet files
    projects/<project>/runs/<run>/grid.npz         probability grids
"""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings

from mlcore.storage import Storage, storage_from_url


@lru_cache(maxsize=4)
def _storage_for(url: str) -> Storage:
    return storage_from_url(url, create=True)


def get_storage() -> Storage:
    """The configured storage (cached per URL, so tests may point STORAGE_URL elsewhere)."""
    return _storage_for(str(settings.STORAGE_URL))


def project_prefix(project) -> str:
    return f"projects/{project.pk}"


def dataset_prefix(dataset) -> str:
    return f"{project_prefix(dataset.project)}/datasets/{dataset.pk}"


def scene_prefix(scene) -> str:
    return f"{project_prefix(scene.project)}/scenes/{scene.pk}"


def model_prefix(version) -> str:
    return f"{project_prefix(version.project)}/models/v{version.number}"


def run_prefix(run) -> str:
    return f"{project_prefix(run.scene.project)}/runs/{run.pk}"


def scores_parquet_key(run) -> str:
    return f"{scene_prefix(run.scene)}/scores/run-{run.pk}.parquet"
