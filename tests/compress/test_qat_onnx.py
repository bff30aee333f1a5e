"""QAT models convert to full int8 through ``edgeopt.convert`` with the learned ranges; ONNX
sources take post-training pruning / clustering and refuse what needs retraining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeopt.compress import graph
from edgeopt.compress.data import load_dataset
from edgeopt.compress.keras_steps import run_steps
from edgeopt.compress.options import CompressOptionError, CompressOptions
from edgeopt.sources import load_source

from . import _models as M


def test_qat_model_converts_to_full_int8_with_its_ranges(tmp_path: Path) -> None:
    import edgeopt
    from edgeopt.inspect.tflite_graph import read_tflite

    src = load_source(M.trained_cnn_file())
    data = load_dataset(M.train_npz(), src.inputs, "training")
    opts = CompressOptions(qat=True, prune=0.5, epochs=1, batch_size=32)
    result = run_steps(graph.as_functional(src.handle, "m"), data, opts, (), lambda m: None)
    path = tmp_path / "qat.keras"
    result.model.save(path)
    reloaded = load_source(path)  # built-in layers only: loads in safe mode, no --trust-model
    assert any(type(op).__name__ == "FakeQuantWithMinMaxVars"
               for op in reloaded.handle.operations)
    report = edgeopt.convert(path, "edgetpu", M.train_npz(), out=tmp_path / "out",
                             latency_runs=2, num_calib=16)
    art = report.artifacts[0]
    assert art["precision"] == "int8" and not art["details"]["float_ops"]
    g = read_tflite(tmp_path / "out" / "edgetpu" / art["file"])
    dtypes = {t.dtype for op in g.ops for t in (*op.inputs, *op.outputs)
              if op.name not in ("QUANTIZE", "DEQUANTIZE")}
    assert dtypes <= {"int8", "int32", "uint8"}
    lo, hi = result.qat["ranges"]["fc"]
    fc_out = next(op.outputs[0] for op in g.ops if op.name == "FULLY_CONNECTED")
    assert fc_out.quantization["scale"][0] == pytest.approx((hi - lo) / 255, rel=1e-3)
    pruned = [k for k in graph.kernels(reloaded.handle) if k.layer == "conv2"][0]
    # masks held through QAT (snapping to the int8 grid can only add zeros)
    assert 0.5 <= np.mean(pruned.numpy() == 0) < 0.6


def _onnx_model(tmp_path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(size=(8, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "w2"], ["y"], name="fc"),
    ]
    g = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    np.savez(tmp_path / "x.npz", x=rng.uniform(0, 1, (20, 3, 8, 8)).astype(np.float32))
    return path


def test_onnx_post_training_prune_and_cluster(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from edgeopt.compress import compress

    path = _onnx_model(tmp_path)
    report = compress(path, tmp_path / "x.npz", CompressOptions(prune=0.5, cluster=4),
                      out=tmp_path / "out", measure_gains=False)
    weights = {t.name: numpy_helper.to_array(t)
               for t in onnx.load(report.model_path).graph.initializer}
    for w in weights.values():
        assert np.mean(w == 0) == pytest.approx(0.5) and np.unique(w).size <= 4
    assert report.data["after"]["float_drift_vs_original"]["sqnr_db"] < 40  # measured, not 0
    assert any("torch.nn.utils.prune" in n for n in report.data["notes"])


@pytest.mark.parametrize("flag", [dict(qat=True), dict(prune_channels=0.3), dict(distill=True,
                                                                                  prune=0.5)])
def test_onnx_refuses_steps_that_need_retraining(tmp_path: Path, flag: dict) -> None:
    from edgeopt.compress import compress

    path = _onnx_model(tmp_path)
    with pytest.raises(CompressOptionError, match="PyTorch"):
        compress(path, tmp_path / "x.npz", CompressOptions(**flag), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
