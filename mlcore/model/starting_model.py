"""The starting model: a scene model the project trained once, shipped with its card.

It has one output head per CIFAR-10 class, trained on scene-like canvases of the CIFAR-10
*train* split (``python -m mlcore pretrain``, see :mod:`mlcore.train.pretrain`). A project's first
model starts from it: the backbone is copied, each project class made of CIFAR-10 source classes
starts as the sum of their heads (car = automobile; negative = the eight others), heads for other
classes start fresh; then it is fine-tuned on the project's canvases. No weights are downloaded:
the files live in the repository, and their sha256 is checked against the card before use.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

STARTING_MODEL_ENV = "MLCORE_STARTING_MODEL"  # another folder (tests, a team's own model)
SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / "cifar10-scene-resnet20"
CARD_FILE = "card.json"
CARD_MARKDOWN = "CARD.md"
CHECKPOINT_FILE = "checkpoint.pt"
ONNX_FILE = "model.onnx"
REMAKE_HINT = (
    "remake it with `make pretrain` (or restore it with `git checkout -- {dir}`), "
    "or train from scratch (`--from-scratch`, or the project's 'start from scratch' setting)"
)


class StartingModelError(ValueError):
    """The starting model is missing, corrupt or does not fit; the message says what to do."""


def starting_model_dir() -> Path:
    """The folder of the starting model: ``$MLCORE_STARTING_MODEL`` or the shipped one."""
    env = os.environ.get(STARTING_MODEL_ENV)
    return Path(env) if env else SHIPPED_DIR


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(directory: str | os.PathLike | None = None) -> dict:
    """The card (JSON) of the starting model in ``directory``."""
    directory = Path(directory) if directory else starting_model_dir()
    path = directory / CARD_FILE
    hint = REMAKE_HINT.format(dir=directory)
    if not path.is_file():
        raise StartingModelError(f"the starting model's card {path} is missing: {hint}")
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        message = f"the starting model's card {path} is unreadable ({exc}): {hint}"
        raise StartingModelError(message) from exc
    if not isinstance(card, dict) or not isinstance(card.get("files"), dict):
        raise StartingModelError(f"{path} is not a starting-model card (no 'files'): {hint}")
    return card


def verified_file(name: str = CHECKPOINT_FILE, directory=None) -> Path:
    """Path of one of the starting model's files, after checking it against its card's sha256:
    a missing, truncated or replaced file is an error naming it, never a silent fallback."""
    directory = Path(directory) if directory else starting_model_dir()
    card = read_card(directory)
    path = directory / name
    hint = REMAKE_HINT.format(dir=directory)
    expected = card["files"].get(name, {}).get("sha256")
    if expected is None:
        raise StartingModelError(f"the card {directory / CARD_FILE} does not list {name}: {hint}")
    if not path.is_file():
        raise StartingModelError(f"the starting model's file {path} is missing: {hint}")
    actual = sha256_of(path)
    if actual != expected:
        raise StartingModelError(
            f"the starting model's file {path} is corrupt or was replaced: its sha256 is "
            f"{actual[:12]}..., its card says {expected[:12]}...: {hint}"
        )
    return path


def starting_checkpoint(window: int = 32, directory=None) -> dict:
    """The verified starting checkpoint, read, for a project with ``window``-pixel windows."""
    from mlcore.train.training import read_checkpoint

    path = verified_file(CHECKPOINT_FILE, directory)
    try:
        payload = read_checkpoint(path)
    except ValueError as exc:
        hint = REMAKE_HINT.format(dir=path.parent)
        raise StartingModelError(f"{exc}: {hint}") from exc
    trained_window = int(payload.get("config", {}).get("window", 32))
    if trained_window != int(window):
        raise StartingModelError(
            f"the starting model {path} takes {trained_window}x{trained_window} windows, this "
            f"project scores {window}x{window}: train it from scratch (`--from-scratch`, or the "
            "project's 'start from scratch' setting)"
        )
    return payload


def describe(directory=None) -> dict:
    """What a model version records about its start: name, card figures, checkpoint sha256."""
    directory = Path(directory) if directory else starting_model_dir()
    card = read_card(directory)
    return {
        "kind": "starting-model",
        "name": card.get("name", directory.name),
        "folder": str(directory),
        "sha256": card["files"].get(CHECKPOINT_FILE, {}).get("sha256"),
        "commit": card.get("git_commit"),
        "figures": card.get("figures", {}).get("summary", {}),
    }


SCRATCH = {"kind": "scratch", "name": "scratch (random weights)"}


def as_project_model(payload: dict, classes: list[str], class_of: dict[str, str]):
    """The starting model as a model of ``classes`` without any training: every head kept, each
    mapped to the class ``class_of[head]`` (heads not named go to the last class, the negative),
    so a class's probability is the sum of its heads' (car = automobile, negative = the rest).
    What a project's first model is before its fine-tune; the card's 3-way figures use it."""
    from mlcore.model.network import build_model

    arch, norm = payload["architecture"], payload["normalisation"]
    heads = list(arch.get("heads") or payload["classes"])
    unknown = sorted(set(class_of.values()) - set(classes))
    if unknown:
        raise ValueError(f"the head mapping names classes {unknown} that are not in {classes}")
    head_classes = [classes.index(class_of.get(h, classes[-1])) for h in heads]
    model = build_model(len(classes), arch["depth"], arch["width"], head_classes=head_classes,
                        box_head=arch.get("box_head", False),
                        box_pool=arch.get("box_pool", "mean"), **norm)  # fmt: skip
    model.heads = heads
    state = {k: v for k, v in payload["state_dict"].items() if k != "head_to_class"}
    model.load_state_dict(state | {"head_to_class": model.head_to_class})
    return model.eval()
