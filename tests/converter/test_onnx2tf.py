"""ONNX (PyTorch-style) sources to every TFLite target through onnx2tf.

The graphs are built with ``onnx.helper`` exactly as ``torch.onnx.export`` (opset 17, eval
mode) writes them: BatchNorm folded into the Conv weights, node names like ``/conv1/Conv``,
a symbolic ``batch_size`` axis, ``MaxPool(pads=1)``, a residual ``Add``, a depthwise Conv
(``group = channels``), ``GlobalAveragePool`` + ``Flatten`` + ``Gemm`` head. Real torch exports
of the same structure run in ``test_onnx2tf_torch.py`` (slow) and ``benchmarks/pytorch.py``.

One conversion for all three targets is shared by most tests (about a minute here).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import edgeopt_runtime as rt
import numpy as np
import pytest
from edgeopt_runtime.errors import InputError
from edgeopt_runtime.manifest import read_manifest, sha256_file

import edgeopt
from edgeopt.backends import onnx2tf as o2t
from edgeopt.backends import onnx_rewrites as o2t_rewrites

H = W = 32
N_CALIB, N_VAL = 16, 8
TARGETS = ("arm-cpu", "edgetpu", "mobile-gpu")
FLOAT_MAX_ABS = 1e-4  # float TFLite vs ONNX Runtime; measured 3.6e-7 here
INT8_MIN_COSINE = 0.99  # int8 artifact vs ONNX float on validation samples; measured 0.9999


def _root() -> Path:
    return Path(tempfile.mkdtemp(prefix="edgeopt-onnx2tf-test-"))


class _Graph:
    """A tiny ``torch.onnx.export``-shaped graph builder (seeded weights)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        from onnx import numpy_helper

        self.count += 1
        name = name or f"onnx::Conv_{100 + self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], scope: str, **attrs: Any) -> str:
        from onnx import helper

        out = f"{scope}/{op}_output_0"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{scope}/{op}", **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, scope: str, stride: int = 1,
             group: int = 1) -> str:
        fan_in = cin // group * k * k
        w = self.rng.normal(0, (2 / fan_in) ** 0.5, (cout, cin // group, k, k))
        # BatchNorm with settled statistics, folded as torch.onnx.export does in eval mode
        gamma, beta = self.rng.uniform(0.5, 1.5, cout), self.rng.normal(0, 0.1, cout)
        mean, var = self.rng.normal(0, 0.1, cout), self.rng.uniform(0.5, 1.5, cout)
        scale = gamma / np.sqrt(var + 1e-5)
        p = k // 2
        return self.node("Conv", [x, self.const(w * scale[:, None, None, None]),
                                  self.const(beta - mean * scale)], scope,
                         dilations=[1, 1], group=group, kernel_shape=[k, k],
                         pads=[p, p, p, p], strides=[stride, stride])

    def model(self, inputs: list[Any], outputs: list[Any]) -> Any:
        from onnx import checker, helper

        graph = helper.make_graph(self.nodes, "main_graph", inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="pytorch", producer_version="2.13.0")
        m.ir_version = 8
        checker.check_model(m)
        return m


def _io(name: str, dims: list[Any]) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def cnn(path: Path, *, stem: str = "Relu", block: str = "Relu", seed: int = 0,
        pw_bias: float | None = None) -> Path:
    """conv/BN/``stem`` activation/MaxPool(pad 1)/residual depthwise block (``block``
    activation)/Linear head, dynamic batch. ``pw_bias`` sets one bias of the block's
    pointwise conv (a damaged file: the fuzz found a 2.2e38 bias)."""
    import onnx

    g = _Graph(seed)
    x = g.node(stem, [g.conv("input", 3, 16, 3, "/conv1", stride=2)], "/act1")
    x = g.node("MaxPool", [x], "/maxpool", ceil_mode=0, dilations=[1, 1], kernel_shape=[3, 3],
               pads=[1, 1, 1, 1], strides=[2, 2])
    y = g.node(block, [g.conv(x, 16, 16, 3, "/layer1/dw", group=16)], "/layer1/act")
    y = g.conv(y, 16, 16, 1, "/layer1/pw")
    if pw_bias is not None:
        from onnx import numpy_helper

        init = g.inits[-1]
        bias = numpy_helper.to_array(init).copy()
        bias[1] = pw_bias
        init.CopyFrom(numpy_helper.from_array(bias, init.name))
    x = g.node("Relu", [g.node("Add", [x, y], "/layer1")], "/layer1/relu")
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x], "/avgpool")], "", axis=1)
    w, b = g.const(g.rng.normal(0, 0.3, (10, 16)), "fc.weight"), g.const(
        g.rng.normal(0, 0.1, 10), "fc.bias")
    from onnx import helper

    g.nodes.append(helper.make_node("Gemm", [x, w, b], ["output"], name="/fc/Gemm", alpha=1.0,
                                    beta=1.0, transB=1))
    model = g.model([_io("input", ["batch_size", 3, H, W])], [_io("output", ["batch_size", 10])])
    onnx.save(model, str(path))
    return path


