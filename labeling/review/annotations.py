"""Recording annotations: the checks on a box, class and detection, idempotency by client_id,
undo (append-only: history is kept), the JSON of one annotation and a scene's annotations."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from labeling.loop.cycle import effective_annotations
from labeling.loop.regions import REGION, REGION_MAX_WINDOWS
from labeling.models import Annotation, Detection
from labeling.review.answered import place_changed
from labeling.review.common import ReviewError, pixel_int

ANNOTATION_KINDS = [k for k, _ in Annotation.KINDS]
SOURCES = ("ui", "queue", "api", "simulated")
CLIENT_ID_MAX = 64


def check_box(scene, x, y, w, h) -> tuple[int, int, int, int]:
    """(x, y, w, h) as ints, inside the scene, at least 1 pixel wide and high."""
    x, y, w, h = (pixel_int(n, v) for n, v in (("x", x), ("y", y), ("w", w), ("h", h)))
    if w < 1 or h < 1:
        raise ReviewError(f"the box must be at least 1x1 pixels, got w={w}, h={h}")
    if x < 0 or y < 0 or x + w > scene.width or y + h > scene.height:
        raise ReviewError(
            f"the box x={x}, y={y}, w={w}, h={h} is outside scene {scene.name!r} "
            f"({scene.width}x{scene.height} pixels): keep 0 <= x, x + w <= {scene.width}, "
            f"0 <= y, y + h <= {scene.height}"
        )
    return x, y, w, h


def check_region(project, scene, label, detection, x, y, w, h) -> tuple[int, int, int, int]:
    """A background region's box, checked: the negative class, no detection, inside the scene,
    at least one object size and at most REGION_MAX_WINDOWS object sizes a side."""
    if label != project.negative_class:
        raise ReviewError(
            f"a background region holds no object of any class: its label is the negative "
            f"class {project.negative_class!r}, got {label!r}"
        )
    if detection not in (None, ""):
        raise ReviewError("a background region is drawn on the scene: send detection null")
    x, y, w, h = check_box(scene, x, y, w, h)
    size = project.scene_window
    largest = REGION_MAX_WINDOWS * size
    if w < size or h < size:
        raise ReviewError(
            f"the region {w}x{h} px is smaller than one object ({size}x{size} px): draw a larger "
            'one, or click the spot and pick "nothing here"'
        )
    if w > largest or h > largest:
        raise ReviewError(
            f"the region {w}x{h} px is too large: at most {largest}x{largest} px "
            f"({REGION_MAX_WINDOWS} object sizes a side, about one screen where objects can be "
            "seen); draw several smaller ones"
        )
    return x, y, w, h


def _detection_of(scene, detection):
    if detection is None or detection == "":
        return None
    if isinstance(detection, Detection):
        det = detection
    else:
        from labeling.web.input_parsing import parse_id

        if isinstance(detection, bool) or not isinstance(detection, (int, str)):
            raise ReviewError(f"detection must be a detection id or null, got {detection!r}")
        try:
            det = Detection.objects.select_related("run").get(
                pk=parse_id(detection, "detection", ValueError)
            )
        except (Detection.DoesNotExist, ValueError):
            raise ReviewError(
                f"detection {detection!r} does not exist: take the id from this scene's "
                "detections feed, or send null"
            ) from None
    if det.run.scene_id != scene.pk:
        raise ReviewError(
            f"detection {det.pk} belongs to another scene, not to {scene.name!r}: take the id "
            "from this scene's detections feed"
        )
    return det


def _existing(client_id: str, project, scene, user):
    row = Annotation.objects.filter(client_id=client_id).first()
    if row is None:
        return None
    if (
        row.project_id != project.pk
        or row.scene_id != scene.pk
        or row.user_id != getattr(user, "pk", None)
    ):
        raise ReviewError(
            f"client_id {client_id!r} was already used for another annotation: send a new "
            "unique id (a UUID) for each new annotation"
        )
    return row


def record_annotation(
    project,
    scene,
    user,
    *,
    kind,
    label,
    x,
    y,
    w,
    h,
    detection=None,
    client_id=None,
    source="ui",
    undoes=None,
) -> tuple[Annotation, bool]:
    """Append one annotation after checking it; returns (annotation, created).

    The same ``client_id`` again returns the row it created the first time (created False), so
    a retried request never adds a second annotation. An ``undo`` needs ``undoes`` (the annotation
    it cancels, in the same scene) and takes that annotation's place and label."""
    if scene.project_id != project.pk:
        raise ReviewError(f"scene {scene.pk} does not belong to project {project.name!r}")
    if client_id is not None and client_id != "":
        # Printable only: PostgreSQL text cannot hold NUL, and an id has no control characters.
        if (
            not isinstance(client_id, str)
            or len(client_id) > CLIENT_ID_MAX
            or not client_id.isprintable()
        ):
            raise ReviewError(
                f"client_id must be a string of at most {CLIENT_ID_MAX} printable characters "
                "(a UUID)"
            )
        row = _existing(client_id, project, scene, user)
        if row is not None:
            return row, False
    else:
        client_id = None
    if kind not in ANNOTATION_KINDS:
        raise ReviewError(f"unknown kind {kind!r}: use one of {', '.join(ANNOTATION_KINDS)}")
    if source not in SOURCES:
        raise ReviewError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    target = None
    if kind == "undo" or undoes is not None:
        if kind != "undo":
            raise ReviewError("only an annotation of kind 'undo' may point at another (undoes)")
        if undoes is None:
            raise ReviewError("an undo needs the id of the annotation it undoes")
        target = undoes
        if not isinstance(target, Annotation):
            target = Annotation.objects.filter(pk=pixel_int("undoes", undoes)).first()
        if target is None or target.scene_id != scene.pk:
            raise ReviewError(f"annotation {undoes!r} is not an annotation of this scene")
        label, x, y, w, h = target.label, target.x, target.y, target.w, target.h
        detection = target.detection_id
    if label not in project.class_names:
        raise ReviewError(
            f"unknown class {label!r}: project {project.name!r} has "
            f"{', '.join(project.class_names)}"
        )
    if kind == REGION:
        x, y, w, h = check_region(project, scene, label, detection, x, y, w, h)
    x, y, w, h = check_box(scene, x, y, w, h)
    det = _detection_of(scene, detection)
    row = Annotation(
        project=project,
        scene=scene,
        user=user if getattr(user, "pk", None) else None,
        kind=kind,
        label=label,
        x=x,
        y=y,
        w=w,
        h=h,
        detection=det,
        undoes=target,
        source=source,
        client_id=client_id,
        created_at=timezone.now(),
    )
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        # Two copies of one request raced: the other one's row is the answer.
        if client_id is None:
            raise
        existing = _existing(client_id, project, scene, user)
        if existing is None:
            raise
        return existing, False
    # The review queue's answered windows (Redis) follow, after the commit.
    place_changed(scene.pk, x, y, w, h, answered=True if kind != "undo" else None)
    return row, True


