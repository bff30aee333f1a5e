"""Drift that tells the truth: broken artifacts fail loudly, metrics per sample, cause first.

Small seeded models reproduce each case of issue 12: an attention block with a -inf additive mask
(onnx.helper, as torch exports it), a model with a constant output, an embedding output, a
dynamically quantized artifact, one bad sample among many.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.drift import compare_outputs, evaluate_gates, parse_output_kinds, validity_gates
from edgeopt.layers import group_scores, onnx_layer_report
from edgeopt.results import OutputDrift, Status
from edgeopt.validation import check_onnx, scale_problem, validate, zero_point_problem
from tests.recipes import _models as block_models

ort_q = pytest.importorskip("onnxruntime.quantization")


def _plain_static(src: Path, out: Path, samples: list[dict]) -> Path:
    """ORT's quantize_static as a user calls it: min/max over everything, masks included."""

    class Reader(ort_q.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self) -> dict | None:
            return next(self._it, None)

    ort_q.quantize_static(str(src), str(out), Reader(), quant_format=ort_q.QuantFormat.QDQ)
    return out


@pytest.fixture(scope="module")
def masked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("masked")
    src = block_models.save(block_models.block(), d)
    art = _plain_static(src, d / "plain.onnx", block_models.samples(16))
    calib = block_models.samples(24)
    np.savez(d / "calib.npz", x=np.concatenate([s["x"] for s in calib]),
             mask=np.concatenate([s["mask"] for s in calib]))
    return {"float": src, "plain": art, "calib": d / "calib.npz", "dir": d}


def test_inf_mask_artifact_fails_validation_naming_the_tensor(masked: dict[str, Path]) -> None:
    v = validate(masked["plain"])
    assert v.status is Status.FAILED
    scales = [f for f in v.findings if f.check == "scale"]
    assert scales and all("inf" in f.message for f in scales)
    assert any(t in scales[0].message for t in ("bias", "s2", "scores_mask"))
    assert "--keep-float" in scales[0].message and "non-finite" in scales[0].message


def test_nan_origin_ranks_first_and_keeping_it_float_fixes_the_output(
        masked: dict[str, Path]) -> None:
    rep = onnx_layer_report(masked["float"], masked["plain"], block_models.samples(6, seed=3))
    assert rep["available"] and rep["scheme"] == "static"
    top = rep["layers"][0]
    assert top["rank"] == 1 and top["nonfinite"] and top["origin"]
    assert top["tensor"] in rep["nonfinite_origins"]
    assert "scale" in top.get("scale_problem", "") and "--keep-float" in top["suggestion"]
    # the score Add downstream inherits NaN *and* gets an inf scale of its own: a cause too
    assert rep["nonfinite_origins"] == ["bias", "s2"] == rep["broken_scales"]
    assert [r["tensor"] for r in rep["layers"][:2]] == ["bias", "s2"]
    # keeping both float, measured as one edit, is what fixes the output (a QuantizeLinear
    # launders NaN into garbage further down: the output itself is finite but wrong)
    fix = rep["gain"]["causes_together"]
    assert fix["tensors"] == ["bias", "s2"] and "mask_unsq" in fix["keep_float"]
    assert fix["gain_db"] > 10 and fix["output_cosine_min"] > 0.95
    assert rep["gain"]["base_output_cosine_min"] < 0.8
    assert not math.isnan(top["gain_db"])  # measured, not guessed


def test_rank_rows_cause_first_nan_never_last() -> None:
    from edgeopt.layers.stats import rank_rows

    rows = [
        {"tensor": "nan_sqnr", "order": 0, "sqnr_db": math.nan},
        {"tensor": "inherits", "order": 1, "nonfinite": 3, "origin": False, "sqnr_db": math.nan},
        {"tensor": "passes", "order": 2, "sqnr_db": math.inf},
        {"tensor": "noisy", "order": 3, "sqnr_db": 5.0},
        {"tensor": "noisier", "order": 4, "sqnr_db": 2.0},
        {"tensor": "gain", "order": 5, "sqnr_db": 30.0, "gain_db": 4.0},
        {"tensor": "scale", "order": 6, "sqnr_db": 40.0, "broken_scale": True},
        {"tensor": "origin", "order": 7, "nonfinite": 3, "origin": True, "sqnr_db": math.nan},
    ]
    ranked = rank_rows(rows)
    assert [r["tensor"] for r in ranked] == [
        "scale", "origin", "gain", "noisier", "noisy", "passes", "inherits", "nan_sqnr"]
    assert [r["rank"] for r in ranked] == list(range(1, 9))


