"""The data model of the active-learning loop (see ARCHITECTURE.md for the files behind it).

Files (canvases, scene pixels, models, score grids, Parquet) live in storage under the keys kept
here; the database holds what people search, review and audit."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from labeling.web.formatting import fixed3
from labeling.web.input_parsing import text_problem

HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _\-]{0,39}$")

DEFAULT_CLASSES = [
    {"name": "car", "color": "#e6194b", "sources": ["automobile"]},
    {"name": "boat", "color": "#3cb44b", "sources": ["ship"]},
]


def default_classes():
    return [dict(c) for c in DEFAULT_CLASSES]


def validate_classes(classes, negative_class: str) -> None:
    """Clear messages for the class list of a project (used by forms, API and admin)."""
    if not isinstance(classes, list) or not classes:
        raise ValidationError("Add at least one positive class (a row with its name).")
    names = []
    for i, item in enumerate(classes, start=1):
        if not isinstance(item, dict):
            raise ValidationError(f"Class {i}: expected an object with name, color and sources.")
        name = str(item.get("name", "")).strip()
        if not CLASS_NAME.match(name):
            raise ValidationError(
                f"Class {i}: name {name!r} must be 1-40 letters, digits, spaces, '-' or '_'."
            )
        if not HEX_COLOUR.match(str(item.get("color", ""))):
            raise ValidationError(
                f"Class {name!r}: colour {item.get('color')!r} is not a #rrggbb value."
            )
        sources = item.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise ValidationError(f"Class {name!r}: sources must be a list of class names.")
        for source in sources:
            if problem := text_problem(source):
                raise ValidationError(f"Class {name!r}: the source {source!r} {problem}.")
        names.append(name.lower())
    if len(set(names)) != len(names):
        raise ValidationError("Class names must be unique.")
    if negative_class.strip().lower() in names:
        raise ValidationError(
            f"The negative class {negative_class!r} must differ from the positive classes."
        )


# The largest object size a project can state: a scoring window of this many scene pixels.
OBJECT_SIZE_MAX = 4096


class Project(models.Model):
    ENGINES = [("torch", "PyTorch"), ("mxnet", "MXNet")]

    name = models.CharField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="projects")
    # The reviewer role: members who may undo any member's annotation (others undo only their
    # own). Given in the admin.
    reviewers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="reviewing", blank=True
    )
    # Positive classes in order: [{"name", "color", "sources": [source class names]}].
    classes = models.JSONField(default=default_classes)
    negative_class = models.CharField(max_length=40, default="negative")
    window_size = models.PositiveIntegerField(default=32)
    # The objects' typical size on the project's scenes, in scene pixels; empty: the window size.
    # Scenes are scored (and reviewed windows cut) at this size, resized to the window
    # (docs/own-data.md, "Objects of any size").
    object_size = models.PositiveIntegerField(null=True, blank=True, default=None)
    train_step = models.PositiveIntegerField(default=8)
    score_step = models.PositiveIntegerField(default=16)
    threshold = models.FloatField(default=0.9)
    # Optional per-class overrides {"boat": 0.8}.
    class_thresholds = models.JSONField(default=dict, blank=True)
    # Detections of a scoring run use the model version's calibrated thresholds (ModelVersion.
    # thresholds, from the ONNX file) when it has them; off: ``threshold`` / ``class_thresholds``
    # above (the published pipeline's 0.9) for every version.
    use_calibrated_thresholds = models.BooleanField(default=True)
    # Empty: derived from the window and the score step
    # (mlcore.inference.postprocess.default_nms_iou), so
    # every pair of windows that can hold one object centre merges into one box.
    nms_iou = models.FloatField(null=True, blank=True, default=None)
    engine = models.CharField(max_length=10, choices=ENGINES, default="torch")
    # A first model starts from the shipped starting model (mlcore.model.starting_model) and is
    # fine-tuned on the project's canvases; on: from random weights, as before it existed.
    start_from_scratch = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        # Keyed by field, so that ModelForm leaves a refused name out of its uniqueness query
        # (which the database could not run either).
        unstorable = {
            field: f"The {field.replace('_', ' ')} {problem}."
            for field in ("name", "description", "negative_class")
            if (problem := text_problem(str(getattr(self, field))))
        }
        if unstorable:
            raise ValidationError(unstorable)
        validate_classes(self.classes, self.negative_class)
        if self.window_size < 1:
            raise ValidationError("The window size must be at least 1 pixel.")
        if self.object_size is not None and not 1 <= self.object_size <= OBJECT_SIZE_MAX:
            raise ValidationError(
                {"object_size": f"The object size must be between 1 and {OBJECT_SIZE_MAX} pixels."}
            )
        for field in ("train_step", "score_step"):
            step = getattr(self, field)
            if step < 1 or step > self.window_size:
                raise ValidationError(
                    f"{field.replace('_', ' ')} must be between 1 and the window size "
                    f"({self.window_size}) so that windows touch or overlap."
                )
        if not 0.0 < self.threshold <= 1.0:
            raise ValidationError("The threshold must be in (0, 1].")

    @property
    def scene_window(self) -> int:
        """A window's side in scene pixels: the object size, else the model's window."""
        return int(self.object_size or self.window_size)

    @property
    def scene_score_step(self) -> int:
        """The scoring step in scene pixels (``score_step`` is at the model's scale)."""
        from mlcore.inference.scoring import scene_geometry

        return scene_geometry(self.window_size, self.object_size, self.score_step)[1]

    @property
    def class_names(self) -> list[str]:
        """Model output order: the positive classes, then the negative class."""
        return [c["name"] for c in self.classes] + [self.negative_class]

    @property
    def colours(self) -> dict[str, str]:
        return {c["name"]: c["color"] for c in self.classes}

    def nms_iou_for(self, window: int, step: int) -> float:
        from mlcore.inference.postprocess import default_nms_iou

        return float(self.nms_iou) if self.nms_iou else default_nms_iou(window, step)

    def threshold_for(self, class_name: str) -> float:
        return float(self.class_thresholds.get(class_name, self.threshold))

    def current_model(self):
        return self.model_versions.filter(is_current=True).first()


class Dataset(models.Model):
    STATUS = [
        ("pending", "pending"),
        ("importing", "importing"),
        ("ready", "ready"),
        ("failed", "failed"),
    ]

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    source = models.CharField(max_length=500, help_text="Where it came from: upload, path or URL")
    storage_key = models.CharField(max_length=500, blank=True, help_text="The imported .npz")
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    status = models.CharField(max_length=12, choices=STATUS, default="pending")
    class_counts = models.JSONField(default=dict, blank=True)
    skipped = models.JSONField(default=list, blank=True, help_text="[[member, reason], ...]")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.project}: {self.name}"

    def ordered_counts(self) -> dict:
        """The count table in display order (PostgreSQL's jsonb does not keep key order): project
        classes in the model's order, source classes by their project class, then by name."""
        order = {name: i for i, name in enumerate(self.project.class_names)}
        classes = (self.class_counts or {}).get("classes") or {}
        sources = (self.class_counts or {}).get("sources") or {}
        by_class = lambda kv: (order.get(kv[1].get("to"), len(order)), kv[0])  # noqa: E731
        return {
            "sources": dict(sorted(sources.items(), key=by_class)),
            "classes": dict(sorted(classes.items(), key=lambda kv: order.get(kv[0], len(order)))),
        }


