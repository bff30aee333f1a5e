"""The one evaluator (``edgeopt.evaluate``): pairing, per-sample outputs, the sample selection
rule, cached reference outputs, picklable jobs run in another process — and the promise it
exists for: ``convert --json`` and ``compare --json`` report identical drift and task metrics
for the same artifact, float reference and data.

Small ONNX models are built here with ``onnx.helper`` (two outputs, seeded weights; the
"candidate" has its weights rounded to a coarse grid, so it drifts a little but not at random).
"""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from edgeopt_runtime.errors import CalibrationError, InputError

from edgeopt.evaluate import (
    EvalData,
    EvalOptions,
    EvaluationJob,
    ModelRef,
    OutputStack,
    evaluate,
    run_job,
    run_reference,
)

ROOT = Path(__file__).resolve().parent.parent
N_FEAT, N_CLASSES = 6, 4


def _onnx_model(path: Path, *, step: float = 0.0, in_name: str = "x",
                out_names: tuple[str, str] = ("logits", "embedding")) -> Path:
    """x[1, 6] -> MatMul -> logits[1, 4]; Relu(MatMul) -> embedding[1, 3]. ``step`` > 0 rounds
    the weights to that grid (a deterministic, quantization-like error)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(N_FEAT, N_CLASSES)).astype(np.float32)
    w2 = rng.normal(size=(N_FEAT, 3)).astype(np.float32)
    if step:
        w1, w2 = (np.round(w / step) * step for w in (w1, w2))
    nodes = [helper.make_node("MatMul", [in_name, "w1"], [out_names[0]]),
             helper.make_node("MatMul", [in_name, "w2"], ["h"]),
             helper.make_node("Relu", ["h"], [out_names[1]])]
    graph = helper.make_graph(
        nodes, "two_heads",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, [1, N_FEAT])],
        [helper.make_tensor_value_info(out_names[0], TensorProto.FLOAT, [1, N_CLASSES]),
         helper.make_tensor_value_info(out_names[1], TensorProto.FLOAT, [1, 3])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("evaluate")
    x = np.random.default_rng(1).normal(size=(40, 1, N_FEAT)).astype(np.float32)
    labels = np.argmax(x[:, 0, :N_CLASSES], axis=1)  # any fixed labels will do
    np.savez(d / "data.npz", x=x, labels=labels)
    np.save(d / "labels.npy", labels)
    return {"ref": _onnx_model(d / "ref.onnx"), "cand": _onnx_model(d / "cand.onnx", step=0.25),
            "renamed": _onnx_model(d / "renamed.onnx", step=0.25, in_name="features",
                                   out_names=("scores", "vector")),
            "data": d / "data.npz", "labels": d / "labels.npy", "dir": d}


def _metrics(ev: Any) -> list[dict[str, Any]]:
    return [o.to_dict()["metrics"] for o in ev.drift]


def test_outputs_are_kept_per_sample_and_match_the_models(files: dict[str, Path]) -> None:
    ref, cand = ModelRef(files["ref"]).load(), ModelRef(files["cand"]).load()
    samples = EvalData(str(files["data"])).open(ref.inputs)
    ev = evaluate(ref, cand, samples, options=EvalOptions(latency_runs=3, keep_outputs=True))
    assert [o.name for o in ev.drift] == ["logits", "embedding"]
    out = ev.outputs
    assert len(out.reference) == len(out.candidate) == samples.count == 40
    for i, feeds in enumerate(samples):  # sample i's outputs are that sample's model outputs
        got = out.candidate.sample(i)
        want = cand.run(feeds)
        np.testing.assert_array_equal(got[0], want["logits"])
        np.testing.assert_array_equal(got[1], want["embedding"])
    # per-sample metrics are a loop over sample(i); the batch metric is over the stack
    stacked = out.reference.stacked()[0]
    assert stacked.shape == (40, N_CLASSES)
    assert 15 < ev.drift[0].metrics["sqnr_db"] < 60
    assert ev.task is not None and ev.task.num_samples == 40
    lat = ev.latency.to_dict()
    assert lat["reference"]["runs"] == lat["candidate"]["runs"] == 3 and lat["warmup"] == 5
    assert ev.without_outputs().outputs is None


def test_signatures_pair_by_name_else_position(files: dict[str, Path]) -> None:
    ref = ModelRef(files["ref"]).load()
    samples = EvalData(str(files["data"])).open(ref.inputs)
    by_name = evaluate(ref, ModelRef(files["cand"]).load(), samples,
                       options=EvalOptions(latency_runs=0))
    by_pos = evaluate(ref, ModelRef(files["renamed"]).load(), samples,
                      options=EvalOptions(latency_runs=0))
    assert _metrics(by_name) == _metrics(by_pos) and by_pos.latency is None
    assert [o.name for o in by_pos.drift] == ["logits", "embedding"]  # reference names
    assert any("matched by position" in n for n in by_pos.notes) and not by_name.notes
    other = _onnx_model(files["dir"] / "other.onnx")
    import onnx

    m = onnx.load(other)
    m.graph.output.pop()
    onnx.save(m, other)
    with pytest.raises(InputError, match="reference has 2 outputs"):
        evaluate(ref, ModelRef(other).load(), samples, options=EvalOptions(latency_runs=0))


def test_selection_rule_caps_with_a_seeded_subset_and_labels_follow(
        files: dict[str, Path]) -> None:
    ref = ModelRef(files["ref"]).load()
    full = EvalData(str(files["data"]), seed=3).open(ref.inputs)
    capped = EvalData(str(files["data"]), seed=3, max_samples=10).open(ref.inputs)
    again = EvalData(str(files["data"]), num=10, seed=3).open(ref.inputs)
    assert full.rows is None and full.count == 40
    assert capped.count == 10 and list(capped.rows) == list(again.rows)  # one rule
    assert capped.sha256 == again.sha256 != full.sha256
    np.testing.assert_array_equal(capped.labels, full.labels[capped.rows])
    external = EvalData(str(files["data"]), seed=3, max_samples=10,
                        labels=str(files["labels"])).open(ref.inputs)
    np.testing.assert_array_equal(external.labels, capped.labels)
    assert external.info().to_dict()["rows"] == [int(r) for r in capped.rows]
    np.save(files["dir"] / "short.npy", np.zeros(7, np.int64))
    with pytest.raises(CalibrationError, match="7 labels but .* holds 40 samples"):
        EvalData(str(files["data"]), labels=str(files["dir"] / "short.npy")).open(ref.inputs)


def test_cached_reference_outputs_give_the_same_evaluation(files: dict[str, Path]) -> None:
    ref, cand = ModelRef(files["ref"]).load(), ModelRef(files["cand"]).load()
    samples = EvalData(str(files["data"])).open(ref.inputs)
    cached = run_reference(ref, samples)
    fresh = evaluate(ref, cand, samples, options=EvalOptions(latency_runs=0))
    reused = evaluate(None, cand, samples, options=EvalOptions(latency_runs=0), cached=cached)
    assert _metrics(fresh) == _metrics(reused)
    assert fresh.task == reused.task
    other = EvalData(str(files["data"]), num=5).open(ref.inputs)
    with pytest.raises(CalibrationError, match="cached reference outputs are for other data"):
        evaluate(None, cand, other, options=EvalOptions(latency_runs=0), cached=cached)


def test_jobs_are_values_that_run_in_another_process(files: dict[str, Path]) -> None:
    ref = ModelRef(files["ref"])
    samples = EvalData(str(files["data"])).open(ref.load().inputs)
    cached = run_reference(ref.load(), samples)
    options = EvalOptions(latency_runs=0)
    jobs = [EvaluationJob(ref, ModelRef(files[k]), EvalData(str(files["data"])), options,
                          cached) for k in ("cand", "renamed")]
    assert pickle.loads(pickle.dumps(jobs[0])) == jobs[0]
    with ProcessPoolExecutor(max_workers=1) as pool:
        remote = [f.result() for f in [pool.submit(run_job, job) for job in jobs]]
    local = [job() for job in jobs]
    for r, loc in zip(remote, local, strict=True):
        assert _metrics(r) == _metrics(loc) and r.data == loc.data
        assert r.outputs is None  # only the record travels back
    stack = OutputStack(["y"])
    stack.append([np.ones((1, 2))])
    assert pickle.loads(pickle.dumps(stack)).sample(0)[0].tolist() == [[1.0, 1.0]]


# ------------------------------------------------------------------ convert and compare agree

EXAMPLE = ROOT / "examples" / "digits_cnn.keras"
VAL = ROOT / "calibration_data" / "digits" / "val.npz"
CALIB = ROOT / "calibration_data" / "digits" / "calib.npz"


def test_convert_and_compare_report_identical_metrics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same artifact, float reference and data: the same SQNR, cosine and task metrics.

    The bundled digits CNN (real data, 300 labelled validation samples: more than the
    ``--max-eval 256`` cap, so both commands must also pick the same subset). The float models
    convert measured against are kept by wrapping the backends' ``build_float`` (the conversion
    is not byte-reproducible, so rebuilding them would not give the same reference)."""
    pytest.importorskip("tensorflow")
    from edgeopt_runtime.manifest import sha256_file

    from edgeopt.backends import get_backend
    from edgeopt.cli import main
    from edgeopt.convert import convert

    kept: dict[str, Path] = {}
    for fmt in ("tflite", "onnx"):
        backend = get_backend(fmt)

        def keep(source: Any, shapes: Any, workdir: Path, _b: Any = backend.build_float,
                 _fmt: str = fmt) -> Path:
            built = _b(source, shapes, workdir)
            kept[_fmt] = tmp_path / f"float_{_fmt}{built.suffix}"
            kept[_fmt].write_bytes(built.read_bytes())
            return built

        monkeypatch.setattr(backend, "build_float", keep)
    out = tmp_path / "out"
    report = convert(EXAMPLE, "arm-cpu", CALIB, val=VAL, out=out, latency_runs=2,
                     num_calib=50, max_eval=256, measure_memory=False).data
    target = report["targets"][0]
    assert {a["format"] for a in target["artifacts"]} == {"tflite", "onnx"}
    for art in target["artifacts"]:
        float_model = kept[art["format"]]
        assert sha256_file(float_model) == art["float_sha256"]  # the very reference convert used
        r = CliRunner().invoke(main, [
            "compare", str(float_model), str(out / art["path"]), "--data", str(VAL),
            "--out", str(tmp_path / f"cmp_{art['format']}"), "--no-per-layer",
            "--latency-runs", "2", "--max-eval", "256", "--json"], catch_exceptions=False)
        assert r.exit_code == 0, r.stderr
        cmp = json.loads(r.stdout)
        conv_data = report["data"]
        assert cmp["data"]["count"] == conv_data["count"] == 256
        assert cmp["data"]["sha256"] == conv_data["sha256"]
        assert cmp["data"]["rows"] == conv_data["rows"]
        for mine, theirs in zip(art["drift"], cmp["drift"], strict=True):
            assert mine["name"] == theirs["name"]
            assert mine["metrics"] == theirs["metrics"]  # sqnr_db, cosine, errors, top-k, KL
            assert mine["classifier"] == theirs["classifier"]
        assert art["task"]["metrics"] == cmp["task"]["metrics"]
        assert art["task"]["metrics"]["accuracy"]["float"] > 0.9
        assert set(art["latency"]) == set(cmp["latency"])  # one latency record, same keys
