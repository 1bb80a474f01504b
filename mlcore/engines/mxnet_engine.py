"""The optional MXNet engine: Gluon training, symbol+params export, MXNet and ONNX scoring.

MXNet 1.9.1 (retired 2023) needs numpy < 1.24, so this module runs only in the separate
``.venv-mxnet`` (``scripts/setup_mxnet.sh``). It imports nothing that needs torch: the model is
:mod:`mlcore.engines.mxnet_model`, windows come from the numpy
:class:`mlcore.data.windows.WindowSampler`.

Training uses a GPU when MXNet was built with CUDA (``mxnet-cu112``) and one is present, else the
CPU. Options are the PyTorch engine's (:class:`mlcore.train.training.TrainConfig`) names, so one
options dict drives either engine; options that only mean something to PyTorch are accepted and
ignored.

Export (``ENGINE.export(result, directory)``) writes ``model-symbol.json`` + ``model-0000.params``
(``HybridBlock.export``), the sidecar ``model-meta.json`` (classes, window, normalisation) and,
when the ``onnx`` package allows it (onnx <= 1.18, see requirements-mxnet.txt), ``model.onnx``
in this project's hand-off format, so scoring workers need no MXNet.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from mlcore.data.windows import WindowSampler
from mlcore.engines import ExportedModel
from mlcore.engines.mxnet_model import CIFAR_MEAN, CIFAR_STD, ProbabilityNet, build_model
from mlcore.model.onnx_file import model_props, save_with_metadata
from mlcore.progress import Progress, report
from mlcore.train.options import TrainOptions

logger = logging.getLogger(__name__)

META_FORMAT = "mlcore-mxnet/1"
MODEL_PREFIX = "model"  # export writes model-symbol.json, model-0000.params, model-meta.json
ONNX_FILE = "model.onnx"
INPUT_FORMATS = ("uint8-nhwc", "float-nchw")
OUTPUT_KINDS = ("probs", "logits", "auto")
# TrainConfig options that only mean something to the PyTorch engine.
TORCH_ONLY_OPTIONS = ("bf16", "channels_last", "compile", "threads")


class MxnetModelError(ValueError):
    """A symbol/params/meta file that cannot be used; the message names the file and the fix."""


@dataclass
class MxnetTrainConfig(TrainOptions):
    """Training options; the names and defaults of :class:`mlcore.train.training.TrainConfig`."""

    IGNORED_OPTIONS = TORCH_ONLY_OPTIONS

    depth: int = 20
    width: int = 16
    window: int = 32
    step: int = 8
    batch_size: int = 128
    steps: int = 2000
    epochs: float | None = None
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) | "adamw"
    lr: float = 0.1
    schedule: str = "onecycle"  # "onecycle" (warm-up then cosine) | "cosine" | "constant"
    warmup_fraction: float = 0.2
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "gpu" | "gpu:N" ("cuda[:N]" accepted)
    hflip: bool = True
    vflip: bool = False
    jitter: int = 4
    brightness: float = 0.1
    contrast: float = 0.1
    val_fraction: float = 0.1
    val_windows: int = 2048
    log_every: int = 10
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass
class MxnetModel:
    """A trained Gluon network with what scoring needs to know about it."""

    net: gluon.HybridBlock  # WindowResNet, logits
    classes: list[str]
    window: int
    ctx: mx.Context = field(default_factory=mx.cpu)

    def __post_init__(self):
        self.probs_net = ProbabilityNet(self.net)
        self.probs_net.hybridize()

    @property
    def normalisation(self) -> dict:
        return self.net.normalisation

    def predict(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Softmax probabilities float32 (B, C) of uint8 (B, window, window, 3) windows."""
        images = _check_windows(images, self.window)
        return _run_batches(self.probs_net, images, batch_size, self.ctx, len(self.classes))


@dataclass
class MxnetTrainResult:
    """Mirror of :class:`mlcore.train.training.TrainResult` for the MXNet engine."""

    model: MxnetModel
    history: list[dict]
    val_accuracy: float | None
    windows_per_s: float
    classes: list[str] = field(default_factory=list)
    config: MxnetTrainConfig = field(default_factory=MxnetTrainConfig)


