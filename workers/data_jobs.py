"""Jobs of the data area (run by workers.runner.execute; `def f(ctx, **params)`).

import_dataset      uploaded/stored dataset -> project classes -> .npz in storage + counts
import_scene        stored image -> pixels.npy (scoring format, streamed); then DZI + first scoring
generate_dzi        pixels.npy -> deep-zoom pyramid (libvips dzsave) under the scene's dzi/ folder
make_collage_scene  target picture + tile library -> collage scene with its ground truth

A job that fails leaves nothing half made: its storage objects are deleted, a scene row that never
became usable is removed, and a dataset row stays only as `failed` with the reason."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction

from labeling.ingest.demo_data import demo_target_path, demo_tiles_path
from labeling.ingest.uploads import delete_prefix, local_copy, sha256_of_key
from labeling.jobs.db_cuts import retry_on_cut
from labeling.models import Dataset, Project, Scene, ScoringRun
from labeling.projects import storage_keys as keys
from labeling.projects.storage_keys import get_storage
from mlcore.data.datasets import (
    ClassMapping,
    DatasetError,
    LabelledImages,
    apply_mapping,
    load_dataset,
)

DZI_NAME = "scene"


# --- class mapping -------------------------------------------------------------------------


def map_to_project(project: Project, ds: LabelledImages, log=print) -> LabelledImages:
    """Relabel a dataset with the project's classes, in the project's order (positives, then
    negative). Sources the dataset lacks are reported, not fatal, unless no positive is left."""
    rename = {src: c["name"] for c in project.classes for src in c.get("sources", [])}
    present = {src: dst for src, dst in rename.items() if src in ds.class_names}
    missing = sorted(set(rename) - set(present))
    if not present:
        raise DatasetError(
            f"none of the project's source classes {sorted(rename)} are in the dataset, whose "
            f"classes are {ds.class_names}; fix the class mapping or the dataset's folder names"
        )
    if missing:
        log(f"source classes not in this dataset: {missing}")
    mapped = apply_mapping(ds, ClassMapping(present, negative=project.negative_class))
    order = project.class_names
    lookup = np.array([order.index(name) for name in mapped.class_names], dtype=np.int64)
    return LabelledImages(
        images=mapped.images,
        labels=lookup[mapped.labels] if len(mapped) else mapped.labels,
        class_names=order,
        ids=mapped.ids,
        skipped=mapped.skipped,
        # The dataset's own classes stay beside: the starting model's heads are learnt from
        # them, and the project's classes can be edited later without importing it again.
        sources=mapped.sources,
        source_labels=mapped.source_labels,
    )


def count_table(project: Project, source: LabelledImages, mapped: LabelledImages) -> dict:
    """Dataset.class_counts: {"sources": {src: {"count", "to"}}, "classes": {class: count}}."""
    rename = {src: c["name"] for c in project.classes for src in c.get("sources", [])}
    return {
        "sources": {
            name: {"count": n, "to": rename.get(name, project.negative_class)}
            for name, n in source.counts().items()
        },
        "classes": mapped.counts(),
    }


# --- datasets ------------------------------------------------------------------------------


def dataset_npz_key(dataset: Dataset) -> str:
    return f"{keys.dataset_prefix(dataset)}/images.npz"


def import_dataset(ctx, dataset_id: int, input_key: str, split: str = "all", owned=True):
    """Load the stored upload (zip or CIFAR-10 archive), map it to the project's classes and
    save it as images.npz. `owned`: the input lies in the dataset's folder (an upload) and is
    deleted on failure; a user's own storage object is never deleted."""
    dataset = Dataset.objects.select_related("project").get(pk=dataset_id)
    project = dataset.project
    Dataset.objects.filter(pk=dataset.pk).update(status="importing", error="")
    npz_key = dataset_npz_key(dataset)
    try:
        ctx.progress(0, 1, "reading the dataset")
        sha = dataset.sha256 or sha256_of_key(input_key)
        # Uploads were checked before storing; a storage path (or two uploads at once) here.
        earlier = (
            Dataset.objects.filter(project=project, sha256=sha, pk__lt=dataset.pk)
            .exclude(status="failed")
            .first()
        )
        if earlier is not None:
            raise DatasetError(
                f"the same file was already imported into this project as dataset "
                f"{earlier.name!r} (#{earlier.pk}); nothing new to import"
            )
        with local_copy(input_key) as path:
            window = project.window_size
            try:
                source = load_dataset(
                    path, split=None if split == "all" else split, tile_size=(window, window),
                    progress=ctx,
                )  # fmt: skip
            except DatasetError as exc:
                # Name the user's file, not where it lies on the server.
                raise DatasetError(str(exc).replace(str(path), Path(input_key).name)) from None
        ctx.log(f"loaded {len(source)} images of {len(source.class_names)} source classes")
        mapped = map_to_project(project, source, log=ctx.log)
        ctx.progress(0, 1, "saving images.npz")
        with tempfile.TemporaryDirectory(prefix="dataset-") as tmp:
            local = Path(tmp) / "images.npz"
            mapped.save_npz(local)
            with open(local, "rb") as handle:
                get_storage().write(npz_key, handle)
        Dataset.objects.filter(pk=dataset.pk).update(
            status="ready",
            storage_key=npz_key,
            sha256=sha,
            class_counts=count_table(project, source, mapped),
            skipped=[list(s) for s in source.skipped],
        )
        ctx.progress(1, 1, f"{len(mapped)} images ready")
        return {"dataset_id": dataset.pk, "images": len(mapped), "skipped": len(source.skipped)}
    except BaseException as exc:
        _cleanup_dataset(dataset, input_key if owned else None, npz_key)
        Dataset.objects.filter(pk=dataset.pk).update(status="failed", error=str(exc)[:5000])
        raise


