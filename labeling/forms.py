"""Forms of the data area: new project (with its class editor), new dataset, new scene.

The rules live on the model (Project.clean / validate_classes); the forms only collect input and
let ModelForm's full_clean apply them, so the API and the pages say the same thing."""

from __future__ import annotations

import zlib

from django import forms
from django.conf import settings

from labeling.models import DEFAULT_CLASSES, OBJECT_SIZE_MAX, Dataset, Project


def split_sources(text) -> list[str]:
    """'automobile, truck' -> ['automobile', 'truck'] (a list is taken as is)."""
    if isinstance(text, list):
        return [str(s).strip() for s in text if str(s).strip()]
    return [s.strip() for s in str(text or "").split(",") if s.strip()]


def classes_from_rows(data) -> list[dict]:
    """The class editor posts parallel lists class_name / class_color / class_sources;
    fully empty rows (the spare one) are ignored."""
    names = data.getlist("class_name")
    colours = data.getlist("class_color")
    sources = data.getlist("class_sources")
    classes = []
    for i, name in enumerate(names):
        colour = colours[i] if i < len(colours) else ""
        src = sources[i] if i < len(sources) else ""
        if not name.strip() and not src.strip():
            continue
        classes.append(
            {"name": name.strip(), "color": colour.strip(), "sources": split_sources(src)}
        )
    return classes


PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6"]


def parse_class_option(spec: str) -> dict:
    """The command line's NAME:#RRGGBB:SOURCE[,SOURCE...] (colour and sources optional)."""
    parts = spec.split(":")
    name = parts[0].strip()
    colour = parts[1].strip() if len(parts) > 1 and parts[1].strip() else ""
    sources = split_sources(parts[2]) if len(parts) > 2 else []
    if not colour:
        # A stable colour per name (str hash() changes between processes).
        colour = PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]
    return {"name": name, "color": colour, "sources": sources}


# A classifier window is a tile, not a scene: beyond this it is a typo (or an attack on the
# arithmetic below and on every job that would allocate windows of that size).
WINDOW_MAX = 4096


def _divisor_hint(window: int, step: int) -> int:
    """The divisor of `window` nearest to `step` (for the error message). Divisors come in
    pairs (d, window // d), so up to sqrt(window) candidates: a window of 2**31 - 1 pixels
    (the column's maximum) must not cost a loop of two billion steps per request."""
    import math

    small = [d for d in range(1, math.isqrt(window) + 1) if window % d == 0]
    divisors = small + [window // d for d in small]
    return min(divisors, key=lambda d: (abs(d - step), -d))


_OBJECT_SIZE_BOUNDS = (
    f"The object size must be between 1 and {OBJECT_SIZE_MAX} pixels (empty: the window size)."
)


class ProjectForm(forms.ModelForm):
    """A project with its classes; the classes come from the class editor rows (pages) or a
    JSON list (API, command), passed as `classes`."""

    # Project.object_size, declared for messages that name it (the model field's say "value").
    object_size = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=OBJECT_SIZE_MAX,
        error_messages={
            "min_value": _OBJECT_SIZE_BOUNDS,
            "max_value": _OBJECT_SIZE_BOUNDS,
            "invalid": "The object size must be a whole number of pixels (or empty).",
        },
        help_text="Your objects' typical size on the scenes, in pixels; empty: the window size. "
        "Scenes are scored in windows of this size, each resized to the window, and a click in "
        "the viewer places a box of this size.",
    )
    # Project.use_calibrated_thresholds; absent (API, command): calibrated, the model default.
    threshold_mode = forms.ChoiceField(
        choices=[
            ("calibrated", "calibrated per model version (else the threshold)"),
            ("fixed", "always the threshold (the published pipeline's 0.9)"),
        ],
        required=False,
        initial="calibrated",
        label="Thresholds",
    )

    class Meta:
        model = Project
        fields = [
            "name",
            "description",
            "negative_class",
            "window_size",
            "object_size",
            "train_step",
            "score_step",
            "threshold",
            "engine",
            "start_from_scratch",
        ]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}
        help_texts = {
            "window_size": "Pixels; the classifier sees square windows of this size.",
            "train_step": "Pixels between training windows (at most the window size).",
            "score_step": "Pixels between scored windows (at most the window size).",
            "threshold": "Probability above which a window counts as a detection.",
            "start_from_scratch": "Off (default): the first model starts from the shipped "
            "starting model (CIFAR-10 scene model) and is fine-tuned; on: random weights.",
        }

    def __init__(self, *args, classes=None, **kwargs):
        super().__init__(*args, **kwargs)
        # A new project starts with no class (the page offers the demo's as a one-click preset);
        # an edited one with its own.
        if classes is None:
            classes = [dict(c) for c in self.instance.classes] if self.instance.pk else []
        self.classes = classes
        if self.instance.pk:
            self.initial.setdefault(
                "threshold_mode",
                "calibrated" if self.instance.use_calibrated_thresholds else "fixed",
            )
        self.fields["threshold"].widget.attrs.update({"step": "0.01", "min": "0", "max": "1"})

    def clean_negative_class(self):
        return self.cleaned_data["negative_class"].strip()

    def clean(self):
        cleaned = super().clean()
        # Project.clean (run by ModelForm's full_clean) validates them with the other rules.
        self.instance.classes = self.classes
        self.instance.use_calibrated_thresholds = cleaned.get("threshold_mode") != "fixed"
        window = cleaned.get("window_size")
        if window and window > WINDOW_MAX:
            self.add_error("window_size", f"The window size must be at most {WINDOW_MAX} pixels.")
            window = None
        for field, label in (("train_step", "training step"), ("score_step", "scoring step")):
            step = cleaned.get(field)
            if window and step and 0 < step <= window and window % step:
                self.add_error(
                    field,
                    f"The {label} ({step}) should divide the window size ({window}) so that "
                    f"windows line up with the tiles, e.g. {_divisor_hint(window, step)}.",
                )
        return cleaned

    def class_rows(self) -> list[dict]:
        """Rows for the editor: what the user typed (or the defaults) plus one spare row."""
        rows = [
            {
                "name": c.get("name", ""),
                "color": c.get("color") or "#4363d8",
                "sources": ", ".join(split_sources(c.get("sources", []))),
            }  # fmt: skip
            for c in self.classes
        ]
        rows.append({"name": "", "color": PALETTE[len(rows) % len(PALETTE)], "sources": ""})
        return rows

    @staticmethod
    def preset() -> list[dict]:
        """The one-click preset of the new-project page: the demo's CIFAR-10 cars and boats."""
        return [dict(c) for c in DEFAULT_CLASSES]

    def save(self, user=None, commit=True):
        project = super().save(commit=commit)
        if commit and user is not None:
            project.members.add(user)
        return project


class DatasetForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Defaults to the file name.")
    upload = forms.FileField(
        required=False,
        label="Upload a zip or the CIFAR-10 archive",
        help_text="Zip of image folders (<class>/*.jpg or <split>/<class>/*.jpg), or "
        "cifar-10-python.tar.gz.",
    )
    storage_key = forms.CharField(
        max_length=500,
        required=False,
        label="…or a path in the storage",
        help_text="Relative to the configured storage, e.g. incoming/cifar-10-python.tar.gz.",
    )
    split = forms.ChoiceField(
        choices=[("all", "all"), ("train", "train"), ("test", "test")], initial="all"
    )

    def clean(self):
        cleaned = super().clean()
        upload, key = cleaned.get("upload"), (cleaned.get("storage_key") or "").strip()
        if bool(upload) == bool(key):
            raise forms.ValidationError("Upload a file or name a storage path (one of the two).")
        if upload is not None and upload.size > settings.UPLOAD_MAX_BYTES:
            from labeling.ingest.uploads import UploadError, check_size

            try:
                check_size(upload.name, upload.size)
            except UploadError as exc:
                raise forms.ValidationError(str(exc)) from None
        cleaned["storage_key"] = key
        return cleaned


class SceneForm(forms.Form):
    SOURCES = [
        ("upload", "Upload an image"),
        ("storage", "An image in the storage"),
        ("collage", "Generate a collage"),
    ]
    source = forms.ChoiceField(choices=SOURCES, initial="upload", widget=forms.RadioSelect)
    name = forms.CharField(max_length=200, required=False, help_text="Defaults to the file name.")
    image = forms.FileField(required=False, label="Image (PNG, JPEG, TIFF)")
    storage_key = forms.CharField(max_length=500, required=False, label="Storage path")
    target = forms.FileField(
        required=False, label="Collage target image", help_text="Empty: the demo Mona Lisa."
    )
    tiles = forms.ChoiceField(required=False, label="Tile library")
    cols = forms.IntegerField(min_value=2, max_value=400, initial=80, label="Tiles per row")
    ground_truth = forms.FileField(
        required=False,
        label="Ground truth (optional)",
        help_text="CSV with columns label,x,y,w,h or COCO JSON of boxes.",
    )

    def __init__(self, *args, project=None, demo_available=False, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [
            (str(d.pk), f"{d.name} ({sum((d.class_counts or {}).get('classes', {}).values())})")
            for d in Dataset.objects.filter(project=project, status="ready")
        ]
        if demo_available:
            choices.append(("demo", "Demo: CIFAR-10 test images (shared data)"))
        self.fields["tiles"].choices = [("", "—")] + choices

    def clean(self):
        cleaned = super().clean()
        source = cleaned.get("source")
        if source == "upload" and not cleaned.get("image"):
            self.add_error("image", "Choose an image file to upload.")
        if source == "storage" and not (cleaned.get("storage_key") or "").strip():
            self.add_error("storage_key", "Name the image's path in the storage.")
        if source == "collage" and not cleaned.get("tiles"):
            self.add_error("tiles", "Pick a tile library (a ready dataset of this project).")
        from labeling.ingest.uploads import UploadError, check_size

        for field in ("image", "target", "ground_truth"):
            f = cleaned.get(field)
            if f is not None:
                try:
                    check_size(f.name, f.size)
                except UploadError as exc:
                    self.add_error(field, str(exc))
        return cleaned
