"""The output directory under pressure: a second run, hostile ``--out`` paths, a read-only
parent, a full disk (a real small tmpfs when this process may mount one), the atomic swap and
the leftovers of killed runs.

Most tests work on ``edgeopt.output`` directly (no conversion, milliseconds); the disk-full
ones run real conversions of the tiny Keras model in-process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeopt import output
from edgeopt.cli import main
from edgeopt.output import OutputError, OutputLock, Staging, claim_output
from tests._console import problem_lines
from tests.stress.fuzz_sources import check_output

from . import _models as M

REPO = Path(__file__).resolve().parents[2]


def _earlier_run(out: Path, marker: str = "old") -> None:
    (out / "arm-cpu").mkdir(parents=True)
    (out / "report.json").write_text(f'{{"run": "{marker}"}}')
    (out / "arm-cpu" / "manifest.json").write_text("{}")


def _cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.stderr


def _one_line(err: str) -> str:
    lines = problem_lines(err)
    assert len(lines) == 1 and lines[0].startswith("edgeopt: error: "), err
    return lines[0]


def _holder(out: Path) -> subprocess.Popen[str]:
    """A child process that holds OUT's lock until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from edgeopt.output import OutputLock
        lock = OutputLock(Path({str(out)!r}))
        lock.acquire()
        print("held", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


# ----------------------------------------------------------------------------- the lock


def test_second_run_on_the_same_out_is_refused_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    child = _holder(out)
    try:
        with pytest.raises(OutputError, match=rf"another edgeopt convert \(PID {child.pid}\)"):
            claim_output(out, force=True)
        # Through the CLI: one line, exit 2, refused before the model is even loaded.
        rc, err = _cli(["convert", str(tmp_path / "not-loaded.keras"), "--target", "arm-cpu",
                        "--allow-synthetic", "--out", str(out)])
        assert rc == 2 and f"PID {child.pid}" in _one_line(err)
    finally:
        child.kill()
        child.wait()
    # SIGKILL left the lock file behind, naming a dead PID: the next run takes it over.
    lock_file = tmp_path / ".out.edgeopt-lock"
    assert lock_file.read_text().strip() == str(child.pid)
    with claim_output(out, force=False):
        assert lock_file.read_text().strip() == str(os.getpid())
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # lock file and made parents gone


def test_the_lock_admits_one_holder_at_a_time(tmp_path: Path) -> None:
    """4 processes x 40 rounds of lock / create-exclusively / unlock: a second holder at any
    moment would find the marker file already there."""
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from edgeopt.output import OutputError, OutputLock
        out = Path({str(out)!r}); marker = out.parent / "held"
        got = clash = 0
        while got < 40:
            lock = OutputLock(out)
            try:
                lock.acquire()
            except OutputError:
                continue
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                clash += 1
            else:
                os.close(fd); os.unlink(marker)
            lock.release(); got += 1
        print(clash)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=REPO) for _ in range(4)]
    clashes = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert clashes == [0, 0, 0, 0]
    assert not (tmp_path / ".out.edgeopt-lock").exists()


def test_lock_falls_back_to_the_pid_where_flock_is_unsupported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        (tmp_path / ".out.edgeopt-lock").write_text(f"{child.pid}\n")  # a live holder
        with pytest.raises(OutputError, match=f"PID {child.pid}"):
            OutputLock(out).acquire()
    finally:
        child.kill()
        child.wait()
    with OutputLock(out):  # the holder died: taken over
        assert (tmp_path / ".out.edgeopt-lock").read_text().strip() == str(os.getpid())


def test_parent_folders_made_for_a_failed_run_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    rc, err = _cli(["convert", str(tmp_path / "missing.keras"), "--target", "arm-cpu",
                    "--allow-synthetic", "--out", str(out)])
    assert rc == 2 and "missing.keras" in _one_line(err)
    assert list(tmp_path.iterdir()) == []  # a/b/ were made for the lock, and removed again
    with Staging(out) as stage:  # a run that commits keeps them
        stage.commit()
    assert out.is_dir()


# ----------------------------------------------------------------------------- --out paths


@pytest.mark.parametrize("case", ["dot", "dotdot", "cwd-parent", "symlink", "non-utf8",
                                  "parent-is-file", "target-name"])
