"""A job's kind in words, for people: the dashboard's job table, its status line and the jobs
API's ``label`` field read "Scene import", "Scoring", "First model", never the identifiers
(``import_scene``, ``score``, ``retrain_cycle``) that the API's ``kind`` keeps for programs."""

from __future__ import annotations

from labeling.models import JobRecord, ModelVersion

CYCLE_KIND = "retrain_cycle"

KIND_WORDS = {
    CYCLE_KIND: "Retrain cycle",
    "train": "Training",
    "score": "Scoring",
    "import_scene": "Scene import",
    "import_dataset": "Dataset import",
    "make_collage": "Collage scene",
    "dzi": "Deep-zoom tiles",
    "build_canvases": "Training canvases",
}

FIRST_MODEL = "First model"
NEW_MODEL = "New model"


def kind_words(kind: str) -> str:
    """The kind in words; an unknown one with its underscores as spaces ("some job")."""
    return KIND_WORDS.get(kind, kind.replace("_", " ").capitalize())


def job_label(record: JobRecord) -> str:
    """What the job is in words. A cycle that trains a model from the start (no fine-tune)
    is the project's "First model" (a "New model" when a current one existed before it)."""
    if record.kind != CYCLE_KIND:
        return kind_words(record.kind)
    version = (
        ModelVersion.objects.filter(pk=(record.params or {}).get("version_id"))
        .only("parent_id", "train_config")
        .first()
    )
    if version is None or (version.train_config or {}).get("finetune_from") is not None:
        return kind_words(record.kind)
    return FIRST_MODEL if version.parent_id is None else NEW_MODEL
