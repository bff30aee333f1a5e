"""Tiny seeded source models for the converter tests, built once per test session.

Every builder is cached (``functools.cache``) and writes into one session folder, so the test
modules share the files without a conftest. Models are small enough that a conversion takes
well under a second.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

HWC = (8, 8, 3)  # NHWC image models (Keras / SavedModel)
CHW = (3, 8, 8)  # NCHW image models (ONNX, PyTorch style)
CLASSES = 5
N_CALIB = 16
N_VAL = 8


@functools.cache
def root() -> Path:
    d = Path(tempfile.mkdtemp(prefix="edgeopt-convtest-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def images(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """``n`` seeded samples in [0, 1] with the batch dim 1 folded in: shape ``(n, *shape)``."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *shape)).astype(np.float32)


def write_npz(name: str, arrays: dict[str, np.ndarray]) -> Path:
    path = root() / name
    np.savez(path, **arrays)
    return path


@functools.cache
def keras_model():  # noqa: ANN201 - keras type
    """Conv -> ReLU -> GAP -> Dense(5) -> softmax; every op int8-able on all three targets."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input(HWC, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    out = keras.layers.Dense(CLASSES, activation="softmax", name="probs")(x)
    return keras.Model(inp, out)


@functools.cache
def keras_file() -> Path:
    path = root() / "tiny.keras"
    keras_model().save(path)
    return path


@functools.cache
def h5_file() -> Path:
    path = root() / "tiny.h5"
    keras_model().save(path)
    return path


@functools.cache
def savedmodel_dir() -> Path:
    """``model.export``: a SavedModel whose serving_default returns ``output_0``."""
    import contextlib
    import io

    path = root() / "tiny_savedmodel"
    with contextlib.redirect_stdout(io.StringIO()):
        keras_model().export(str(path))
    return path


@functools.cache
def mlp_keras_file() -> Path:
    """Dense 64x64: big enough (>= 1024 weights) for TFLite dynamic-range quantization."""
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((64,), name="features")
    x = keras.layers.Dense(64, activation="relu", name="hidden")(inp)
    out = keras.layers.Dense(CLASSES, name="logits")(x)
    path = root() / "mlp.keras"
    keras.Model(inp, out).save(path)
    return path


@functools.cache
def multi_io_keras_file() -> Path:
    """Two named inputs, two named outputs (different activations)."""
    import keras

    keras.utils.set_random_seed(2)
    a, b = keras.Input((8,), name="a"), keras.Input((4,), name="b")
    x = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu")(a), b])
    one = keras.layers.Dense(3, name="head_one")(x)
    two = keras.layers.Dense(2, activation="sigmoid", name="head_two")(x)
    path = root() / "multi_io.keras"
    keras.Model([a, b], [one, two]).save(path)
    return path


@functools.cache
def lambda_keras_file() -> Path:
    import keras

    inp = keras.Input((4,), name="x")
    out = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    path = root() / "lambda.keras"
    keras.Model(inp, out).save(path)
    return path


@functools.cache
def custom_layer_keras_file() -> Path:
    import keras

    @keras.saving.register_keras_serializable(package="edgeopt_test")
    class AddOne(keras.layers.Layer):
        def call(self, x):  # noqa: ANN001, ANN201
            return x + 1.0

    inp = keras.Input((4,), name="x")
    path = root() / "custom.keras"
    keras.Model(inp, AddOne(name="add_one")(inp)).save(path)
    # Forget the registration, as a fresh process that lacks the class would.
    keras.saving.get_custom_objects().pop("edgeopt_test>AddOne", None)
    return path


@functools.cache
def cos_savedmodel_dir() -> Path:
    """A SavedModel with COS, an op TFLite has no int8 kernel for."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    mod = tf.Module()
    mod.w = tf.Variable(rng.standard_normal((4, 4)).astype(np.float32))
    mod.f = tf.function(
        lambda x: {"y": tf.math.cos(tf.matmul(x, mod.w))},
        input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")],
    )
    path = root() / "cos_savedmodel"
    tf.saved_model.save(mod, str(path), signatures={"serving_default": mod.f})
    return path


