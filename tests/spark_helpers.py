"""Helpers for the Spark scoring tests: a tiny ONNX window classifier and a scene in storage."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np


def tiny_onnx_model(path: Path, classes=("negative", "car", "boat"), window: int = 32, seed=0):
    """An ONNX model in the project's format (uint8 NHWC ``images`` -> float32 ``probs``),
    built directly with onnx.helper: Cast, Transpose, strided Conv, Relu, mean pool, Gemm,
    Softmax. Random weights, so every window position gives different probabilities."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    n_classes = len(classes)
    conv_w = rng.normal(0, 0.05, (8, 3, 4, 4)).astype(np.float32)
    conv_b = rng.normal(0, 0.1, 8).astype(np.float32)
    fc_w = rng.normal(0, 0.5, (8, n_classes)).astype(np.float32)
    fc_b = rng.normal(0, 0.1, n_classes).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w", "conv_b"], ["c"], strides=[4, 4]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    initializers = {"conv_w": conv_w, "conv_b": conv_b, "fc_w": fc_w, "fc_b": fc_b}
    return save_window_model(
        path,
        nodes,
        initializers,
        classes,
        window,
        "tiny_window_classifier",
        "onnx.helper test model",
    )


def save_window_model(path: Path, nodes, initializers: dict, classes, window: int, name, engine):
    """Write ``nodes`` as an ONNX model in the project's format: uint8 NHWC ``images`` ->
    float32 ``probs``, with the class list, window and normalisation as metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", window, window, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(classes)])],
        [numpy_helper.from_array(value, key) for key, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for key, value in {
        "classes": json.dumps(list(classes)),
        "window": str(window),
        "mean": "[0, 0, 0]",
        "std": "[1, 1, 1]",
        "engine": engine,
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def put_scene(storage, key: str, height: int, width: int, seed: int = 1) -> np.ndarray:
    """Write a random uint8 (H, W, 3) scene as .npy into ``storage``; return the pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    storage.write(key, buffer.getvalue())
    return pixels


LOCAL_MASTER = "local[2]"


def local_spark_session():
    """A Spark session in local mode on two cores, without its web UI, bound to loopback: what
    the Spark scoring tests run on (one per test module, stopped after it)."""
    from workers.spark_score import get_spark

    conf = {"spark.ui.enabled": "false", "spark.driver.host": "127.0.0.1"}
    return get_spark(LOCAL_MASTER, conf=conf)


def stop_running_spark() -> None:
    """One SparkContext per process: a local one left by an earlier test must go first."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    running = SparkContext._active_spark_context
    if running is not None:
        from workers.spark_score import stop_spark

        stop_spark(SparkSession(running))