def test_absurd_finite_scale_ranks_first_without_any_nan(tmp_path: Path) -> None:
    """A -FLT_MAX mask: scales of 1.3e36, no NaN anywhere, the output silently wrong."""
    src = block_models.save(block_models.block(neg=-np.finfo(np.float32).max), tmp_path)
    art = _plain_static(src, tmp_path / "plain.onnx", block_models.samples(16))
    v = validate(art)
    assert v.status is Status.FAILED and "absurd" in v.findings[0].message
    rep = onnx_layer_report(src, art, block_models.samples(6, seed=3))
    assert not rep["nonfinite_origins"] and rep["broken_scales"] == ["bias", "s2"]
    assert [r["tensor"] for r in rep["layers"][:2]] == ["bias", "s2"]
    assert "broken quantization" in rep["layers"][0]["suggestion"]
    assert rep["gain"]["causes_together"]["gain_db"] > 10


def test_compare_fails_the_broken_artifact_with_reasons(masked: dict[str, Path],
                                                        tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgeopt.cli import main

    # an inf scale: the runtime's load check refuses the file, naming node and scale
    r = CliRunner().invoke(main, ["compare", str(masked["float"]), str(masked["plain"]),
                                  "--data", str(masked["calib"]), "--out", str(tmp_path / "a"),
                                  "--latency-runs", "0", "--json"])
    assert r.exit_code == 2 and "bias_scale" in r.output and "inf" in r.output, r.output
    # a -FLT_MAX mask: finite scales of 1.3e36 load and run — validation fails the artifact
    d = tmp_path / "flt"
    d.mkdir()
    src = block_models.save(block_models.block(neg=-np.finfo(np.float32).max), d)
    art = _plain_static(src, d / "plain.onnx", block_models.samples(16))
    r = CliRunner().invoke(main, ["compare", str(src), str(art), "--data", str(masked["calib"]),
                                  "--out", str(tmp_path / "b"), "--latency-runs", "0",
                                  "--layer-samples", "4", "--json"])
    assert r.exit_code == 1, r.output
    rep = json.loads(r.stdout)
    failed = {g["gate"] for g in rep["gates"]["results"] if not g["passed"]}
    assert "artifact-validation" in failed
    assert rep["validation"]["status"] == "failed"
    assert rep["per_layer"]["layers"][0]["broken_scale"]
    md = (tmp_path / "b" / "report.md").read_text()
    assert "Artifact validation: FAILED" in md and "bias_scale" in md
    assert "Keeping all" in md  # the measured joint fix
    r = CliRunner().invoke(main, ["compare", str(src), str(art), "--data", str(masked["calib"]),
                                  "--out", str(tmp_path / "c"), "--latency-runs", "0",
                                  "--no-per-layer", "--allow-invalid", "--json"])
    assert r.exit_code == 0, r.output


def test_convert_keeps_the_mask_float_and_reports_per_layer(masked: dict[str, Path],
                                                            tmp_path: Path) -> None:
    import edgeopt

    rep = edgeopt.convert(masked["float"], "arm-cpu", masked["calib"], formats="onnx",
                          out=tmp_path / "out", latency_runs=2, layer_samples=4)
    (t,) = rep.result.targets
    assert t.status is Status.OK
    (art,) = t.artifacts
    assert art.validation["status"] == "ok" and art.validation["checked"]["scales"] > 0
    d = art.evaluation.drift[0]
    assert d.kind == "detection"  # [N, T, D]: several rows per sample
    assert d.metrics["cosine_min"] > 0.9 and not d.nonfinite_samples
    pl = rep["targets"][0]["artifacts"][0]["per_layer"]
    assert pl["available"] and pl["num_samples"] == 4 and 0 < len(pl["layers"]) <= 20
    assert pl["rows_total"] >= len(pl["layers"]) and not pl["nonfinite_origins"]


# ------------------------------------------------------------------------------ constant output


def _constant_model(path: Path) -> Path:
    w = numpy_helper.from_array(np.zeros((4, 3), np.float32), "w")
    b = numpy_helper.from_array(np.array([0.5, -1.0, 2.0], np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="dense/MatMul"),
             helper.make_node("Add", ["m", "b"], ["y"], name="dense/BiasAdd")]
    g = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_constant_float_reference_is_degraded_and_fails_gates(tmp_path: Path) -> None:
    import edgeopt
    from edgeopt.validation import ValidationFailed

    src = _constant_model(tmp_path / "const.onnx")
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    with pytest.raises(ValidationFailed, match="degraded.*same for all 20 samples") as exc:
        edgeopt.convert(src, "arm-cpu", tmp_path / "calib.npz", formats="onnx",
                        out=tmp_path / "out", latency_runs=1, layer_samples=0)
    (t,) = exc.value.report.result.targets
    assert t.status is Status.DEGRADED and "same for all 20 samples" in t.error
    assert (tmp_path / "out" / "report.json").is_file()  # written before failing
    rep = edgeopt.convert(src, "arm-cpu", tmp_path / "calib.npz", formats="onnx",
                          out=tmp_path / "out2", latency_runs=1, layer_samples=0,
                          allow_invalid=True)
    assert rep["targets"][0]["status"] == "degraded"
    drift = rep["targets"][0]["artifacts"][0]["drift"][0]
    assert drift["degenerate"] and "random weights" in drift["degenerate"]
    gates = validity_gates([drift])
    assert gates and not gates[0]["passed"] and gates[0]["gate"] == "valid-reference"
    g = evaluate_gates([drift], None, min_cosine=0.5)
    assert not g["passed"] and "could not be evaluated" in g["results"][0]["message"]


# ------------------------------------------------------------------------------ kinds, samples


def test_embedding_output_gets_cosine_and_retrieval_not_class_metrics() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 32))
    cand = ref + rng.normal(scale=0.05, size=ref.shape)
    d = compare_outputs([ref], [cand], ["sentence_embedding"])[0]
    assert d["kind"] == "embedding" and "embed" in d["kind_source"]
    assert d["classifier"] is None and "top1_agreement" not in d["metrics"]
    assert "classifiers only" in d["skipped"]["top1_agreement"]
    m = d["metrics"]
    assert m["retrieval_top1_agreement"] > 0.9 and m["retrieval_top5_overlap"] > 0.8
    assert 0.9 < m["retrieval_rank_correlation"] <= 1.0
    # unit-norm rows are embeddings whatever the name; an override wins over inference
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    assert compare_outputs([unit], [unit], ["out0"])[0]["kind"] == "embedding"
    kinds = dict(parse_output_kinds(["sentence_embedding=classifier"]))
    forced = compare_outputs([ref], [cand], ["sentence_embedding"], kinds=kinds)[0]
    assert forced["kind"] == "classifier" and forced["kind_source"] == "--output-kind"
    assert "top1_agreement" in forced["metrics"]
    assert dict(parse_output_kinds(["regression"])) == {"*": "regression"}
    with pytest.raises(Exception, match="--output-kind"):
        parse_output_kinds(["y=banana"])
    with pytest.raises(Exception, match="no output named 'nope'"):
        compare_outputs([ref], [cand], ["sentence_embedding"], kinds={"nope": "embedding"})


