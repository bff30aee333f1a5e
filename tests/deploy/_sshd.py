"""A real OpenSSH server on 127.0.0.1 for the deploy tests, and a device-like virtualenv.

* ``SSHServer``: Debian's ``sshd`` with its own config in a temp folder (own host key, own
  ``authorized_keys``, keys only, ``internal-sftp``), on a free port, started and stopped by the
  tests; every wait is bounded.
* ``make_key``: throw-away ed25519 keys (asyncssh writes them in OpenSSH format).
* ``device_python``: a virtual environment with only ``edgeopt-runtime`` (and its numpy /
  ai-edge-litert / onnxruntime), built the way a device gets it: the dependencies once into a
  cache folder, the runtime from this checkout installed non-editable per test session.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 15.0


def find_sshd() -> str | None:
    for cand in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def make_key(path: Path) -> Path:
    """Write a new ed25519 private key at ``path`` and its public key at ``path.pub``."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(path))
    key.write_public_key(str(path) + ".pub")
    path.chmod(0o600)
    return path


def public_line(key: Path) -> str:
    return Path(str(key) + ".pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SSHServer:
    """One sshd on 127.0.0.1:<free port> serving the current user with one authorized key."""

    def __init__(self, sshd: str, workdir: Path, authorized_key: Path) -> None:
        self.sshd = sshd
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host_key = make_key(self.dir / "ssh_host_ed25519_key")
        self.authorized = self.dir / "authorized_keys"
        self.authorized.write_text(public_line(authorized_key) + "\n")
        self.authorized.chmod(0o600)
        self.user = getpass.getuser()
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "sshd.log"

    def _config(self) -> Path:
        cfg = self.dir / "sshd_config"
        cfg.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "UseDNS no",
                    "PrintMotd no",
                    "MaxStartups 50:30:100",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        return cfg

    def start(self) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir
        last = ""
        for _ in range(3):  # a free port can be taken between choosing and binding it
            self.port = free_port()
            cfg = self._config()
            check = subprocess.run(
                [self.sshd, "-t", "-f", str(cfg)], capture_output=True, text=True, timeout=30
            )
            if check.returncode != 0:
                raise RuntimeError(f"sshd -t refused the test config: {check.stderr.strip()}")
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.sshd, "-D", "-e", "-f", str(cfg)],
                    stdout=log,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_banner():
                return
            last = self.log.read_text(errors="replace")[-500:]
            self.stop()
        raise RuntimeError(f"sshd did not start: {last}")

    def _wait_banner(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(64).startswith(b"SSH-2.0"):
                        return True
            except OSError:
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        self.kill_sessions()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def sessions(self) -> list[int]:
        """PIDs of the per-connection sshd processes (descendants of the listener)."""
        if self.proc is None:
            return []
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = [], [self.proc.pid]
        while frontier:
            pid = frontier.pop()
            kids = [c for c, p in parents.items() if p == pid]
            found += kids
            frontier += kids
        return found

    def kill_sessions(self) -> int:
        """SIGKILL every open connection's processes (the listener survives): a dropped link."""
        pids = self.sessions()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def known_hosts_line(self) -> str:
        key = Path(str(self.host_key) + ".pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {key[0]} {key[1]}"


# -- the "device" virtual environment -----------------------------------------------------------
def _cache_root() -> Path:
    base = os.environ.get("EDGEOPT_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgeopt-tests"
    )
    return Path(base)


def _runtime_deps() -> list[str]:
    data = tomllib.loads((REPO / "runtime" / "pyproject.toml").read_text())
    return list(data["project"]["dependencies"])


def _pip(python: str, *args: str, timeout: float = 900) -> None:
    proc = subprocess.run(
        [python, "-m", "pip", "-q", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"pip {' '.join(args[:3])} failed: {tail}")


def dependency_venv() -> Path:
    """The cached venv holding the runtime's dependencies only (built once, under a lock)."""
    deps = _runtime_deps()
    key = hashlib.sha256(f"{sys.version}|{deps}|v1".encode()).hexdigest()[:16]
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"device-deps-{key}"
    with open(root / f".lock-{key}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").is_file():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            _pip(str(venv / "bin" / "python"), "install", *deps)
            (venv / ".complete").write_text("ok\n")
    return venv


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def device_python(workdir: Path) -> Path:
    """A fresh venv whose only packages are edgeopt-runtime (this checkout) and its deps."""
    deps = dependency_venv()
    venv = workdir / "device-venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    site = _site_packages(venv)
    (site / "edgeopt-runtime-deps.pth").write_text(str(_site_packages(deps)) + "\n")
    src = workdir / "runtime-src"
    shutil.copytree(REPO / "runtime", src, ignore=shutil.ignore_patterns("__pycache__", "build"))
    _pip(sys.executable, "install", "--no-deps", "--target", str(site), str(src))
    return venv / "bin" / "python"
