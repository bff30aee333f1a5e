"""Deploy pieces that need no SSH server: inventory, bundle format, golden check, messages."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from edgeopt_runtime.bundle import BundleError, parse_index, read_npz_bounded
from edgeopt_runtime.check import check_bundle, compare_output
from edgeopt_runtime.manifest import sha256_file

from edgeopt.cli import main as cli
from edgeopt.deploy.bundle import build_bundle, open_bundle
from edgeopt.deploy.inventory import (
    InventoryError,
    check_remote_dir,
    device_from_url,
    load_inventory,
)
from edgeopt.deploy.push import PushError, RemoteLayout
from edgeopt.deploy.session import diagnose_probe, parse_json, version_tuple
from edgeopt.deploy.transport import CommandResult

VAL = Path(__file__).resolve().parents[2] / "calibration_data" / "digits" / "val.npz"
TOL = {"quantized_steps": 2.0, "atol": 1e-4, "rtol": 1e-3}


# -- inventory ---------------------------------------------------------------------------------
def test_inventory_defaults_paths_and_validation(tmp_path: Path) -> None:
    inv = tmp_path / "devices.toml"
    inv.write_text(
        '[defaults]\nuser = "pi"\nidentity = "keys/id"\n'
        '[[device]]\nname = "a"\nhost = "10.0.0.5"\ntarget = "arm-cpu"\n'
        '[[device]]\nname = "b"\nhost = "b.local"\nport = 2222\nuser = "root"\n'
        'remote_dir = "~/x y/z"\npython = "/opt/venv/bin/python"\n'
    )
    devs = load_inventory(inv)
    assert list(devs) == ["a", "b"]
    assert devs["a"].user == "pi" and devs["a"].identity == tmp_path / "keys" / "id"
    assert devs["a"].url == "ssh://pi@10.0.0.5:22" and devs["a"].remote_dir == "edgeopt"
    assert devs["b"].port == 2222 and devs["b"].remote_dir == "x y/z"

    def bad(body: str, match: str) -> None:
        inv.write_text(body)
        with pytest.raises(InventoryError, match=match):
            load_inventory(inv)

    bad('[[device]]\nname = "a"\nhost = "h"\npasword = "x"\n', r"unknown key\(s\) \['pasword'\]")
    bad('[[device]]\nname = "a"\nhost = "h"\nremote_dir = "a/../../etc"\n', "must not contain")
    bad('[[device]]\nname = "a"\nhost = "h"\n[[device]]\nname = "a"\nhost = "g"\n', "used twice")
    bad('[[device]]\nname = "a"\nhost = "h"\nport = 0\n', "port")
    bad('[[device]]\nname = "a"\n', "missing 'host'")
    bad("[devices]\n", "unknown table")
    with pytest.raises(InventoryError, match="not found"):
        load_inventory(tmp_path / "nope.toml")


@pytest.mark.parametrize("value", ["/", "~", "~/", ".", "a/\nb", "../x"])
def test_remote_dir_must_be_a_folder_of_its_own(value: str) -> None:
    with pytest.raises(InventoryError):
        check_remote_dir(value)


def test_ssh_urls() -> None:
    d = device_from_url("ssh://pi@10.0.0.5:2222", python="/v/bin/python")
    assert (d.user, d.host, d.port, d.python, d.name) == (
        "pi",
        "10.0.0.5",
        2222,
        "/v/bin/python",
        "pi@10.0.0.5:2222",
    )
    assert device_from_url("ssh://[::1]").port == 22
    with pytest.raises(InventoryError, match="passwords are not accepted"):
        device_from_url("ssh://pi:secret@host")
    with pytest.raises(InventoryError, match="expected ssh://"):
        device_from_url("http://host")
    with pytest.raises(InventoryError, match="no path"):
        device_from_url("ssh://host/tmp")


# -- messages ------------------------------------------------------------------------------------
def _result(status: int, stderr: str) -> CommandResult:
    return CommandResult(("python3",), status, b"", stderr.encode())


def test_probe_failures_name_the_fix() -> None:
    msg = str(
        diagnose_probe(
            _result(127, "bash: line 1: /opt/py: No such file or directory"), "/opt/py", "0.1.0"
        )
    )
    assert "not found on the device" in msg and "--python" in msg
    msg = str(
        diagnose_probe(
            _result(1, "/usr/bin/python3: No module named edgeopt_runtime"), "python3", "0.1.0"
        )
    )
    assert "not installed" in msg and "python3 -m pip install 'edgeopt-runtime>=0.1.0'" in msg
    old = "edgeopt-runtime: error: argument COMMAND: invalid choice: 'device' (choose from ...)"
    msg = str(diagnose_probe(_result(2, old), "python3", "0.2.0"))
    assert "too old" in msg and "pip install -U 'edgeopt-runtime>=0.2.0'" in msg
    assert version_tuple("0.10.1rc2") > version_tuple("0.9") > version_tuple("0.1.0")
    with pytest.raises(Exception, match="exit 3"):
        parse_json(CommandResult(("x",), 3, b"Traceback", b"boom"), "edgeopt.check/1", "check")


# -- golden comparison ----------------------------------------------------------------------------
def test_compare_output_counts_quantization_steps() -> None:
    scale = 1 / 256
    exp = np.array([[[0, 10, 20]]], np.float32) * scale
    one_step = exp + np.array([[[0, 1, -2]]], np.float32) * scale
    res = compare_output("p", exp, one_step, (scale,), None, TOL)
    assert res["passed"] and res["max_steps"] == 2.0 and res["elements_over"] == 0
    three = exp + np.array([[[0, 3, 0]]], np.float32) * scale
    res = compare_output("p", exp, three, (scale,), None, TOL)
    assert not res["passed"] and res["max_steps"] == 3.0 and res["elements_over"] == 1
    per_axis = compare_output("p", exp, one_step, (scale, scale, scale / 4), 1, TOL)
    assert not per_axis["passed"]  # -2 steps of the coarse scale are -8 of the fine one


def test_compare_output_float_nan_shape_and_top1() -> None:
    e = np.array([[1.0, 2.0, np.nan]], np.float32)
    assert compare_output("y", e, e.copy(), None, None, TOL)["passed"]  # NaN where NaN was
    got = e + np.array([[0, 0.01, 0]], np.float32)
    res = compare_output("y", e, got, None, None, TOL)
    assert not res["passed"] and res["elements_over"] == 1
    assert "differs from golden" in compare_output("y", e, e[:, :2], None, None, TOL)["reason"]
    probs = np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)
    flipped = np.array([[0.1, 0.9], [0.2, 0.8]], np.float32)
    assert compare_output("y", probs, flipped, None, None, TOL)["top1_agreement"] == 0.5


# -- bounded reading -------------------------------------------------------------------------------
def test_npz_reader_refuses_pickles_bombs_and_junk(tmp_path: Path) -> None:
    p = tmp_path / "a.npz"
    np.savez(p, i0=np.array([{"x": 1}], dtype=object))  # an object array is a pickle inside
    with pytest.raises(BundleError, match="expected a numeric array"):
        read_npz_bounded(p)
    np.savez_compressed(p, i0=np.zeros((4096, 4096), np.float32))  # 64 MiB that packs to ~64 KB
    assert p.stat().st_size < 1 << 20
    with pytest.raises(BundleError, match="over the remaining limit"):
        read_npz_bounded(p, max_bytes=8 << 20)
    np.savez(p, **{f"a{i}": np.zeros(1) for i in range(70)})
    with pytest.raises(BundleError, match="70 arrays"):
        read_npz_bounded(p)
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("run.sh", "echo hi")
    with pytest.raises(BundleError, match="not a .npy array"):
        read_npz_bounded(p)
    p.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(BundleError, match="not a readable .npz"):
        read_npz_bounded(p)


def _index(**files: object) -> bytes:
    entries = [{"name": n, "sha256": "0" * 64, "size_bytes": 1} for n in files]
    return json.dumps({"schema": "edgeopt.bundle/1", "files": entries}).encode()


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (_index(**{"../x": 1}), "plain name"),
        (_index(**{".hidden": 1}), "plain name"),
        (_index(**{"a\nb": 1}), "control characters"),
        (_index(**{"bundle.json": 1}), "reserved"),
        (json.dumps({"schema": "edgeopt.bundle/2", "files": []}).encode(), "not supported"),
        (json.dumps({"schema": "other/1"}).encode(), "expected schema"),
        (b"x" * (2 << 20), "more than"),
    ],
)
def test_bundle_index_validation(raw: bytes, match: str) -> None:
    with pytest.raises(BundleError, match=match):
        parse_index(raw, "bundle.json")


def test_remote_layout_stays_under_its_root() -> None:
    layout = RemoteLayout("/home/pi/edgeopt", "digits-arm")
    assert layout.live == "/home/pi/edgeopt/digits-arm"
    assert layout.part("m.tflite") == "/home/pi/edgeopt/.digits-arm.incoming/.m.tflite.part"
    with pytest.raises(BundleError):
        RemoteLayout("/home/pi/edgeopt", "../etc")
    with pytest.raises(PushError, match="absolute"):
        RemoteLayout("edgeopt", "b")


# -- bundles (on the converted example) ----------------------------------------------------------
def test_bundle_is_deterministic_and_self_checking(converted: Path, tmp_path: Path) -> None:
    a = build_bundle(converted / "arm-cpu", tmp_path / "a", data=VAL, samples=5)
    b = build_bundle(converted / "arm-cpu", tmp_path / "b", data=VAL, samples=5)
    assert a.expected() == b.expected()  # same inputs, same bytes: nothing to re-upload
    roles = {f.name: f.role for f in a.index.files}
    assert roles["model_int8.tflite"] == roles["model_int8.onnx"] == "model"
    assert (
        roles["target.toml"] == "target-profile"
        and "[runtime]" in (a.directory / "target.toml").read_text()
    )
    assert a.index.data["host_reference"]["models"][0]["latency"]["p50_ms"] > 0
    assert "python3 -m edgeopt_runtime check ." in (a.directory / "README.md").read_text()
    doc = check_bundle(a.directory)
    assert doc["status"] == "passed" and len(doc["models"]) == 2
    with pytest.raises(BundleError, match="not an edgeopt bundle"):
        build_bundle(converted / "arm-cpu", converted)  # never replace a foreign folder


def test_check_fails_when_outputs_differ(converted: Path, tmp_path: Path) -> None:
    """A wrong golden output (index updated so the files verify) is a mismatch, exit 1."""
    bundle = build_bundle(converted / "arm-cpu", tmp_path / "b", data=VAL, samples=4)
    path = bundle.directory / "golden_outputs_0.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["o0"] = arrays["o0"] + 0.05
    np.savez(path, **arrays)
    index = json.loads((bundle.directory / "bundle.json").read_text())
    for f in index["files"]:
        if f["name"] == path.name:
            f["sha256"], f["size_bytes"] = sha256_file(path), path.stat().st_size
    (bundle.directory / "bundle.json").write_text(json.dumps(index))
    doc = check_bundle(bundle.directory)
    assert doc["status"] == "mismatch" and not doc["passed"]
    tfl = next(m for m in doc["models"] if m["format"] == "tflite")
    onnx = next(m for m in doc["models"] if m["format"] == "onnx")
    assert tfl["status"] == "mismatch" and tfl["outputs"][0]["elements_over"] > 0
    assert onnx["status"] == "passed"


def test_compiled_edgetpu_model_and_log_are_bundled(converted: Path, tmp_path: Path) -> None:
    """A manifest listing a ``*_edgetpu.tflite`` (here a stand-in copy of the int8 model, as no
    compiler is installed) ships it and its compiler log; without libedgetpu the check runs
    the plain model, as a device app would."""
    art = tmp_path / "edgetpu"
    shutil.copytree(converted / "arm-cpu", art)
    manifest = json.loads((art / "manifest.json").read_text())
    plain = next(m for m in manifest["models"] if m["file"] == "model_int8.tflite")
    shutil.copyfile(art / "model_int8.tflite", art / "model_int8_edgetpu.tflite")
    (art / "model_int8_edgetpu.log").write_text("Edge TPU Compiler version 16.0\n")
    manifest["models"].insert(1, {**plain, "file": "model_int8_edgetpu.tflite"})
    manifest["runtime"]["tflite_delegate"] = "edgetpu"
    (art / "manifest.json").write_text(json.dumps(manifest))
    bundle = build_bundle(art, tmp_path / "b", target="edgetpu")
    roles = {f.name: f.role for f in bundle.index.files}
    assert roles["model_int8_edgetpu.tflite"] == "model"
    assert roles["model_int8_edgetpu.log"] == "log"
    doc = check_bundle(bundle.directory)
    assert doc["passed"]
    assert next(m for m in doc["models"] if m["format"] == "tflite")["file"] == "model_int8.tflite"


def test_bundle_and_deploy_cli_errors(converted: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "bundle",
            str(converted / "arm-cpu"),
            "--out",
            str(tmp_path / "b"),
            "--samples",
            "2",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "edgeopt.bundle/1" and doc["golden"]["inputs"]["samples"] == 2
    assert open_bundle(tmp_path / "b").name == "digits_cnn-arm-cpu"
    res = runner.invoke(cli, ["bundle", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "no manifest.json" in res.stderr
    res = runner.invoke(cli, ["deploy", str(tmp_path / "b")])
    assert res.exit_code == 2 and "no device given" in res.stderr
    res = runner.invoke(cli, ["deploy", str(tmp_path / "b"), "--to", "ssh://u:pw@h"])
    assert res.exit_code == 2 and "passwords are not accepted" in res.stderr
    (tmp_path / "devices.toml").write_text(
        '[[device]]\nname = "x"\nhost = "h"\ntarget = "edgetpu"\n'
    )
    res = runner.invoke(
        cli,
        [
            "deploy",
            str(tmp_path / "b"),
            "--devices",
            str(tmp_path / "devices.toml"),
            "--device",
            "x",
        ],
    )
    assert res.exit_code == 2 and "is for target 'edgetpu'" in res.stderr
