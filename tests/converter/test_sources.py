"""Source loaders: every format reads into one ModelSource; bad files fail with one clear line."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from edgeopt_runtime.errors import ModelLoadError
from edgeopt_runtime.manifest import sha256_file

from edgeopt import sources
from edgeopt.sources import load_source, register_loader, sha256_tree

from . import _models as M


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_keras_files_load_with_names_shapes_dtypes(kind: str) -> None:
    path = M.SOURCES[kind]()
    src = load_source(path)
    assert src.format == kind
    assert [(s.name, s.shape, s.dtype) for s in src.inputs] == [
        ("image", (None, *M.HWC), "float32")]
    assert [(s.name, s.shape, s.dtype) for s in src.outputs] == [
        ("probs", (None, M.CLASSES), "float32")]
    assert src.sha256 == sha256_file(path)
    assert src.is_tensorflow and src.handle is not None


def test_savedmodel_uses_serving_default_signature() -> None:
    src = load_source(M.savedmodel_dir())
    assert src.format == "savedmodel" and src.signature_key == "serving_default"
    assert [(s.name, s.shape) for s in src.inputs] == [("image", (None, *M.HWC))]
    assert [(s.name, s.shape) for s in src.outputs] == [("output_0", (None, M.CLASSES))]
    assert src.sha256 == sha256_tree(M.savedmodel_dir())


def test_onnx_dynamic_axes_become_none() -> None:
    src = load_source(M.onnx_dynamic_file())
    assert src.format == "onnx" and not src.is_tensorflow
    assert [(s.name, s.shape, s.dtype) for s in src.inputs] == [
        ("input", (None, *M.CHW), "float32")]
    assert [(s.name, s.shape) for s in src.outputs] == [("output", (None, M.CLASSES))]
    assert src.notes == ()


def test_onnx_opset9_initializer_inputs_are_not_inputs() -> None:
    import onnx

    raw = onnx.load(str(M.onnx_opset9_file()))
    assert len(raw.graph.input) == 5  # the file really lists the 4 initializers as inputs
    src = load_source(M.onnx_opset9_file())
    assert [s.name for s in src.inputs] == ["input"]
    assert src.inputs[0].shape == (1, *M.CHW)
    assert any("initializer" in n for n in src.notes)
    assert src.handle.ir_version >= 4  # IR 3 would make the cleaned graph invalid


def test_sha256_tree_changes_with_content(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"2")
    first = sha256_tree(tmp_path)
    assert sha256_tree(tmp_path) == first
    (tmp_path / "sub" / "b").write_bytes(b"3")
    assert sha256_tree(tmp_path) != first


def test_lambda_layer_refused_in_safe_mode_and_loaded_when_trusted() -> None:
    with pytest.raises(ModelLoadError, match="--trust-model") as info:
        load_source(M.lambda_keras_file())
    assert "\n" not in str(info.value) and "lambda.keras" in str(info.value)
    src = load_source(M.lambda_keras_file(), trust_model=True)
    assert [s.name for s in src.inputs] == ["x"]


def test_custom_layer_error_names_the_class() -> None:
    with pytest.raises(ModelLoadError, match="'AddOne'") as info:
        load_source(M.custom_layer_keras_file())
    assert "\n" not in str(info.value)


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "empty_dir").mkdir()
    zipfile.ZipFile(tmp / "broken.keras", "w").close()  # a zip, but no Keras archive inside
    files = {
        "garbage.keras": (b"not a zip", "not a .keras archive"),
        "garbage.h5": (b"not hdf5 at all", "not an HDF5 file"),
        "garbage.onnx": (b"\x08\x07\x12\x00garbage\xff\xff\xff", "ONNX"),
        "model.tflite": (b"TFL3", "already a TFLite model"),
        "model.pt": (b"torch", "torch.onnx.export"),
        "notes.txt": (b"hi", "unsupported model format"),
    }
    out = {}
    for name, (data, expect) in files.items():
        (tmp / name).write_bytes(data)
        out[name] = (tmp / name, expect)
    out["empty_dir"] = (tmp / "empty_dir", "no saved_model.pb")
    out["missing.onnx"] = (tmp / "missing.onnx", "no such file")
    out["broken.keras"] = (tmp / "broken.keras", "cannot load Keras model")
    return out


def test_bad_model_files_fail_with_one_line(tmp_path: Path) -> None:
    for name, (path, expect) in _bad_files(tmp_path).items():
        with pytest.raises(ModelLoadError) as info:
            load_source(path)
        msg = str(info.value)
        assert expect in msg, (name, msg)
        assert str(path) in msg and "\n" not in msg, (name, msg)


def test_empty_onnx_graph_is_refused(tmp_path: Path) -> None:
    import onnx

    path = tmp_path / "empty.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(path))
    with pytest.raises(ModelLoadError, match="no graph nodes"):
        load_source(path)


def test_duplicate_loader_name_is_an_error() -> None:
    assert {"keras", "savedmodel", "onnx"} <= set(sources.loader_names())
    with pytest.raises(ValueError, match="already registered"):
        register_loader("onnx", lambda p: False, lambda p, t: None)  # type: ignore[arg-type,return-value]


def test_converter_modules_import_no_heavy_framework() -> None:
    code = (
        "import sys, edgeopt, edgeopt.sources, edgeopt.convert, edgeopt.backends, "
        "edgeopt.commands.convert, edgeopt.commands.targets\n"
        "assert callable(edgeopt.convert)\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'onnx', 'tf2onnx') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
