"""RQ jobs of the active-learning loop: training canvases, corrections, training, export and the
retrain-cycle chain. Thin: they load rows and files, call mlcore, save results and progress.

Every job is ``def job(ctx, **params)`` (see workers/runner.py) and safe to run again: canvases
are rebuilt only when asked, corrections already on a canvas are not added twice, a version that
already has its files is not retrained, and nothing becomes current before all of it succeeded.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from labeling.loop import cycle, regions
from labeling.models import Annotation, Dataset, ModelVersion, Project, ScoringRun, TrainingCanvas
from labeling.projects.storage_keys import get_storage, model_prefix, project_prefix
from mlcore.model import starting_model

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.onnx"


class TrainingMaterialError(ValueError):
    """The project's training material cannot be built as it is; the message says what to do
    (workers.runner keeps an ``explained`` error's text as it is, without the type name)."""

    explained = True


class Phases:
    """One job, several steps in turn: each reports its own progress (done of total: the
    training's real steps, the corrections cropped) with its name before its message
    ("training: loss 0.41"), so a page shows 300/1400 while the model trains 1,400 steps, never
    a made-up scale of 1000."""

    def __init__(self, ctx):
        self.ctx = ctx

    def __call__(self, name: str):
        def progress(done: int, total: int, message: str = "") -> None:
            self.ctx.progress(done, total, f"{name}: {message}".strip())

        return progress


# -- canvases -----------------------------------------------------------------------------------


def canvas_set_prefix(project) -> str:
    return f"{project_prefix(project)}/canvases"


class CanvasDir:
    """The project's canvas set as a local folder: the storage folder itself when storage is
    local, else a mirror under VAR_DIR/cache that is downloaded before and uploaded after."""

    def __init__(self, project):
        self.storage = get_storage()
        self.prefix = canvas_set_prefix(project)
        local = self.storage.local_path(self.prefix)
        self.mirrored = local is None
        self.path = Path(local) if local else Path(settings.VAR_DIR) / "cache" / self.prefix
        if self.mirrored:
            self.path.mkdir(parents=True, exist_ok=True)
            for key in self.storage.list(self.prefix + "/"):
                target = self.path / key[len(self.prefix) + 1 :]
                if not target.exists():
                    target.write_bytes(self.storage.read(key))

    def exists(self) -> bool:
        return (self.path / "manifest.json").is_file()

    def load(self):
        from mlcore.data.canvases import CanvasSet

        return CanvasSet.load(self.path, mmap=True)

    def save(self, cset) -> None:
        cset.save(self.path, prune=True)
        if self.mirrored:
            present = set(self.storage.list(self.prefix + "/"))
            for p in sorted(self.path.iterdir(), key=lambda p: p.name == "manifest.json"):
                key = f"{self.prefix}/{p.name}"
                if key not in present or p.name == "manifest.json":
                    with open(p, "rb") as f:
                        self.storage.write(key, f)

    def key_of(self, canvas) -> str:
        return f"{self.prefix}/{canvas.name}.npy"


def sync_canvas_rows(project, cdir: CanvasDir, cset) -> None:
    """TrainingCanvas rows mirror the manifest (rows of pruned canvases are removed)."""
    keys = set()
    for canvas in cset.canvases:
        key = cdir.key_of(canvas)
        keys.add(key)
        TrainingCanvas.objects.update_or_create(
            project=project,
            storage_key=key,
            defaults={
                "class_name": canvas.class_name,
                "kind": canvas.kind,
                "height": canvas.height,
                "width": canvas.width,
                "placements": len(canvas.placements),
                "weight": canvas.weight,
            },
        )
    TrainingCanvas.objects.filter(project=project).exclude(storage_key__in=keys).delete()


def _load_dataset(dataset):
    from mlcore.data.datasets import LabelledImages

    storage = get_storage()
    local = storage.local_path(dataset.storage_key)
    if local is not None:
        return LabelledImages.load_npz(local)
    with tempfile.NamedTemporaryFile(suffix=".npz") as tmp:
        tmp.write(storage.read(dataset.storage_key))
        tmp.flush()
        return LabelledImages.load_npz(tmp.name)


def _in_project_classes(project, dataset, images):
    """The dataset's images labelled with the project's classes as they are now: a dataset
    imported before the classes were edited is mapped again from its source classes (kept in
    its images.npz); one imported without them must be imported again."""
    from mlcore.data.datasets import DatasetError, LabelledImages

    if list(images.class_names) == project.class_names:
        return images
    if images.sources is None:
        raise TrainingMaterialError(
            f"Dataset {dataset.name!r} was imported for the classes "
            f"{', '.join(images.class_names)}; the project's are now "
            f"{', '.join(project.class_names)}. Import it again (+ Dataset) to use them."
        )
    from workers.data_jobs import map_to_project

    by_source = LabelledImages(images=images.images, labels=images.source_labels,
                               class_names=images.sources, ids=images.ids)  # fmt: skip
    try:
        return map_to_project(project, by_source, log=lambda line: None)
    except DatasetError as exc:
        raise TrainingMaterialError(f"Dataset {dataset.name!r}: {exc}.") from None


def build_canvases(
    ctx,
    project_id: int,
    canvas_size: int = 1024,
    canvases_per_class: int | None = None,
    n_windows_target: int | None = None,
    seed: int = 0,
    rebuild: bool = False,
):
    """Scatter the project's ready datasets on training canvases, one set per class.

    Skipped when the set exists (pass ``rebuild`` to rebuild the original canvases; correction
    canvases are always kept)."""
    from mlcore.data.canvases import build_canvas_set
    from mlcore.data.datasets import concat

    project = Project.objects.get(pk=project_id)
    cdir = CanvasDir(project)
    if cdir.exists() and not rebuild:
        cset = cdir.load()
        sync_canvas_rows(project, cdir, cset)
        ctx.log(f"canvases exist ({len(cset)}): kept; pass rebuild=True to rebuild")
        return {"canvases": len(cset), "built": False}
    datasets = list(Dataset.objects.filter(project=project, status="ready"))
    if not datasets:
        raise TrainingMaterialError(
            f"Project {project.name!r} has no ready dataset to build training canvases from: "
            "import one (+ Dataset on its page, or manage.py add_dataset) first."
        )
    parts = [_in_project_classes(project, ds, _load_dataset(ds)) for ds in datasets]
    images = concat(parts)
    ctx.log(f"building canvases from {len(images)} images of {len(datasets)} dataset(s)")
    cset = build_canvas_set(
        images,
        classes=project.class_names,
        canvas_size=canvas_size,
        canvases_per_class=canvases_per_class,
        n_windows_target=n_windows_target,
        window=project.window_size,
        step=project.train_step,
        seed=seed,
        progress=ctx,
        meta={"datasets": [d.pk for d in datasets]},
    )
    if cdir.exists():  # rebuild: keep the corrections (of the classes the project still has)
        cset.canvases.extend(
            c
            for c in cdir.load().canvases
            if c.kind == "correction" and c.class_name in project.class_names
        )
    cdir.save(cset)
    sync_canvas_rows(project, cdir, cset)
    counts = {c: len(cset.of_class(c)) for c in cset.classes}
    ctx.log(f"canvases per class: {counts}")
    return {"canvases": len(cset), "per_class": counts, "built": True}


def refresh_canvases(ctx, project) -> dict:
    """The cycle's first step: build the training canvases when the project has none, and
    rebuild the originals when its ready datasets or its classes changed since they were built
    (reviewed windows are kept). Up to date: nothing is done."""
    cdir = CanvasDir(project)
    ready = sorted(Dataset.objects.filter(project=project, status="ready")
                   .values_list("pk", flat=True))  # fmt: skip
    if cdir.exists():
        cset = cdir.load()
        # A set made outside the app (no "datasets" in its meta) is kept unless classes changed.
        built_from = sorted(cset.meta.get("datasets") or ready)
        if not ready or (list(cset.classes) == project.class_names and built_from == ready):
            ctx.progress(1, 1, "training canvases up to date")
            return {"built": False}
        ctx.log(f"datasets {built_from} -> {ready}, classes {cset.classes} -> "
                f"{project.class_names}: rebuilding the training canvases")  # fmt: skip
    elif not ready:
        # The scene alone: an empty set that only the reviewers' marks join (exact samples,
        # each trained at its own window), so no unmarked pixel ever teaches "negative".
        from mlcore.data.scene_marks import scene_only_set

        cset = scene_only_set(project.class_names, project.window_size)
        cdir.save(cset)
        sync_canvas_rows(project, cdir, cset)
        ctx.log("no dataset: the first model learns from the windows marked on the scenes")
        ctx.progress(1, 1, "training from the scene marks alone")
        return {"built": True, "scene_only": True}
    return build_canvases(ctx, project.pk, rebuild=True)


# -- corrections --------------------------------------------------------------------------------


def annotation_image_id(annotation) -> str:
    return f"ann-{annotation.pk}"


def region_image_id(annotation, box) -> str:
    """One of a background region's windows: its annotation's id and the window's origin."""
    return f"{annotation_image_id(annotation)}@{box[0]},{box[1]}"


def drop_overruled_region_windows(project, cset, objects) -> int:
    """Objects win also when marked after a region was learnt: a region's window already on a
    correction canvas that a box marked as an object now touches leaves training (its placement
    is dropped, so the sampler never draws it; its tile stays, so it is never added again).
    Returns how many were dropped."""
    window = project.scene_window
    ids = {p[0] for c in cset.canvases if c.kind == "correction" for p in c.placements}
    pks = {int(i.partition("@")[0].removeprefix("ann-")) for i in ids if "@" in i}
    if not pks:
        return 0
    scene_of = dict(Annotation.objects.filter(pk__in=pks).values_list("pk", "scene_id"))

    def overruled(image_id: str) -> bool:
        head, _, origin = image_id.partition("@")
        x, y = (int(v) for v in origin.split(","))
        boxes = objects.get(scene_of.get(int(head.removeprefix("ann-"))), ())
        return any(x < bx + bw and bx < x + window and y < by + bh and by < y + window
                   for bx, by, bw, bh in boxes)  # fmt: skip

    dropped = 0
    for c in cset.canvases:
        if c.kind != "correction":
            continue
        kept = [p for p in c.placements if "@" not in p[0] or not overruled(p[0])]
        dropped += len(c.placements) - len(kept)
        c.placements = kept
    return dropped


def training_boxes(project, annotation, objects) -> list[tuple[str, tuple]]:
    """[(image id, box)] the annotation teaches: its own box, or a background region's windows
    that touch none of its scene's ``objects`` (labeling.loop.regions)."""
    if regions.is_region(annotation):
        boxes = regions.region_windows(project, annotation, objects[annotation.scene_id])
        return [(region_image_id(annotation, box), box) for box in boxes]
    a = annotation
    return [(annotation_image_id(a), (a.x, a.y, a.w, a.h))]


def feed_corrections(ctx, project_id: int, version_id: int | None = None):
    """Crop every pending annotation's tile from its scene and add it to its class's correction
    canvases (weight mlcore.data.canvases.CORRECTION_WEIGHT) in the exact layout: the trainer
    samples each tile only at its own origin, so it learns the reviewed window as reviewed,
    beside the original canvases (replayed in every fine-tune). Annotations already on a canvas
    are skipped,
    so a retried cycle does not add them twice. With ``version_id`` the version's lineage records
    which annotations it learns from (they are marked consumed only at promotion)."""
    from mlcore.data.scene_marks import (
        MARK_CONTEXT_PX,
        add_marked_windows,
        crop_mark,
        hold_out_marks,
    )
    from mlcore.ingest.scenes import NpyScene

    project = Project.objects.get(pk=project_id)
    cdir = CanvasDir(project)
    if not cdir.exists():
        raise TrainingMaterialError(
            f"Project {project.name!r} has no training canvases yet: train its first model from "
            "the dashboard (it builds them from the project's datasets), or import a dataset."
        )
    cset = cdir.load()
    seen_ids = list(cycle.unconsumed(project).order_by("pk").values_list("pk", flat=True))
    pending = cycle.pending_annotations(project)
    on_canvas = {p[0] for c in cset.canvases if c.kind == "correction" for p in c.placements} | {
        i for c in cset.canvases if c.tiles is not None for i in c.tiles[0]
    }
    if cset.calibration is not None:  # marks held out for calibration never join training
        on_canvas |= {str(box["id"]) for box in cset.calibration[1]}
    on_canvas_ids = on_canvas
    on_canvas = {i.partition("@")[0] for i in on_canvas}  # a region's windows: its annotation
    new = [a for a in pending if annotation_image_id(a) not in on_canvas]
    # Every object a reviewer marked (consumed or not) wins over a background region, also over
    # one learnt before the object was marked.
    objects, dropped = {}, 0
    if any(regions.is_region(a) for a in new) or any("@" in i for i in on_canvas_ids):
        history = Annotation.objects.filter(project=project)
        objects = regions.object_boxes(cycle.effective_annotations(history), project)
        dropped = drop_overruled_region_windows(project, cset, objects)
        if dropped:
            ctx.log(f"{dropped} background region window(s) left training: an object is there")
    window = project.window_size
    if tuple(cset.tile_size) != (window, window):
        raise ValueError(
            f"the canvases hold {cset.tile_size} tiles but the project window is {window}"
        )
    by_class: dict[str, list] = defaultdict(list)
    skipped = []
    readers = {}
    storage = get_storage()
    for i, a in enumerate(new):
        label = cycle.training_label(a, project)
        if label not in cset.classes:
            skipped.append((a.pk, f"label {label!r} is not a project class"))
            continue
        scene = a.scene
        if not scene.pixels_key:
            skipped.append((a.pk, f"scene {scene.name!r} has no pixels"))
            continue
        if scene.pk not in readers:
            readers[scene.pk] = NpyScene(storage, scene.pixels_key)
        for image_id, box in training_boxes(project, a, objects):
            tile = crop_mark(readers[scene.pk], box, window, project.scene_window,
                             context=MARK_CONTEXT_PX)  # fmt: skip
            by_class[label].append((image_id, tile))
        ctx.progress(i + 1, len(new), "cropping corrected tiles")
    held_out = hold_out_marks(cset, by_class)
    if held_out:
        ctx.log(f"held out for calibration (not trained on): {held_out}")
    # Exact: each reviewed window is one training sample as it was reviewed (its pixels, its
    # label, the correction weight), never re-scattered, jittered or held out.
    samples = add_marked_windows(cset, by_class)  # image id -> [canvas, y, x]
    added = {label: len(items) for label, items in by_class.items() if items}
    if added or held_out or dropped:
        cdir.save(cset)
    sync_canvas_rows(project, cdir, cset)
    for pk, why in skipped:
        ctx.log(f"annotation {pk} not used: {why}")
    ctx.log(
        f"{len(pending)} effective pending annotation(s), {sum(added.values())} new tile(s) "
        f"on correction canvases {dict(added)}"
    )
    if version_id is not None:
        version = ModelVersion.objects.get(pk=version_id)
        version.data_counts = (
            dict(version.data_counts)
            | {
                "annotations_used": len(pending),
                "annotation_ids": [a.pk for a in pending],
                "seen_annotation_ids": seen_ids,
                "tiles_added": added,
                "correction_samples": samples,
            }
            | ({"calibration_marks": held_out} if held_out else {})
        )
        version.save(update_fields=["data_counts"])
    return {"pending": len(pending), "added": added, "skipped": len(skipped)}


# -- training and export ------------------------------------------------------------------------


def _local_model_file(key: str) -> Path:
    from workers.spark_score import download_siblings

    storage = get_storage()
    local = storage.local_path(key)
    if local is not None:
        return Path(local)
    target = Path(settings.VAR_DIR) / "cache" / key
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read(key))
        # A model file that is scored densely (its calibration too) needs its dense graph.
        download_siblings(storage, key, target)
    return target


