"""Uploads and storage keys brought by users: size limits, hashing, duplicate detection, streaming
into storage, and ground-truth files (CSV or COCO JSON, parsed by labeling.ground_truth) stored
in our JSON format.

Nothing here holds a whole upload in memory: Django spools files above
FILE_UPLOAD_MAX_MEMORY_SIZE to a temporary file, and everything below reads it in chunks."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.urls import NoReverseMatch, reverse

from labeling.ground_truth.boxes import BoxTable
from labeling.ground_truth.parsing import GroundTruthError, parse_ground_truth
from labeling.ingest.demo_data import demo_target_path, demo_tiles_path
from labeling.projects.storage_keys import get_storage
from labeling.web.input_parsing import check_text
from mlcore.storage import StorageError, StorageKeyError, validate_key

CHUNK = 8 * 1024 * 1024
# Ground truth is parsed in memory (a list of boxes): far below the image limit.
GROUND_TRUTH_MAX_BYTES = 64 * 1024 * 1024
SCENE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# A key a user names is stored in 500-character columns, some with a short prefix
# ("storage:<key>"); longer ones are refused before they reach the file system or the database.
USER_KEY_MAX = 480
NAME_MAX = 200


class UploadError(ValueError):
    """Bad input from a user: the message says what was wrong and what to do."""


def human_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def check_size(name: str, size: int) -> None:
    limit = int(settings.UPLOAD_MAX_BYTES)
    if size > limit:
        raise UploadError(
            f"{name} is {human_bytes(size)}, above the upload limit of {human_bytes(limit)}; "
            "put it in the configured storage and name its key instead, or raise UPLOAD_MAX_BYTES."
        )


def sha256_of(fileobj) -> str:
    """sha256 of a file object (an UploadedFile or an open binary file), read in chunks."""
    digest = hashlib.sha256()
    if hasattr(fileobj, "chunks"):
        for chunk in fileobj.chunks(CHUNK):
            digest.update(chunk)
    else:
        fileobj.seek(0)
        while chunk := fileobj.read(CHUNK):
            digest.update(chunk)
    fileobj.seek(0)
    return digest.hexdigest()


def sha256_of_key(key: str) -> str:
    digest = hashlib.sha256()
    with get_storage().open(key) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def safe_filename(name: str, default: str = "upload") -> str:
    """A file name usable as the last segment of a storage key."""
    base = Path(str(name).replace("\\", "/")).name
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in base).strip("._")
    return cleaned[:120] or default


def store_upload(upload, key: str) -> int:
    """Stream an UploadedFile into storage under `key` (atomic: all or nothing)."""
    upload.seek(0)
    written = get_storage().write(key, upload.file if hasattr(upload, "file") else upload)
    upload.seek(0)
    return written


@contextmanager
def upload_path(upload):
    """A filesystem path holding the upload: Django's temporary file when it spooled one,
    else a temporary copy of the small in-memory upload."""
    if hasattr(upload, "temporary_file_path"):
        yield Path(upload.temporary_file_path())
        return
    suffix = Path(upload.name or "").suffix
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in upload.chunks(CHUNK):
                out.write(chunk)
        upload.seek(0)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextmanager
def local_copy(key: str, suffix: str = ""):
    """A filesystem path for a storage object: the file itself for local storage, else a
    temporary download (ADLS) removed afterwards."""
    storage = get_storage()
    path = storage.local_path(key)
    if path is not None:
        yield path
        return
    fd, name = tempfile.mkstemp(suffix=suffix or Path(key).suffix, prefix="storage-")
    try:
        with os.fdopen(fd, "wb") as out, storage.open(key) as src:
            shutil.copyfileobj(src, out, CHUNK)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def delete_prefix(prefix: str) -> int:
    """Delete every storage object under `prefix/` (cleanup after a failure)."""
    storage = get_storage()
    keys = storage.list(prefix.rstrip("/") + "/")
    for key in keys:
        try:
            storage.delete(key)
        except FileNotFoundError:
            pass
    return len(keys)


def check_user_key(project, key: str) -> str:
    """A storage key a user named: valid, inside the storage root, not inside another project's
    folder, and existing. Returns the normalised key."""
    key = check_text((key or "").strip(), "the storage key", UploadError)
    if len(key) > USER_KEY_MAX:
        raise UploadError(
            f"the storage key {key[:40]!r}... is {len(key)} characters long; keys are limited "
            f"to {USER_KEY_MAX}."
        )
    # Messages name the key the user gave, never where the server keeps its storage (the root
    # folder or the ADLS account URL).
    try:
        validate_key(key)
    except StorageKeyError as exc:
        raise UploadError(
            f"{exc}. Name a key relative to the storage root, e.g. 'incoming/scene.tif'; paths "
            "outside the storage prefix are refused."
        ) from None
    parts = key.split("/")
    if parts[0] == "projects" and (len(parts) < 2 or parts[1] != str(project.pk)):
        raise UploadError(
            f"{key!r} lies in another project's folder of the storage; name a key outside "
            "projects/ or inside this project's own folder."
        )
    storage = get_storage()
    try:
        exists = storage.exists(key)
    except StorageKeyError as exc:
        raise UploadError(f"{exc}; paths outside the storage prefix are refused.") from None
    except (StorageError, OSError) as exc:  # a name the file system refuses (too long...)
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise UploadError(f"the storage key {key!r} cannot be used: {reason}.") from None
    if not exists:
        raise UploadError(f"No object {key!r} in the storage.")
    return key


def check_name(name: str) -> str:
    """A dataset or scene name from a user (the database column holds NAME_MAX characters)."""
    name = str(name or "").strip()
    if len(name) > NAME_MAX:
        raise UploadError(f"the name is {len(name)} characters long; at most {NAME_MAX}.")
    return check_text(name, "the name", UploadError)


def scene_url(scene) -> str:
    """The scene's viewer page when the app has one, else its preparation page."""
    try:
        return reverse("scene-viewer", args=[scene.pk])
    except NoReverseMatch:
        return reverse("scene-import", args=[scene.project_id, scene.pk])