# -- training ----------------------------------------------------------------------------------


def resolve_context(name: str = "auto") -> mx.Context:
    """``auto``: the first GPU when MXNet has CUDA and sees one, else the CPU."""
    name = name.replace("cuda", "gpu")
    if name == "auto":
        return mx.gpu(0) if mx.context.num_gpus() > 0 else mx.cpu()
    if name == "cpu":
        return mx.cpu()
    if name.startswith("gpu"):
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if mx.context.num_gpus() <= index:
            raise ValueError(
                f"device {name!r} asked for, but MXNet sees {mx.context.num_gpus()} GPU(s) "
                "(the CPU package 'mxnet' has no CUDA; install mxnet-cu112 for a GPU)"
            )
        return mx.gpu(index)
    raise ValueError(f"device must be auto, cpu or gpu[:N], not {name!r}")


def lr_factor(schedule: str, warmup_fraction: float, total: int) -> Callable[[int], float]:
    """Learning-rate multiplier at step ``step`` (0-based); the PyTorch engine's schedule."""
    if schedule not in ("onecycle", "cosine", "constant"):
        raise ValueError(f"schedule must be onecycle, cosine or constant, not {schedule!r}")
    warm = max(1, int(warmup_fraction * total)) if schedule == "onecycle" else 0

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warm:
            return 0.04 + 0.96 * step / warm
        done = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return factor


class JitteredSampler:
    """Draws windows like ``WindowSampler.sample`` plus a random shift of up to ``jitter`` px off
    the step grid, clamped to the window's split region (train and val never share a pixel)."""

    def __init__(self, sampler: WindowSampler, jitter: int = 0):
        self.sampler, self.jitter = sampler, int(jitter)

    def sample(self, batch_size: int, rng: np.random.Generator, split: str = "train"):
        return self.sampler.sample(batch_size, rng, split, self.jitter)


def augment(images: np.ndarray, config: MxnetTrainConfig, rng: np.random.Generator) -> np.ndarray:
    """Flips and brightness/contrast jitter of a uint8 NHWC batch (in place where possible)."""
    n = len(images)
    if config.hflip:
        flip = rng.random(n) < 0.5
        images[flip] = images[flip, :, ::-1]
    if config.vflip:
        flip = rng.random(n) < 0.5
        images[flip] = images[flip, ::-1]
    if config.contrast > 0 or config.brightness > 0:
        u = rng.random((2, n, 1, 1, 1), dtype=np.float32) * 2 - 1
        x = images.astype(np.float32)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * (1 + config.contrast * u[0]) + mean + config.brightness * 255 * u[1]
        images = np.clip(x, 0, 255).round().astype(np.uint8)
    return images


def _smoothed_loss(logits, labels, classes: int, smoothing: float):
    logp = mx.nd.log_softmax(logits, axis=1)
    nll = -mx.nd.pick(logp, labels, axis=1)
    if smoothing <= 0:
        return nll
    return (1 - smoothing) * nll - smoothing * logp.mean(axis=1)