def data(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, input=rng.uniform(0, 1, (n, 3, H, W)).astype(np.float32))
    return path


@functools.cache
def converted() -> tuple[Path, str, bytes, Any]:
    """The CNN (ReLU stem, HardSwish block as in MobileNetV3) converted for all three targets
    with ``--rewrite edgetpu``, once: (root, sha256 before, bytes, report). Two onnx2tf runs:
    the plain graph (arm-cpu, mobile-gpu and the Edge TPU "before") and the rewritten one."""
    root = _root()
    src = cnn(root / "net.onnx", block="HardSwish")
    digest, raw = sha256_file(src), src.read_bytes()
    report = edgeopt.convert(str(src), list(TARGETS), str(data(root / "calib.npz", N_CALIB, 1)),
                             val=str(data(root / "val.npz", N_VAL, 2)), out=root / "out",
                             latency_runs=3, rewrite=["edgetpu"])
    return root, digest, raw, report


def _tflite_artifacts(report: Any) -> list[dict[str, Any]]:
    return [a for a in report.artifacts if a["format"] == "tflite"]


def _onnx_reference(root: Path, x: np.ndarray) -> np.ndarray:
    return rt.load(root / "net.onnx", threads=1).run_batch(x)["output"]


# ------------------------------------------------------------------------------ the pipeline


def test_every_target_converts_and_source_file_is_untouched() -> None:
    root, digest, raw, report = converted()
    src = root / "net.onnx"
    assert sha256_file(src) == digest and src.read_bytes() == raw  # onnx2tf ran on a copy
    assert sorted(p.name for p in root.iterdir()) == ["calib.npz", "net.onnx", "out", "val.npz"]
    got = {(a["target"], a["format"], a["precision"]) for a in report.artifacts}
    assert got == {("arm-cpu", "tflite", "int8"), ("arm-cpu", "onnx", "int8"),
                   ("edgetpu", "tflite", "int8"), ("mobile-gpu", "tflite", "float16"),
                   ("mobile-gpu", "tflite", "int8")}
    for art in _tflite_artifacts(report):
        info = art["details"]["onnx2tf"]
        assert info["converter"].startswith(f"onnx2tf {o2t.TESTED_VERSION}")
        assert info["simplifier"].startswith("onnxsim")
        assert info["static_shapes"] == {"input": [1, 3, H, W]}


def test_float_tflite_checked_against_onnx_before_quantizing() -> None:
    _root_, _d, _b, report = converted()
    for art in _tflite_artifacts(report):
        check = art["details"]["onnx2tf"]["float_check"]
        assert check["passed"] and check["samples"] == N_CALIB
        (out,) = check["outputs"]
        assert out["name"] == "output" and out["max_abs_error"] < FLOAT_MAX_ABS
        assert out["cosine"] > 0.999999


def test_artifacts_take_source_layout_feeds_and_match_onnx() -> None:
    root, _d, _b, report = converted()
    x = np.load(root / "val.npz")["input"]
    ref = _onnx_reference(root, x)
    for target in TARGETS:
        manifest = read_manifest(report.out / target)
        for entry in manifest.models:
            model = rt.load(report.out / target, format=entry.format,
                            precision=entry.precision, threads=1)
            # the same face as the ONNX model (whose int8 ONNX keeps the dynamic batch)
            batch = None if entry.format == "onnx" else 1
            assert model.inputs[0].shape == (batch, 3, H, W)
            got = model.run_batch(x)["output"]  # the same app code as for the ONNX model
            cos = float(np.dot(got.ravel(), ref.ravel())
                        / np.linalg.norm(got) / np.linalg.norm(ref))
            assert cos > INT8_MIN_COSINE, (target, entry.file, cos)
            if entry.format == "tflite":
                spec = entry.inputs[0]
                assert spec["shape"] == [1, H, W, 3]
                assert spec["layout"] == {"source": "NCHW", "model": "NHWC",
                                          "perm": [0, 2, 3, 1]}
                assert "layout" not in entry.outputs[0]  # [N, 10] keeps its layout


