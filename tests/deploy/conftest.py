"""Session fixtures of the deploy tests: keys, two real sshd "devices", the device venv, and the
bundled example converted once.

The tests skip (with the reason) only where sshd cannot be found or started; under CI (``CI`` is
set, as ``.ci/run`` runs) that is a failure instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from . import _sshd


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"deploy tests need sshd under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    return {"user": _sshd.make_key(d / "id_user"), "stranger": _sshd.make_key(d / "id_stranger")}


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, key: Path) -> _sshd.SSHServer:
    sshd = _sshd.find_sshd()
    if sshd is None:
        _unavailable("sshd not found (Debian: apt-get install openssh-server)")
    server = _sshd.SSHServer(sshd, tmp_path_factory.mktemp(name), key)
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        _unavailable(f"sshd could not start on 127.0.0.1: {exc}")
    return server


@pytest.fixture(scope="session")
def sshd_a(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]):
    server = _server(tmp_path_factory, "sshd-a", keys["user"])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sshd_b(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]):
    server = _server(tmp_path_factory, "sshd-b", keys["user"])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def known_hosts(tmp_path_factory: pytest.TempPathFactory, sshd_a, sshd_b) -> Path:
    path = tmp_path_factory.mktemp("kh") / "known_hosts"
    path.write_text(f"{sshd_a.known_hosts_line()}\n{sshd_b.known_hosts_line()}\n")
    return path


@pytest.fixture(scope="session")
def device_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _sshd.device_python(tmp_path_factory.mktemp("device"))


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``edgeopt convert`` of the bundled example for arm-cpu (TFLite + ONNX), as the README."""
    from edgeopt.convert import convert

    out = tmp_path_factory.mktemp("convert") / "out"
    convert(
        str(_sshd.REPO / "examples" / "digits_cnn.keras"),
        ["arm-cpu"],
        calib=str(_sshd.REPO / "calibration_data" / "digits" / "calib.npz"),
        val=str(_sshd.REPO / "calibration_data" / "digits" / "val.npz"),
        out=out,
        latency_runs=20,
    )
    return out


@pytest.fixture
def out_copy(converted: Path, tmp_path: Path) -> Path:
    """A private copy of the converted OUT folder (deploy merges results into report.json)."""
    dst = tmp_path / "out"
    shutil.copytree(converted, dst)
    return dst
