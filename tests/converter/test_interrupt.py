"""Killing ``edgeopt convert`` at any moment leaves OUT as it was or complete.

Each run is a real ``python -m edgeopt.cli convert`` child, its stderr on a pseudo-terminal so
that it prints its progress lines; the test watches those lines and the staging folder next to
OUT and sends SIGINT or SIGKILL at a chosen point: during start-up, during the TFLite int8
build (calibration), during the tf2onnx export, during ONNX Runtime calibration, and just
before the final rename. After every kill OUT must be exactly the previous complete run
(every file byte-identical, so its manifest sha256s still match) or a complete new run (every
manifest's models present with matching sha256, ``report.json`` present). After SIGINT nothing
else may remain next to OUT and nothing in the child's TMPDIR; after SIGKILL a staging folder
may remain, hidden, outside OUT, and the next ``convert --force`` must still produce a complete
OUT.
"""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.stress.fuzz_sources import check_output

from . import _models as M

N_CALIB = 200  # enough samples that ORT calibration lasts long enough to be hit
STAGING = ".out.edgeopt-tmp-*"


class Run:
    """One ``edgeopt convert`` child with its progress lines collected from a pty."""

    def __init__(self, out: Path, calib: Path, val: Path, tmpdir: Path) -> None:
        cmd = [sys.executable, "-m", "edgeopt.cli", "convert", str(M.keras_file()),
               "--target", "arm-cpu", "--calib", str(calib), "--val", str(val),
               "--out", str(out), "--force", "--latency-runs", "1"]
        master, slave = pty.openpty()
        env = {**os.environ, "TMPDIR": str(tmpdir), "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=slave, env=env)
        os.close(slave)
        self.lines: list[str] = []
        self._master = master
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            self.lines += [d.decode(errors="replace").strip() for d in done]
        if buf.strip():
            self.lines.append(buf.decode(errors="replace").strip())

    def said(self, fragment: str) -> bool:
        return any(fragment in line for line in self.lines)

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, f"finished before {what}: {self.lines[-5:]}"
            assert time.monotonic() < deadline, f"never reached {what}: {self.lines[-5:]}"
            time.sleep(0.005)

    def finish(self, sig: signal.Signals | None = None) -> int:
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=120)
        finally:
            self.proc.kill()
            self._reader.join(timeout=10)
            os.close(self._master)
        return rc


def _snapshot(out: Path) -> dict[str, bytes]:
    if not out.exists():
        return {}
    return {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()}


def _staged(parent: Path, *parts: str) -> Callable[[], bool]:
    """True once some staging folder next to OUT holds ``parts``."""
    return lambda: any(d.joinpath(*parts).exists() for d in parent.glob(STAGING))


def _staged_glob(parent: Path, pattern: str) -> Callable[[], bool]:
    """True once some staging folder next to OUT holds a file matching ``pattern``."""
    return lambda: any(any(d.glob(pattern)) for d in parent.glob(STAGING))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Calibration / validation data and one complete earlier run ("before")."""
    d = tmp_path_factory.mktemp("interrupt")
    calib, val = d / "calib.npz", d / "val.npz"
    np.savez(calib, image=M.images(M.HWC, N_CALIB, seed=21))
    np.savez(val, image=M.images(M.HWC, 4, seed=22))
    before = d / "before" / "out"
    tmpdir = d / "tmp"
    tmpdir.mkdir()
    run = Run(before, calib, val, tmpdir)
    assert run.finish() == 0, run.lines[-5:]
    assert check_output(before) is None
    # What a complete run leaves in TMPDIR (a framework's 51-byte session-id file ".ses"):
    # an interrupted run may leave no more than that.
    kept = {p.name for p in tmpdir.iterdir()}
    return {"calib": calib, "val": val, "before": before, "root": d, "tmp_kept": kept}


def _catches(pid: int, sig: signal.Signals) -> bool:
    """True once process ``pid`` has a handler for ``sig`` (``SigCgt`` in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (int(sig) - 1) & 1)
    return False


def _kill_points(parent: Path) -> dict[str, tuple[Callable[[Run], None], float]]:
    """Name -> (wait until the point, extra delay before the signal)."""
    return {
        # as soon as the CLI's first line has installed its handlers (before that the process
        # is still the bare interpreter starting up, which no Python program can answer for)
        "start-up": (lambda r: r.wait_for(lambda: _catches(r.proc.pid, signal.SIGTERM),
                                          "the CLI's signal handlers"), 0.05),
        "tflite build": (lambda r: r.wait_for(lambda: r.said("converting tflite int8"),
                                              "the TFLite int8 build"), 0.2),
        "onnx export": (lambda r: r.wait_for(lambda: r.said("converting onnx int8"),
                                             "the ONNX build"), 0.0),
        "ort calibration": (lambda r: r.wait_for(
            _staged_glob(parent, "_work/*_pre.onnx.mode"), "ORT calibration"), 0.0),
        "before rename": (lambda r: r.wait_for(lambda: r.said("writing report"),
                                               "the report"), 0.0),
        "2 s": (lambda r: None, 2.0),
    }


PLAN = [  # (kill point, signal, earlier complete OUT present?)
    ("start-up", signal.SIGINT, True),
    ("tflite build", signal.SIGINT, True),
    ("ort calibration", signal.SIGINT, True),
    ("before rename", signal.SIGINT, True),
    ("2 s", signal.SIGKILL, False),
    ("onnx export", signal.SIGKILL, True),
    ("before rename", signal.SIGKILL, True),
]


def _check_as_before_or_complete(out: Path, before: dict[str, bytes], what: str) -> str:
    now = _snapshot(out)
    if now == before:
        return "absent" if not now else "as before"
    problem = check_output(out)
    assert problem is None, f"{what}: OUT neither as before nor complete: {problem}"
    return "complete"