def test_per_sample_gate_fails_on_one_bad_sample_out_of_many() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(200, 64))
    cand = ref + rng.normal(scale=0.01, size=ref.shape)
    cand[137] = rng.normal(size=64)  # one sample ruined
    d = compare_outputs([ref], [cand], ["features"])[0]
    assert d["metrics"]["cosine"] > 0.99  # the pooled number hides it
    assert d["metrics"]["cosine_mean"] > 0.99 and d["metrics"]["cosine_min"] < 0.5
    assert d["per_sample"]["metrics"]["cosine"]["worst"][0] == 137
    g = evaluate_gates([d], None, min_cosine=0.99)
    assert not g["passed"] and g["results"][0]["failing_samples"] == [137]
    assert "1 of 200 samples below 0.99: 137" in g["results"][0]["message"]
    assert evaluate_gates([d], None, min_cosine=0.99, gate_on="mean")["passed"]
    assert evaluate_gates([d], None, min_cosine=0.99, gate_on="p5")["passed"]
    rec = OutputDrift.from_dict(d)
    assert rec.sample_stat("cosine", "min") == d["metrics"]["cosine_min"]
    # NaN on one sample: metrics cover the others, the sample is named, gates fail
    cand[5, 3] = np.nan
    d = compare_outputs([ref], [cand], ["features"])[0]
    assert d["nonfinite_samples"] == [5] and d["per_sample"]["metrics"]["cosine"]["worst"][0] == 137
    assert d["per_sample"]["values"]["cosine"][5] is None
    assert validity_gates([d])[0]["gate"] == "finite-outputs"