def _upload(local: Path, key: str) -> str:
    with open(local, "rb") as f:
        get_storage().write(key, f)
    return key


def train_model(ctx, project_id: int, version_id: int, progress=None):
    """Train the version's model on the project's canvases (fine-tuning the parent when its
    config says so) and store its checkpoint. Skipped when the checkpoint already exists."""
    from labeling.scoring.thresholds import model_file_thresholds
    from mlcore.engines import get_engine

    version = ModelVersion.objects.select_related("project").get(pk=version_id)
    project = version.project
    if version.checkpoint_key and get_storage().exists(version.checkpoint_key):
        ctx.log(f"v{version.number} is trained already: kept")
        return {"trained": False}
    cycle.advance(version, "training", allowed=("pending", "training"))
    cset = CanvasDir(project).load()
    config = {
        k: v
        for k, v in version.train_config.items()
        if k not in ("profile", "finetune_from", "engine", "started_from")
    }
    init_from = None
    if version.train_config.get("finetune_from") and version.parent:
        init_from = _local_model_file(version.parent.checkpoint_key)
    elif (version.train_config.get("started_from") or {}).get("kind") == "starting-model":
        init_from = starting_model.starting_checkpoint(project.window_size)
        ctx.log(f"starting from the starting model {starting_model.starting_model_dir()}")
    windows = {c: cset.n_windows(project.window_size, project.train_step, c) for c in cset.classes}
    counts = {
        "windows": windows,
        "canvases": {
            kind: {c: sum(1 for k in cset.of_class(c) if k.kind == kind) for c in cset.classes}
            for kind in ("original", "correction")
        },
        # The dataset images it learns from (each once, however often its canvases repeat it):
        # the model's row says so beside the reviewed labels (labeling.loop.trained_on).
        "dataset_images": len(
            {p[0] for c in cset.canvases if c.kind == "original" for p in c.placements}
        ),
    }
    ctx.log(f"training v{version.number} ({version.engine}) with {config}; windows {windows}")
    engine = get_engine(version.engine)
    result = engine.train(
        cset, project.class_names, config, progress=progress or ctx, init_from=init_from
    )
    with tempfile.TemporaryDirectory() as tmp:
        if version.engine == "torch":
            files = {CHECKPOINT_FILE: result.save_checkpoint(Path(tmp) / CHECKPOINT_FILE)}
        else:  # other engines write their own files in one go
            exported = engine.export(result, tmp)
            files = {p.name: p for p in exported.files}
            version.model_key = _upload(exported.scoring, f"{model_prefix(version)}/"
                                        f"{exported.scoring.name}")  # fmt: skip
            version.thresholds = model_file_thresholds(exported.scoring)
        keys = {
            name: _upload(path, f"{model_prefix(version)}/{name}") for name, path in files.items()
        }
    version.checkpoint_key = keys.get(CHECKPOINT_FILE, next(iter(keys.values())))
    val = getattr(result, "val_accuracy", None)
    # What precision training ran in, and why (mlcore.train.training.resolve_precision).
    precision = getattr(result, "precision", None)
    version.metrics = dict(version.metrics) | {"val_accuracy": val, "precision": precision}
    version.data_counts = dict(version.data_counts) | counts
    version.log += "\n".join(f"step {h['step']}: loss {h['loss']:.4f}" for h in result.history)
    version.save(update_fields=["checkpoint_key", "model_key", "thresholds", "metrics",
                                "data_counts", "log"])  # fmt: skip
    ctx.log(f"v{version.number} trained: val accuracy {val}")
    return {"trained": True, "val_accuracy": val}