def _kill(data: dict[str, Any], i: int, point: str, sig: signal.Signals,
          earlier: bool) -> tuple[str, int, Run]:
    """One run on top of a copy of the earlier complete OUT (or none), killed at ``point``."""
    parent = data["root"] / f"run{i}"
    out = parent / "out"
    parent.mkdir()
    if earlier:
        shutil.copytree(data["before"], out)
    before = _snapshot(out)
    tmpdir = parent / "tmp"
    tmpdir.mkdir()
    run = Run(out, data["calib"], data["val"], tmpdir)
    wait, delay = _kill_points(parent)[point]
    wait(run)
    time.sleep(delay)
    rc = run.finish(sig)
    return _check_as_before_or_complete(out, before, f"{sig.name} at {point}"), rc, run


def test_killed_runs_leave_out_as_before_or_complete(data: dict[str, Any]) -> None:
    # Two runs at a time: each kill point is found from the run's own progress and files, so
    # the outcome does not depend on timing.
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda job: _kill(data, job[0], *job[1]), enumerate(PLAN)))
    outcomes = {}
    for i, ((point, sig, _), (outcome, rc, run)) in enumerate(zip(PLAN, done, strict=True)):
        what = f"{sig.name} at {point}"
        outcomes[what] = outcome
        parent = data["root"] / f"run{i}"
        if sig is signal.SIGKILL:
            assert rc == -signal.SIGKILL, (what, rc)
            # A staging folder may survive, but only as a hidden sibling, never inside OUT.
            assert all(p.name in ("out", "tmp") or p.name.startswith(".out.edgeopt-")
                       for p in parent.iterdir()), list(parent.iterdir())
            continue
        # 130: interrupted (also before staging began: never click's "Aborted!" / exit 1);
        # 0: the signal came after the final rename (then OUT must be the complete new run).
        tail = "\n".join(run.lines[-40:])  # the whole story when it fails (pytest truncates)
        assert rc == 130 or (rc == 0 and outcomes[what] == "complete"), f"{what}: rc {rc}\n{tail}"
        assert not any("Traceback" in line for line in run.lines), f"{what}:\n{tail}"
        assert sorted(p.name for p in parent.iterdir()) == ["out", "tmp"], what
        left = {p.name for p in (parent / "tmp").iterdir()} - data["tmp_kept"]
        assert not left, (what, left)
        if rc == 130:
            assert "interrupted by SIGINT" in run.lines[-1], run.lines[-3:]
            assert not any("Aborted!" in line for line in run.lines), run.lines
    # Kills before the rename must have left the earlier run untouched.
    for what in ("SIGINT at tflite build", "SIGINT at ort calibration",
                 "SIGKILL at onnx export"):
        assert outcomes[what] == "as before", outcomes
    assert outcomes["SIGKILL at 2 s"] == "absent", outcomes

    # After a SIGKILL the staging folder stays behind; the next run removes it (its PID is dead).
    parent = data["root"] / f"run{PLAN.index(('onnx export', signal.SIGKILL, True))}"
    stale = sorted(parent.glob(STAGING))
    assert stale, "SIGKILL during the ONNX export should leave its staging folder behind"
    again = Run(parent / "out", data["calib"], data["val"], parent / "tmp")
    assert again.finish() == 0, again.lines[-5:]
    assert check_output(parent / "out") is None
    assert sorted(parent.glob(STAGING)) == []  # the dead run's staging is gone, not in OUT
    assert sorted(p.name for p in (parent / "out").iterdir()) == sorted(
        p.name for p in data["before"].iterdir())


def test_sigint_between_the_two_renames_of_the_commit_keeps_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two-rename fallback (no renameat2(RENAME_EXCHANGE)): SIGINT is held in between."""
    from edgeopt import artifact, output

    monkeypatch.setattr(output, "_renameat2", None)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")  # the earlier complete run
    real_replace = os.replace
    calls = []

    def replace_then_interrupt(src: object, dst: object) -> None:
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:  # OUT moved aside, the new output not yet in place
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(artifact.Interrupted):  # noqa: PT012 - the signal lands inside commit
        with artifact.Staging(out) as stage:
            (stage.path() / "report.json").write_text('{"new": 1}')
            monkeypatch.setattr(output.os, "replace", replace_then_interrupt)
            stage.commit()
    monkeypatch.undo()
    assert (out / "report.json").read_text() == '{"new": 1}', sorted(tmp_path.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # moved-aside copy deleted


def test_out_moved_aside_by_a_killed_commit_is_restored_on_the_next_run(tmp_path: Path) -> None:
    from edgeopt import artifact

    out = tmp_path / "out"
    aside = tmp_path / ".out.edgeopt-old-12345"  # SIGKILL landed between the two renames
    aside.mkdir()
    (aside / "report.json").write_text("{}")
    with pytest.raises(artifact.OutputError, match="not empty"):
        artifact.check_output(out, force=False)  # the previous output is back, so: not empty
    assert (out / "report.json").is_file() and not aside.exists()


def test_staging_left_by_a_killed_run_is_removed_by_the_next_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    from edgeopt import artifact

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a PID that existed and is gone
    out = tmp_path / "out"
    stale = tmp_path / f".out.edgeopt-tmp-{dead.pid}-abc123"
    live = tmp_path / f".out.edgeopt-tmp-{os.getpid()}-def456"  # a run still going
    for d in (stale, live):
        d.mkdir()
        (d / "half.tflite").write_bytes(b"x")
    with artifact.Staging(out) as stage:
        assert stage.path().name.startswith(f".out.edgeopt-tmp-{os.getpid()}-")
    assert not stale.exists() and live.exists()