# ------------------------------------------------------------------------------ dynamic, scores


def test_dynamic_artifact_per_layer_ranks_the_fragile_layer_with_its_gain(tmp_path: Path) -> None:
    from tests.test_layers import _data, _onnx_float_model, _samples

    f, q = tmp_path / "f.onnx", tmp_path / "d.onnx"
    _onnx_float_model(str(f))
    ort_q.quantize_dynamic(str(f), str(q), weight_type=ort_q.QuantType.QInt8)
    x, _ = _data(12, seed=0)
    rep = onnx_layer_report(f, q, _samples(x))
    assert rep["available"] and rep["scheme"] == "dynamic" and rep["layers"]
    top = rep["layers"][0]
    assert top["tensor"] == "f_mm" and top["gain_db"] > 10 and top["rank_gain"] == 1
    assert "per-channel" in top["suggestion"] and top["keep_float"].startswith("^(model/fragile")
    # ops a dynamic artifact runs in float are said to, never suggested, ranked after the MatMuls
    floats = [r for r in rep["layers"] if r["quantized"] is False]
    assert floats and all("runs in float" in r["suggestion"] for r in floats)
    assert all(r["quantized"] for r in rep["layers"] if r["op"] == "MatMul")
    assert all(r.get("gain_db") is None for r in floats)

    class G:
        def __init__(self, name: str, pattern: str) -> None:
            self.name, self.patterns = name, (pattern,)

    scores = group_scores(rep, [G("fragile", r"^model/fragile/MatMul(/|$)"),
                                G("head", r"^model/head/MatMul(/|$)")])
    assert scores["fragile"] > scores["head"]


def test_bounded_memory_groups_cover_every_tensor(tmp_path: Path) -> None:
    from tests.test_layers import _data, _onnx_float_model, _samples

    f, q = tmp_path / "f.onnx", tmp_path / "d.onnx"
    _onnx_float_model(str(f))
    ort_q.quantize_dynamic(str(f), str(q), weight_type=ort_q.QuantType.QInt8)
    x, _ = _data(4, seed=0)
    whole = onnx_layer_report(f, q, _samples(x), gain_top=0)
    split = onnx_layer_report(f, q, _samples(x), gain_top=0, pass_bytes=1)  # one per pass
    assert whole["passes"] == 1 and split["passes"] > 3
    key = [(r["tensor"], r["sqnr_db_cumulative"]) for r in whole["layers"]]
    assert key == [(r["tensor"], r["sqnr_db_cumulative"]) for r in split["layers"]]


# ------------------------------------------------------------------------------ validation units


def test_scale_and_zero_point_rules_exact() -> None:
    assert scale_problem(np.array([0.02, 0.5])) is None
    assert "non-finite" in scale_problem(np.array([0.1, np.inf]))
    assert "> 0" in scale_problem(np.array([0.0]))
    assert "absurd" in scale_problem(np.array([1.3e36]))
    assert "underflow" in scale_problem(np.array([7.7e-42]))
    assert zero_point_problem(np.array([-128, 127]), "int8", 2) is None
    assert "outside the int8 range" in zero_point_problem(np.array([200]), "int8", 1)
    assert "3 values for 2" in zero_point_problem(np.array([0, 0, 0]), "uint8", 2)