def test_raw_feeds_the_model_layout_and_wrong_layout_is_one_clear_error() -> None:
    root, _d, _b, report = converted()
    x = np.load(root / "val.npz")["input"][:1]
    model = rt.load(report.out / "edgetpu", threads=1)
    q = model.runner.inputs[0].quantization
    nhwc = np.clip(np.round(x.transpose(0, 2, 3, 1) / q.scale[0]) + q.zero_point[0], 0, 255)
    raw = model.run(nhwc.astype(np.uint8), raw=True)["output"]
    assert raw.dtype == np.uint8
    deq = model.run(x)["output"]
    oq = model.runner.outputs[0].quantization
    assert np.allclose((raw.astype(np.float32) - oq.zero_point[0]) * oq.scale[0], deq)
    with pytest.raises(InputError, match=r"expected shape \[1, 3, 32, 32\] \(NCHW.*raw=True"):
        model.run(x.transpose(0, 2, 3, 1).copy())


def test_edgetpu_gets_static_batch_one_and_every_op_mapped() -> None:
    from edgeopt.inspect.tflite_graph import read_tflite

    _root_, _d, _b, report = converted()
    (art,) = [a for a in report.artifacts if a["target"] == "edgetpu"]
    ops = set(art["details"]["ops"])
    assert not ops & {"SHAPE", "GATHER", "CAST", "PADV2", "STRIDED_SLICE", "HARD_SWISH"}
    assert art["preflight"]["summary"]["fully_delegated"], art["preflight"]["summary"]
    graph = read_tflite(report.out / "edgetpu" / art["file"])
    dtypes = {t.dtype for op in graph.ops for t in (*op.inputs, *op.outputs) if t is not None}
    assert "int64" not in dtypes and "float32" not in dtypes
    assert [list(t.shape) for t in graph.inputs] == [[1, H, W, 3]]
    # MaxPool(pads=1) after a ReLU: zero padding (exact), not PADV2 with -FLT_MAX
    assert art["details"]["onnx2tf"]["maxpool_padding"] == {"constant": 1, "shifted": 0, "edge": 0}


def test_rewrite_edgetpu_maps_hardswish_and_reports_before_and_after() -> None:
    """PyTorch MobileNetV3-style HardSwish: onnx2tf's form fuses back to HARD_SWISH, which the
    Edge TPU lacks; --rewrite edgetpu keeps it as MUL/ADD/RELU6 there, and only there."""
    root, _d, _b, report = converted()
    by_target = {(a["target"], a["precision"]): a for a in _tflite_artifacts(report)}
    tpu = by_target[("edgetpu", "int8")]
    rewrite = tpu["details"]["rewrite"]
    assert rewrite["replaced"] == {"HardSwish": 1}
    assert rewrite["before"]["delegated"] < rewrite["before"]["ops"]
    assert rewrite["after"]["delegated"] == rewrite["after"]["ops"]
    assert tpu["details"]["onnx2tf"]["rewrites"] == {
        "HardSwish": {"count": 1, "as": o2t_rewrites.EDGETPU_PSEUDO["HardSwish"]}}
    assert tpu["details"]["onnx2tf"]["float_check"]["passed"]  # the rewrite is exact
    assert any("--rewrite edgetpu:" in n and "before" in n for n in tpu["notes"])
    assert report["settings"]["rewrite"] == ["edgetpu"]
    for key in (("arm-cpu", "int8"), ("mobile-gpu", "float16")):  # CPU / GPU have HARD_SWISH
        assert "HARD_SWISH" in by_target[key]["details"]["ops"], key
        assert "rewrite" not in by_target[key]["details"]


def test_onnx2tf_never_reached_the_network() -> None:
    _root_, _d, _b, report = converted()
    for art in _tflite_artifacts(report):
        assert art["details"]["onnx2tf"]["network_blocked"] == []
        assert art["details"]["onnx2tf"]["output_check_data"] == f"{N_CALIB} calibration samples"