class TrainingCanvas(models.Model):
    KINDS = [("original", "original"), ("correction", "correction")]

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="canvases")
    class_name = models.CharField(max_length=40)
    kind = models.CharField(max_length=12, choices=KINDS, default="original")
    storage_key = models.CharField(max_length=500)
    height = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    placements = models.PositiveIntegerField(default=0)
    weight = models.FloatField(default=1.0)
    dataset = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project", "class_name", "kind", "id"]
        verbose_name_plural = "training canvases"

    def __str__(self):
        return f"{self.project} {self.class_name} {self.kind} canvas #{self.pk}"


class Scene(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="scenes")
    name = models.CharField(max_length=200)
    image_key = models.CharField(max_length=500, help_text="The original image in storage")
    pixels_key = models.CharField(max_length=500, blank=True, help_text="Scoring format (.npy)")
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    ground_truth_key = models.CharField(max_length=500, blank=True)
    dzi_key = models.CharField(max_length=500, blank=True, help_text="Deep-zoom descriptor")
    georef = models.JSONField(
        null=True, blank=True,
        help_text="A GeoTIFF's georeferencing (geotransform, crs); null: none",
    )  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project", "name"]

    def __str__(self):
        return f"{self.project}: {self.name}"

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.ground_truth_key)

    def shown_run(self, version=None):
        """The scoring run people see for this scene (:func:`shown_runs`), or None."""
        return shown_runs(self.project, [self], version).get(self.pk)