def test_nan_weight_is_named(tmp_path: Path) -> None:
    from tests.test_layers import _onnx_float_model

    f = tmp_path / "f.onnx"
    _onnx_float_model(str(f))
    m = onnx.load(str(f))
    w = next(i for i in m.graph.initializer if i.name == "b2")
    arr = numpy_helper.to_array(w).copy()
    arr[3] = np.nan
    w.CopyFrom(numpy_helper.from_array(arr, "b2"))
    onnx.save(m, str(f))
    found = check_onnx(f)
    assert [x.where for x in found] == ["b2"] and "1 NaN" in found[0].message


def test_constant_integer_inputs_are_not_warned_about(tmp_path: Path) -> None:
    from edgeopt_runtime.spec import TensorSpec

    from edgeopt.calibration import open_calibration

    np.savez(tmp_path / "c.npz", ids=np.arange(32, dtype=np.int64).reshape(4, 8),
             token_type_ids=np.zeros((4, 8), np.int64), x=np.ones((4, 2), np.float32))
    specs = [TensorSpec("ids", (None, 8), "int64"), TensorSpec("token_type_ids", (None, 8),
                                                                "int64"),
             TensorSpec("x", (None, 2), "float32")]
    src = open_calibration(tmp_path / "c.npz", specs)
    assert not any("token_type_ids" in w for w in src.warnings)
    assert any("'x' is constant" in w for w in src.warnings)  # a float input still is


@pytest.fixture(scope="module")
def tflite_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.runtime.conftest_verify import _conv_keras, _tflite

    d = tmp_path_factory.mktemp("tflite_pair")
    model = _conv_keras(0)
    return {"float": _tflite(model, d / "f.tflite", int8=False),
            "int8": _tflite(model, d / "q.tflite", int8=True)}


def _edit_tflite(src: Path, dst: Path, fn: Any) -> Path:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
    fn(m)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    dst.write_bytes(bytes(b.Output()))
    return dst


def test_tflite_artifact_validation_names_absurd_scale_and_nan_weight(
        tflite_pair: dict[str, Path], tmp_path: Path) -> None:
    from edgeopt.validation import check_tflite

    assert check_tflite(tflite_pair["int8"]) == [] and validate(tflite_pair["int8"]).status \
        is Status.OK
    names: list[str] = []

    def absurd(m: Any) -> None:  # a -FLT_MAX mask's kind of scale on one activation
        t = next(t for t in m.subgraphs[0].tensors
                 if t.quantization is not None and t.quantization.scale is not None
                 and t.buffer and m.buffers[t.buffer].data is None)
        t.quantization.scale = [1.3e36]
        names.append(t.name.decode())

    # the runtime's reader refuses it (requantization scale out of range): a finding, named
    bad = _edit_tflite(tflite_pair["int8"], tmp_path / "absurd.tflite", absurd)
    (found,) = check_tflite(bad)
    assert found.check == "file" and "scale" in found.message and "1.3e+36" in found.message
    assert validate(bad).status is Status.FAILED

    def nan_weight(m: Any) -> None:
        t = next(t for t in m.subgraphs[0].tensors if t.name.decode().endswith("kernel")
                 or b"conv_b" in t.name and m.buffers[t.buffer].data is not None)
        data = np.frombuffer(bytes(bytearray(m.buffers[t.buffer].data)), np.float32).copy()
        data[0] = np.nan
        m.buffers[t.buffer].data = np.frombuffer(data.tobytes(), np.uint8)
        names.append(t.name.decode())

    bad = _edit_tflite(tflite_pair["float"], tmp_path / "nan.tflite", nan_weight)
    found = check_tflite(bad)
    assert [f.where for f in found] == names[-1:] and "NaN" in found[0].message


def test_tflite_artifact_per_layer_is_available_and_ranked(tflite_pair: dict[str, Path]) -> None:
    from edgeopt.layers import tflite_artifact_layer_report
    from tests.runtime.conftest_verify import CONV_SHAPE

    rng = np.random.default_rng(0)
    samples = [{"image": rng.uniform(0, 1, (1, *CONV_SHAPE)).astype(np.float32)}
               for _ in range(4)]
    rep = tflite_artifact_layer_report(tflite_pair["float"], tflite_pair["int8"], samples)
    assert rep["available"] and rep["scheme"] == "static" and rep["layers"]
    assert [r["rank"] for r in rep["layers"]] == list(range(1, len(rep["layers"]) + 1))
    assert all(r["suggestion"] for r in rep["layers"])
    assert rep["gain"]["note"].startswith("not measured")


