"""What a model version learnt from, in words, for its row on the dashboard: the dataset images
on its training canvases and the reviewed labels (answers, corrections, scene marks) apart, so
a first model trained on 50,000 images of a tile dataset never reads "Labels used 0"."""

from __future__ import annotations


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def dataset_images_text(data_counts: dict) -> str:
    """ "50,000 dataset images"; "no dataset images" for a model of the scene marks alone; the
    project's dataset images without a number for a version trained before it was counted."""
    n = data_counts.get("dataset_images")
    if n is not None:
        return _count(int(n), "dataset image", "dataset images") if n else "no dataset images"
    originals = (data_counts.get("canvases") or {}).get("original") or {}
    if any(originals.values()):
        return "the project's dataset images (not counted then)"
    return "no dataset images"


def trained_on(version, labels_used: int, labels_known: bool) -> str:
    """The version's training material in words: "50,000 dataset images and no reviewed
    labels", "no dataset images and 40 reviewed labels", "... and 12 new reviewed labels" for a
    fine-tune (the earlier ones are replayed from its parent's canvases)."""
    data = version.data_counts or {}
    if not labels_known:  # its cycle has not fed its corrections (nor trained) yet
        return "counted when its corrections are fed"
    fine_tune = (version.train_config or {}).get("finetune_from") is not None
    reviewed = "new reviewed labels" if fine_tune else "reviewed labels"
    labels = f"{labels_used:,} {reviewed}" if labels_used else f"no {reviewed}"
    if labels_used == 1:
        labels = f"1 {reviewed.replace('labels', 'label')}"
    if "dataset_images" not in data and version.status in ("pending", "training"):
        return f"{labels}; dataset images counted once it is trained"
    return f"{dataset_images_text(data)} and {labels}"