def _trainer(net, config: MxnetTrainConfig) -> gluon.Trainer:
    params = net.collect_params()
    for param in params.values():
        if param.grad_req != "null" and len(param.shape) <= 1:
            param.wd_mult = 0.0  # no weight decay on BatchNorm and biases (as the torch engine)
    if config.optimizer == "sgd":
        opt = mx.optimizer.create(
            "nag", learning_rate=config.lr, momentum=config.momentum, wd=config.weight_decay
        )
    elif config.optimizer == "adamw":
        # MXNet 1.9 has no decoupled AdamW in core; Adam with L2 decay is the closest.
        opt = mx.optimizer.create("adam", learning_rate=config.lr, wd=config.weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', not {config.optimizer!r}")
    return gluon.Trainer(params, opt)


def load_init_params(net, params_path, log: Callable[[str], None]) -> None:
    """Fine-tune start from an exported ``*.params`` (or its prefix / symbol / meta file): copy
    matching weights; a classifier head of another shape (classes changed) stays fresh."""
    paths = resolve_model_files(params_path)
    saved = _load_params_file(paths.params)
    own = net.collect_params()
    head = f"{net.prefix}dense"
    missing = [k for k in own.keys() if k not in saved]
    unexpected = [k for k in saved if k not in own.keys()]
    if unexpected or [k for k in missing if not k.startswith(head)]:
        raise MxnetModelError(
            f"params file {paths.params} does not fit this model (different depth or width?): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    skipped = []
    for name, param in own.items():
        if name not in saved:
            continue
        if tuple(saved[name].shape) != tuple(param.shape):
            skipped.append(name)
            continue
        param.set_data(saved[name])
    if skipped:
        log(f"fine-tune: {skipped} re-initialised (the class list changed)")


def train(
    canvas_set,
    classes: Sequence[str],
    config: MxnetTrainConfig | dict | None = None,
    progress: Progress | None = None,
    init_state=None,
    log: Callable[[str], None] | None = None,
    sampler=None,
) -> MxnetTrainResult:
    """Train a fresh model (or fine-tune from an exported params file ``init_state``).

    ``sampler`` defaults to ``WindowSampler(canvas_set, classes, window, step, val_fraction,
    seed)``; anything with the same ``sample(batch, rng, split)`` (and ``n_windows(split)``) works.
    """
    config = config if isinstance(config, MxnetTrainConfig) else MxnetTrainConfig.from_dict(config)
    classes = list(classes)
    log = log or logger.info
    ctx = resolve_context(config.device)
    mx.random.seed(config.seed)
    rng = np.random.default_rng(config.seed * 1000 + 1)
    if sampler is None:
        sampler = WindowSampler(
            canvas_set, classes, config.window, config.step, config.val_fraction, config.seed
        )
    total = config.total_steps(sampler.n_windows("train"))
    batches = JitteredSampler(sampler, config.jitter) if hasattr(sampler, "tables") else sampler

    norm = {
        "mean": config.mean if config.mean is not None else CIFAR_MEAN,
        "std": config.std if config.std is not None else CIFAR_STD,
    }
    net = build_model(len(classes), config.depth, config.width, **norm)
    net.initialize(ctx=ctx)
    if init_state is not None:
        load_init_params(net, init_state, log)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = _trainer(net, config)
    factor = lr_factor(config.schedule, config.warmup_fraction, total)

    history: list[dict] = []
    running, since_log = 0.0, 0
    started = timed_from = time.perf_counter()
    log(f"training {config.depth}-layer ResNet (MXNet) on {ctx} for {total} steps")
    for step in range(1, total + 1):
        images, labels = batches.sample(config.batch_size, rng, "train")
        images = augment(images, config, rng)
        x = mx.nd.array(images, ctx=ctx, dtype="uint8")
        y = mx.nd.array(labels, ctx=ctx, dtype="float32")
        lr = config.lr * factor(step - 1)
        trainer.set_learning_rate(lr)
        with autograd.record():
            loss = _smoothed_loss(net(x), y, len(classes), config.label_smoothing)
        loss.backward()
        trainer.step(config.batch_size)
        # One host sync per step keeps MXNet's async engine from queueing unbounded work and
        # makes the progress timing honest.
        running += float(loss.mean().asscalar())
        since_log += 1
        if step == 1:
            timed_from = time.perf_counter()  # the first step pays for graph building
        if step % config.log_every == 0 or step == total:
            value = running / since_log
            history.append({"step": step, "loss": value, "lr": lr})
            running, since_log = 0.0, 0
            report(progress, step, total, f"loss {value:.4f}")
    mx.nd.waitall()
    elapsed = time.perf_counter() - timed_from
    windows_per_s = (total - 1) * config.batch_size / elapsed if total > 1 and elapsed > 0 else 0.0

    model = MxnetModel(net, classes, config.window, ctx)
    val_accuracy = None
    if sampler.n_windows("val") > 0 and config.val_windows > 0:
        val_rng = np.random.default_rng(config.seed + 7919)  # the torch engine's validation draw
        val_x, val_y = sampler.sample(config.val_windows, val_rng, "val")
        val_accuracy = float((model.predict(val_x).argmax(1) == val_y).mean())
    log(
        f"trained in {time.perf_counter() - started:.1f}s, {windows_per_s:.0f} windows/s, "
        f"val accuracy {val_accuracy}"
    )
    return MxnetTrainResult(model, history, val_accuracy, windows_per_s, classes, config)


# -- export ------------------------------------------------------------------------------------


@dataclass
class ModelFiles:
    symbol: Path
    params: Path
    meta: Path | None


def export_model(
    model: MxnetModel, directory, meta: dict | None = None, prefix: str = MODEL_PREFIX
) -> ModelFiles:
    """Write ``<prefix>-symbol.json``, ``<prefix>-0000.params`` and ``<prefix>-meta.json`` into
    ``directory``. Files are written to a temporary folder and renamed, meta last: a reader that
    finds the meta file finds a complete model."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = ModelFiles(
        directory / f"{prefix}-symbol.json",
        directory / f"{prefix}-0000.params",
        directory / f"{prefix}-meta.json",
    )
    info = {
        "format": META_FORMAT,
        "engine": "mxnet",
        "classes": list(model.classes),
        "window": int(model.window),
        **model.normalisation,
        "input": {"name": "data", "format": "uint8-nhwc"},
        "output": "probs",
        "depth": model.net.depth,
        "width": model.net.width,
        "mxnet_version": mx.__version__,
    }
    for key, value in (meta or {}).items():
        info.setdefault(str(key), value)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".export-") as tmp:
        net = ProbabilityNet(model.net)
        net.hybridize()
        net(mx.nd.zeros((1, model.window, model.window, 3), ctx=model.ctx, dtype="uint8"))
        net.export(str(Path(tmp) / prefix), epoch=0)
        os.replace(Path(tmp) / files.symbol.name, files.symbol)
        os.replace(Path(tmp) / files.params.name, files.params)
        (Path(tmp) / files.meta.name).write_text(json.dumps(info, indent=2))
        os.replace(Path(tmp) / files.meta.name, files.meta)
    return files


def export_onnx(files: ModelFiles, path, extra_meta: dict | None = None) -> Path:
    """Convert an exported symbol+params (with meta) to the project's ONNX hand-off file.

    Uses MXNet's own exporter (``mx.onnx.export_model``), which imports ``onnx.mapping``: that
    module is gone from onnx >= 1.19, so this needs onnx <= 1.18 (requirements-mxnet.txt).
    The input is renamed ``images``, the output ``probs``, and the metadata the scorer reads is
    added, so :class:`mlcore.inference.scoring.OnnxScorer` loads it like a PyTorch export.
    """
    try:
        import onnx
        from onnx import mapping  # noqa: F401  (what the MXNet exporter needs)
    except ImportError as exc:
        raise RuntimeError(
            f"ONNX export from MXNet needs the onnx package at version <= 1.18 ({exc}); "
            "install requirements-mxnet.txt in this virtualenv"
        ) from exc
    meta = json.loads(Path(files.meta).read_text())
    window = int(meta["window"])
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            # The retired exporter uses onnx.mapping, deprecated since onnx 1.13: say it once
            # in requirements-mxnet.txt rather than 50 times per export.
            warnings.simplefilter("ignore", DeprecationWarning)
            mx.onnx.export_model(
                str(files.symbol),
                str(files.params),
                in_shapes=[(1, window, window, 3)],
                in_types=[np.uint8],
                onnx_file_path=str(tmp),
                dynamic=True,
                dynamic_input_shapes=[(None, window, window, 3)],
            )
        proto = onnx.load(str(tmp))
        _rename_io(proto, "images", "probs")
        props = model_props(meta["classes"], window, meta["mean"], meta["std"], "mxnet", extra_meta)
        save_with_metadata(proto, props, tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _rename_io(proto, input_name: str, output_name: str) -> None:
    graph = proto.graph
    renames = {graph.input[0].name: input_name, graph.output[0].name: output_name}
    for value in list(graph.input) + list(graph.output):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
    # MXNet lists every weight as a graph input too (an old-opset habit): ONNX Runtime then cannot
    # constant-fold them. Keep only the image input, and drop initializers no node reads.
    weights = {t.name for t in graph.initializer}
    images = [v for v in graph.input if v.name not in weights]
    del graph.input[:]
    graph.input.extend(images)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


# -- scoring and import ------------------------------------------------------------------------


def resolve_model_files(path, params_path=None) -> ModelFiles:
    """Find symbol, params and (optional) meta from any one of them, their prefix or a folder.

    ``path``: ``x-symbol.json``, ``x-0000.params``, ``x-meta.json``, the prefix ``x``, or a
    folder holding exactly one ``*-symbol.json``. ``params_path`` overrides the params found.
    """
    path = Path(path)
    if path.is_dir():
        symbols = sorted(path.glob("*-symbol.json"))
        if len(symbols) != 1:
            raise MxnetModelError(
                f"folder {path} holds {len(symbols)} *-symbol.json files; name one of them"
            )
        path = symbols[0]
    name = path.name
    if name.endswith("-symbol.json"):
        prefix = name[: -len("-symbol.json")]
    elif name.endswith("-meta.json"):
        prefix = name[: -len("-meta.json")]
    elif name.endswith(".params"):
        prefix = name[: -len(".params")].rsplit("-", 1)[0]
    else:
        prefix = name
    folder = path.parent
    symbol = folder / f"{prefix}-symbol.json"
    if params_path is not None:
        params = Path(params_path)
    elif name.endswith(".params"):
        params = path
    else:
        found = sorted(folder.glob(f"{prefix}-*.params"))
        if not found:
            raise MxnetModelError(
                f"no params file {prefix}-NNNN.params beside {symbol}; upload the .params file "
                "that was exported with this symbol"
            )
        params = found[-1]  # the latest epoch
    meta = folder / f"{prefix}-meta.json"
    return ModelFiles(symbol, params, meta if meta.is_file() else None)


def _load_params_file(params_path) -> dict:
    """name -> NDArray, ``arg:``/``aux:`` prefixes stripped; clear errors for bad files."""
    params_path = Path(params_path)
    if not params_path.is_file():
        raise MxnetModelError(f"params file {params_path} does not exist")
    try:
        loaded = mx.nd.load(str(params_path))
    except Exception as exc:  # MXNetError for truncated or foreign files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MxnetModelError(
            f"params file {params_path} is not a readable MXNet parameter file (corrupt, "
            f"truncated or another format): {detail}; export it again with "
            "HybridBlock.export or upload the original file"
        ) from exc
    if not isinstance(loaded, dict):
        raise MxnetModelError(
            f"params file {params_path} holds an unnamed list of arrays, not named parameters; "
            "export it with HybridBlock.export (or save_parameters)"
        )
    return {k.split(":", 1)[1] if k[:4] in ("arg:", "aux:") else k: v for k, v in loaded.items()}


class MxnetScorer:
    """Scores windows with an MXNet symbol+params pair (the Scorer contract of
    mlcore.inference.scoring).

    Our own exports carry ``<prefix>-meta.json`` (classes, window, input format). For a model
    exported elsewhere, give ``classes`` (and ``window`` if not 32); ``input_format`` says what
    the network takes: ``uint8-nhwc`` (this project's convention) or ``float-nchw`` (a usual Gluon
    model: scaled to [0, 1] and normalised with ``mean``/``std`` here); ``outputs`` is ``probs``,
    ``logits`` (softmax applied here) or ``auto`` (softmax unless rows already sum to 1).
    Every mismatch between symbol, params and classes is reported at load time, naming the file.
    """

    def __init__(
        self,
        symbol_path,
        params_path=None,
        classes: Sequence[str] | None = None,
        window: int | None = None,
        input_format: str | None = None,
        outputs: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        ctx: mx.Context | None = None,
        batch_size: int = 512,
    ):
        files = resolve_model_files(symbol_path, params_path)
        self.files = files
        meta = self._read_meta(files.meta) if files.meta else {}
        self.classes = list(classes) if classes is not None else meta.get("classes")
        if not self.classes:
            raise MxnetModelError(
                f"no class names for {files.symbol}: there is no {files.symbol.name[:-12]}"
                "-meta.json beside it, so give the classes (in the model's output order)"
            )
        self.window = int(window or meta.get("window") or 32)
        self.input_format = input_format or meta.get("input", {}).get("format") or "uint8-nhwc"
        self.outputs = outputs or meta.get("output") or "auto"
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, not {input_format!r}")
        if self.outputs not in OUTPUT_KINDS:
            raise ValueError(f"outputs must be one of {OUTPUT_KINDS}, not {outputs!r}")
        self.mean = np.array(mean if mean is not None else meta.get("mean", (0, 0, 0)), np.float32)
        self.std = np.array(std if std is not None else meta.get("std", (1, 1, 1)), np.float32)
        self.engine = "mxnet"
        self.batch_size = int(batch_size)
        self.ctx = ctx or resolve_context("auto")
        self.block = self._load_block()
        probe = self._forward(np.zeros((1, self.window, self.window, 3), np.uint8))
        if probe.shape != (1, len(self.classes)):
            raise MxnetModelError(
                f"model {files.symbol} outputs {probe.shape[1:]} scores per window but "
                f"{len(self.classes)} classes were given ({self.classes}); give the class "
                "names in the model's output order"
            )

    @staticmethod
    def _read_meta(path: Path) -> dict:
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise MxnetModelError(f"meta file {path} is not valid JSON: {exc}") from exc
        if not isinstance(meta, dict) or not isinstance(meta.get("classes"), list):
            raise MxnetModelError(f"meta file {path} has no 'classes' list")
        return meta

    def _input_shape(self) -> tuple[int, ...]:
        w = self.window
        return (1, w, w, 3) if self.input_format == "uint8-nhwc" else (1, 3, w, w)

    def _load_block(self) -> gluon.SymbolBlock:
        files = self.files
        if not files.symbol.is_file():
            raise MxnetModelError(f"symbol file {files.symbol} does not exist")
        try:
            symbol = mx.sym.load(str(files.symbol))
        except Exception as exc:
            raise MxnetModelError(
                f"symbol file {files.symbol} is not an MXNet symbol JSON: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
            ) from exc
        saved = _load_params_file(files.params)
        names = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
        inputs = [n for n in symbol.list_inputs() if n not in saved]
        if len(inputs) != 1:
            raise MxnetModelError(
                f"params file {files.params} does not match symbol {files.symbol}: after "
                f"taking the saved parameters, the network still needs {inputs[:8]} "
                "(expected exactly one image input); are these two files from the same model?"
            )
        data_name = inputs[0]
        unexpected = sorted(set(saved) - names)
        if unexpected:
            raise MxnetModelError(
                f"params file {files.params} does not match symbol {files.symbol}: it holds "
                f"{len(unexpected)} parameter(s) the symbol does not use, e.g. {unexpected[:5]}"
            )
        try:
            arg_shapes, _, aux_shapes = symbol.infer_shape(**{data_name: self._input_shape()})
        except Exception as exc:
            raise MxnetModelError(
                f"symbol {files.symbol} cannot take {self.window}x{self.window} windows as "
                f"{self.input_format}: {str(exc).strip().splitlines()[0]}; check window and "
                "input_format"
            ) from exc
        wanted = dict(zip(symbol.list_arguments(), arg_shapes))
        wanted.update(zip(symbol.list_auxiliary_states(), aux_shapes))
        wrong = [
            f"{name}: file {tuple(saved[name].shape)}, symbol {tuple(shape)}"
            for name, shape in wanted.items()
            if name in saved and tuple(saved[name].shape) != tuple(shape)
        ]
        if wrong:
            raise MxnetModelError(
                f"params file {files.params} does not match symbol {files.symbol}: "
                f"{len(wrong)} parameter shape(s) differ ({'; '.join(wrong[:3])})"
            )
        dtype = "uint8" if self.input_format == "uint8-nhwc" else "float32"
        block = gluon.SymbolBlock(symbol, mx.sym.var(data_name, dtype=dtype))
        block.collect_params().load(
            str(files.params), ctx=self.ctx, cast_dtype=True, dtype_source="saved"
        )
        block.hybridize(static_alloc=True)
        return block

    def _forward(self, images: np.ndarray) -> np.ndarray:
        if self.input_format == "float-nchw":
            x = (images.astype(np.float32) / 255.0 - self.mean) / self.std
            data = mx.nd.array(x.transpose(0, 3, 1, 2), ctx=self.ctx, dtype="float32")
        else:
            data = mx.nd.array(images, ctx=self.ctx, dtype="uint8")
        out = self.block(data)
        if isinstance(out, (list, tuple)):
            out = out[0]
        scores = out.asnumpy().astype(np.float32).reshape(len(images), -1)
        if self.outputs == "logits" or (self.outputs == "auto" and not _looks_like_probs(scores)):
            scores = _softmax(scores)
        return scores

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities float32 (B, C) for uint8 (B, window, window, 3) windows."""
        images = _check_windows(images, self.window)
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        parts = [
            self._forward(np.ascontiguousarray(images[i : i + self.batch_size]))
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(parts)


def _looks_like_probs(scores: np.ndarray) -> bool:
    return bool(
        scores.min() >= 0 and scores.max() <= 1 and np.allclose(scores.sum(1), 1, atol=1e-3)
    )


def _softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _check_windows(images: np.ndarray, window: int) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (window, window, 3):
        raise ValueError(
            f"expected uint8 windows of shape (B, {window}, {window}, 3), got {images.shape}"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 windows, got dtype {images.dtype}")
    return images


def _run_batches(block, images: np.ndarray, batch_size: int, ctx, n_classes: int) -> np.ndarray:
    if len(images) == 0:
        return np.zeros((0, n_classes), np.float32)
    parts = []
    for i in range(0, len(images), batch_size):
        x = mx.nd.array(np.ascontiguousarray(images[i : i + batch_size]), ctx=ctx, dtype="uint8")
        parts.append(block(x).asnumpy().astype(np.float32))
    return np.concatenate(parts)


# -- the engine --------------------------------------------------------------------------------


class MxnetEngine:
    """``mlcore.engines`` interface: ``get_engine("mxnet")`` returns :data:`ENGINE`."""

    name = "mxnet"

    def train(self, canvas_set, classes, config=None, progress=None, init_from=None):
        """Train (or fine-tune from a previous MXNet export ``init_from``: folder, prefix or
        any of its files)."""
        return train(canvas_set, classes, config, progress=progress, init_state=init_from)

    def export(self, result, directory, meta: dict | None = None, onnx: bool = True):
        """Write model-symbol.json, model-0000.params, model-meta.json and (``onnx=True``)
        model.onnx. ``scoring`` is the ONNX file when written (scorable without MXNet), else
        the symbol file."""
        info = {"val_accuracy": result.val_accuracy, "depth": result.config.depth}
        info.update(meta or {})
        files = export_model(result.model, directory, info)
        written = [files.symbol, files.params, files.meta]
        scoring = files.symbol
        if onnx:
            scoring = export_onnx(files, Path(directory) / ONNX_FILE, info)
            written.append(scoring)
        return ExportedModel(scoring, files.params, written, self.name)

    def load_scorer(self, path, **kwargs) -> MxnetScorer:
        """``path``: a symbol/params/meta file, their prefix or a folder; ``kwargs`` as for
        :class:`MxnetScorer` (classes etc. for models exported elsewhere)."""
        return MxnetScorer(path, **kwargs)


ENGINE = MxnetEngine()
