"""Score a scene with a model file the way the file says: densely (the trunk over the scene once,
:mod:`mlcore.inference.dense_scoring`) when it names a dense graph and the step and window fit
its feature grid, else per window (:mod:`mlcore.inference.scoring`). The one place that choice is
made for a single process (the CLI, calibration, the benches); Spark makes it per partition in
workers.spark_score."""

from __future__ import annotations

from pathlib import Path

from mlcore.inference.dense_scoring import dense_scorer_for, score_scene_dense
from mlcore.inference.scoring import ScoreGrid, load_scorer, score_scene
from mlcore.progress import Progress


def score_with_model_file(
    model_path,
    reader,
    step: int,
    *,
    scene_window: int | None = None,
    threads: int | None = None,
    batch_size: int = 512,
    progress: Progress | None = None,
) -> tuple[ScoreGrid, Path | None]:
    """Every window of ``reader`` at ``step`` (scene pixels; windows of ``scene_window`` scene
    pixels, default the model's), scored by ``model_path`` as the file says; and the dense
    graph it was scored with (None: per window)."""
    dense = dense_scorer_for(model_path, step, scene_window, threads=threads)
    if dense is not None:
        return score_scene_dense(dense, reader, step, progress=progress), dense.path
    kwargs = {"threads": threads} if threads and str(model_path).endswith(".onnx") else {}
    scorer = load_scorer(model_path, **kwargs)
    grid = score_scene(scorer, reader, step, batch_size=batch_size, progress=progress,
                       scene_window=scene_window)  # fmt: skip
    return grid, None