def test_network_guard_blocks_onnx2tfs_own_download(tmp_path: Path) -> None:
    """The child's guard stops onnx2tf's real sample download (the function it calls for its
    output check and default calibration), with no network needed to prove it."""
    code = (
        "import os, sys\n"
        "from edgeopt.backends._onnx2tf_child import BLOCKED, NetworkBlocked, block_network\n"
        "block_network()\n"
        "from onnx2tf.utils.common_functions import download_test_image_data\n"
        "try:\n"
        "    download_test_image_data()\n"
        "except Exception as exc:  # requests wraps the refusal in its ConnectionError\n"
        "    print('blocked', BLOCKED[0], repr(exc)[:300])\n"
        "    sys.exit(0 if BLOCKED else 4)\n"
        "sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**o2t._child_env()})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("blocked socket.getaddrinfo ('github.com',)"), proc.stdout
    assert list(tmp_path.iterdir()) == []  # nothing fetched, nothing written


# ------------------------------------------------------------------------------ what stays float


def test_keep_float_names_onnx_nodes_and_a_damaged_weight_stays_float(tmp_path: Path) -> None:
    """One arm-cpu conversion, two reasons to keep float:

    * ``--keep-float '^/conv1/'`` names an ONNX node; onnx2tf names TF ops after Keras layers
      (``model/tf.nn.convolution/...``), so the pattern is mapped to the layers built for that
      node — its PAD and CONV_2D stay float; a pattern no ONNX node matches is kept as a
      TFLite tensor-name pattern (here it matches nothing);
    * a 2.2e38 bias (the source fuzz's finding) overflows to inf downstream: those ranges are
      unquantizable and kept float (a MEAN range of (x, inf) segfaulted TF's quantizer), the
      float check sees the ONNX model itself give the same non-finite values, not a
      conversion error, and the note names the weight.
    """
    from edgeopt.inspect.tflite_graph import read_tflite

    src = cnn(tmp_path / "damaged.onnx", pw_bias=2.2e38)
    report = edgeopt.convert(str(src), "arm-cpu", str(data(tmp_path / "c.npz", 8, 1)),
                             formats="tflite", out=tmp_path / "out", latency_runs=1,
                             keep_float=["^/conv1/", "no-such-node"])
    (art,) = report.artifacts
    details = art["details"]
    keep = details["onnx2tf"]["keep_float"]
    assert set(keep["onnx_nodes"]) == {"/conv1/Conv"}
    assert "tf.nn.convolution" in keep["onnx_nodes"]["/conv1/Conv"]
    assert keep["tflite_patterns"][-1] == "no-such-node" and keep["not_converted"] == []
    assert details["keep_float"] and all("/conv1/" not in t for t in details["keep_float"])
    assert details["recipe"]["keep_float"] == ["^/conv1/", "no-such-node"]  # as the user gave
    graph = read_tflite(tmp_path / "out" / "arm-cpu" / art["file"])
    first_conv = next(op for op in graph.ops if op.name == "CONV_2D")
    assert first_conv.inputs[0].dtype == "float32"  # the stem conv kept float on purpose
    assert any(op.name == "DEPTHWISE_CONV_2D" and op.inputs[0].dtype == "int8"
               for op in graph.ops)  # upstream of the damage, not named: int8
    ranges = details["kept_float_ranges"]
    assert any(r["max"] == "inf" for r in ranges), ranges
    # the bias as float32 (2.1999999e38), and the conv output it reaches
    assert any(r["max"] != "inf" and r["max"] == pytest.approx(2.2e38, rel=1e-6)
               for r in ranges), ranges
    check = details["onnx2tf"]["float_check"]
    assert check["passed"] and check["source_nonfinite"]
    assert check["outputs"][0]["nonfinite_agree"]
    assert any("the ONNX model itself gives" in n and "is the source corrupt?" in n
               for n in art["notes"])
    assert any("unquantizable calibration ranges kept float" in n for n in art["notes"])


def test_keep_float_map_follows_onnx2tfs_names(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The mapping alone, on onnx2tf's recorded names: sanitized node names ('/x' -> 'wa/x'),
    nodes the edgeopt rewrites added (MaxPool's Pad), a node onnxsim folded away, the output
    node's signature tensor, and a pattern no ONNX node matches."""
    import onnx

    from edgeopt.sources import ModelSource

    model = onnx.load(str(cnn(tmp_path / "net.onnx")))
    source = ModelSource("onnx", tmp_path / "net.onnx", (), (), "", model)
    conv = o2t.Converted(source, {}, {}, tmp_path / "ref.onnx", node_layers={
        "wa/conv1/Conv": ["tf.math.add", "tf.nn.convolution"],
        "wa/maxpool/MaxPool_edgeopt_pad": ["tf.compat.v1.pad_1"],
        "wa/maxpool/MaxPool": ["tf.nn.max_pool2d"],
        "wa/fc/Gemm": ["output", "tf.linalg.matmul"],
    })
    monkeypatch.setattr(o2t, "_signature_output_tensors",
                        lambda _path: {"output": "PartitionedCall:0"})
    got = o2t.keep_float_map(source, conv, tmp_path / "float.tflite",
                             ["maxpool", "^/fc/", "^/layer1/dw/", "tf\\.nn\\.relu_1/"])
    assert got["onnx_nodes"] == {"/maxpool/MaxPool": ["tf.compat.v1.pad_1", "tf.nn.max_pool2d"],
                                 "/fc/Gemm": ["output", "tf.linalg.matmul"]}
    assert got["not_converted"] == ["/layer1/dw/Conv"]
    rx = [re.compile(p) for p in got["tflite_patterns"]]
    names = {"model/tf.compat.v1.pad_1/wa/maxpool/MaxPool_edgeopt_pad": True,
             "model/tf.nn.max_pool2d/MaxPool2d": True, "PartitionedCall:0": True,
             "model/tf.nn.relu_1/Relu;model/tf.math.add_1/Add": True,  # the TFLite pattern
             "model/tf.nn.max_pool2d_1/MaxPool2d": False, "model/tf.math.add_1/Add": False}
    for name, kept in names.items():
        assert any(r.search(name) for r in rx) is kept, name


# ------------------------------------------------------------------------------ float first


def _conv_net(path: Path) -> Path:
    import onnx
    from onnx import helper

    g = _Graph(3)
    x = g.node("Relu", [g.conv("input", 3, 8, 3, "/conv1")], "/relu1")
    x = g.node("Relu", [g.conv(x, 8, 8, 3, "/conv2")], "/relu2")
    # a per-channel layer scale after the ReLU (onnxsim folds one right after a Conv)
    x = g.node("Mul", [x, g.const(g.rng.uniform(0.5, 1.5, (1, 8, 1, 1)), "layer_scale")],
               "/scale")
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x], "/avgpool")], "", axis=1)
    w, b = g.const(g.rng.normal(0, 0.3, (4, 8)), "fc.weight"), g.const(np.zeros(4), "fc.bias")
    g.nodes.append(helper.make_node("Gemm", [x, w, b], ["output"], name="/fc/Gemm", transB=1))
    onnx.save(g.model([_io("input", [1, 3, 16, 16])], [_io("output", [1, 4])]), str(path))
    return path


