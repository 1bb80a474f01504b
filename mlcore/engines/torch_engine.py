"""The default engine: PyTorch training, ONNX export, ONNX Runtime scoring."""

from __future__ import annotations

from pathlib import Path

from mlcore.engines import ExportedModel

MODEL_FILE = "model.onnx"
CHECKPOINT_FILE = "checkpoint.pt"


class TorchEngine:
    name = "torch"

    def train(self, canvas_set, classes, config=None, progress=None, init_from=None):
        """Train (or fine-tune from a checkpoint path / state dict ``init_from``)."""
        from mlcore.train.training import TrainConfig, train

        if not isinstance(config, TrainConfig):
            config = TrainConfig.from_dict(config)
        init = init_from
        if isinstance(init_from, (str, Path)) and Path(init_from).name == MODEL_FILE:
            init = Path(init_from).with_name(CHECKPOINT_FILE)  # fine-tune needs the weights
        return train(canvas_set, classes, config, progress=progress, init_state=init)

    def export(self, result, directory, meta: dict | None = None) -> ExportedModel:
        """Write ``model.onnx`` (for scoring) and ``checkpoint.pt`` (for fine-tuning)."""
        from mlcore.model.scoring_files import export_scoring_files

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        info = {"val_accuracy": result.val_accuracy, "depth": result.config.depth,
                "precision": getattr(result, "precision", None)}  # fmt: skip
        info.update(meta or {})
        onnx_path, dense = export_scoring_files(
            result.model, directory / MODEL_FILE, result.classes, result.config, info
        )
        checkpoint = result.save_checkpoint(directory / CHECKPOINT_FILE)
        files = [onnx_path, checkpoint] + ([dense] if dense else [])
        return ExportedModel(onnx_path, checkpoint, files, self.name)

    def load_scorer(self, path):
        from mlcore.inference.scoring import OnnxScorer

        return OnnxScorer(path)


ENGINE = TorchEngine()
