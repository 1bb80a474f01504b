"""The optional MXNet engine: training, export, import of foreign models, scoring, ONNX hand-off.

Runs in .venv-mxnet only (see conftest.py); skips where mxnet is not installed.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

# "mxnet.gluon", not "mxnet": where tests/ is on sys.path (the Django conftest puts it there), this
# very folder is importable as a namespace package called mxnet.
pytest.importorskip("mxnet.gluon", reason="the MXNet engine needs .venv-mxnet (make setup-mxnet)")
import mxnet as mx  # noqa: E402

from mlcore.data.windows import WindowSampler  # noqa: E402
from mlcore.engines import get_engine  # noqa: E402
from mlcore.engines.mxnet_engine import (  # noqa: E402
    ENGINE,
    MxnetModelError,
    MxnetScorer,
    resolve_context,
)
from mlcore.inference.scoring import load_scorer, score_scene  # noqa: E402
from mlcore.ingest.scenes import ArrayScene  # noqa: E402

pytestmark = pytest.mark.mxnet

CLASSES = ["red", "green", "blue"]


def synthetic_canvas(class_name: str, rng: np.random.Generator, size=(160, 192)) -> np.ndarray:
    """Noise with a strong tint of the class colour: separable, but not constant per window."""
    canvas = rng.integers(0, 90, (*size, 3)).astype(np.uint8)
    canvas[..., CLASSES.index(class_name)] += 140
    return canvas


@pytest.fixture(scope="session")
def canvas_set():
    from mlcore.data.canvases import Canvas, CanvasSet

    rng = np.random.default_rng(1)
    canvases = [Canvas(c, synthetic_canvas(c, rng)) for c in CLASSES for _ in range(2)]
    return CanvasSet(CLASSES, canvases)


SMALL = {"depth": 8, "width": 8, "batch_size": 32, "steps": 30, "lr": 0.05, "val_windows": 300}


@pytest.fixture(scope="session")
def trained(canvas_set):
    """One small model trained once for the whole module (a few seconds on 2 cores)."""
    from mlcore.engines import get_engine

    return get_engine("mxnet").train(canvas_set, CLASSES, SMALL)


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    from mlcore.engines import get_engine

    return get_engine("mxnet").export(trained, tmp_path_factory.mktemp("mxnet-model"))


def test_registry_returns_the_mxnet_engine_on_the_cpu_here():
    assert get_engine("mxnet") is ENGINE and ENGINE.name == "mxnet"
    expected = mx.gpu(0) if mx.context.num_gpus() > 0 else mx.cpu()
    assert resolve_context("auto") == expected
    if mx.context.num_gpus() == 0:
        with pytest.raises(ValueError, match="mxnet-cu112"):
            resolve_context("gpu")


def test_a_few_steps_beat_chance_on_held_out_windows(trained, canvas_set):
    assert trained.history and trained.history[-1]["step"] == SMALL["steps"]
    assert trained.history[-1]["loss"] < trained.history[0]["loss"]
    # Windows from the held-out bottom band of every canvas, drawn independently of training.
    sampler = WindowSampler(canvas_set, CLASSES, 32, 8, 0.1, seed=0)
    images, labels = sampler.sample(400, np.random.default_rng(123), "val")
    accuracy = float((trained.model.predict(images).argmax(1) == labels).mean())
    assert accuracy > 0.8, f"held-out accuracy {accuracy:.2f} (chance is {1 / len(CLASSES):.2f})"
    assert trained.val_accuracy is not None and trained.val_accuracy > 0.8


def test_progress_reports_every_log_interval(canvas_set):
    calls = []
    config = dict(SMALL, steps=4, log_every=2, width=4)
    ENGINE.train(canvas_set, CLASSES, config, progress=lambda *a: calls.append(a))
    assert [c[:2] for c in calls] == [(2, 4), (4, 4)]
    assert all(c[2].startswith("loss ") for c in calls)


def test_export_writes_symbol_params_meta_and_onnx(exported):
    names = sorted(p.name for p in exported.files)
    assert names == ["model-0000.params", "model-meta.json", "model-symbol.json", "model.onnx"]
    meta = json.loads(next(p for p in exported.files if p.name == "model-meta.json").read_text())
    assert meta["classes"] == CLASSES and meta["window"] == 32 and meta["engine"] == "mxnet"
    assert meta["input"]["format"] == "uint8-nhwc" and meta["output"] == "probs"
    assert len(meta["mean"]) == 3 and len(meta["std"]) == 3
    assert exported.scoring.name == "model.onnx"


def test_score_scene_equals_the_models_own_forward_pass_per_window(trained, exported):
    rng = np.random.default_rng(5)
    # A small scene: three class-tinted bands, sizes not multiples of the step (edge clamping).
    scene = np.concatenate([synthetic_canvas(c, rng, size=(30, 90)) for c in CLASSES])
    scorer = load_scorer(exported.files[0])  # model-symbol.json -> MXNet engine via registry
    assert isinstance(scorer, MxnetScorer)
    assert scorer.classes == CLASSES and scorer.window == 32
    grid = score_scene(scorer, ArrayScene(scene), step=16, batch_size=7)
    assert grid.probs.shape == (len(grid.ys), len(grid.xs), 3)
    assert grid.ys[-1] == scene.shape[0] - 32 and grid.xs[-1] == scene.shape[1] - 32
    for i, y in enumerate(grid.ys):
        for j, x in enumerate(grid.xs):
            own = trained.model.predict(scene[None, y : y + 32, x : x + 32])[0]
            np.testing.assert_allclose(grid.probs[i, j], own, atol=1e-5)
    np.testing.assert_allclose(grid.probs.sum(-1), 1.0, atol=1e-5)


def test_onnx_export_gives_the_same_probs_in_onnxruntime(trained, exported):
    pytest.importorskip("onnxruntime")
    from mlcore.inference.scoring import OnnxScorer

    scorer = OnnxScorer(exported.scoring)
    assert scorer.classes == CLASSES and scorer.window == 32
    assert scorer.metadata["engine"] == "mxnet"
    images = np.random.default_rng(2).integers(0, 256, (37, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(scorer.predict(images), trained.model.predict(images), atol=1e-5)


def test_our_export_without_its_meta_file_imports_with_user_classes(trained, exported, tmp_path):
    for p in exported.files:
        if p.name in ("model-symbol.json", "model-0000.params"):
            shutil.copy(p, tmp_path / p.name.replace("model", "upload"))
    with pytest.raises(MxnetModelError, match="give the classes"):
        MxnetScorer(tmp_path / "upload-symbol.json")
    with pytest.raises(MxnetModelError, match="outputs .*3.* but 2 classes"):
        MxnetScorer(tmp_path / "upload-symbol.json", classes=["car", "boat"])
    scorer = MxnetScorer(
        tmp_path / "upload-symbol.json", tmp_path / "upload-0000.params", classes=CLASSES
    )
    images = np.random.default_rng(3).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(scorer.predict(images), trained.model.predict(images), atol=1e-6)


def test_a_foreign_float_nchw_gluon_model_imports(tmp_path):
    """A user's ordinary Gluon classifier: float NCHW input, logits output, other names."""
    from mxnet.gluon import nn

    mx.random.seed(0)
    net = nn.HybridSequential(prefix="usernet_")
    with net.name_scope():
        net.add(nn.Conv2D(6, 3, padding=1, activation="relu"), nn.GlobalAvgPool2D(), nn.Dense(2))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    net.export(str(tmp_path / "ships"), epoch=7)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    scorer = MxnetScorer(
        tmp_path / "ships-symbol.json",
        classes=["ship", "plane"],
        input_format="float-nchw",
        mean=mean,
        std=std,
    )
    images = np.random.default_rng(4).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    x = (images / 255.0 - np.array(mean)) / np.array(std)
    logits = net(mx.nd.array(x.transpose(0, 3, 1, 2))).asnumpy()
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # "auto": logits -> softmax
    np.testing.assert_allclose(scorer.predict(images), expected, atol=1e-5)