def calibrate(ctx, version, model_path) -> None:
    """Per-class thresholds chosen on the canvas set's held-out calibration scene, written into
    the model file (mlcore.inference.calibration); without such a scene the file keeps none
    (0.9)."""
    from mlcore.inference.calibration import calibrate_model_file
    from mlcore.inference.int8_sibling import check_words

    cset = CanvasDir(version.project).load()
    if cset.calibration is None:
        ctx.log("no calibration scene in the canvases: thresholds stay at the project's")
        return
    summary = calibrate_model_file(model_path, cset, step=version.project.score_step)
    ctx.log(f"calibrated thresholds {summary['thresholds']} (object F1 {summary['f1']}); "
            f"int8 copy {check_words(summary.get('int8'))}")  # fmt: skip
    scene_id = getattr(cset, "_calibration_name", summary["scene"])
    version.metrics = dict(version.metrics) | {
        "calibration": {k: v for k, v in summary.items() if k != "thresholds"}
        | {"scene_id": scene_id},
        "held_out": held_out_comparison(ctx, version, cset, scene_id, summary),
    }


def held_out_comparison(ctx, version, cset, scene_id: str, summary: dict) -> dict:
    """The new version's held-out figure beside the current model's on the same calibration
    scene (labeling.loop.cycle.promote reads it): the current's recorded figure when it was
    calibrated on this scene, else the current model file scored on it now."""
    from mlcore.inference.calibration import calibration_summary, held_out_f1

    out = {
        "figure": "calibration-scene object F1 (mean over classes, at calibrated thresholds)",
        "scene": scene_id,
        "new": held_out_f1(summary),
        "current": None,
        "current_version": None,
    }
    current = version.project.current_model()
    if current is None or current.pk == version.pk or not current.model_key:
        return out
    recorded = (current.metrics or {}).get("calibration") or {}
    if recorded.get("scene_id") == scene_id:
        figure = held_out_f1(recorded)
    elif current.model_key.endswith(".onnx"):
        theirs = calibration_summary(
            _local_model_file(current.model_key), cset, step=version.project.score_step
        )
        figure = held_out_f1(theirs)
    else:  # another engine's file: no held-out figure to compare with
        return out
    ctx.log(f"held-out F1: v{version.number} {out['new']}, current v{current.number} {figure}")
    return out | {"current": figure, "current_version": current.number}