def test_hostile_out_paths_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               case: str) -> None:
    work = tmp_path / "work"
    (work / "inner").mkdir(parents=True)
    _earlier_run(work / "inner")  # looks like edgeopt output, so only the path check refuses
    monkeypatch.chdir(work / "inner")
    target = "arm-cpu"
    if case == "symlink":
        (work / "real").mkdir()
        (work / "link").symlink_to(work / "real")
    if case == "parent-is-file":
        (work / "file").write_text("x")
    if case == "target-name":
        from scripts.make_hostile_inputs import escaping_target

        target = str(escaping_target(work / "escape.toml"))
    out, expect = {
        "dot": (".", "current directory"),
        "dotdot": ("..", "current directory"),
        "cwd-parent": (str(work), "current directory"),
        "symlink": (str(work / "link"), "symbolic link"),
        "non-utf8": (os.fsdecode(b"out-\xff"), r"out-\\xff: the path is not valid UTF-8"),
        "parent-is-file": (str(work / "file" / "out"), "is not a directory"),
        "target-name": (str(work / "o"), "'../../escape' is not a valid target name"),
    }[case]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    rc, err = _cli(["convert", str(M.keras_file()), "--target", target, "--allow-synthetic",
                    "--force", "--out", out])
    assert rc == 2
    assert re.search(expect, _one_line(err)), err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written anywhere


@contextlib.contextmanager
def _tmpfs(where: Path, size: str, readonly: bool = False) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``where`` (skips when this process may not mount)."""
    where.mkdir()
    opts = f"size={size}" + (",ro" if readonly else "")
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_only_parent_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    # As root, permission bits do not stop writes: use a read-only filesystem then.
    if os.geteuid() == 0:
        ctx: contextlib.AbstractContextManager[Path] = _tmpfs(tmp_path / "ro", "1m", True)
        reason = "read-only file system"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        ctx, reason = contextlib.nullcontext(ro), "permission denied"
    with ctx as parent:
        rc, err = _cli(["convert", str(M.keras_file()), "--target", "arm-cpu",
                        "--allow-synthetic", "--out", str(parent / "out")])
        line = _one_line(err)
        assert rc == 2 and str(parent) in line and reason in line, line
        assert list(parent.iterdir()) == []


# ----------------------------------------------------------------------------- disk full


def _convert_into(out: Path) -> None:
    import edgeopt.convert as c

    c.convert(M.keras_file(), ["arm-cpu", "edgetpu"], M.calib_npz(), out=out, latency_runs=1,
              num_calib=4)


@pytest.mark.parametrize("size", ["64k", "200k"])  # fails in TF's SavedModel export / later
def test_full_disk_is_one_line_naming_the_path(tmp_path: Path, size: str) -> None:
    with _tmpfs(tmp_path / "small", size) as fs:
        with pytest.raises(OutputError) as info:
            _convert_into(fs / "out")
        text = str(info.value)
        assert "\n" not in text and text.startswith(str(fs)), text
        assert "no space left on device" in text and "had written" in text, text
        assert list(fs.iterdir()) == []  # no OUT, no staging folder, no lock file


def test_too_little_space_is_refused_before_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "_free_bytes", lambda path: 1000)
    with pytest.raises(OutputError, match=r"needs at least .* \(the float model .*\), 1000 bytes"):
        _convert_into(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_fault_injected_into_the_report_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no tmpfs can be mounted this is the disk-full test: ENOSPC from the last write."""
    import edgeopt.report

    def full(report: object, folder: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "report.html"))

    monkeypatch.setattr(edgeopt.report, "write_report", full)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=rf"^{re.escape(str(out))}/report\.html: no space left"):
        _convert_into(out)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the swap


