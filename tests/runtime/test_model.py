"""edgeopt_runtime.load / Model.run on float and int8 TFLite and ONNX models built here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import edgeopt_runtime as rt
import numpy as np
import pytest
from edgeopt_runtime.errors import DelegateError, InputError, ModelLoadError
from edgeopt_runtime.manifest import write_manifest
from edgeopt_runtime.spec import QuantParams, dequantize, quantize

from .models import SHAPE, keras_model, to_onnx, to_tflite


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    dyn = keras_model(dynamic_batch=True)
    fixed = keras_model(dynamic_batch=False)
    return {
        "keras": dyn,
        "float_tflite": to_tflite(dyn, d / "float.tflite", int8=False),
        "int8_tflite": to_tflite(dyn, d / "int8.tflite", int8=True, io_dtype="int8"),
        "int8_floatio": to_tflite(dyn, d / "int8_fio.tflite", int8=True),
        "uint8_fixed": to_tflite(fixed, d / "uint8_b1.tflite", int8=True, io_dtype="uint8"),
        "onnx": to_onnx(dyn, d / "float.onnx"),
    }


def _x(n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, *SHAPE)).astype(np.float32)


# -- exact quantization helpers ---------------------------------------------------------------
@pytest.mark.parametrize("dtype,zp", [("int8", -3), ("uint8", 128), ("int8", 0)])
@pytest.mark.parametrize("ties", ["away", "even"])
def test_quantize_round_trips_every_grid_point_exactly(dtype: str, zp: int, ties: str) -> None:
    info = np.iinfo(dtype)
    q = np.arange(info.min, info.max + 1, dtype=np.int32).astype(dtype)
    p = QuantParams((0.0172,), (zp,))
    x = dequantize(q, p)
    assert np.array_equal(quantize(x, p, dtype, ties=ties), q)


def test_quantize_saturates_and_rounds_ties_per_engine() -> None:
    p = QuantParams((0.5,), (0,))
    x = np.array([-1000.0, -0.25, 0.25, 0.75, -0.75, 1000.0], dtype=np.float32)
    # x / scale = [-2000, -0.5, 0.5, 1.5, -1.5, 2000]
    assert quantize(x, p, "int8", ties="away").tolist() == [-128, -1, 1, 2, -2, 127]
    assert quantize(x, p, "int8", ties="even").tolist() == [-128, 0, 0, 2, -2, 127]
    assert quantize(x, p, "uint8", ties="away").tolist() == [0, 0, 1, 2, 0, 255]


def test_per_channel_quantization_uses_the_axis() -> None:
    p = QuantParams((1.0, 0.5), (0, 10), axis=1)
    x = np.array([[1.0, 1.0], [-2.0, 3.0]], dtype=np.float32)
    q = quantize(x, p, "int8")
    assert q.tolist() == [[1, 12], [-2, 16]]
    assert np.array_equal(dequantize(q, p), x)


# -- running ----------------------------------------------------------------------------------
def test_int8_model_run_matches_raw_interpreter_dequantized_by_hand(models: dict) -> None:
    from ai_edge_litert.interpreter import Interpreter

    m = rt.load(models["int8_tflite"])
    spec_in, spec_out = m.inputs[0], m.outputs[0]
    assert spec_in.dtype == "int8" and spec_out.dtype == "int8"
    assert spec_in.shape == (None, *SHAPE) and spec_in.is_dynamic

    raw = Interpreter(str(models["int8_tflite"]))
    raw.allocate_tensors()
    din, dout = raw.get_input_details()[0], raw.get_output_details()[0]
    x = _x(seed=3)
    s_in, zp_in = din["quantization"]
    q = np.clip(np.floor(np.abs(x / s_in) + 0.5) * np.sign(x / s_in) + zp_in, -128, 127)
    raw.set_tensor(din["index"], q.astype(np.int8))
    raw.invoke()
    s_out, zp_out = dout["quantization"]
    expected = (raw.get_tensor(dout["index"]).astype(np.float32) - zp_out) * s_out

    got = m.run(x)
    assert list(got) == [spec_out.name]
    assert np.array_equal(got[0], expected)
    assert got[0].dtype == np.float32
    # raw=True: integers straight through, identical to the interpreter's own tensor
    raw_out = m.run(q.astype(np.int8), raw=True)[0]
    assert raw_out.dtype == np.int8
    assert np.array_equal(raw_out, raw.get_tensor(dout["index"]))


def test_int8_and_float_models_are_called_the_same_way(models: dict) -> None:
    x = _x(4, seed=5)
    ref = models["keras"](x).numpy()
    for key in ("float_tflite", "onnx"):
        out = rt.load(models[key]).run({"image": x})[0]
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    for key in ("int8_tflite", "int8_floatio"):
        m = rt.load(models[key])
        out = m.run({m.inputs[0].name: x})[0]
        step = m.outputs[0].quantization.scale[0] if m.outputs[0].quantization else 0.01
        # a tiny conv net quantized to int8: within a few output quantization steps of float
        assert np.abs(out - ref).max() <= 6 * max(step, 0.005)


def test_fixed_batch_model_needs_run_batch(models: dict) -> None:
    m = rt.load(models["uint8_fixed"])
    assert m.inputs[0].shape == (1, *SHAPE) and m.inputs[0].dtype == "uint8"
    x = _x(3, seed=7)
    with pytest.raises(InputError, match="run_batch"):
        m.run(x)
    batched = m.run_batch(x)[0]
    singles = np.concatenate([m.run(x[i : i + 1])[0] for i in range(3)])
    assert batched.shape == (3, 5)
    assert np.array_equal(batched, singles)


def test_dynamic_batch_runs_any_batch(models: dict) -> None:
    m = rt.load(models["float_tflite"])
    for n in (1, 3, 2):
        assert m.run(_x(n))[0].shape == (n, 5)
    assert m.run_batch(_x(4))[0].shape == (4, 5)


@pytest.mark.parametrize(
    "feeds,match",
    [
        ({"nope": _x()}, r"expected \['image'\].*unknown \['nope'\]"),
        ([_x(), _x()], "expected 1 input"),
        (_x()[0], r"expected rank 4 \[\?, 8, 8, 3\], got rank 3"),
        (np.zeros((1, 8, 9, 3), np.float32), r"expected shape \[\?, 8, 8, 3\], got \[1, 8, 9, 3\]"),
        (np.zeros((1, 8, 8, 3), np.int32), "expected dtype float32, got int32"),
        ("text", "feeds must be a dict"),
        (np.zeros((0, 8, 8, 3), np.float32), "empty array"),
    ],
)
def test_bad_feeds_say_expected_and_given(models: dict, feeds: object, match: str) -> None:
    m = rt.load(models["onnx"])
    with pytest.raises(InputError, match=match):
        m.run(feeds)


def test_raw_mode_refuses_float_for_integer_input(models: dict) -> None:
    m = rt.load(models["int8_tflite"])
    with pytest.raises(InputError, match="raw=True expects int8"):
        m.run(_x(), raw=True)
    assert m.run(_x().astype(np.float64))[0].dtype == np.float32  # float64 quantized the same


# -- loading errors ---------------------------------------------------------------------------
def test_load_errors_are_one_clear_line(models: dict, tmp_path: Path) -> None:
    cases = {
        tmp_path / "missing.tflite": "no such file",
        tmp_path: "has no manifest.json",
        (tmp_path / "m.pb"): "unsupported model file extension '.pb'",
        (tmp_path / "empty.tflite"): "empty",
        (tmp_path / "really_onnx.tflite"): "really a onnx file",
        (tmp_path / "really_tflite.onnx"): "really a tflite file",
    }
    (tmp_path / "m.pb").write_bytes(b"x")
    (tmp_path / "empty.tflite").write_bytes(b"")
    shutil.copy(models["onnx"], tmp_path / "really_onnx.tflite")
    shutil.copy(models["float_tflite"], tmp_path / "really_tflite.onnx")
    for path, match in cases.items():
        with pytest.raises(ModelLoadError, match=match) as info:
            rt.load(path)
        assert "\n" not in str(info.value)


# -- artifact directories ---------------------------------------------------------------------
def _artifact(tmp: Path, models: dict, runtime: dict, files: dict[str, str]) -> Path:
    entries = []
    for name, key in files.items():
        shutil.copy(models[key], tmp / name)
        m = rt.load(tmp / name)
        entries.append(
            {
                "file": name,
                "format": m.format,
                "precision": "int8",
                "sha256": rt.manifest.sha256_file(tmp / name),
                "size_bytes": (tmp / name).stat().st_size,
                "inputs": [s.to_dict() for s in m.inputs],
                "outputs": [s.to_dict() for s in m.outputs],
            }
        )
    write_manifest(tmp, {"target": {"name": "t"}, "runtime": runtime, "models": entries})
    return tmp


def test_artifact_dir_loads_default_and_selected_model(models: dict, tmp_path: Path) -> None:
    d = _artifact(
        tmp_path,
        models,
        {"threads": 2, "tflite_delegate": "xnnpack", "onnx_providers": ["CPUExecutionProvider"]},
        {"model_int8.tflite": "int8_floatio", "model_int8.onnx": "onnx"},
    )
    m = rt.load(d)
    assert m.format == "tflite" and m.threads == 2 and m.manifest is not None
    assert rt.load(d, format="onnx").format == "onnx"
    with pytest.raises(ModelLoadError, match="no float16 model"):
        rt.load(d, precision="float16")
    # a byte changed after conversion: refused before the interpreter sees it
    data = bytearray((d / "model_int8.tflite").read_bytes())
    data[-1] ^= 0xFF
    (d / "model_int8.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match the manifest"):
        rt.load(d)


def test_manifest_cannot_point_outside_its_folder(models: dict, tmp_path: Path) -> None:
    d = _artifact(tmp_path, models, {}, {"m.tflite": "float_tflite"})
    data = json.loads((d / "manifest.json").read_text())
    data["models"][0]["file"] = "../m.tflite"
    (d / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="plain file name"):
        rt.load(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not JSON"):
        rt.load(d)


def test_missing_delegate_library_is_a_clear_error(models: dict) -> None:
    with pytest.raises(DelegateError, match="libedgetpu.so.1"):
        rt.load(models["int8_tflite"], delegate="edgetpu")
    with pytest.raises(DelegateError, match="could not be loaded"):
        rt.load(models["int8_tflite"], delegate="/nonexistent/libfoo.so")


def test_edgetpu_artifact_falls_back_to_cpu_with_a_note(models: dict, tmp_path: Path) -> None:
    if rt.model.edgetpu_available():
        pytest.skip("libedgetpu.so.1 is installed here: the fallback path does not apply")
    d = _artifact(
        tmp_path,
        models,
        {"tflite_delegate": "edgetpu", "delegate_library": "libedgetpu.so.1"},
        {"model_int8_edgetpu.tflite": "int8_floatio", "model_int8.tflite": "int8_floatio"},
    )
    m = rt.load(d)
    assert m.path.name == "model_int8.tflite" and m.delegate == "xnnpack"
    assert any("libedgetpu.so.1 not found" in n for n in m.notes)
    assert "host CPU" in " ".join(m.info()["notes"])
    with pytest.raises(DelegateError):
        rt.load(d, delegate="edgetpu")  # asked for explicitly: no silent fallback


def test_gpu_artifact_without_gpu_delegate_runs_on_cpu(models: dict, tmp_path: Path) -> None:
    if rt.model.gpu_delegate_available():
        pytest.skip("a GPU delegate library is installed here")
    d = _artifact(tmp_path, models, {"tflite_delegate": "gpu"}, {"m.tflite": "float_tflite"})
    m = rt.load(d)
    assert m.delegate == "xnnpack"
    assert any("GPU delegate library not found" in n for n in m.notes)


@pytest.mark.parametrize("ties", ["away", "even"])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_buffered_quantizer_equals_reference_quantize(ties: str, dtype: str) -> None:
    from edgeopt_runtime.spec import Quantizer

    p = QuantParams((0.037,), (-7 if dtype == "int8" else 121,))
    qz = Quantizer(p, dtype, ties=ties)
    rng = np.random.default_rng(1)
    for shape in [(1, 8, 8, 3), (1, 8, 8, 3), (2, 5)]:  # same shape twice: buffers reused
        x = rng.normal(0, 3, shape)
        x.flat[:4] = [0.5 * 0.037, -0.5 * 0.037, 1.5 * 0.037, 1000.0]  # ties and saturation
        for arr in (x, x.astype(np.float32)):
            assert np.array_equal(qz(arr), quantize(arr, p, dtype, ties=ties))


def test_buffered_dequantizer_equals_reference_dequantize() -> None:
    from edgeopt_runtime.spec import Dequantizer

    p = QuantParams((0.0213,), (-9,))
    q = np.arange(-128, 128, dtype=np.int32).astype(np.int8).reshape(2, 128)
    dq = Dequantizer(p)
    first = dq(q)
    assert np.array_equal(first, dequantize(q, p)) and first.dtype == np.float32
    assert dq(q) is not first  # results handed to callers are never overwritten
    scalar = dq(np.array(-9 + 5, np.int8))  # a 0-d output (found by the semantic fuzz)
    assert isinstance(scalar, np.ndarray) and scalar.shape == ()
    assert scalar == np.float32(5) * np.float32(0.0213)