def test_corrupt_params_file_gives_a_clear_error_naming_it(exported, tmp_path):
    for p in exported.files:
        if p.name != "model.onnx":
            shutil.copy(p, tmp_path / p.name)
    params = tmp_path / "model-0000.params"
    data = params.read_bytes()
    params.write_bytes(data[: len(data) // 2])  # an interrupted upload
    with pytest.raises(MxnetModelError, match="not a readable MXNet parameter file") as info:
        MxnetScorer(tmp_path / "model-symbol.json")
    assert str(params) in str(info.value)
    params.write_bytes(b"this is a JPEG, honest" * 10)
    with pytest.raises(MxnetModelError, match=str(params)):
        MxnetScorer(tmp_path / "model-symbol.json")


def test_params_of_another_model_give_a_clear_mismatch_error(canvas_set, exported, tmp_path):
    other = ENGINE.train(canvas_set, CLASSES, dict(SMALL, steps=1, width=4))
    other_files = ENGINE.export(other, tmp_path / "other", onnx=False)
    with pytest.raises(MxnetModelError, match="does not match symbol .*shape") as info:
        MxnetScorer(exported.files[0], params_path=other_files.checkpoint)
    assert str(other_files.checkpoint) in str(info.value)


def test_fine_tune_from_an_export_with_a_new_class_list(canvas_set, exported):
    from mlcore.data.canvases import Canvas, CanvasSet

    classes = [*CLASSES, "grey"]
    rng = np.random.default_rng(9)
    grey = rng.integers(100, 140, (160, 192, 3)).astype(np.uint8)
    bigger = CanvasSet(classes, [*canvas_set.canvases, Canvas("grey", grey)])
    result = ENGINE.train(bigger, classes, dict(SMALL, steps=2), init_from=exported.files[0])
    assert result.model.predict(grey[None, :32, :32]).shape == (1, 4)


def test_spark_scores_an_mxnet_model_with_mxnet_on_the_executors(exported, tmp_path):
    """The driver ships symbol + params + meta as one bundle; executors score with MXNet (no
    onnxruntime needed) and the grid equals single-process scoring. Also from a storage key."""
    import io

    from mlcore.ingest.scenes import NpyScene
    from mlcore.storage import storage_from_url
    from workers.spark_score import get_spark, score_scene_on_spark, stop_spark

    rng = np.random.default_rng(9)
    pixels = np.concatenate([synthetic_canvas(c, rng, size=(40, 100)) for c in CLASSES])
    store = storage_from_url(str(tmp_path / "store"), create=True)
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    store.write("scenes/s.npy", buffer.getvalue())
    for path in exported.files:
        if path.suffix != ".onnx":
            store.write(f"models/v1/{path.name}", path.read_bytes())
    symbol = next(p for p in exported.files if p.name.endswith("-symbol.json"))
    expected = score_scene(load_scorer(symbol), NpyScene(store, "scenes/s.npy"), 16)

    spark = get_spark("local[2]", conf={"spark.ui.enabled": "false"})
    try:
        for model in (str(symbol), "models/v1/model-symbol.json"):
            grid, info = score_scene_on_spark(
                store.root_url, "scenes/s.npy", model, 16, master="local[2]", partitions=3
            )
            np.testing.assert_allclose(grid.probs, expected.probs, atol=1e-6)
            assert info.n_partitions == 3
    finally:
        stop_spark(spark)
