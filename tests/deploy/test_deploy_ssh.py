"""``edgeopt deploy`` against real OpenSSH servers on 127.0.0.1 (see ``_sshd.py``).

The "device" is a virtual environment with only edgeopt-runtime; its Python runs the device
side (facts, hashing, golden check, profile) over SSH exactly as on a board.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edgeopt_runtime.manifest import sha256_file

from edgeopt.deploy.bundle import build_bundle, open_bundle
from edgeopt.deploy.inventory import Device
from edgeopt.deploy.session import DeployOptions, deploy_many, deploy_one
from edgeopt.deploy.ssh import SSHTarget, SSHTransport

from . import _sshd

VAL = _sshd.REPO / "calibration_data" / "digits" / "val.npz"
OPTS = DeployOptions(runs=20, warmup=2, connect_timeout=30, command_timeout=300)
QUICK = DeployOptions(profile=False, connect_timeout=30, command_timeout=300)


def _device(server, python: Path, root: Path, keys, known_hosts: Path, **kw) -> Device:
    values = {
        "name": f"dev-{server.port}",
        "host": "127.0.0.1",
        "port": server.port,
        "user": server.user,
        "identity": keys["user"],
        "python": str(python),
        "remote_dir": str(root),
        "known_hosts": known_hosts,
        **kw,
    }
    return Device(**values)


def _deploy(dev: Device, bundle, options: DeployOptions = QUICK, progress=None):
    return asyncio.run(deploy_one(dev, bundle, options, progress))


async def _remote(dev: Device, argv: list[str]) -> tuple[int | None, str, str]:
    async with SSHTransport(dev.ssh_target(), connect_timeout=30) as t:
        r = await t.run(argv, timeout=300)
    return r.exit_status, r.stdout.decode(), r.stderr.decode()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgeopt.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(_sshd.REPO)},
    )


@pytest.fixture(scope="module")
def bundle(converted: Path, tmp_path_factory: pytest.TempPathFactory):
    return build_bundle(
        converted / "arm-cpu", tmp_path_factory.mktemp("b") / "digits", data=VAL, samples=8
    )


def test_device_venv_has_only_the_runtime(sshd_a, device_python, keys, known_hosts, tmp_path):
    dev = _device(sshd_a, device_python, tmp_path, keys, known_hosts)
    probe = (
        "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None "
        "for m in ['tensorflow', 'keras', 'onnx', 'torch', 'tf2onnx', 'edgeopt', "
        "'edgeopt_runtime', 'onnxruntime', 'ai_edge_litert']}))"
    )
    status, out, err = asyncio.run(_remote(dev, [str(device_python), "-c", probe]))
    assert status == 0, err
    found = json.loads(out)
    assert found == {
        "tensorflow": False,
        "keras": False,
        "onnx": False,
        "torch": False,
        "tf2onnx": False,
        "edgeopt": False,
        "edgeopt_runtime": True,
        "onnxruntime": True,
        "ai_edge_litert": True,
    }


def test_happy_path_cli_profile_merged_into_report(
    sshd_a, device_python, keys, known_hosts, out_copy, tmp_path
) -> None:
    root = tmp_path / "device root"
    common = [
        "--to",
        f"ssh://{sshd_a.user}@127.0.0.1:{sshd_a.port}",
        "--identity",
        str(keys["user"]),
        "--known-hosts",
        str(known_hosts),
        "--python",
        str(device_python),
        "--remote-dir",
        str(root),
    ]
    proc = _cli(
        "deploy",
        str(out_copy / "arm-cpu"),
        *common,
        "--runs",
        "20",
        "--data",
        str(VAL),
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "edgeopt.deploy/1" and doc["summary"]["ok"] == 1
    d = doc["devices"][0]
    assert d["status"] == "ok" and d["measured_on"] == f"{sshd_a.user}@127.0.0.1:{sshd_a.port}"
    assert d["facts"]["kernel"]["release"] == os.uname().release
    assert d["facts"]["cpu"]["cores"] == os.cpu_count()
    assert d["facts"]["memory"]["total_bytes"] > 0
    assert d["facts"]["packages"]["onnxruntime"] and d["facts"]["edgeopt_runtime"]
    assert d["check"]["status"] == "passed"
    assert {m["file"] for m in d["check"]["models"]} == {"model_int8.tflite", "model_int8.onnx"}
    assert d["profile"]["schema"] == "edgeopt.profile/1"
    assert d["profile"]["latency"]["runs"] == 20 and d["profile"]["latency"]["p50_ms"] > 0
    assert d["profile"]["runtime"]["delegate"] == "xnnpack"
    assert d["vs_host"]["host_p50_ms"] > 0 and d["vs_host"]["device_p50_ms"] > 0
    assert sorted(d["push"]["uploaded"]) == sorted(
        open_bundle(out_copy / "bundles" / "digits_cnn-arm-cpu").expected()
    )
    assert "uploading model_int8.tflite" in proc.stderr and "golden check: passed" in proc.stderr
    # the device results are in the convert report, as measured on that device
    report = json.loads((out_copy / "report.json").read_text())
    target = next(t for t in report["targets"] if t["name"] == "arm-cpu")
    run = target["device_runs"][0]
    assert run["measured_on"] == d["measured_on"] and run["latency"]["p50_ms"] > 0
    assert run["facts"]["kernel"] == os.uname().release and run["check"]["status"] == "passed"
    # on the device: the bundle's own README command works with only edgeopt-runtime
    live = root / "digits_cnn-arm-cpu"
    assert sorted(p.name for p in root.iterdir()) == ["digits_cnn-arm-cpu"]
    check = subprocess.run(
        [str(device_python), "-m", "edgeopt_runtime", "check", "."],
        cwd=live,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0 and "passed" in check.stdout, check.stderr
    # a re-run has nothing to upload
    again = _cli(
        "deploy",
        str(out_copy / "arm-cpu"),
        *common,
        "--no-profile",
        "--data",
        str(VAL),
        "--json",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    push = json.loads(again.stdout)["devices"][0]["push"]
    assert push["up_to_date"] and push["bytes_sent"] == 0 and "already up to date" in again.stderr


def test_tampered_file_on_the_device_is_detected_and_replaced(
    sshd_a, device_python, keys, known_hosts, bundle, tmp_path
) -> None:
    dev = _device(sshd_a, device_python, tmp_path, keys, known_hosts)
    assert _deploy(dev, bundle).status == "ok"
    model = tmp_path / bundle.name / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    # the device-side check refuses it before loading anything
    status, out, _ = asyncio.run(
        _remote(
            dev,
            [
                str(device_python),
                "-m",
                "edgeopt_runtime",
                "check",
                str(tmp_path / bundle.name),
                "--json",
            ],
        )
    )
    doc = json.loads(out)
    assert status == 1 and doc["status"] == "corrupt" and doc["models"] == []
    assert [p["file"] for p in doc["files"]["problems"]] == ["model_int8.tflite"]
    # the next deploy finds it, sends that one file only, and the check passes again
    res = _deploy(dev, bundle)
    assert res.status == "ok", res.error
    assert res.push.damaged_on_device == ["model_int8.tflite"]
    assert res.push.uploaded == ["model_int8.tflite"]
    assert len(res.push.linked) == len(bundle.expected()) - 1
    assert model.read_bytes() == (bundle.directory / "model_int8.tflite").read_bytes()


def test_unknown_host_key_refused_and_trust_on_first_use(
    sshd_a, sshd_b, device_python, keys, bundle, tmp_path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    dev = _device(sshd_a, device_python, tmp_path / "root", keys, empty)
    res = _deploy(dev, bundle)
    assert res.status == "error" and res.error_kind == "HostKeyError"
    assert "not in" in res.error and "--trust-new-host" in res.error
    assert not (tmp_path / "root").exists()  # nothing happened on the device
    # trust on first use only with the explicit flag: the key is recorded, then verified
    res = _deploy(dev, bundle, DeployOptions(profile=False, trust_new_host=True))
    assert res.status == "ok", res.error
    assert empty.read_text().strip() == sshd_a.known_hosts_line()
    assert any("trusted new host key" in n for n in res.notes)
    # a changed key is refused even with the flag (B's key recorded for A's address)
    wrong = tmp_path / "known_hosts_wrong"
    b_key = sshd_b.known_hosts_line().split(" ", 1)[1]
    wrong.write_text(f"[127.0.0.1]:{sshd_a.port} {b_key}\n")
    dev = _device(sshd_a, device_python, tmp_path / "root", keys, wrong)
    res = _deploy(dev, bundle, DeployOptions(profile=False, trust_new_host=True))
    assert res.status == "error" and res.error_kind == "HostKeyError"
    assert "does NOT match" in res.error and "ssh-keygen -R" in res.error


def test_wrong_key_refused(sshd_a, device_python, keys, known_hosts, bundle, tmp_path) -> None:
    dev = _device(
        sshd_a, device_python, tmp_path / "root", keys, known_hosts, identity=keys["stranger"]
    )
    res = _deploy(dev, bundle)
    assert res.status == "error" and res.error_kind == "AuthError"
    assert "refused the key" in res.error and str(keys["stranger"]) in res.error
    assert not (tmp_path / "root").exists()


def test_connection_killed_mid_upload_leaves_nothing_half_written_and_rerun_resumes(
    sshd_a, device_python, keys, known_hosts, converted, bundle, tmp_path
) -> None:
    dev = _device(sshd_a, device_python, tmp_path, keys, known_hosts)
    assert _deploy(dev, bundle).status == "ok"
    live = tmp_path / bundle.name
    before = {p.name: p.read_bytes() for p in live.iterdir()}
    # v2 of the same bundle: many more golden samples -> a golden_inputs.npz of many chunks
    v2 = build_bundle(converted / "arm-cpu", tmp_path / "v2" / bundle.name, samples=300, seed=3)
    size = v2.expected()["golden_inputs.npz"][1]
    chunk = 8 << 10
    assert size > 4 * chunk
    killed = []

    def cut(name: str, event: str, info: dict) -> None:
        if event == "upload" and info["file"] == "golden_inputs.npz" and not killed:
            if info["sent"] >= 2 * chunk:
                killed.append(sshd_a.kill_sessions())

    small = DeployOptions(profile=False, chunk_size=chunk, connect_timeout=30)
    res = _deploy(dev, v2, small, cut)
    assert killed and killed[0] > 0
    assert res.status == "error" and res.error_kind in ("ConnectionDropped", "TransportError")
    assert "connection lost" in res.error
    # the live bundle is the previous one, byte for byte; the update waits in .incoming
    assert {p.name: p.read_bytes() for p in live.iterdir()} == before
    incoming = tmp_path / f".{bundle.name}.incoming"
    staged = {p.name: p.stat().st_size for p in incoming.iterdir()}
    want = v2.expected()
    for p in incoming.iterdir():  # a file under its own name is complete; the rest are .part
        if not (p.name.startswith(".") and p.name.endswith(".part")):
            assert sha256_file(p) == want[p.name][0], p.name
    assert 0 < staged[".golden_inputs.npz.part"] < size
    # re-running resumes: the partial file continues where it stopped
    res = _deploy(dev, v2, small)
    assert res.status == "ok", res.error
    assert res.push.resumed["golden_inputs.npz"] == staged[".golden_inputs.npz.part"]
    assert res.push.bytes_sent < v2.total_bytes
    assert {p.name for p in tmp_path.iterdir()} == {bundle.name, "v2"}
    assert (live / "bundle.json").read_bytes() == (v2.directory / "bundle.json").read_bytes()


def test_two_devices_in_parallel_from_an_inventory(
    sshd_a, sshd_b, device_python, keys, known_hosts, out_copy, tmp_path
) -> None:
    inventory = tmp_path / "devices.toml"
    lines = [
        "[defaults]",
        f'user = "{sshd_a.user}"',
        f'identity = "{keys["user"]}"',
        f'python = "{device_python}"',
        f'known_hosts = "{known_hosts}"',
        'target = "arm-cpu"',
    ]
    for name, server in (("board-a", sshd_a), ("board-b", sshd_b)):
        lines += [
            "[[device]]",
            f'name = "{name}"',
            'host = "127.0.0.1"',
            f"port = {server.port}",
            f'remote_dir = "{tmp_path / name}"',
        ]
    inventory.write_text("\n".join(lines) + "\n")
    proc = _cli(
        "deploy",
        str(out_copy),
        "--devices",
        str(inventory),
        "--all-devices",
        "--runs",
        "10",
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    a, b = doc["devices"]
    assert [a["measured_on"], b["measured_on"]] == ["board-a", "board-b"]
    assert a["status"] == b["status"] == "ok"
    assert a["profile"]["latency"]["runs"] == b["profile"]["latency"]["runs"] == 10
    # they ran at the same time, not one after the other
    ta, tb = a["timing"], b["timing"]
    assert ta["started_at"] < tb["finished_at"] and tb["started_at"] < ta["finished_at"]
    for name in ("board-a", "board-b"):
        assert (tmp_path / name / "digits_cnn-arm-cpu" / "bundle.json").is_file()
    report = json.loads((out_copy / "report.json").read_text())
    runs = next(t for t in report["targets"] if t["name"] == "arm-cpu")["device_runs"]
    assert sorted(r["measured_on"] for r in runs) == ["board-a", "board-b"]


def test_hostile_file_device_and_folder_names_reach_no_shell(
    sshd_a, device_python, keys, known_hosts, converted, tmp_path
) -> None:
    evil = "m';touch PWNED1;'$(touch PWNED2)`touch PWNED3` & x"
    art = tmp_path / "out" / "arm-cpu"
    shutil.copytree(converted / "arm-cpu", art)
    manifest = json.loads((art / "manifest.json").read_text())
    for entry in manifest["models"]:
        new = f"{evil}.{entry['format']}"
        (art / entry["file"]).rename(art / new)
        entry["file"] = new
    (art / "manifest.json").write_text(json.dumps(manifest))
    b = build_bundle(art, tmp_path / "bundle", name="b;touch PWNED4 $(touch PWNED5)", data=VAL)
    root = tmp_path / "r $(touch PWNED6)" / "x'y;touch PWNED7"
    dev = _device(
        sshd_a, device_python, root, keys, known_hosts, name="dev; touch PWNED8 $(touch PWNED9)"
    )
    res = _deploy(dev, b, OPTS)
    assert res.status == "ok", res.error
    assert {m["file"] for m in res.check["models"]} == {f"{evil}.tflite", f"{evil}.onnx"}
    assert res.profile["model"]["file"] == f"{evil}.tflite"
    assert (root / b.name / f"{evil}.tflite").is_file()
    home = Path(os.path.expanduser("~"))
    for where in (home, tmp_path, root, root / b.name, Path.cwd()):
        assert not [p for p in where.iterdir() if p.name.startswith("PWNED")], where


def test_missing_python_or_runtime_says_how_to_fix(
    sshd_a, keys, known_hosts, bundle, tmp_path
) -> None:
    bare = tmp_path / "bare"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120
    )
    dev = _device(sshd_a, bare / "bin" / "python", tmp_path / "root", keys, known_hosts)
    res = _deploy(dev, bundle)
    assert res.status == "error" and res.error_kind == "DeviceError"
    assert "edgeopt-runtime is not installed" in res.error and "-m pip install" in res.error
    dev = _device(sshd_a, tmp_path / "no such" / "python3", tmp_path / "root", keys, known_hosts)
    res = _deploy(dev, bundle)
    assert res.status == "error" and "not found on the device" in res.error


def test_parallel_api_keeps_going_when_one_device_fails(
    sshd_a, sshd_b, device_python, keys, known_hosts, bundle, tmp_path
) -> None:
    good = _device(sshd_a, device_python, tmp_path / "a", keys, known_hosts, name="good")
    bad = _device(
        sshd_b,
        device_python,
        tmp_path / "b",
        keys,
        known_hosts,
        name="bad",
        identity=keys["stranger"],
    )
    results = asyncio.run(deploy_many([(good, bundle), (bad, bundle)], QUICK))
    assert [r.status for r in results] == ["ok", "error"]
    assert results[1].error_kind == "AuthError"


def test_command_timeout_is_enforced(sshd_a, device_python, keys, known_hosts, tmp_path) -> None:
    from edgeopt.deploy.transport import RemoteTimeout

    target = SSHTarget("127.0.0.1", sshd_a.port, sshd_a.user, keys["user"], known_hosts)

    async def go() -> None:
        async with SSHTransport(target, connect_timeout=30) as t:
            await t.run([str(device_python), "-c", "import time; time.sleep(60)"], timeout=3)

    with pytest.raises(RemoteTimeout, match="did not finish within 3 s"):
        asyncio.run(go())