class ModelVersion(models.Model):
    STATUS = [
        ("pending", "pending"),
        ("training", "training"),
        ("scoring", "scoring"),
        ("ready", "ready"),
        ("failed", "failed"),
    ]

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField()
    engine = models.CharField(max_length=10, choices=Project.ENGINES, default="torch")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    status = models.CharField(max_length=12, choices=STATUS, default="pending")
    is_current = models.BooleanField(default=False)
    classes = models.JSONField(default=list)
    checkpoint_key = models.CharField(max_length=500, blank=True)
    model_key = models.CharField(max_length=500, blank=True, help_text="ONNX (or MXNet) file")
    train_config = models.JSONField(default=dict, blank=True)
    data_counts = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # Per positive class, calibrated on held-out data when the model was made: {"car": 0.62}.
    # Read from the model file's metadata (mlcore.model.onnx_file.read_metadata) when it is
    # registered; {} for a model without them (then the project's threshold applies).
    thresholds = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="unique_version_number"),
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(is_current=True),
                name="one_current_model_per_project",
            ),
        ]

    @property
    def started_from(self) -> dict:
        """What its training started from: {"kind": "starting-model" | "scratch" | "fine-tune",
        "name", ...} (versions from before starting models: fine-tune of the parent, or
        scratch)."""
        recorded = (self.train_config or {}).get("started_from")
        if recorded:
            return recorded
        if self.train_config.get("finetune_from") and self.parent_id:
            return {"kind": "fine-tune", "name": f"v{self.parent.number}"}
        return {"kind": "scratch", "name": "scratch (random weights)"}

    def __str__(self):
        return f"{self.project} v{self.number} ({self.engine})"


