"""A project's first model, as the pages, the API and the commands see it: is there anything to
train it on, and what is the project's next step (the dashboard's "Next step" line and why its
Train / Retrain button is off when it is off).

The work itself is one chain (workers.loop_jobs.retrain_cycle): it builds or refreshes the
training canvases from the project's ready datasets, feeds the reviewed windows, trains from the
starting model, calibrates, and scores every scene. Here only the questions asked before it is
started, so a press that cannot succeed is refused with the reason instead of leaving a failed
model version behind."""

from __future__ import annotations

from labeling.loop.regions import is_region, marks_object, object_boxes, region_windows
from labeling.models import Dataset, ModelVersion, TrainingCanvas


class NothingToTrainOn(Exception):
    """A first model was asked for, but the project has nothing to learn from yet; the message
    says what to add."""


def _sources_text(project) -> str:
    sources = [s for c in project.classes for s in c.get("sources", [])]
    if not sources:
        return (
            "named after the project's classes ("
            + ", ".join(c["name"] for c in project.classes)
            + ")"
        )
    return "named as the project's source classes (" + ", ".join(sources) + ")"


def material_problem(project, pending) -> str | None:
    """Why a first model cannot be trained now (in words, with what to do), or None;
    ``pending``: the annotations the next cycle learns from (cycle.pending_annotations)."""
    datasets = Dataset.objects.filter(project=project)
    importing = datasets.filter(status__in=("pending", "importing")).order_by("pk").first()
    if importing is not None:
        return (
            f"Dataset {importing.name!r} is still importing: the first model can be trained "
            "once it is ready."
        )
    if datasets.filter(status="ready").exists():
        return None
    if TrainingCanvas.objects.filter(project=project, kind="original").exists():
        return None
    objects, background = scene_marks(project, pending)
    if objects and background:
        return None  # the scene alone: the marked windows are the training samples
    text = (
        "There is nothing to train the first model on yet: add a tile dataset (+ Dataset): a "
        f"zip of image folders {_sources_text(project)}, other folders becoming "
        f"{project.negative_class!r}, or the CIFAR-10 archive. Or start from a scene alone: "
        "in its viewer click an object and pick its class, and click a spot with no object and "
        'pick "nothing here" (or press b and drag over an area with no object) (so far '
        f"{_marks_text(project, pending)}; at least one of each)."
    )
    failed = datasets.filter(status="failed").order_by("-pk").first()
    if failed is not None:
        text += f" The last import, {failed.name!r}, failed: {failed.error}"
    return text


def scene_marks(project, pending) -> tuple[int, int]:
    """(objects, background marks) among ``pending``, the annotations the next cycle learns
    from: what a project without a dataset trains its first model on (only these windows, never
    the unmarked rest of a scene). A background region counts the samples it yields."""
    objects, background, _, _ = region_counts(project, pending)
    return objects, background


def region_counts(project, pending) -> tuple[int, int, int, int]:
    """(objects, background marks, regions, background marks from regions) among ``pending``:
    a region counts as the windows it teaches (labeling.loop.regions), an object inside it wins."""
    objects = sum(1 for a in pending if marks_object(a, project))
    regions = [a for a in pending if is_region(a)]
    boxes = object_boxes(pending, project)
    from_regions = sum(len(region_windows(project, r, boxes[r.scene_id])) for r in regions)
    background = len(pending) - objects - len(regions) + from_regions
    return objects, background, len(regions), from_regions


def _marks_text(project, pending) -> str:
    """The marks in words: 3 objects and 40 background marks (32 from 1 region)."""
    objects, background, regions, from_regions = region_counts(project, pending)
    text = (
        f"{objects} object{'s' if objects != 1 else ''} and {background} background "
        f"mark{'s' if background != 1 else ''}"
    )
    if regions:
        text += f" ({from_regions} from {regions} region{'s' if regions != 1 else ''})"
    return text


def check_first_model(project, pending) -> None:
    """Raise NothingToTrainOn when a first model cannot be trained now."""
    problem = material_problem(project, pending)
    if problem is not None:
        raise NothingToTrainOn(problem)


def readable_error(text: str) -> str:
    """A version's or job's failure for a person: the job-kind prefix and a Python exception
    name ("retrain_cycle job failed: ValueError: ...") are left out."""
    text = (text or "").strip()
    for prefix in ("retrain_cycle job failed: ",):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    head, sep, rest = text.partition(": ")
    if sep and head.isidentifier() and (head.endswith("Error") or head.endswith("Exception")):
        text = rest
    return text


def next_step(project, pending: list, cycle_running: bool) -> dict:
    """What the dashboard says to do next: {"text", "can_train", "button", "why_off",
    "last_failure"}. ``button`` is the Train / Retrain button's label; ``why_off`` the reason it
    is off (empty when it is on)."""
    current = project.current_model()
    has_scene = project.scenes.exclude(pixels_key="").exists()
    failed = ModelVersion.objects.filter(project=project).order_by("-number").first()
    last_failure = None
    if failed is not None and failed.status == "failed":
        last_failure = {"number": failed.number, "error": readable_error(failed.error)}
    step = {"last_failure": last_failure, "can_train": False, "why_off": ""}
    if cycle_running:
        step |= {
            "button": "Retrain" if current else "Train the first model",
            "text": "A training cycle is running: follow it in the jobs table.",
            "why_off": "A cycle is running: wait for it to finish (or fail).",
        }
        return step
    if current is None:
        problem = material_problem(project, pending)
        step["button"] = "Train the first model"
        if problem is not None:
            step |= {"text": problem, "why_off": problem}
            return step
        scenes = (
            "then every scene is scored"
            if has_scene
            else "add a scene (+ Scene) to see its detections"
        )
        if Dataset.objects.filter(project=project, status="ready").exists():
            source = "the project's datasets and the windows reviewed so far"
        else:
            source = (
                f"the {_marks_text(project, pending)} on the scenes (only those windows; a "
                "share is held out to calibrate it)"
            )
        step |= {
            "can_train": True,
            "text": f"Next: train the first model on {source}; {scenes}.",
        }
        return step
    step["button"] = "Retrain"
    if not pending:
        why = "Review windows or correct detections first: there is nothing new to learn."
        step |= {"text": "Next: review windows in the queue or correct detections in a scene; "
                 "then retrain.", "why_off": why}  # fmt: skip
        return step
    n = len(pending)
    step |= {
        "can_train": True,
        "text": f"Next: retrain on the {n} new annotation{'s' if n != 1 else ''}.",
    }
    return step