def _observer(out: Path, seconds: float) -> subprocess.Popen[str]:
    """A child that checks OUT/report.json as fast as it can; prints checks and misses."""
    code = textwrap.dedent(f"""
        import os, time
        path = {str(out / "report.json")!r}
        end = time.monotonic() + {seconds}
        checks = misses = 0
        print("ready", flush=True)
        while time.monotonic() < end:
            checks += 1
            if not os.path.exists(path):
                misses += 1
        print(checks, misses)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def _commit_loop(out: Path, seconds: float) -> int:
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        with Staging(out) as stage:
            (stage.path() / "report.json").write_text(str(n))
            stage.commit()
        n += 1
    return n


def test_the_swap_never_leaves_out_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    _earlier_run(out)
    with Staging(out) as stage:
        (stage.path() / "report.json").write_text("{}")
        stage.commit()
    if stage.swap != "exchange":
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available on this system / filesystem")
    watch = _observer(out, 3.0)
    commits = _commit_loop(out, 2.5)
    checks, misses = map(int, watch.communicate(timeout=60)[0].split())
    assert commits > 50 and checks > 1000
    assert misses == 0, f"OUT was missing {misses} times in {checks} checks"

    # The observer does see a window when there is one: the two-rename fallback, slowed down.
    monkeypatch.setattr(output, "_renameat2", None)
    real = os.replace

    def slow_replace(src: object, dst: object) -> None:
        real(src, dst)
        if str(dst).endswith(f"{output.OLD_INFIX}{os.getpid()}"):
            time.sleep(0.002)  # OUT moved aside, the new one not yet in

    monkeypatch.setattr(output.os, "replace", slow_replace)
    watch = _observer(out, 1.5)
    _commit_loop(out, 1.0)
    checks, misses = map(int, watch.communicate(timeout=60)[0].split())
    assert misses > 0, "the observer cannot see a swap window, so the first part proves nothing"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # every moved-aside copy deleted


def test_leftovers_of_every_kind_are_cleaned_under_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _earlier_run(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftovers = [
        tmp_path / f".out.edgeopt-tmp-{dead.pid}-abc",  # staging of a killed run
        tmp_path / f".out.edgeopt-tmp-{os.getpid()}-old",  # a PID reused (here: ours)
        tmp_path / f".out.edgeopt-old-{dead.pid}",  # moved-aside copy left after the swap
    ]
    for d in leftovers:
        d.mkdir()
        (d / "x.tflite").write_bytes(b"x")
    (tmp_path / ".out.edgeopt-lock").write_text(f"{dead.pid}\n")  # lock file of a killed run
    (tmp_path / ".other.edgeopt-tmp-1-x").mkdir()  # another OUT's: not ours to touch
    with claim_output(out, force=True):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.edgeopt-tmp-1-x", "out"]
    assert (out / "report.json").read_text() == '{"run": "old"}'  # OUT itself untouched
    # Glob characters in OUT's name are literal: "o?t" must not clean up after "out".
    (tmp_path / f".out.edgeopt-tmp-{dead.pid}-y").mkdir()
    with claim_output(tmp_path / "o?t", force=False):
        pass
    assert (tmp_path / f".out.edgeopt-tmp-{dead.pid}-y").is_dir()


def test_out_moved_aside_is_restored_under_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    aside = tmp_path / ".out.edgeopt-old-99999999"  # SIGKILL between the fallback's renames
    _earlier_run(aside)
    with pytest.raises(OutputError, match="not empty"):
        claim_output(out, force=False)
    assert (out / "report.json").is_file() and not aside.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_fallback_swap_deletes_the_moved_aside_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "_renameat2", None)
    out = tmp_path / "out"
    _earlier_run(out)
    with Staging(out) as stage:
        (stage.path() / "report.json").write_text('{"run": "new"}')
        stage.commit()
    assert stage.swap == "renames"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "report.json").read_text() == '{"run": "new"}'


def test_a_convert_commits_with_the_exchange_and_leaves_only_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for _ in range(2):  # the second run replaces the first
        import edgeopt.convert as c

        c.convert(M.keras_file(), ["arm-cpu"], M.calib_npz(), out=out, latency_runs=1,
                  num_calib=4, formats="tflite", force=True)
        assert check_output(out) is None
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ----------------------------------------------------------------------------- signals


def _signal_early(tmp_path: Path, sig: signal.Signals, delay: float) -> tuple[int, list[str]]:
    """``edgeopt convert`` child signalled ``delay`` s after its handlers are in place."""
    out = tmp_path / f"out-{sig.name}-{delay}"
    cmd = [sys.executable, "-m", "edgeopt.cli", "convert", str(M.keras_file()), "--target",
           "arm-cpu", "--calib", str(M.calib_npz()), "--out", str(out), "--latency-runs", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    deadline = time.monotonic() + 60
    while not _catches_sigterm(proc.pid):  # the CLI's handlers are installed
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert not out.exists() and not list(tmp_path.glob(f".{out.name}*"))
    return proc.returncode, err.strip().splitlines()


def _catches_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        caught = next(line for line in f if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize(("sig", "delay"), [(signal.SIGINT, 0.0), (signal.SIGINT, 0.3),
                                            (signal.SIGINT, 1.5), (signal.SIGTERM, 0.5)])
def test_a_signal_early_in_a_convert_gives_one_line_and_128_plus_signal(
    tmp_path: Path, sig: signal.Signals, delay: float
) -> None:
    rc, lines = _signal_early(tmp_path, sig, delay)
    assert rc == 128 + sig, (rc, lines[-5:])
    assert lines and lines[-1].startswith(f"edgeopt: interrupted by {sig.name}"), lines[-5:]
    assert not any("Aborted!" in line or "Traceback" in line for line in lines), lines
