"""The runtime's registries and tables: runners, delegates, the manifest schema, file reading."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import edgeopt_runtime as rt
import numpy as np
import pytest
from edgeopt_runtime import backends, delegates, files, manifest_schema, npz
from edgeopt_runtime.backends import Backend, Runner
from edgeopt_runtime.errors import DelegateError, EdgeOptError, InputError, ModelLoadError

from .test_profile import build_models


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_models(tmp_path_factory.getbasetemp())


# -- runners -----------------------------------------------------------------------------------
def test_both_runners_satisfy_the_runner_protocol(models: dict) -> None:
    for key in ("int8_tflite", "float_onnx"):
        m = rt.load(models[key])
        assert isinstance(m.runner, Runner), key
        assert m.runner.format == backends.for_extension(models[key].suffix).format
        assert m.runner.threads_effective()


def test_runner_registry_refuses_duplicates_and_knows_extensions() -> None:
    assert backends.formats() == ("tflite", "onnx")
    assert backends.for_extension(".TFLITE").format == "tflite"
    assert backends.for_extension(".pb") is None
    with pytest.raises(ValueError, match="already registered"):
        backends.register(Backend("tflite", (".tfl",), "x"))
    with pytest.raises(ValueError, match="already taken"):
        backends.register(Backend("other", (".onnx",), "x"))
    with pytest.raises(ModelLoadError, match="no runtime backend for format 'pb'"):
        backends.get("pb")


def test_profile_and_model_use_only_the_runner_interface() -> None:
    """No format ladders, no private backend imports outside backends/ (issue #11)."""
    import edgeopt_runtime.model as model_mod
    import edgeopt_runtime.profile as profile_mod

    for mod in (profile_mod, model_mod):
        src = inspect.getsource(mod)
        assert "_ort" not in src and "_interpreter_module" not in src, mod.__name__
        assert 'fmt == "tflite"' not in src and 'format == "onnx"' not in src, mod.__name__
    assert inspect.signature(rt.Model).parameters["runner"].annotation in ("Runner", Runner)


# -- delegates ---------------------------------------------------------------------------------
def test_delegate_registry_entries() -> None:
    assert delegates.names() == ("xnnpack", "none", "edgetpu", "gpu")
    tpu = delegates.get("edgetpu")
    assert tpu.accelerator and tpu.needs_compiled_model and tpu.libraries[0] == "libedgetpu.so.1"
    assert tpu.compiled_suffix == "_edgetpu.tflite" and "host CPU" in tpu.fallback_note
    assert delegates.get("xnnpack").available() and not delegates.get("xnnpack").external
    assert json.loads(json.dumps(tpu.to_dict()))["precisions"] == ["int8", "uint8"]
    with pytest.raises(ValueError, match="already registered"):
        delegates.register(delegates.Delegate("gpu", "again"))
    with pytest.raises(DelegateError, match="unknown delegate 'evil'"):
        delegates.get("evil")
    assert not delegates.library_installed("/tmp/libx.so")  # a path is never "installed"


@pytest.mark.parametrize(
    ("runtime", "ok"),
    [
        ({}, ("xnnpack", None)),
        (
            {"tflite_delegate": "edgetpu", "delegate_library": "libedgetpu.so.1"},
            ("edgetpu", "libedgetpu.so.1"),
        ),  # fmt: skip
        ({"tflite_delegate": "gpu", "delegate_library": "/tmp/libevil.so"}, None),
        ({"tflite_delegate": "gpu", "delegate_library": "libedgetpu.so.1"}, None),
        ({"tflite_delegate": "./libevil.so"}, None),
        ({"tflite_delegate": 3}, None),
    ],
)
def test_manifest_delegates_come_from_the_registry(runtime: dict, ok: tuple | None) -> None:
    if ok is not None:
        assert delegates.check_manifest_delegate(runtime, "m.json") == ok
    else:
        with pytest.raises(ModelLoadError, match="m.json: runtime"):
            delegates.check_manifest_delegate(runtime, "m.json")


def test_caller_delegates_are_names_or_library_paths(models: dict) -> None:
    with pytest.raises(DelegateError, match="unknown delegate 'xnnpak'"):
        rt.load(models["int8_tflite"], delegate="xnnpak")  # a typo is not dlopen-ed
    assert delegates.is_library_path("/opt/lib/libfoo.so")
    assert delegates.is_library_path("libfoo.so.2") and not delegates.is_library_path("gpu")


@pytest.mark.parametrize("threads", [0, 257, 100000, -1, True, 2.5, "4"])
def test_load_bounds_threads(models: dict, threads: object) -> None:
    with pytest.raises(EdgeOptError, match=r"threads must be an integer in 1\.\.256"):
        rt.load(models["int8_tflite"], threads=threads)


# -- manifest schema ---------------------------------------------------------------------------
def test_schema_table_takes_new_fields_from_their_owners() -> None:
    before = list(manifest_schema.FIELDS)
    try:
        manifest_schema.add_field(
            manifest_schema.Field(
                "models[].inputs[].layout",
                "str",
                nullable=True,
                check=manifest_schema.one_of("NHWC", "NCHW"),
            )  # fmt: skip
        )
        doc = {
            "schema": "edgeopt.manifest/1",
            "models": [
                {
                    "file": "m.tflite",
                    "format": "tflite",
                    "sha256": "a" * 64,
                    "inputs": [{"name": "x", "shape": [1, 2], "dtype": "float32", "layout": "HWC"}],
                }
            ],
        }
        assert manifest_schema.check_fields(doc) == (
            "models[0].inputs[0].layout: 'HWC': expected one of NHWC, NCHW")  # fmt: skip
        doc["models"][0]["inputs"][0]["layout"] = "NCHW"
        assert manifest_schema.check_fields(doc) is None
        with pytest.raises(ValueError, match="already in the schema"):
            manifest_schema.add_field(manifest_schema.Field("runtime.threads", "int"))
        with pytest.raises(ValueError, match="add its parent"):
            manifest_schema.add_field(manifest_schema.Field("bundle.files[]", "str"))
    finally:
        manifest_schema.FIELDS[:] = before


def test_every_written_manifest_field_is_in_the_table() -> None:
    """The manifest docstring's fields all have rows (no field escapes validation)."""
    paths = {f.path for f in manifest_schema.FIELDS}
    for p in ("runtime.threads", "runtime.tflite_delegate", "runtime.delegate_library",
              "runtime.onnx_providers[]", "models[].sha256", "calibration.count", "target.name",
              "models[].inputs[].quantization.scale[]", "source.sha256"):  # fmt: skip
        assert p in paths, p


# -- files -------------------------------------------------------------------------------------
def test_read_capped_refuses_what_is_not_a_small_regular_file(tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"x" * 100)
    assert files.read_capped(f, max_bytes=100) == b"x" * 100
    with pytest.raises(ModelLoadError, match="100 bytes, more than the 99"):
        files.read_capped(f, max_bytes=99)
    with pytest.raises(ModelLoadError, match="is a directory|not found"):
        files.read_capped(tmp_path, max_bytes=99)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ModelLoadError, match="is a FIFO"):
        files.read_capped(tmp_path / "fifo", max_bytes=99)  # returns at once, no writer needed
    inner = tmp_path / "art"
    inner.mkdir()
    (inner / "link").symlink_to(f)
    with pytest.raises(ModelLoadError, match="leaves its folder"):
        files.read_capped(inner / "link", max_bytes=100, inside=inner)
    assert files.read_capped(inner / "link", max_bytes=100) == b"x" * 100  # caller's own path


def test_npz_budget_is_checked_from_the_headers(tmp_path: Path) -> None:
    p = tmp_path / "a.npz"
    np.savez_compressed(p, a=np.zeros((1024, 1024), np.float32))  # 4 MiB, compresses to ~4 KB
    assert npz.read_npz_arrays(p)["a"].shape == (1024, 1024)
    with pytest.raises(InputError, match="more than the 1,000,000-byte budget"):
        npz.read_npz_arrays(p, max_bytes=1_000_000)
    q = tmp_path / "b.npy"
    np.save(q, np.arange(10))
    assert npz.read_npy(q).tolist() == list(range(10))
    q.write_bytes(q.read_bytes()[:-8])
    with pytest.raises(InputError, match="truncated"):
        npz.read_npy(q)
