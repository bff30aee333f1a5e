"""The whole pipeline: every source format x every built-in target x every format it allows.

Each source is converted once (cached) for all its targets; the tests then check many things on
that one result: artifact layout, manifests (IO spec with scale / zero point from the produced
file, calibration hash, sha256), int8-ness, IO dtypes per profile, drift within tolerance and
the report. Bad inputs fail with one line and leave nothing under OUT.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import edgeopt_runtime as rt
import numpy as np
import pytest
from edgeopt_runtime.errors import (
    CalibrationError,
    EdgeOptError,
    ModelLoadError,
    TargetError,
    UnsupportedOpError,
)
from edgeopt_runtime.manifest import read_manifest, sha256_file

import edgeopt
from edgeopt.artifact import OutputError
from edgeopt.backends import get_backend
from edgeopt.calibration import open_calibration
from edgeopt.convert import ConvertReport, OptionError
from edgeopt.report import load_report
from edgeopt.targets import load_target

from . import _models as M

TF_KINDS = ("keras", "h5", "savedmodel")
ONNX_KINDS = ("onnx-dynamic", "onnx-opset9")
NUM_CALIB = 12
# (format, precision) per target, primary first; ONNX sources only reach arm-cpu's onnx.
EXPECTED = {
    "arm-cpu": [("tflite", "int8"), ("onnx", "int8")],
    "edgetpu": [("tflite", "int8")],
    "mobile-gpu": [("tflite", "float16"), ("tflite", "int8")],
}
INT8_MIN_SQNR_DB, INT8_MIN_COSINE = 30.0, 0.999  # measured 40-45 dB on these models
FP16_MIN_SQNR_DB = 60.0  # measured > 100 dB


def _layout(kind: str) -> str:
    return "hwc" if kind in TF_KINDS else "chw"


@functools.cache
def converted(kind: str) -> ConvertReport:
    """Convert one source for every target it can reach (once per session)."""
    out = M.root() / f"out_{kind}"
    if kind == "h5":  # also exercise --force over an earlier result
        (out / "arm-cpu").mkdir(parents=True)
        (out / "arm-cpu" / "manifest.json").write_text("{}")
        (out / "stale.txt").write_text("from an earlier run")
    targets = list(EXPECTED) if kind in TF_KINDS else ["arm-cpu"]
    return edgeopt.convert(  # the package attribute is callable (lazy re-export)
        str(M.SOURCES[kind]()),
        targets,
        str(M.calib_npz(_layout(kind))),
        val=str(M.val_npz(_layout(kind))),
        # ONNX -> TFLite (onnx2tf) has its own tests: tests/converter/test_onnx2tf.py
        formats="all" if kind in TF_KINDS else "onnx",
        num_calib=NUM_CALIB,
        out=out,
        force=kind == "h5",
        latency_runs=3,
    )


CASES = [(k, t) for k in TF_KINDS for t in EXPECTED] + [(k, "arm-cpu") for k in ONNX_KINDS]


def _expected(kind: str, target: str) -> list[tuple[str, str]]:
    return EXPECTED[target] if kind in TF_KINDS else [("onnx", "int8")]


@pytest.mark.parametrize(("kind", "target"), CASES)
def test_artifact_dir_and_manifest(kind: str, target: str) -> None:
    report = converted(kind)
    tdir = report.out / target
    manifest = read_manifest(tdir)
    assert [(m.format, m.precision) for m in manifest.models] == _expected(kind, target)
    for m in manifest.models:
        path = tdir / m.file
        assert m.sha256 == sha256_file(path) and m.size_bytes == path.stat().st_size
    data = manifest.data
    profile = load_target(target)
    assert data["target"]["name"] == target and manifest.runtime == profile.runtime_manifest()
    calib = open_calibration(
        M.calib_npz(_layout(kind)), list(_source_inputs(kind)), num=NUM_CALIB, seed=0
    )
    assert data["calibration"]["sha256"] == calib.sha256
    assert data["calibration"]["count"] == NUM_CALIB and data["calibration"]["synthetic"] is False
    assert data["calibration"]["method"] == "minmax"
    assert data["source"]["format"] == kind.split("-")[0]
    assert data["source"]["sha256"] == report["source"]["sha256"]
    assert data["tools"]["tensorflow"] and data["tools"]["onnxruntime"]
    model = rt.load(tdir, threads=1)  # loads as shipped (accelerators fall back to the CPU)
    sample = next(iter(calib))
    out = model.run(sample)
    assert np.isfinite(out[0]).all()


def _source_inputs(kind: str) -> list[Any]:
    from edgeopt.sources import load_source

    return list(load_source(M.SOURCES[kind]()).inputs)


@pytest.mark.parametrize(("kind", "target"), CASES)
def test_io_spec_follows_profile(kind: str, target: str) -> None:
    profile = load_target(target)
    manifest = read_manifest(converted(kind).out / target)
    for entry in manifest.models:
        loaded = rt.load(
            manifest.directory, format=entry.format, precision=entry.precision, threads=1
        )
        io_dtype = profile.tflite.io_dtype.value
        want = io_dtype if (entry.format, entry.precision) == ("tflite", "int8") else "float32"
        for declared, spec in zip(
            entry.inputs + entry.outputs, loaded.inputs + loaded.outputs, strict=True
        ):
            assert declared["dtype"] == want == spec.dtype, (entry.file, declared)
            if want != "float32":  # scale / zero point recorded from the produced file
                assert declared["quantization"]["scale"] == list(spec.quantization.scale)
                assert declared["quantization"]["scale"][0] > 0
        batch = entry.inputs[0]["shape"][0]
        if profile.shapes.static or profile.shapes.batch_one or kind == "onnx-opset9":
            assert batch == 1 and not any(d is None for d in entry.inputs[0]["shape"])
        else:
            assert batch is None  # dynamic batch kept for arm-cpu


@pytest.mark.parametrize(("kind", "target"), CASES)
def test_int8_artifacts_really_are_int8(kind: str, target: str) -> None:
    report = converted(kind)
    for art in (a for a in report.artifacts if a["target"] == target):
        path = report.out / art["path"]
        if art["precision"] != "int8":
            continue
        if art["format"] == "tflite":
            body = [o for o in M.tflite_ops(path) if o["op"] not in ("QUANTIZE", "DEQUANTIZE")]
            assert len(body) >= 5 and all(o["out"] == ["int8"] for o in body), body
            assert all(set(o["in"]) <= {"int8", "int32"} for o in body), body
            assert art["details"]["float_ops"] == {}
        else:
            summary = M.onnx_summary(path)
            assert summary["ops"]["QuantizeLinear"] >= 3
            assert summary["ops"]["DequantizeLinear"] >= 6
            assert summary["fed_by_dq"] and all(summary["fed_by_dq"].values())
            assert summary["act_zp"] == {"uint8"} and "int8" in summary["weight_types"]


@pytest.mark.parametrize(("kind", "target"), CASES)
def test_outputs_within_tolerance_of_float(kind: str, target: str) -> None:
    report = converted(kind)
    for art in (a for a in report.artifacts if a["target"] == target):
        metrics = art["drift"][0]["metrics"]
        if art["precision"] == "float16":
            assert metrics["sqnr_db"] >= FP16_MIN_SQNR_DB
            continue
        assert metrics["sqnr_db"] >= INT8_MIN_SQNR_DB, art["path"]
        assert metrics["cosine"] >= INT8_MIN_COSINE, art["path"]
        out_q = art["io"]["outputs"][0]["quantization"]
        if out_q:  # integer outputs: the error stays within 3 output quantization steps
            assert metrics["max_abs_error"] <= 3 * out_q["scale"][0]


@pytest.mark.parametrize("kind", TF_KINDS + ONNX_KINDS)
def test_report_files_sizes_latency(kind: str) -> None:
    report = converted(kind)
    out = report.out
    on_disk = load_report(out)
    assert on_disk["kind"] == "convert" and on_disk["schema"] == "edgeopt.report/1"
    assert json.loads((out / "report.json").read_text())["targets"][0]["name"] == "arm-cpu"
    md = (out / "report.md").read_text()
    assert (out / "report.html").is_file()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(
        t["name"] for t in report["targets"]
    )  # no _work, no stale dirs
    assert not list(out.parent.glob(f".{out.name}.edgeopt-*"))  # no temp / old dirs left
    for art in report.artifacts:
        assert f"{art['target']} · {art['file']}" in md
        assert art["size_bytes"] == (out / art["path"]).stat().st_size
        assert art["size_ratio"] == pytest.approx(
            art["size_bytes"] / art["float_size_bytes"], abs=1e-4
        )
        lat = art["latency"]
        ref, cand = lat["reference"], lat["candidate"]  # float model, artifact
        assert ref["runs"] == cand["runs"] == 3
        assert ref["p50_ms"] > 0 and cand["p50_ms"] > 0
        assert lat["speedup_p50"] == pytest.approx(ref["p50_ms"] / cand["p50_ms"], rel=1e-2)
        assert art["conversion_seconds"] > 0
    assert report["data"]["role"] == "validation" and report["data"]["count"] == M.N_VAL
    assert report["data"]["sha256"] and all(t["status"] == "ok" for t in report["targets"])
    assert report["synthetic_calibration"] is False


def test_force_replaced_earlier_output() -> None:
    out = converted("h5").out
    assert not (out / "stale.txt").exists()
    assert read_manifest(out / "arm-cpu").models[0].file == "model_int8.tflite"


def test_synthetic_calibration_is_marked_loudly_and_keep_float_applies(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = edgeopt.convert(
        M.keras_file(),
        "arm-cpu",
        None,
        allow_synthetic=True,
        num_calib=8,
        keep_float=[r"/fc_1/"],
        formats="tflite",
        out=out,
        latency_runs=2,
    )
    assert report["synthetic_calibration"] is True
    assert report["notes"][0].startswith("WARNING: SYNTHETIC CALIBRATION")
    assert "SYNTHETIC" in (out / "report.md").read_text()
    assert read_manifest(out / "arm-cpu").data["calibration"]["synthetic"] is True
    (art,) = report.artifacts
    assert art["details"]["keep_float"] and art["details"]["float_ops"] == {"FULLY_CONNECTED": 1}


def test_multi_input_multi_output_keeps_names(tmp_path: Path) -> None:
    calib = _npz(tmp_path, "multi.npz", a=M.images((8,), 16, seed=1), b=M.images((4,), 16, seed=2))
    report = edgeopt.convert(
        M.multi_io_keras_file(), ["arm-cpu", "edgetpu"], calib, out=tmp_path / "out", latency_runs=1
    )
    assert len(report.artifacts) == 3
    for art in report.artifacts:
        assert sorted(i["name"] for i in art["io"]["inputs"]) == ["a", "b"]
        assert [o["name"] for o in art["io"]["outputs"]] == ["head_one", "head_two"]
        assert [d["name"] for d in art["drift"]] == ["head_one", "head_two"]
        assert all(d["metrics"]["sqnr_db"] >= INT8_MIN_SQNR_DB for d in art["drift"]), art["path"]
    edgetpu = read_manifest(tmp_path / "out" / "edgetpu").models[0]
    assert {(i["name"], i["dtype"], tuple(i["shape"])) for i in edgetpu.inputs} == {
        ("a", "uint8", (1, 8)),
        ("b", "uint8", (1, 4)),
    }


# ------------------------------------------------------------------------------ bad input


def _npz(tmp: Path, name: str, **arrays: np.ndarray) -> Path:
    path = tmp / name
    np.savez(path, **arrays)
    return path


def _toml(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _bad_cases(tmp: Path) -> dict[str, tuple[dict[str, Any], type[EdgeOptError], str]]:
    keras, calib = str(M.keras_file()), str(M.calib_npz())
    good = {"model": keras, "targets": ["arm-cpu"], "calib": calib}
    img = M.images(M.HWC, 4, seed=3)
    corrupt = tmp / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    head = 'name = "x"\nformats = ["tflite"]\n[quantization]\n'
    unknown_key = _toml(tmp, "a.toml", head + 'schem = "int8"\n')
    wrong_type = _toml(tmp, "b.toml", head + 'per_channel = "yes"\n')
    return {
        "unknown target": ({**good, "targets": ["tpu9000"]}, TargetError, "unknown target"),
        "toml unknown key": (
            {**good, "targets": [str(unknown_key)]},
            TargetError,
            "unknown key(s) in [quantization]: schem",
        ),
        "toml wrong type": (
            {**good, "targets": [str(wrong_type)]},
            TargetError,
            "must be true or false",
        ),
        "calib names": (
            {**good, "calib": str(_npz(tmp, "n.npz", a=img, b=img))},
            CalibrationError,
            "no array for input(s) 'image'",
        ),
        "calib shape": (
            {**good, "calib": str(_npz(tmp, "s.npz", image=img[..., :1]))},
            CalibrationError,
            "expects float32[?, 8, 8, 3]",
        ),
        "calib dtype": (
            {**good, "calib": str(_npz(tmp, "d.npz", image=img.astype(complex)))},
            CalibrationError,
            "unsupported dtype",
        ),
        "calib empty": (
            {**good, "calib": str(_npz(tmp, "e.npz", image=img[:0]))},
            CalibrationError,
            "no samples",
        ),
        "calib nan": (
            {
                **good,
                "calib": str(
                    _npz(tmp, "nan.npz", image=np.where(img > 0.5, np.nan, img).astype(np.float32))
                ),
            },
            CalibrationError,
            "NaN",
        ),
        "no calib": ({**good, "calib": None}, CalibrationError, "--allow-synthetic"),
        "corrupt model": ({**good, "model": str(corrupt)}, ModelLoadError, "corrupt.keras"),
        "missing model": ({**good, "model": str(tmp / "nope.onnx")}, ModelLoadError, "no such"),
        "lambda model": (
            {**good, "model": str(M.lambda_keras_file())},
            ModelLoadError,
            "--trust-model",
        ),
        "keep-float on edgetpu": (
            {**good, "targets": ["edgetpu"], "keep_float": ["fc"]},
            TargetError,
            "float_fallback = false",
        ),
        "bad regex": ({**good, "keep_float": ["(unclosed"]}, OptionError, "regular expression"),
        "format not allowed": (
            {**good, "targets": ["edgetpu"], "formats": "onnx"},
            TargetError,
            "produces tflite only",
        ),
        "rewrite on a keras source": (
            {**good, "targets": ["edgetpu"], "rewrite": ["edgetpu"]},
            OptionError,
            "rewrites ONNX graphs",
        ),
        "unknown rewrite": ({**good, "rewrite": ["gpu"]}, OptionError, "unknown --rewrite"),
        "duplicate target": (
            {**good, "targets": ["arm-cpu", "arm-cpu"]},
            OptionError,
            "given twice",
        ),
        "unknown format": ({**good, "formats": "coreml"}, OptionError, "unknown format"),
        "op not int8 on edgetpu": (
            {
                **good,
                "model": str(M.cos_savedmodel_dir()),
                "targets": ["edgetpu"],
                "calib": str(_npz(tmp, "x.npz", x=M.images((4,), 4, seed=5))),
            },
            UnsupportedOpError,
            "COS",
        ),
    }


def test_bad_inputs_fail_with_one_line_and_write_nothing(tmp_path: Path) -> None:
    for name, (kwargs, error, fragment) in _bad_cases(tmp_path).items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        kwargs = dict(kwargs)
        with pytest.raises(error) as info:
            edgeopt.convert(
                kwargs.pop("model"),
                kwargs.pop("targets"),
                kwargs.pop("calib"),
                out=out,
                latency_runs=1,
                **kwargs,
            )
        msg = str(info.value)
        assert fragment in msg and "\n" not in msg, (name, msg)
        assert not out.exists(), name
    assert not list(tmp_path.glob(".out_*")), "temporary folders left behind"


def _previous_output(out: Path) -> None:
    (out / "arm-cpu").mkdir(parents=True)
    (out / "arm-cpu" / "manifest.json").write_text("{}")
    (out / "report.json").write_text("{}")


def test_existing_output_refused_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _previous_output(out)
    args = (M.keras_file(), "arm-cpu", M.calib_npz())
    with pytest.raises(OutputError, match="--force"):
        edgeopt.convert(*args, out=out)
    # --force, but the conversion fails (COS on a no-fallback target): the old output stays.
    with pytest.raises(UnsupportedOpError):
        edgeopt.convert(
            M.cos_savedmodel_dir(),
            "edgetpu",
            _npz(tmp_path, "x.npz", x=M.images((4,), 4, seed=5)),
            out=out,
            force=True,
        )
    assert (out / "report.json").read_text() == "{}"
    other = tmp_path / "home"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="not edgeopt output"):
        edgeopt.convert(*args, out=other, force=True)
    assert (other / "thesis.tex").read_text() == "precious"
    with pytest.raises(OutputError, match="not a directory"):
        edgeopt.convert(*args, out=other / "thesis.tex")
    assert not list(tmp_path.glob(".*edgeopt-*"))


def test_interrupt_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = get_backend("onnx")

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(backend, "build", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        edgeopt.convert(M.keras_file(), "arm-cpu", M.calib_npz(), out=out, latency_runs=1)
    assert not out.exists() and list(tmp_path.iterdir()) == []
