"""Training engines, looked up by name and imported on demand.

An engine module defines ``ENGINE``, an object with:

- ``name`` (str);
- ``train(canvas_set, classes, config, progress=None, init_from=None) -> result`` where ``config``
  is a dict (or the engine's own config object) and ``init_from`` a previous model file or None;
- ``export(result, directory) -> ExportedModel`` writing the model files into ``directory``;
- ``load_scorer(path) -> Scorer`` (``.classes``, ``.window``, ``.predict(uint8 NHWC)``).

Engines are imported only when asked for, so a machine without MXNet (or without PyTorch, like a
Spark executor that only scores ONNX) never breaks on an engine it does not use.
``SCORER_PATTERNS`` maps model-file name patterns to the engine that can score them; scoring's
``load_scorer`` consults it for files that are not ONNX (e.g. MXNet's ``*-symbol.json``).
"""

from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass, field
from pathlib import Path

ENGINE_MODULES: dict[str, str] = {
    "torch": "mlcore.engines.torch_engine",
    "mxnet": "mlcore.engines.mxnet_engine",
}

# (file-name glob, engine name); ONNX files are scored by mlcore.inference.scoring directly.
SCORER_PATTERNS: list[tuple[str, str]] = [
    ("*-symbol.json", "mxnet"),
    ("*.params", "mxnet"),
]

_loaded: dict[str, object] = {}


@dataclass
class ExportedModel:
    """What ``Engine.export`` wrote: ``scoring`` is the file a scorer loads; ``files`` all files."""

    scoring: Path
    checkpoint: Path | None = None
    files: list[Path] = field(default_factory=list)
    engine: str = ""


def register_engine(name: str, module: str) -> None:
    """Add (or replace) an engine: ``module`` must define ``ENGINE``; imported on first use."""
    ENGINE_MODULES[name] = module
    _loaded.pop(name, None)


def available_engines() -> list[str]:
    return sorted(ENGINE_MODULES)


def get_engine(name: str = "torch"):
    """The engine called ``name``; a clear error if it is unknown or its framework is missing."""
    if name in _loaded:
        return _loaded[name]
    if name not in ENGINE_MODULES:
        raise ValueError(f"unknown engine {name!r}; available: {available_engines()}")
    try:
        module = importlib.import_module(ENGINE_MODULES[name])
    except ImportError as exc:
        raise RuntimeError(
            f"engine {name!r} cannot be loaded here ({exc}); install its framework "
            f"(see docs/mxnet.md) or pick another engine from {available_engines()}"
        ) from exc
    engine = module.ENGINE
    _loaded[name] = engine
    return engine


def engine_for_model_file(path) -> str | None:
    """Name of the engine whose scorer reads ``path`` (None: not an engine-specific file)."""
    name = Path(path).name
    for pattern, engine in SCORER_PATTERNS:
        if fnmatch.fnmatch(name, pattern):
            return engine
    return None