class UndoRefused(PermissionError):
    """The user may not undo that annotation (views answer 403 with the reason)."""


def may_undo(annotation, user) -> bool:
    """One's own annotations, or any when the project gives the user its reviewer role."""
    if annotation.user_id == user.pk:
        return True
    return annotation.project.reviewers.filter(pk=user.pk).exists()


def undo(annotation, user, client_id=None, source="ui") -> tuple[Annotation, bool]:
    """Append an ``undo`` annotation cancelling ``annotation`` (history is kept); UndoRefused
    when it is another member's and the user is not one of the project's reviewers."""
    if not may_undo(annotation, user):
        owner = annotation.user.username if annotation.user_id else "nobody (an import)"
        raise UndoRefused(
            f"annotation {annotation.pk} is {owner}'s: you can undo only your own annotations; "
            "a project's reviewers (given in the admin) may undo anyone's"
        )
    return record_annotation(
        annotation.project,
        annotation.scene,
        user,
        kind="undo",
        label=annotation.label,
        x=annotation.x,
        y=annotation.y,
        w=annotation.w,
        h=annotation.h,
        client_id=client_id,
        source=source,
        undoes=annotation,
    )


def annotation_json(a: Annotation) -> dict:
    return {
        "id": a.pk,
        "scene": a.scene_id,
        "kind": a.kind,
        "label": a.label,
        "x": a.x,
        "y": a.y,
        "w": a.w,
        "h": a.h,
        "detection": a.detection_id,
        # What the model said there when the reviewer corrected it ("was boat -> car").
        "detection_label": a.detection.label if a.detection_id and a.detection else None,
        "undoes": a.undoes_id,
        "user": a.user.username if a.user_id and a.user else None,
        "created_at": a.created_at.isoformat(),
        "client_id": a.client_id,
        "consumed_by": a.consumed_by.number if a.consumed_by_id and a.consumed_by else None,
        "source": a.source,
    }


# One page of a scene's annotations (43,500 of them were 20.7 MB in one answer).
PAGE_DEFAULT, PAGE_MAX = 1000, 5000
# What labeling.loop.cycle.effective_annotations reads of a row.
_EFFECT_FIELDS = ("id", "created_at", "kind", "undoes", "scene", "x", "y", "w", "h")


def scene_annotations(scene, limit: int = PAGE_DEFAULT, after: int | None = None):
    """One page of the scene's history, newest first, after the annotation ``after`` (the previous
    page's cursor): (effective, history, next cursor or None). ``effective`` are the page's rows
    in effect (decided over the whole history: the pages' lists together are the scene's)."""
    rows = Annotation.objects.filter(scene=scene).order_by("-created_at", "-id")
    if after is not None:
        last = rows.filter(pk=after).values_list("created_at", flat=True).first()
        if last is None:
            raise ReviewError(f"cursor {after} is not an annotation of this scene")
        rows = rows.filter(Q(created_at__lt=last) | Q(created_at=last, id__lt=after))
    history = list(rows.select_related("user", "consumed_by", "detection")[: limit + 1])
    more = len(history) > limit
    history = history[:limit]
    if after is None and not more:  # the page is the whole history
        whole = history
    else:
        whole = Annotation.objects.filter(scene=scene).only(*_EFFECT_FIELDS)
    in_effect = {a.pk for a in effective_annotations(whole)}
    effective = [a for a in history if a.pk in in_effect]
    return effective, history, (history[-1].pk if more else None)