def _cleanup_dataset(dataset: Dataset, input_key: str | None, npz_key: str) -> None:
    storage = get_storage()
    for key in (input_key, npz_key):
        if key and storage.exists(key):
            storage.delete(key)
    if input_key:
        delete_prefix(keys.dataset_prefix(dataset))


# --- scenes --------------------------------------------------------------------------------


def pixels_key(scene: Scene) -> str:
    return f"{keys.scene_prefix(scene)}/pixels.npy"


def _remove_scene(scene_id: int) -> None:
    """A scene that never became usable: its objects and its row go (owned objects only)."""
    scene = Scene.objects.filter(pk=scene_id).select_related("project").first()
    if scene is None:
        return
    delete_prefix(keys.scene_prefix(scene))
    scene.delete()


def _write_npy(key: str, write_to_path) -> None:
    """Build a file with `write_to_path(path)` in a temporary folder, then stream it to storage."""
    with tempfile.TemporaryDirectory(prefix="scene-") as tmp:
        local = Path(tmp) / "pixels.npy"
        write_to_path(local)
        with open(local, "rb") as handle:
            get_storage().write(key, handle)


def _check_disk(scene: Scene, width: int, height: int) -> None:
    """Refuse before converting when the scene's files would not fit on the disk."""
    from mlcore.ingest.disk_space import check_free_space

    local = get_storage().local_path(keys.scene_prefix(scene))  # None: remote storage
    check_free_space(width, height, tempfile.gettempdir(), local)


def import_scene(ctx, scene_id: int):
    """Stored image -> checked -> pixels.npy, streamed a band at a time; the GeoTIFF's
    georeferencing kept; then the DZI job and the first scoring.

    An upload had its header and structure checked before it was stored (it has its sha256
    already); an image named in the storage is checked here, with the same rules. Damage inside
    the compressed data shows while streaming: the job fails with the reason, nothing stays."""
    from labeling.ingest.uploads import check_scene_image
    from mlcore.ingest.georef import describe as describe_georef
    from mlcore.ingest.georef import read_geotiff
    from mlcore.ingest.scenes import image_to_npy
    from mlcore.ingest.tiff_bands import is_tiff

    scene = Scene.objects.select_related("project").get(pk=scene_id)
    try:
        ctx.progress(0, 3, "checking the image")
        if not scene.sha256:
            scene.sha256 = sha256_of_key(scene.image_key)
        earlier = Scene.objects.filter(
            project=scene.project, sha256=scene.sha256, pk__lt=scene.pk
        ).first()
        if earlier is not None:
            raise ValueError(
                f"the same image is already scene {earlier.name!r} (#{earlier.pk}) of this "
                "project; open that one instead"
            )
        with local_copy(scene.image_key) as path:
            uploaded = scene.image_key.startswith(keys.scene_prefix(scene) + "/")
            name = scene.name if uploaded else Path(scene.image_key).name  # as the user named it
            # Named in the storage: not checked yet (an upload was, before it was stored).
            width, height, _fmt = check_scene_image(path, name)
            _check_disk(scene, width, height)
            scene.georef = read_geotiff(path) if is_tiff(path) else None
            ctx.progress(1, 3, "converting to the scoring format")
            key = pixels_key(scene)
            size = {}

            def convert(dst):
                size["wh"] = image_to_npy(path, dst, settings.SCENE_MAX_PIXELS, progress=ctx)

            try:
                _write_npy(key, convert)
            except ValueError as exc:  # name the user's file, not where it lies on the server
                raise ValueError(str(exc).replace(str(path), name)) from None
            width, height = size["wh"]
            ctx.log(f"{scene.image_key}: {width}x{height}")
            if scene.georef:  # a GeoTIFF: where it lies, or why its tags were ignored
                ctx.log(describe_georef(scene.georef))
        scene.width, scene.height, scene.pixels_key = width, height, key
        scene.save(update_fields=["width", "height", "pixels_key", "sha256", "georef"])
        ctx.progress(2, 3, "queueing deep-zoom tiles and scoring")
        follow_up = retry_on_cut(queue_follow_up, scene)  # one transaction
        ctx.progress(3, 3, "scene ready")
        return {"scene_id": scene.pk, "width": width, "height": height, **follow_up}
    except BaseException:
        _remove_scene(scene_id)
        raise