def test_report_of_an_embedding_shows_retrieval_not_class_metrics() -> None:
    from edgeopt.report import render_markdown
    from edgeopt.results import CompareResult, DataInfo, Evaluation, Gates, ModelInfo, ReportHeader

    rng = np.random.default_rng(2)
    ref = rng.normal(size=(30, 16))
    cand = ref + rng.normal(scale=0.05, size=ref.shape)
    cand[7] = rng.normal(size=16)
    drift = compare_outputs([ref], [cand], ["sentence_embedding"])
    data = DataInfo(source="v.npz", format="npz", count=30, sha256="0" * 64, synthetic=False,
                    num=None, seed=0, max_samples=256, role="evaluation", labels=None)
    ev = Evaluation(data, tuple(OutputDrift.from_dict(d) for d in drift), None, None)
    gates = evaluate_gates(drift, None, min_cosine=0.99)
    model = ModelInfo(path="m.onnx", format="onnx", precision="int8", size_bytes=1,
                      sha256="0" * 64, backend="test")
    md = render_markdown(CompareResult(ReportHeader.now("compare"), model, model, ev,
                                       {"available": False, "reason": "off", "layers": []},
                                       Gates.from_dict(gates)).to_dict())
    assert "NN agree" in md and "top-1 agree" not in md and "KL" not in md
    assert "sentence_embedding: embedding (inferred" in md
    assert "worst samples by cosine: #7" in md
    assert "1 of 30 samples below 0.99: 7" in md


def test_keep_float_gain_reads_the_relu_that_ort_fused_away(tmp_path: Path) -> None:
    """ORT's QDQ drops a ReLU after a Conv (the next Q clamps) and the Conv writes the ReLU's
    name: a spliced float layer must read the dequantized value there, not the raw Conv output
    (that made keeping a Conv float look like a -25 dB loss on ResNet-18)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.normal(size=(8, 3, 3, 3)) * 0.3).astype(np.float32),
                                     "w1"),
             numpy_helper.from_array((rng.normal(size=(8, 8, 3, 3)) * 0.2).astype(np.float32),
                                     "w2"),
             numpy_helper.from_array((rng.normal(size=(4, 8)) * 0.3).astype(np.float32), "w3")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["fl"], name="flat"),
             helper.make_node("Gemm", ["fl", "w3"], ["y"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "cnn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    src = tmp_path / "cnn.onnx"
    onnx.save(m, str(src))
    samples = [{"x": rng.normal(size=(1, 3, 12, 12)).astype(np.float32)} for _ in range(12)]
    art = _plain_static(src, tmp_path / "q.onnx", samples)
    q_ops = {n.op_type for n in onnx.load(str(art)).graph.node}
    assert "Relu" not in q_ops  # the case this test is about
    rep = onnx_layer_report(src, art, samples[:6])
    gains = {r["tensor"]: r["gain_db"] for r in rep["layers"] if r.get("gain_db") is not None}
    assert {"r1", "r2"} <= set(gains) and min(gains.values()) > -1.0, gains
    row = next(r for r in rep["layers"] if r["tensor"] == "r2")
    assert "conv2" in row["keep_float"] and "relu2" in row["keep_float"]  # one layer


def test_noise_above_signal_is_degraded_not_ok() -> None:
    """mpnet-base's default int8 (cosine 0.17, SQNR < 0 dB) must not be reported as ok."""
    from edgeopt.validation import check_outputs

    rng = np.random.default_rng(3)
    ref = rng.normal(size=(40, 32))
    noisy = ref + rng.normal(scale=1.5, size=ref.shape)
    fine = ref + rng.normal(scale=0.1, size=ref.shape)
    d_bad, d_ok = (OutputDrift.from_dict(compare_outputs([ref], [c], ["sentence_embedding"])[0])
                   for c in (noisy, fine))
    (f,) = check_outputs([d_bad])
    assert f.status is Status.DEGRADED and f.check == "drift"
    assert "median per-sample SQNR" in f.message
    assert check_outputs([d_ok]) == []