class ScoringRun(models.Model):
    STATUS = [("queued", "queued"), ("running", "running"), ("done", "done"), ("failed", "failed")]

    scene = models.ForeignKey(Scene, on_delete=models.CASCADE, related_name="scoring_runs")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="scoring_runs"
    )
    status = models.CharField(max_length=10, choices=STATUS, default="queued")
    spark_master = models.CharField(max_length=200, blank=True)
    spark_ui_url = models.CharField(max_length=300, blank=True)
    n_windows = models.PositiveIntegerField(default=0)
    n_partitions = models.PositiveIntegerField(default=0)
    # [{"partition", "rows", "windows", "seconds", "host"}] so skew is visible.
    partitions = models.JSONField(default=list, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    grid_key = models.CharField(max_length=500, blank=True, help_text="Probability grid .npz")
    parquet_key = models.CharField(max_length=500, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.scene} x v{self.model_version.number}: {self.status}"


def shown_runs(project, scenes=None, version=None) -> dict[int, ScoringRun]:
    """Scene id -> the scoring run people see for it: the newest done run of the project's
    current model version, or of ``version`` when a person chose one (of this project). Never a
    run of a failed, still running or rolled-back version: a cycle killed after it scored some
    scenes leaves the viewer, the queue, the exports and the metrics on the current model, and
    making another version current changes what they show. Every page, feed, export and the
    review queue take "the scene's run" from here. A scene without such a run is left out."""
    if version is None:
        version = project.current_model()
        if version is None:
            return {}
    elif version.project_id != project.pk:
        raise ValueError(f"model v{version.number} belongs to another project")
    runs = ScoringRun.objects.filter(model_version=version, status="done")
    if scenes is not None:
        runs = runs.filter(scene__in=scenes)
    runs = runs.select_related("model_version", "scene").defer("partitions", "timings")
    shown: dict[int, ScoringRun] = {}
    for run in runs.order_by("scene_id", "-finished_at", "-id"):
        shown.setdefault(run.scene_id, run)
    return shown


class Detection(models.Model):
    KINDS = [("window", "raw window"), ("merged", "merged box (NMS)")]

    run = models.ForeignKey(ScoringRun, on_delete=models.CASCADE, related_name="detections")
    kind = models.CharField(max_length=8, choices=KINDS)
    label = models.CharField(max_length=40, db_index=True)
    score = models.FloatField(db_index=True)
    x = models.IntegerField()
    y = models.IntegerField()
    w = models.PositiveIntegerField()
    h = models.PositiveIntegerField()
    probs = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-score"]
        indexes = [models.Index(fields=["run", "kind", "label"])]

    def __str__(self):
        return f"{self.label} {fixed3(self.score)} at ({self.x}, {self.y})"  # as every page


class Annotation(models.Model):
    """Append-only: the system never updates or deletes one. The effective label of a place is
    the newest annotation there; undo appends a new annotation that points at what it undoes."""

    KINDS = [
        ("confirm", "confirmed detection"),
        ("false_positive", "false positive"),
        ("wrong_class", "wrong class"),
        ("false_negative", "missed object"),
        ("review", "review queue answer"),
        # A rectangle holding no object of any class (label: the negative class); its training
        # samples: labeling.loop.regions.
        ("region", "background region"),
        ("undo", "undo"),
    ]

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="annotations")
    scene = models.ForeignKey(Scene, on_delete=models.CASCADE, related_name="annotations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=16, choices=KINDS)
    label = models.CharField(max_length=40, help_text="The class the reviewer says is there")
    x = models.IntegerField()
    y = models.IntegerField()
    w = models.PositiveIntegerField()
    h = models.PositiveIntegerField()
    detection = models.ForeignKey(
        Detection, null=True, blank=True, on_delete=models.SET_NULL, related_name="annotations"
    )
    undoes = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="undone_by"
    )
    consumed_by = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="consumed_annotations",
    )
    source = models.CharField(max_length=20, default="ui", help_text="ui, queue, api, simulated")
    # Idempotency key from the client: a retried POST creates nothing new.
    client_id = models.CharField(max_length=64, null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["scene", "x", "y"]),
            models.Index(fields=["project", "consumed_by"]),
            # The review queue's newest answers (skips come back after N of them).
            models.Index(fields=["project", "created_at"]),
        ]

    def __str__(self):
        return f"{self.kind} {self.label} at ({self.x}, {self.y}) by {self.user}"

    def save(self, *args, **kwargs):
        # History is append-only; only the retrain bookkeeping (consumed_by) may change later.
        if self.pk and set(kwargs.get("update_fields") or ()) != {"consumed_by"}:
            raise ValidationError("Annotations are append-only: add a new one instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("Annotations are append-only and are never deleted.")


class JobRecord(models.Model):
    """What the pages show of an RQ job: progress, log and error outlive Redis' TTLs."""

    STATUS = [("queued", "queued"), ("running", "running"), ("done", "done"), ("failed", "failed")]

    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    kind = models.CharField(max_length=40)
    rq_job_id = models.CharField(max_length=64, blank=True, db_index=True)
    queue = models.CharField(max_length=20, default="default")
    status = models.CharField(max_length=10, choices=STATUS, default="queued")
    progress_done = models.PositiveBigIntegerField(default=0)
    progress_total = models.PositiveBigIntegerField(default=0)
    message = models.CharField(max_length=300, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.kind} [{self.status}]"

    @property
    def fraction(self) -> float:
        return self.progress_done / self.progress_total if self.progress_total else 0.0


class SimulationRun(models.Model):
    """One run of manage.py simulate_review (an oracle answering the review queue, real retrain
    cycles), kept so the metrics page can draw its learning curve (object F1 against labels used)
    beside the project's own cycles: the random strategy is the baseline the queue must beat.

    ``project`` is the project the curve belongs to; a benchmark that simulates on a copy records
    the copy's name in ``simulated_project``."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="simulations")
    strategy = models.CharField(max_length=40)
    per_cycle = models.PositiveIntegerField()
    profile = models.CharField(max_length=20, blank=True)
    scene_name = models.CharField(max_length=255, blank=True)
    simulated_project = models.CharField(max_length=255, blank=True)
    # Extra settings of the run (seed, tag, thresholds...), free form.
    config = models.JSONField(default=dict, blank=True)
    # [{"cycle", "version", "labels_used", "object_f1", "window_f1"}], cycle 0 = before any label.
    cycles = models.JSONField(default=list, blank=True)
    finished = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.strategy} x{self.per_cycle} on {self.project} ({len(self.cycles)} points)"


class QueueSkip(models.Model):
    """A review-queue window a reviewer skipped ("not sure"). Kept apart from Annotation on
    purpose: a skip is no label, and the training path (labeling.loop.cycle.pending_annotations)
    learns from every effective annotation whatever its kind. The queue holds a skipped window
    back until other windows were answered (labeling.review.queue.skip_window)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="queue_skips")
    scene = models.ForeignKey(Scene, on_delete=models.CASCADE, related_name="queue_skips")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    x = models.IntegerField()
    y = models.IntegerField()
    w = models.PositiveIntegerField()
    h = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "created_at"])]

    def __str__(self):
        return f"skipped ({self.x}, {self.y}) of scene {self.scene_id} by {self.user}"