def duplicate_of(project, sha256: str):
    """(kind, object, url) of an earlier dataset or scene of the project with the same bytes."""
    from labeling.models import Dataset, Scene

    dataset = Dataset.objects.filter(project=project, sha256=sha256).exclude(status="failed")
    if found := dataset.first():
        return "dataset", found, reverse("dataset-detail", args=[project.pk, found.pk])
    if found := Scene.objects.filter(project=project, sha256=sha256).first():
        return "scene", found, scene_url(found)
    return None


def refuse_duplicate(project, sha256: str) -> None:
    dup = duplicate_of(project, sha256)
    if dup:
        kind, obj, url = dup
        raise UploadError(
            f"The same file was already added to this project as {kind} {obj.name!r} "
            f"(#{obj.pk}): {url}",
        )


def sniff_dataset_archive(path: Path, name: str) -> str:
    """'zip' or 'tar' for a dataset upload; refuses anything else before it is stored."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    raise UploadError(
        f"{name} is neither a zip (image folders: <class>/*.jpg or <split>/<class>/*.jpg) nor "
        "the official CIFAR-10 archive (cifar-10-python.tar.gz)."
    )


# --- intake: the operations behind the pages, the API and the commands -------------------------


def _image_error(exc: Exception, name: str) -> UploadError:
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        return UploadError(f"{name} has too many pixels to be decoded safely ({exc}).")
    return UploadError(str(exc) if str(exc) else f"{name} could not be read as an image.")


SCENE_FORMATS = {"PNG", "JPEG", "MPO", "TIFF"}


def check_scene_image(path: Path, name: str) -> tuple[int, int, str]:
    """Check an image file from its header and structure, never decoding it (the import job
    streams the pixels and refuses damage inside the compressed data); refuse non-images,
    truncated files, formats other than PNG/JPEG/TIFF and pixel counts above SCENE_MAX_PIXELS
    (decompression bombs included)."""
    from labeling.ingest.image_checks import check_picture
    from mlcore.ingest.scenes import validate_scene_image

    try:
        # The header first (a bomb is refused by its declared size), then the structure: data
        # that cannot cover the declared size, or that stops early, is refused as truncated.
        width, height, fmt = validate_scene_image(path, settings.SCENE_MAX_PIXELS)
        check_picture(path, name)
    except Exception as exc:  # SceneError, PIL's bomb error, odd decoder errors: all bad input
        error = _image_error(exc, name)
        # The messages name the file the user gave, never a temporary path on the server.
        raise UploadError(str(error).replace(str(path), name)) from None
    if fmt not in SCENE_FORMATS:
        raise UploadError(f"{name} is a {fmt} image; upload PNG, JPEG or TIFF.")
    return width, height, fmt


class _Source:
    """One input: an UploadedFile (pages, API) or a local file (commands)."""

    def __init__(self, upload=None, path=None):
        self.upload, self.path = upload, Path(path) if path else None
        if upload is None and (self.path is None or not self.path.is_file()):
            raise UploadError(f"{path}: no such file; give the path of an existing file.")
        self.name = safe_filename(upload.name if upload is not None else self.path.name)
        self.size = upload.size if upload is not None else self.path.stat().st_size

    @contextmanager
    def local(self):
        if self.upload is not None:
            with upload_path(self.upload) as p:
                yield p
        else:
            yield self.path

    def sha256(self) -> str:
        if self.upload is not None:
            return sha256_of(self.upload)
        with open(self.path, "rb") as handle:
            return sha256_of(handle)

    def store(self, key: str) -> None:
        if self.upload is not None:
            store_upload(self.upload, key)
        else:
            with open(self.path, "rb") as handle:
                get_storage().write(key, handle)


def _job(inline: bool, kind: str, func_path: str, project=None, **params):
    """Queue the job for an RQ worker, or (inline) only create its JobRecord, which
    labeling.jobs.follow.run_job_here runs (the command line's --wait): the same code and the
    same record either way."""
    from labeling.jobs import enqueue as jobs
    from labeling.models import JobRecord

    if not inline:
        record = jobs.enqueue(kind, func_path, project=project, **params)
    else:
        record = JobRecord.objects.create(
            project=project, kind=kind, queue="inline", params=params, status="queued"
        )
    record.func_path = func_path
    return record


def _forget(model, pk: int, param: str) -> None:
    """After a failure past the commit (Redis refused the job): no row and no job record stay."""
    from labeling.models import JobRecord

    model.objects.filter(pk=pk).delete()
    JobRecord.objects.filter(**{f"params__{param}": pk}, rq_job_id="").delete()


def _register(model, param: str, prefix_of, create, store_and_queue):
    """Create the row, store its files and queue its job in one transaction; returns (row, job
    record). On any failure (storage, Redis, an interrupt) what was stored is deleted and the row
    forgotten, so nothing half-made stays."""
    from django.db import transaction

    row = None
    try:
        with transaction.atomic():
            row = create()
            record = store_and_queue(row)
    except BaseException:
        if row is not None and row.pk:
            delete_prefix(prefix_of(row))
            _forget(model, row.pk, param)
        raise
    return row, record


def add_dataset(project, *, upload=None, path=None, key="", name="", split="all", inline=False):
    """Register a dataset and queue its import; returns (dataset, job_record).

    Exactly one of `upload` (an UploadedFile), `path` (a local file) or `key` (a storage key).
    Bad input raises UploadError and leaves no row and no storage object."""
    from django.db import transaction

    from labeling.models import Dataset
    from labeling.projects.storage_keys import dataset_prefix

    if split not in ("all", "train", "test"):
        raise UploadError(f"split must be all, train or test, not {split[:20]!r}.")
    name = check_name(name)
    if key:
        key = check_user_key(project, key)
        if (
            Dataset.objects.filter(project=project, source=f"storage:{key}")
            .exclude(status="failed")
            .exists()
        ):
            raise UploadError(f"{key!r} was already imported into this project.")
        with transaction.atomic():
            dataset = Dataset.objects.create(
                project=project, name=name or Path(key).name[:NAME_MAX], source=f"storage:{key}"
            )
            record = _job(
                inline, "import_dataset", "workers.data_jobs.import_dataset", project=project,
                dataset_id=dataset.pk, input_key=key, split=split, owned=False,
            )  # fmt: skip
        return dataset, record
    source = _Source(upload, path)
    check_size(source.name, source.size)
    with source.local() as local:
        sniff_dataset_archive(local, source.name)
    sha = source.sha256()
    refuse_duplicate(project, sha)

    def store_and_queue(dataset):
        input_key = f"{dataset_prefix(dataset)}/upload/{source.name}"
        source.store(input_key)
        return _job(
            inline, "import_dataset", "workers.data_jobs.import_dataset", project=project,
            dataset_id=dataset.pk, input_key=input_key, split=split, owned=True,
        )  # fmt: skip

    return _register(
        Dataset, "dataset_id", dataset_prefix,
        lambda: Dataset.objects.create(
            project=project, name=name or source.name, source=f"upload:{source.name}", sha256=sha
        ),
        store_and_queue,
    )  # fmt: skip


def _read_ground_truth(project, ground_truth, size=None) -> BoxTable | None:
    """`ground_truth`: an UploadedFile, a local path, or None."""
    if ground_truth is None:
        return None
    if hasattr(ground_truth, "chunks"):
        name, nbytes = ground_truth.name, ground_truth.size
    else:
        path = Path(ground_truth)
        if not path.is_file():
            raise UploadError(f"{path}: no such ground-truth file.")
        name, nbytes = path.name, path.stat().st_size
    check_size(name, nbytes)
    if nbytes > GROUND_TRUTH_MAX_BYTES:
        raise UploadError(
            f"{name} is {human_bytes(nbytes)}; ground-truth files are limited to "
            f"{human_bytes(GROUND_TRUTH_MAX_BYTES)}."
        )
    aliases = {src: c["name"] for c in project.classes for src in c.get("sources", [])}
    try:
        # Read from the upload's own file (or the path): a CSV a line at a time.
        if hasattr(ground_truth, "chunks"):
            ground_truth.seek(0)
            return parse_ground_truth(ground_truth.file, name, project.class_names, aliases, size)
        with open(path, "rb") as handle:
            return parse_ground_truth(handle, name, project.class_names, aliases, size)
    except GroundTruthError as exc:
        raise UploadError(str(exc)) from None


def add_scene(project, *, upload=None, path=None, key="", name="", ground_truth=None, inline=False):
    """Register a scene from an image and queue its import (pixels, then DZI and scoring);
    returns (scene, job_record). Bad input raises UploadError and stores nothing."""
    from labeling.models import Scene
    from labeling.projects.storage_keys import scene_prefix

    width = height = 0
    sha = ""
    name = check_name(name)
    if key:
        key = check_user_key(project, key)
        if Scene.objects.filter(project=project, image_key=key).exists():
            raise UploadError(f"{key!r} is already a scene of this project.")
        source = None
        scene_name = name or Path(key).name[:NAME_MAX]
    else:
        source = _Source(upload, path)
        check_size(source.name, source.size)
        with source.local() as local:
            width, height, _fmt = check_scene_image(local, source.name)
        sha = source.sha256()
        refuse_duplicate(project, sha)
        scene_name = name or source.name
    boxes = _read_ground_truth(project, ground_truth, size=(width, height))

    def store_and_queue(scene):
        prefix = scene_prefix(scene)
        if source is not None:
            scene.image_key = f"{prefix}/original{Path(source.name).suffix.lower()}"
            source.store(scene.image_key)
        if boxes is not None:
            scene.ground_truth_key = f"{prefix}/ground_truth.json"
            with tempfile.TemporaryFile(prefix="ground-truth-") as out:
                boxes.write_json(out)
                out.seek(0)
                get_storage().write(scene.ground_truth_key, out)
        scene.save(update_fields=["image_key", "ground_truth_key"])
        return _job(
            inline, "import_scene", "workers.data_jobs.import_scene", project=project,
            scene_id=scene.pk,
        )  # fmt: skip

    return _register(
        Scene, "scene_id", scene_prefix,
        lambda: Scene.objects.create(
            project=project, name=scene_name, image_key=key, width=width, height=height,
            sha256=sha,
        ),
        store_and_queue,
    )  # fmt: skip


# The demo tile library is CIFAR-10: 32x32 images, loaded at their own size.
DEMO_TILE_SIZE = (32, 32)


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from a picture's header, without decoding it."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def _check_collage_size(project, tiles: str, target_hw: tuple[int, int], cols: int) -> None:
    """Refuse a collage above COLLAGE_MAX_PIXELS (it is built in memory) before anything is
    stored or queued (the job checks again with the tiles it loads). A dataset's tiles are the
    project's window size."""
    from mlcore.data.collage import CollageError, check_collage_size

    window = project.window_size
    tile_hw = DEMO_TILE_SIZE if tiles == "demo" else (window, window)
    try:
        check_collage_size(target_hw, tile_hw, cols, settings.COLLAGE_MAX_PIXELS)
    except CollageError as exc:
        raise UploadError(f"{exc} (COLLAGE_MAX_PIXELS)") from None


def add_collage_scene(project, *, tiles="demo", target=None, target_path=None, cols=80,
                      name="", seed=0, inline=False):  # fmt: skip
    """Register a collage scene and queue its generation; `tiles` is "demo" or the id of a ready
    dataset of the project; the target is an upload, a local path or (neither) the demo."""
    from labeling.models import Dataset, Scene
    from labeling.projects.storage_keys import scene_prefix

    name = check_name(name)
    if str(tiles) == "demo":
        if demo_tiles_path() is None:
            raise UploadError("The demo tile library (shared data) is not installed here.")
        tiles = "demo"
    elif (
        not (str(tiles).isascii() and str(tiles).isdecimal() and len(str(tiles)) <= 18)
        or not Dataset.objects.filter(pk=int(tiles), project=project, status="ready").exists()
    ):
        raise UploadError(f"Tile library {tiles!r} is not a ready dataset of this project.")
    source = _Source(target, target_path) if (target is not None or target_path) else None
    if source is None and demo_target_path() is None:
        raise UploadError("Upload a target image: the demo Mona Lisa is not installed here.")
    if source is not None:
        check_size(source.name, source.size)
        with source.local() as local:
            width, height, _fmt = check_scene_image(local, source.name)
    else:
        width, height = _header_size(demo_target_path())
    _check_collage_size(project, tiles, (height, width), int(cols))

    def store_and_queue(scene):
        target_key = ""
        if source is not None:
            target_key = f"{scene_prefix(scene)}/target{Path(source.name).suffix.lower()}"
            source.store(target_key)
        return _job(
            inline, "make_collage", "workers.data_jobs.make_collage_scene", project=project,
            scene_id=scene.pk, tiles=str(tiles), target_key=target_key, cols=int(cols),
            seed=int(seed),
        )  # fmt: skip

    return _register(
        Scene, "scene_id", scene_prefix,
        lambda: Scene.objects.create(
            project=project, name=name or f"collage of {source.name if source else 'Mona Lisa'}"
        ),
        store_and_queue,
    )  # fmt: skip
