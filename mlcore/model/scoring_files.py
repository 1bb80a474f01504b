"""The files a trained model is scored from, written one way by every caller (the CLI, the torch
engine, the app's export job): ``model.onnx``, with the flip averaged inside its graph when the
training config asks for it (mlcore.model.flip_tta), and for a model trained for dense scoring
its dense graph beside it (mlcore.inference.dense_scoring)."""

from __future__ import annotations

from pathlib import Path

from mlcore.inference.dense_scoring import export_dense_sibling
from mlcore.model.export import export_onnx


def export_scoring_files(model, path, classes, config, meta: dict | None = None):
    """Write ``path`` (and its dense sibling where the config trains for one); returns
    ``(model file, dense file or None)``. ``config``: the TrainConfig or its dict."""
    config = config if isinstance(config, dict) else config.to_dict()
    scored = model
    if config.get("flip_tta"):
        from mlcore.model.flip_tta import FlipAveraged

        scored = FlipAveraged(model.eval())
        meta = dict(meta or {}) | {"flip_tta": "true"}
    path = export_onnx(scored, Path(path), classes, int(config["window"]), meta)
    return path, export_dense_sibling(model, classes, config, path)