def test_wrong_conversion_is_a_conversion_error_naming_the_first_bad_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real onnx2tf conversion made wrong on purpose (its own parameter-replacement file
    triples a per-channel scale) must stop before quantization, say it is a conversion
    error, and name the first tensor onnx2tf's per-tensor check finds diverging."""
    import onnx
    from onnx import numpy_helper

    src = _conv_net(tmp_path / "net.onnx")
    model = onnx.load(str(src))
    weight = next(t for t in model.graph.initializer if t.name == "layer_scale")
    bad = (numpy_helper.to_array(weight) * 3.0).tolist()
    replace = tmp_path / "replace.json"
    replace.write_text(json.dumps({"format_version": 1, "operations": [
        {"op_name": "/scale/Mul", "param_target": "inputs", "param_name": "layer_scale",
         "values": bad}]}))
    real_stage = o2t._stage

    def stage(*args: Any, **kwargs: Any) -> None:
        real_stage(*args, **kwargs)
        job_path = args[2] / "job.json"
        job = json.loads(job_path.read_text())
        job["options"]["param_replacement_file"] = str(replace)
        job_path.write_text(json.dumps(job))

    monkeypatch.setattr(o2t, "_stage", stage)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", input=rng.uniform(0, 1, (4, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "out"
    with pytest.raises(o2t.ConversionError) as info:
        edgeopt.convert(str(src), "arm-cpu", str(tmp_path / "calib.npz"), formats="tflite",
                        out=out, latency_runs=1)
    text = str(info.value)
    assert "conversion error, not a quantization loss" in text and "nothing was quantized" in text
    assert "first diverging tensor" in text and "/scale/Mul" in text, text
    assert str(src) in text and "edgeopt-tmp" not in text
    assert not out.exists()