def export(ctx, project_id: int, version_id: int):
    """Export the version's checkpoint to the ONNX scoring file. Skipped when it exists."""
    from labeling.scoring.thresholds import model_file_thresholds
    from mlcore.model.onnx_file import sibling_files
    from mlcore.model.scoring_files import export_scoring_files
    from mlcore.train.training import load_checkpoint

    version = ModelVersion.objects.select_related("project").get(pk=version_id)
    if version.model_key and get_storage().exists(version.model_key):
        return {"exported": False, "model_key": version.model_key}
    model, payload = load_checkpoint(_local_model_file(version.checkpoint_key))
    with tempfile.TemporaryDirectory() as tmp:
        # A model trained for dense scoring says so (its dense graph); calibration adds an int8
        # copy where it holds up: every file the model names travels beside it.
        path, _ = export_scoring_files(
            model,
            Path(tmp) / MODEL_FILE,
            payload["classes"],
            payload["config"],
            {"version": version.number, "project": version.project.name},
        )
        calibrate(ctx, version, path)
        for sibling in sibling_files(path):
            _upload(sibling, f"{model_prefix(version)}/{sibling.name}")
        version.model_key = _upload(path, f"{model_prefix(version)}/{MODEL_FILE}")
        version.thresholds = model_file_thresholds(path)  # calibrated ones travel with the file
    version.save(update_fields=["model_key", "thresholds", "metrics"])
    ctx.log(f"v{version.number} exported to {version.model_key}; thresholds {version.thresholds}")
    return {"exported": True, "model_key": version.model_key}