def queue_follow_up(scene: Scene) -> dict:
    """Deep-zoom tiles, and a first scoring when the project has a current model that has not
    scored the scene yet."""
    from labeling.jobs.enqueue import enqueue

    project = scene.project
    with transaction.atomic():
        # The scene's row lock: a cycle promoting its version now scores the scenes that
        # version has not scored under the same lock (labeling.loop.cycle.
        # score_scenes_it_has_not_scored), so the scene is scored once, never twice or never.
        Scene.objects.select_for_update().get(pk=scene.pk)
        dzi = enqueue("dzi", "workers.data_jobs.generate_dzi", project=project, scene_id=scene.pk)
        result = {"dzi_job": dzi.pk}
        model = project.current_model()
        if (
            model is not None
            and not ScoringRun.objects.filter(scene=scene, model_version=model).exists()
        ):
            run = ScoringRun.objects.create(scene=scene, model_version=model, status="queued")
            score = enqueue(
                "score", "workers.score_jobs.score_scene", project=project, run_id=run.pk
            )
            result.update(scoring_run=run.pk, score_job=score.pk)
    return result


def generate_dzi(ctx, scene_id: int):
    """The scene's deep-zoom pyramid under scenes/<id>/dzi/ (descriptor written last)."""
    from mlcore.ingest import deepzoom
    from mlcore.ingest.scenes import NpyScene

    scene = Scene.objects.select_related("project").get(pk=scene_id)
    storage = get_storage()
    prefix = f"{keys.scene_prefix(scene)}/dzi"
    try:
        # Local storage: libvips writes the tiles in place; remote: each through the storage.
        folder = storage.local_path(prefix)
        info = deepzoom.generate_dzi(
            NpyScene(storage, scene.pixels_key),
            folder
            if folder is not None
            else lambda key, data: storage.write(f"{prefix}/{key}", data),
            name=DZI_NAME,
            progress=ctx,
        )
    except BaseException:
        delete_prefix(prefix)
        raise
    dzi_key = f"{prefix}/{info.dzi_key}"
    Scene.objects.filter(pk=scene.pk).update(dzi_key=dzi_key)
    return {"scene_id": scene.pk, "dzi_key": dzi_key, "levels": info.levels, "tiles": info.n_tiles}


# --- collage -------------------------------------------------------------------------------


def _load_tiles(project: Project, tiles: str, ctx) -> LabelledImages:
    if tiles == "demo":
        path = demo_tiles_path()
        if path is None:
            raise DatasetError("the demo tile library (shared data cifar10-jpg.zip) is missing")
        ctx.progress(0, 1, "loading the demo tile library")
        return map_to_project(project, load_dataset(path, split="test", progress=ctx), ctx.log)
    dataset = Dataset.objects.get(pk=int(tiles), project=project, status="ready")
    with local_copy(dataset.storage_key) as path:
        return LabelledImages.load_npz(path)


def make_collage_scene(
    ctx, scene_id: int, tiles: str, target_key: str = "", cols: int = 80, seed: int = 0
):
    """A photomosaic of the target (uploaded, or the demo Mona Lisa) from the tile library, with
    its exact ground truth; then the same follow-up as an imported scene."""
    from PIL import Image

    from mlcore.data.collage import make_collage
    from mlcore.ingest.scenes import array_to_npy

    scene = Scene.objects.select_related("project").get(pk=scene_id)
    project = scene.project
    storage = get_storage()
    prefix = keys.scene_prefix(scene)
    try:
        library = _load_tiles(project, tiles, ctx)
        with local_copy(target_key) if target_key else _demo_target() as target:
            collage = make_collage(
                target, library, cols=int(cols), seed=int(seed), progress=ctx,
                max_pixels=settings.COLLAGE_MAX_PIXELS,
            )  # fmt: skip
        ctx.log(f"collage {collage.width}x{collage.height}, {len(collage.ground_truth)} tiles")
        buf = io.BytesIO()
        Image.fromarray(collage.image).save(buf, "PNG", compress_level=3)
        image_key = f"{prefix}/original.png"
        storage.write(image_key, buf.getvalue())
        key = pixels_key(scene)
        _write_npy(key, lambda p: array_to_npy(collage.image, p))
        gt_key = f"{prefix}/ground_truth.json"
        storage.write(gt_key, json.dumps(collage.ground_truth, separators=(",", ":")).encode())
        scene.image_key, scene.pixels_key, scene.ground_truth_key = image_key, key, gt_key
        scene.width, scene.height = collage.width, collage.height
        scene.sha256 = sha256_of_key(image_key)
        scene.save()
        return {"scene_id": scene.pk, "width": scene.width, "height": scene.height,
                **queue_follow_up(scene)}  # fmt: skip
    except BaseException:
        _remove_scene(scene_id)
        raise


class _demo_target:  # noqa: N801 - used like a context manager function
    def __enter__(self):
        path = demo_target_path()
        if path is None:
            raise DatasetError("the demo target (shared data mona_lisa.jpg) is missing")
        return path

    def __exit__(self, *exc):
        return False