def _onnx_graph(opset: int, batch: int | str, initializers_as_inputs: bool):  # noqa: ANN202
    """PyTorch-style NCHW graph: Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "conv1.weight"
        ),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "conv1.bias"),
        numpy_helper.from_array(
            (rng.standard_normal((CLASSES, 8)) * 0.5).astype(np.float32), "fc.weight"
        ),
        numpy_helper.from_array((rng.standard_normal(CLASSES) * 0.1).astype(np.float32), "fc.bias"),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], name="/conv1/Conv",
            pads=[1, 1, 1, 1], kernel_shape=[3, 3],
        ),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu/Relu"),
        helper.make_node("GlobalAveragePool", ["r1"], ["p1"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p1"], ["f1"], name="/Flatten", axis=1),
        helper.make_node(
            "Gemm", ["f1", "fc.weight", "fc.bias"], ["output"], name="/fc/Gemm", transB=1
        ),
    ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *CHW])]
    if initializers_as_inputs:
        inputs += [
            helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims)) for i in inits
        ]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, CLASSES])]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3 if opset <= 9 else 8
    onnx.checker.check_model(model)
    return model


@functools.cache
def onnx_dynamic_file() -> Path:
    """Opset 17 with a symbolic batch axis named like torch.onnx.export's dynamic_axes."""
    import onnx

    path = root() / "tiny_dynamic.onnx"
    onnx.save(_onnx_graph(17, "batch_size", False), str(path))
    return path


@functools.cache
def onnx_opset9_file() -> Path:
    """Opset 9, IR 3: every initializer is also listed as a graph input (old exporters)."""
    import onnx

    path = root() / "tiny_opset9.onnx"
    onnx.save(_onnx_graph(9, 1, True), str(path))
    return path


@functools.cache
def calib_npz(layout: str = "hwc", name: str | None = None) -> Path:
    """Calibration data keyed by the model's input name."""
    shape = HWC if layout == "hwc" else CHW
    key = name or ("image" if layout == "hwc" else "input")
    return write_npz(f"calib_{layout}_{key}.npz", {key: images(shape, N_CALIB, seed=11)})


@functools.cache
def val_npz(layout: str = "hwc", name: str | None = None) -> Path:
    shape = HWC if layout == "hwc" else CHW
    key = name or ("image" if layout == "hwc" else "input")
    return write_npz(f"val_{layout}_{key}.npz", {key: images(shape, N_VAL, seed=12)})


SOURCES = {
    "keras": keras_file,
    "h5": h5_file,
    "savedmodel": savedmodel_dir,
    "onnx-dynamic": onnx_dynamic_file,
    "onnx-opset9": onnx_opset9_file,
}


# ------------------------------------------------------------- inspecting produced files


def tflite_ops(path: Path) -> list[dict[str, Any]]:
    """Per op of the primary subgraph: name, input / output dtype names, scale counts."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    det = {d["index"]: d for d in interp.get_tensor_details()}
    ops = []
    for op in interp._get_ops_details():  # noqa: SLF001
        ops.append({
            "op": op["op_name"],
            "in": [np.dtype(det[i]["dtype"]).name for i in op["inputs"] if i >= 0],
            "out": [np.dtype(det[i]["dtype"]).name for i in op["outputs"]],
            "in_scales": [len(det[i]["quantization_parameters"]["scales"])
                          for i in op["inputs"] if i >= 0],
        })
    return ops


def onnx_summary(path: Path) -> dict[str, Any]:
    """Op counts, activation zero-point dtypes, weight dtypes / scale counts, and for every
    Conv / MatMul / Gemm whether both its data and weight inputs come from DequantizeLinear."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    ops = Counter(n.op_type for n in model.graph.node)
    act_zp, weight_types, weight_scales, fed_by_dq = set(), set(), {}, {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2:
            act_zp.add(inits[n.input[2]].dtype.name)
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            weight_types.add(inits[n.input[0]].dtype.name)
            weight_scales[n.input[0]] = inits[n.input[1]].size
        if n.op_type in ("Conv", "MatMul", "Gemm"):
            srcs = [producer.get(i) for i in n.input[:2]]
            fed_by_dq[n.name] = all(s is not None and s.op_type == "DequantizeLinear" for s in srcs)
    return {"ops": ops, "act_zp": act_zp, "weight_types": weight_types,
            "weight_scales": weight_scales, "fed_by_dq": fed_by_dq, "model": model}