def retrain_cycle(ctx, version_id: int, user_id: int | None = None):
    """The chain: feed corrections -> train -> export -> rescore every scene (score queue).
    The last scoring run to finish computes the metrics and promotes the version
    (labeling.loop.cycle.after_scoring); a project without scenes is promoted here."""
    from labeling.loop.cycle_lock import cycle_lock

    version = ModelVersion.objects.select_related("project").get(pk=version_id)
    # One cycle of a project at a time, whatever happened to an earlier one's worker: wait
    # (briefly) until no other process holds the project's cycle lock, and hold it to the end.
    with cycle_lock(version.project_id, wait_s=float(settings.CYCLE_LOCK_WAIT_S)):
        return _retrain_cycle(ctx, version_id)


def _retrain_cycle(ctx, version_id: int):
    version = ModelVersion.objects.select_related("project").get(pk=version_id)
    project = version.project
    if version.status not in cycle.IN_FLIGHT:
        raise ValueError(
            f"model v{version.number} is {version.status}; start a new cycle instead of retrying"
        )
    phases = Phases(ctx)
    refresh_canvases(phase_ctx(ctx, phases("canvases")), project)
    feed_corrections(phase_ctx(ctx, phases("corrections")), project.pk, version.pk)
    train_model(ctx, project.pk, version.pk, progress=phases("training"))
    phases("export")(0, 1, "exporting ONNX")
    export(ctx, project.pk, version.pk)
    version.refresh_from_db()
    if ScoringRun.objects.filter(model_version=version).exists():
        runs = list(ScoringRun.objects.filter(model_version=version))  # a retry: already queued
    else:
        cycle.advance(version, "scoring", allowed=("pending", "training"))
        runs = cycle.enqueue_scoring(version)
    phases("scoring")(1, 1, scoring_message(project, runs))
    if not runs:
        version.refresh_from_db()
        if not cycle.promote(version):
            raise cycle.VersionNotInFlight(f"model v{version.number} was failed meanwhile")
    ctx.log(f"v{version.number}: {len(runs)} scoring run(s) queued")
    return {"version": version.number, "runs": [r.pk for r in runs], "at": str(timezone.now())}


def scoring_message(project, runs) -> str:
    """What the cycle's scoring step did, as it happened: the scenes it queued, or why it
    queued none (a scene still importing is scored by the current model once its import ends:
    workers.data_jobs.queue_follow_up)."""
    if runs:
        return f"{len(runs)} scene{'s' if len(runs) != 1 else ''} queued for scoring"
    importing = list(
        project.scenes.filter(pixels_key="").order_by("pk").values_list("name", flat=True)
    )
    if importing:
        names = ", ".join(repr(n) for n in importing)
        return (
            f"scene{'s' if len(importing) != 1 else ''} {names} still importing: scored by "
            "this model when the import ends"
        )
    return "no scene yet: scenes added later are scored by this model"


class phase_ctx:  # noqa: N801 - a tiny adapter used like a function
    """A ctx whose progress goes to one phase of a bigger job (log goes to the job)."""

    def __init__(self, ctx, progress):
        self._ctx, self.progress = ctx, progress

    def log(self, line: str) -> None:
        self._ctx.log(line)

    def __call__(self, done, total, message=""):
        self.progress(done, total, message)
