"""Output staging and artifact manifests.

``Staging`` builds the whole output in a temporary folder next to ``OUT`` and renames it into
place only when everything succeeded; any failure, Ctrl-C or SIGTERM removes the temporary
folder, so ``OUT`` is either the previous content or the complete new one, never half-written.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from edgeopt_runtime import Model
from edgeopt_runtime.errors import EdgeOptError
from edgeopt_runtime.manifest import MANIFEST_NAME, ModelEntry, sha256_file, write_manifest

from .targets import TargetProfile

REPORT_NAME = "report.json"
_TMP_PREFIX = ".edgeopt-tmp-"


class OutputError(EdgeOptError):
    """The output directory cannot be used (exists and is not empty, is a file, ...)."""


def check_output(out: Path, force: bool) -> None:
    """Refuse an output path that is unusable, before any work starts.

    Raises:
        OutputError: ``out`` is a file; or a non-empty directory without ``force``; or, with
            ``force``, a non-empty directory that does not look like edgeopt output (so a typo
            like ``--out .`` cannot delete unrelated files).
    """
    recover_interrupted_swap(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise OutputError(
            f"{out}: output directory exists and is not empty; pass --force to replace it, "
            "or choose another --out"
        )
    if not looks_like_output(out):
        raise OutputError(
            f"{out}: refusing to replace a non-empty directory that is not edgeopt output "
            f"(no {REPORT_NAME} or */{MANIFEST_NAME}); choose another --out"
        )


def looks_like_output(out: Path) -> bool:
    """True when ``out`` holds a previous edgeopt convert result."""
    return (out / REPORT_NAME).is_file() or any(out.glob(f"*/{MANIFEST_NAME}"))


class Interrupted(KeyboardInterrupt):
    """The conversion was stopped by SIGINT / SIGTERM; the staging folder has been removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_OLD_INFIX = ".edgeopt-old-"


def _block(signals: tuple[int, ...]) -> set[int] | None:
    """Block ``signals`` in this thread (POSIX); returns the previous mask to restore."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, signals)


def _unblock(previous: set[int] | None) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_dead_stagings(out: Path) -> list[Path]:
    """Delete staging folders next to ``out`` whose run was killed (SIGKILL cannot clean up).

    Only folders named ``.OUT.edgeopt-tmp-<pid>-*`` whose PID no longer exists are removed; a
    folder of a live run (or a PID reused by another process) is left alone.
    """
    removed = []
    for path in out.parent.glob(f".{out.name}{_TMP_PREFIX}*"):
        pid_part = path.name[len(f".{out.name}{_TMP_PREFIX}"):].split("-", 1)[0]
        if path.is_dir() and pid_part.isdigit() and not _pid_alive(int(pid_part)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def recover_interrupted_swap(out: Path) -> Path | None:
    """Put back an ``OUT`` that a killed run had moved aside but not yet replaced.

    ``Staging.commit`` renames OUT to ``.OUT.edgeopt-old-PID`` and then the new output to OUT;
    a SIGKILL between the two leaves only the moved-aside copy, which is the previous complete
    output. Returns the restored path, or None when there was nothing to do.
    """
    if out.exists():
        return None
    aside = sorted(out.parent.glob(f".{out.name}{_OLD_INFIX}*"), key=lambda p: p.stat().st_mtime)
    if not aside:
        return None
    os.replace(aside[-1], out)
    return out


class Staging:
    """Context manager: a temp folder next to ``out``; ``commit()`` swaps it into place.

    On exit without ``commit()`` (error, Ctrl-C, SIGTERM) the temp folder is removed. SIGINT and
    SIGTERM raise ``Interrupted``; if TensorFlow turns the interrupt into another exception on
    its way out (it does: a SystemError from inside graph tracing), ``Interrupted`` replaces it.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.tmp: Path | None = None
        self.signum: int | None = None
        self._committed = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Staging:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.out.name}{_TMP_PREFIX}"
        remove_dead_stagings(self.out)
        # The PID in the name lets a later run tell a SIGKILLed run's leftovers from a live one.
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=self.out.parent))
        # mkdtemp makes the folder 0700; the final OUT should get the usual umask permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:  # keep nohup / `&` semantics
                    self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        raise Interrupted(signum)

    def check(self) -> None:
        """Raise ``Interrupted`` if a signal arrived that some library swallowed (several
        catch-all ``except`` blocks in the frameworks eat KeyboardInterrupt)."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def path(self, *parts: str) -> Path:
        assert self.tmp is not None
        return self.tmp.joinpath(*parts)

    def commit(self, drop: tuple[str, ...] = ()) -> None:
        """Delete ``drop`` (scratch folders) from the stage, then move it to ``out``.

        Raises:
            Interrupted: a signal arrived earlier (nothing is moved into place then).
        """
        assert self.tmp is not None
        self.check()
        for name in drop:
            shutil.rmtree(self.tmp / name, ignore_errors=True)
        old = None
        # SIGINT / SIGTERM between the two renames would leave no OUT at all: hold them until
        # the swap is done (a pending signal is delivered right after, with OUT complete).
        # SIGKILL cannot be held; check_output() puts the moved-aside OUT back on the next run.
        blocked = _block(_SIGNALS)
        try:
            if self.out.exists():
                old = self.out.with_name(f".{self.out.name}{_OLD_INFIX}{os.getpid()}")
                os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            self._committed = True
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            _unblock(blocked)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        for sig in self._old:  # a second Ctrl-C must not stop the cleanup half-way
            signal.signal(sig, signal.SIG_IGN)
        try:
            if not self._committed and self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            for sig, handler in self._old.items():
                signal.signal(sig, handler)
        if self.signum is not None and exc is not None and not isinstance(exc, Interrupted):
            raise Interrupted(self.signum) from None


def model_entry(path: Path, fmt: str, precision: str, loaded: Model) -> ModelEntry:
    """A manifest entry for ``path``, with IO specs (incl. scale / zero point) as the runtime
    reads them from the produced model file."""
    return ModelEntry(
        file=path.name,
        format=fmt,
        precision=precision,
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        inputs=[s.to_dict() for s in loaded.inputs],
        outputs=[s.to_dict() for s in loaded.outputs],
    )


def write_target_manifest(
    directory: Path,
    profile: TargetProfile,
    entries: list[ModelEntry],
    *,
    source: dict[str, Any],
    calibration: dict[str, Any],
    preprocessing: dict[str, Any] | None,
    tools: dict[str, Any],
) -> Path:
    """Write ``directory/manifest.json`` (schema ``edgeopt.manifest/1``) for one target."""
    return write_manifest(
        directory,
        {
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "target": {"name": profile.name, "description": profile.description},
            "runtime": profile.runtime_manifest(),
            "models": [e.to_dict() for e in entries],
            "source": source,
            "preprocessing": preprocessing,
            "calibration": calibration,
            "tools": tools,
        },
    )
