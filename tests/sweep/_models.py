"""Tiny seeded ONNX models and data for the sweep tests (no TensorFlow needed to convert them).

Two models of different shape (an NCHW conv net and an MLP), calibration data, and labelled
validation sets; labels are the float model's predictions with a seeded tenth flipped, so the
accuracy numbers are real but not trivially 1.0.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

SWEEP_TARGETS = Path(__file__).resolve().parent / "targets"


def _conv_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(21)
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array((rng.standard_normal((5, 8)) * 0.6).astype(np.float32), "w2"),
        numpy_helper.from_array((rng.standard_normal(5) * 0.1).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                      ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 5])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _mlp_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(22)
    inits = [
        numpy_helper.from_array((rng.standard_normal((16, 32)) * 0.4).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal(32) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array((rng.standard_normal((32, 4)) * 0.4).astype(np.float32), "w2"),
        numpy_helper.from_array((rng.standard_normal(4) * 0.1).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h"], name="fc1/MatMul"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="fc1/Add"),
        helper.make_node("Relu", ["hb"], ["hr"], name="relu"),
        helper.make_node("MatMul", ["hr", "w2"], ["o"], name="fc2/MatMul"),
        helper.make_node("Add", ["o", "b2"], ["scores"], name="fc2/Add"),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                     ["batch", 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _labels(model: Path, key: str, x: np.ndarray, seed: int) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    y = np.argmax(sess.run(None, {key: x})[0], axis=1)
    rng = np.random.default_rng(seed)
    flip = rng.random(len(y)) < 0.1
    classes = sess.get_outputs()[0].shape[1]
    y[flip] = rng.integers(0, classes, int(flip.sum()))
    return y.astype(np.int64)


def write_models(folder: Path, n_val: int = 40) -> dict[str, dict[str, Path]]:
    """Both models with ``calib.npz`` (32 samples) and ``val.npz`` (``n_val``, labelled)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, build, key, shape, seed in (("conv", _conv_model, "input", (3, 8, 8), 31),
                                          ("mlp", _mlp_model, "features", (16,), 32)):
        model = folder / f"{name}.onnx"
        build(model)
        rng = np.random.default_rng(seed)
        calib = rng.uniform(0, 1, (32, *shape)).astype(np.float32)
        val = rng.uniform(0, 1, (n_val, *shape)).astype(np.float32)
        np.savez(folder / f"{name}_calib.npz", **{key: calib})
        np.savez(folder / f"{name}_val.npz", **{key: val, "labels": _labels(model, key, val,
                                                                             seed)})
        out[name] = {"model": model, "calib": folder / f"{name}_calib.npz",
                     "val": folder / f"{name}_val.npz"}
    return out


def write_sweep(folder: Path, models: dict[str, dict[str, Path]], *, recipes: str | None = None,
                targets: list[str] | None = None, extra: str = "") -> Path:
    """A sweep file over ``models`` x 3 targets x 2 recipes (default / dynamic ONNX).

    Every recipe asks for ONNX artifacts only (``formats = ["onnx"]`` added unless it names
    formats): on ``arm-cpu`` an ONNX source would otherwise also go to TFLite through onnx2tf
    (TensorFlow, about a minute per job here); these tests are about the sweep, not onnx2tf.
    """
    targets = targets or ["arm-cpu", str(SWEEP_TARGETS / "cpu-s8.toml"),
                          str(SWEEP_TARGETS / "cpu-qop.toml")]
    lines = ["targets = [" + ", ".join(f'"{t}"' for t in targets) + "]", extra, ""]
    for name, m in models.items():
        lines += ["[[model]]", f'name = "{name}"', f'path = "{m["model"]}"',
                  f'calib = "{m["calib"]}"', f'val = "{m["val"]}"', ""]
    lines.append(_onnx_only(recipes if recipes is not None else
                            '[[recipe]]\nname = "default"\n\n[[recipe]]\nname = "dynamic"\n'
                            'profile = { onnx = { scheme = "dynamic" } }\n'))
    path = folder / "sweep.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _onnx_only(recipes: str) -> str:
    """``recipes`` (TOML ``[[recipe]]`` blocks) with ``formats = ["onnx"]`` in each block that
    does not set ``formats``."""
    blocks = recipes.split("[[recipe]]")
    return "[[recipe]]".join(
        b if i == 0 or re.search(r"^formats\s*=", b, re.M) else
        re.sub(r"^(name\s*=.*)$", r'\1\nformats = ["onnx"]', b, count=1, flags=re.M)
        for i, b in enumerate(blocks))
