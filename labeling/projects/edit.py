"""Editing a project after it was created (the edit page and PATCH /api/projects/<id>): its
classes, colours and sources, its negative class and window can change while no model depends
on them; once a model version (other than a failed one) was trained on them, only what does not
change the model's meaning (colours, name, description, thresholds) can.

A class edit needs no re-import: the next training cycle maps the stored datasets again from
their source classes and rebuilds the training canvases (workers.loop_jobs.refresh_canvases)."""

from __future__ import annotations

from labeling.models import ModelVersion

# What a trained model's outputs and windows are made of.
MODEL_FIELDS = (
    "negative_class", "window_size", "object_size", "train_step", "score_step", "engine"
)  # fmt: skip


def class_lock_reason(project) -> str | None:
    """Why the project's classes cannot change now, or None when they can."""
    numbers = list(
        ModelVersion.objects.filter(project=project)
        .exclude(status="failed")
        .order_by("number")
        .values_list("number", flat=True)
    )
    if not numbers:
        return None
    return (
        f"Model v{numbers[0]} was trained on these classes, so their names and sources, the "
        "negative class, the window and the object size stay as they are (colours, the name, the "
        "description and the thresholds can change). For other classes, create a new project."
    )


def _meaning(classes) -> list[tuple[str, tuple[str, ...]]]:
    return [(c.get("name", ""), tuple(sorted(c.get("sources", [])))) for c in classes]


def locked_change(project, classes, cleaned: dict) -> str | None:
    """The refusal when ``classes`` or the form's ``cleaned`` data change what a model
    depends on while one does (compared with the stored project), else None."""
    reason = class_lock_reason(project)
    if reason is None:
        return None
    saved = type(project).objects.get(pk=project.pk)  # a bound form has changed ``project``
    changed = _meaning(classes) != _meaning(saved.classes) or any(
        field in cleaned and cleaned[field] != getattr(saved, field) for field in MODEL_FIELDS
    )
    return reason if changed else None
