"""Tiny seeded ONNX models for the tuning tests (no TensorFlow needed to convert them).

``fragile_mlp``: six ``fc{i}`` layers (MatMul + bias Add + Relu, bias initializers named
``fc{i}.bias`` so the layer groups are ``fc0`` .. ``fc5``). ``fc3`` is deliberately fragile
for int8: every output channel of its weight holds one huge value (on an input channel that is
always zero, so float never uses it) next to the small weights that carry the signal; per-channel
int8 scales follow the huge value and round every small weight to zero. Keeping ``fc3`` float
repairs the model; every other layer quantizes well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WIDTH = 32
LAYERS = 6
FRAGILE = 3
TARGETS = Path(__file__).resolve().parent / "targets"


def fragile_mlp(path: Path, *, fragile: bool = True, layers: int = LAYERS,
                seed: int = 7) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "features"
    for i in range(layers):
        w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
        b = (rng.standard_normal(WIDTH) * 0.05).astype(np.float32)
        if i == FRAGILE - 1:
            w[:, 0], b[0] = 0.0, 0.0  # the layer before: its output channel 0 is always 0
        if i == FRAGILE and fragile:
            w[0, :] = 60.0  # huge, on input channel 0 (always 0): float never uses it
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"),
                  numpy_helper.from_array(b, f"fc{i}.bias")]
        nodes += [helper.make_node("MatMul", [x, f"fc{i}.weight"], [f"h{i}"], name=f"fc{i}/MatMul"),
                  helper.make_node("Add", [f"h{i}", f"fc{i}.bias"], [f"a{i}"], name=f"fc{i}/Add")]
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
        else:
            x = f"a{i}"
    nodes.append(helper.make_node("Identity", [x], ["scores"], name="out"))
    graph = helper.make_graph(
        nodes, "fragile_mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", WIDTH])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def data(folder: Path, n_calib: int = 64, n_val: int = 48, seed: int = 3,
         labels_from: Path | None = None) -> tuple[Path, Path]:
    """``calib.npz`` / ``val.npz`` of uniform [0, 1) features (``val`` labelled with the float
    model's argmax when ``labels_from`` is given)."""
    rng = np.random.default_rng(seed)
    calib = rng.uniform(0, 1, (n_calib, WIDTH)).astype(np.float32)
    val = rng.uniform(0, 1, (n_val, WIDTH)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "calib.npz", features=calib)
    extra = {}
    if labels_from is not None:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(labels_from), providers=["CPUExecutionProvider"])
        extra["labels"] = np.argmax(sess.run(None, {"features": val})[0], axis=1)
    np.savez(folder / "val.npz", features=val, **extra)
    return folder / "calib.npz", folder / "val.npz"
