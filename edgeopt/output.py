"""The output directory: claimed by one run, built aside, swapped into place whole.

``claim_output(out, force)`` runs before any work: it refuses paths that cannot be replaced
safely (``--out .``, a folder holding the working directory, a symbolic link, a path that is
not UTF-8, a read-only parent), takes the lock file ``.OUT.edgeopt-lock`` next to ``OUT`` (a
second run on the same OUT is refused, naming the holder's PID), cleans what earlier killed
runs left next to OUT and checks OUT itself (non-empty needs ``force``, and only earlier
edgeopt output is replaced).

``Staging`` builds the whole output in a folder next to ``OUT`` and ``commit()`` swaps it into
place; any failure, Ctrl-C or SIGTERM removes the folder, so ``OUT`` is either the previous
content or the complete new one, never half-written. Where the kernel and filesystem have
``renameat2(RENAME_EXCHANGE)`` (Linux >= 3.15 on ext4, xfs, btrfs, tmpfs, ...) the swap is one
atomic system call: a reader sees the old OUT or the new one at every instant, never no OUT.
Elsewhere it falls back to two renames (OUT aside, then the new folder in) with SIGINT/SIGTERM
held in between; only SIGKILL or a power cut between them leaves OUT missing, and the next
``claim_output`` puts the moved-aside copy back (recovery is the converter's: ``edgeopt_runtime
.load`` of a missing OUT fails with "not found" in that window).

Disk full and read-only filesystems become one-line ``OutputError``s naming the path, with the
space the run had written and the space left.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from edgeopt_runtime.errors import EdgeOptError
from edgeopt_runtime.manifest import MANIFEST_NAME

from . import signals
from .limits import human_bytes
from .signals import Interrupted

REPORT_NAME = "report.json"
TMP_INFIX = ".edgeopt-tmp-"
OLD_INFIX = ".edgeopt-old-"
LOCK_SUFFIX = ".edgeopt-lock"
# Errors that mean "this filesystem cannot take the output", not "the model is bad".
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_SPACE_TEXTS = ("no space left on device", "disk quota exceeded", "file too large")


class OutputError(EdgeOptError):
    """The output directory cannot be used (exists and is not empty, is a file, is locked by
    another run, is read-only, the disk is full, ...)."""


def show(path: Path | str) -> str:
    """``path`` as printable text (bytes that are not UTF-8 shown as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


# ----------------------------------------------------------------------------- the path


def check_out_path(out: Path) -> None:
    """Refuse an ``--out`` that cannot be swapped safely, before anything is written.

    Raises:
        OutputError: not UTF-8; ``.`` / ``..`` / the root / a folder holding the working
            directory; a symbolic link; a parent that is not a directory.
    """
    try:
        os.fsdecode(out).encode("utf-8")
    except UnicodeEncodeError:
        raise OutputError(
            f"--out {show(out)}: the path is not valid UTF-8 (reports and manifests record it "
            "as text): choose a UTF-8 name"
        ) from None
    full = Path(os.path.realpath(out))  # symlinks resolved, like the working directory's
    cwd = Path(os.path.realpath(Path.cwd()))
    if out.name in ("", ".", "..") or full.parent == full or full == cwd or full in cwd.parents:
        raise OutputError(
            f"--out {show(out)}: is (or holds) the current directory, which cannot be replaced "
            "as a whole: name a folder of its own, e.g. --out out"
        )
    if out.is_symlink():
        raise OutputError(
            f"--out {show(out)}: is a symbolic link (to {show(os.readlink(out))}); pass the "
            "folder itself"
        )
    for parent in full.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise OutputError(f"--out {show(out)}: {show(parent)} is not a directory")
            break


def looks_like_output(out: Path) -> bool:
    """True when ``out`` holds a previous edgeopt convert result."""
    return (out / REPORT_NAME).is_file() or any(out.glob(f"*/{MANIFEST_NAME}"))


def check_output(out: Path, force: bool) -> None:
    """Refuse an output path that is unusable, before any work starts.

    Puts back an OUT that a killed run had moved aside (see ``recover_interrupted_swap``).

    Raises:
        OutputError: ``out`` is a file; or a non-empty directory without ``force``; or, with
            ``force``, a non-empty directory that does not look like edgeopt output (so a typo
            cannot delete unrelated files).
    """
    recover_interrupted_swap(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{show(out)}: exists and is not a directory; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise OutputError(
            f"{show(out)}: output directory exists and is not empty; pass --force to replace "
            "it, or choose another --out"
        )
    if not looks_like_output(out):
        raise OutputError(
            f"{show(out)}: refusing to replace a non-empty directory that is not edgeopt output "
            f"(no {REPORT_NAME} or */{MANIFEST_NAME}); choose another --out"
        )


def claim_output(out: Path, force: bool) -> OutputLock:
    """Everything that must hold before a run may write ``out``; returns the held lock.

    Use as ``with claim_output(out, force): ...``; the lock is released (and its file removed)
    on exit.

    Raises:
        OutputError: see ``check_out_path``, ``OutputLock.acquire`` and ``check_output``.
    """
    check_out_path(out)
    lock = OutputLock(out)
    lock.acquire()
    try:
        clean_leftovers(out)
        check_output(out, force)
    except BaseException:
        lock.release()
        raise
    return lock


# ----------------------------------------------------------------------------- the lock


class OutputLock:
    """One run at a time per OUT: ``.OUT.edgeopt-lock`` next to OUT, ``flock``-ed while held.

    The kernel drops an ``flock`` when its holder dies, however it dies, so a lock file left by
    a killed run is simply taken over (its PID line rewritten). The file holds the holder's PID
    for the refusal message. Releasing unlinks the file while still holding the lock; a run
    that locked the old, unlinked file notices (its inode is no longer the path's) and retries.
    Where ``flock`` is not supported the PID in the file decides (a live PID holds it).
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out.with_name(f".{out.name}{LOCK_SUFFIX}")
        self._fd: int | None = None
        self._made: list[Path] = []  # parent folders this lock created (removed if left empty)

    def __enter__(self) -> OutputLock:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            OutputError: another live run holds it (the message names its PID), or the parent
                folder cannot be created or written (read-only, permissions, full).
        """
        self._made = _make_parents(self.out.parent)
        try:
            for _ in range(20):
                fd = self._open()
                if self._lock(fd):
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    self._fd = fd
                    return
            raise OutputError(f"{show(self.path)}: could not take the output lock; try again")
        except BaseException:
            self._remove_made()
            raise

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise io_error(exc, self.out.parent, "cannot write next to --out") from None

    def _lock(self, fd: int) -> bool:
        """True when ``fd`` is locked and is still the file at ``self.path``."""
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputError(
                f"{show(self.out)}: another edgeopt convert (PID {holder}) is writing this "
                "output; wait for it to finish or choose another --out"
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise
            return self._pid_lock(fd)  # no flock on this filesystem
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        mine = os.fstat(fd)
        if st is None or (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
            os.close(fd)  # released and unlinked by its holder after we opened it: retry
            return False
        return True

    def _pid_lock(self, fd: int) -> bool:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit() and int(text) != os.getpid() and pid_alive(int(text)):
            os.close(fd)
            raise OutputError(
                f"{show(self.out)}: another edgeopt convert (PID {text}) is writing this "
                "output; wait for it to finish or choose another --out"
            )
        return True

    def release(self) -> None:
        """Drop the lock and remove its file (and parent folders it created, if empty)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
        self._remove_made()

    def _remove_made(self) -> None:
        for folder in reversed(self._made):  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._made = []


def _holder(fd: int) -> str:
    """The PID a lock file names (its holder writes it right after locking)."""
    for _ in range(50):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"


def _make_parents(parent: Path) -> list[Path]:
    """``mkdir -p parent``; returns the folders created, outermost first."""
    missing = []
    p = Path(os.path.abspath(parent))
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    made = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
    except FileExistsError:
        pass  # created by someone else meanwhile
    except OSError as exc:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise io_error(exc, exc.filename or parent, "cannot create the output folder") from None
    return made


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# ----------------------------------------------------------------------------- leftovers


def _siblings(out: Path, infix: str) -> list[Path]:
    return sorted(out.parent.glob(f".{glob.escape(out.name)}{infix}*"))


def _pid_of(path: Path, out: Path, infix: str) -> int | None:
    part = path.name[len(f".{out.name}{infix}"):].split("-", 1)[0]
    return int(part) if part.isdigit() else None


def remove_dead_stagings(out: Path) -> list[Path]:
    """Delete staging folders next to ``out`` whose run was killed (SIGKILL cannot clean up).

    Only folders named ``.OUT.edgeopt-tmp-<pid>-*`` whose PID no longer exists are removed; a
    folder of a live run (or a PID reused by another process) is left alone.
    """
    removed = []
    for path in _siblings(out, TMP_INFIX):
        pid = _pid_of(path, out, TMP_INFIX)
        if path.is_dir() and pid is not None and not pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def recover_interrupted_swap(out: Path) -> Path | None:
    """Put back an ``OUT`` that a killed run had moved aside but not yet replaced.

    The two-rename fallback of ``Staging.commit`` renames OUT to ``.OUT.edgeopt-old-PID`` and
    then the new output to OUT; a SIGKILL between the two leaves only the moved-aside copy,
    which is the previous complete output. Returns the restored path, or None.
    """
    if out.exists() or out.is_symlink():
        return None
    aside = [p for p in _siblings(out, OLD_INFIX) if p.is_dir()]
    if not aside:
        return None
    newest = max(aside, key=lambda p: p.stat().st_mtime)
    os.replace(newest, out)
    return out


def clean_leftovers(out: Path) -> list[Path]:
    """Under the lock: restore a moved-aside OUT, then delete every staging folder and every
    moved-aside copy next to OUT (no other run can be using them while we hold the lock).

    Returns the paths removed.
    """
    recover_interrupted_swap(out)
    removed = []
    for path in _siblings(out, TMP_INFIX) + _siblings(out, OLD_INFIX):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        removed.append(path)
    return removed


# ----------------------------------------------------------------------------- errors


def io_error(exc: OSError, path: Path | str, what: str) -> OutputError:
    """A one-line ``OutputError`` for an OSError on the output side, naming the path."""
    reason = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied", errno.ENOSPC: "no space left on device",
              errno.EDQUOT: "disk quota exceeded", errno.ENOTDIR: "not a directory"}.get(
        exc.errno or 0, exc.strerror or type(exc).__name__)
    return OutputError(f"{show(path)}: {what}: {reason}")


def out_of_space(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s cause / context chain that is a full disk or quota, if any.

    Frameworks wrap the OSError (TF: ``ResourceExhaustedError``; edgeopt's backends re-raise
    converter failures ``from None``, which keeps the original as ``__context__``).
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _SPACE_ERRNOS:
            return e
        text = str(e).lower()
        if any(t in text for t in _SPACE_TEXTS):
            return e
        e = e.__cause__ or e.__context__
    return None


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _tree_bytes(path: Path) -> int:
    """Disk blocks used by the files under ``path`` (a file: its own)."""
    if not path.is_dir():
        with contextlib.suppress(OSError):
            return os.lstat(path).st_blocks * 512
        return 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def source_bytes(source: Any) -> int:
    """Size on disk of a loaded source model (``ModelSource.path``: a file or a folder)."""
    return _tree_bytes(Path(source.path))


# ----------------------------------------------------------------------------- the swap


_RENAME_EXCHANGE = 2  # linux/fs.h


def _libc_renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.3
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the directory entries ``a`` and ``b`` (both must exist).

    Returns False when this system or filesystem cannot (no ``renameat2``, or ``EINVAL`` /
    ``ENOSYS`` / ``EOPNOTSUPP``); then nothing has changed.

    Raises:
        OSError: any other failure of the system call.
    """
    fn = _renameat2
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


_renameat2 = _libc_renameat2()


class Staging:
    """Context manager: a temp folder next to ``out``; ``commit()`` swaps it into place.

    On exit without ``commit()`` (error, Ctrl-C, SIGTERM) the temp folder is removed. SIGINT and
    SIGTERM raise ``Interrupted``; if TensorFlow turns the interrupt into another exception on
    its way out (it does: a SystemError from inside graph tracing), ``Interrupted`` replaces it.
    A full disk or read-only filesystem anywhere in the block becomes one ``OutputError``.

    Attributes:
        swap: after ``commit()``: ``"exchange"`` (one atomic system call), ``"renames"``
            (the two-rename fallback) or ``"rename"`` (there was no earlier OUT).
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.tmp: Path | None = None
        self.signum: int | None = None
        self.swap: str | None = None
        self._committed = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Staging:
        self.check()
        _make_parents(self.out.parent)
        remove_dead_stagings(self.out)
        # The PID in the name lets a later run tell a SIGKILLed run's leftovers from a live one.
        prefix = f".{self.out.name}{TMP_INFIX}{os.getpid()}-"
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=self.out.parent))
        except OSError as exc:
            raise io_error(exc, self.out.parent, "cannot create the staging folder") from None
        # mkdtemp makes the folder 0700; the final OUT should get the usual umask permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)
        if threading.current_thread() is threading.main_thread():
            for sig in signals.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:  # keep nohup / `&` semantics
                    self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        signals.note(signum)
        if signals.in_finalizer(frame):  # recorded: check() / commit() raise it
            return
        raise Interrupted(signum)

    def check(self) -> None:
        """Raise ``Interrupted`` if a signal arrived that some library swallowed (several
        catch-all ``except`` blocks in the frameworks eat KeyboardInterrupt), here or before
        the stage began (the CLI's handler records it too: ``edgeopt.signals.received``)."""
        if self.signum is None:
            self.signum = signals.received()
        if self.signum is not None:
            raise Interrupted(self.signum)

    def path(self, *parts: str) -> Path:
        assert self.tmp is not None
        return self.tmp.joinpath(*parts)

    def commit(self, drop: tuple[str, ...] = ()) -> None:
        """Delete ``drop`` (scratch folders) from the stage, then swap it into ``out``.

        Raises:
            Interrupted: a signal arrived earlier (nothing is moved into place then).
        """
        assert self.tmp is not None
        self.check()
        for name in drop:
            shutil.rmtree(self.tmp / name, ignore_errors=True)
        # Hold SIGINT / SIGTERM until the swap is done and recorded (a pending signal is
        # delivered right after, with OUT complete and the report saying so).
        blocked = signals.block()
        try:
            self._swap()
        finally:
            signals.unblock(blocked)

    def _swap(self) -> None:
        assert self.tmp is not None
        if not (self.out.exists() or self.out.is_symlink()):
            os.replace(self.tmp, self.out)
            self.swap, self._committed = "rename", True
            return
        if exchange(self.tmp, self.out):
            # OUT is the new output; the staging name now holds the previous one.
            self.swap, self._committed = "exchange", True
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        # Fallback: a window between the two renames. SIGKILL there leaves OUT moved aside;
        # claim_output / check_output put it back on the next run.
        old = self.out.with_name(f".{self.out.name}{OLD_INFIX}{os.getpid()}")
        os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        self.swap, self._committed = "renames", True
        # Back under a staging name before deleting: a half-deleted copy is never restored.
        os.replace(old, self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        for sig in self._old:  # a second Ctrl-C must not stop the cleanup half-way
            signal.signal(sig, signal.SIG_IGN)
        full = out_of_space(exc) if exc is not None and not self._committed else None
        written, free = 0, None
        try:
            if not self._committed and self.tmp is not None:
                if full is not None:
                    written, free = _tree_bytes(self.tmp), _free_bytes(self.tmp)
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            for sig, handler in self._old.items():
                signal.signal(sig, handler)
        if self.signum is not None:
            signals.note(None)  # handled here: a later Staging in this process starts afresh
        if self.signum is not None and exc is not None and not isinstance(exc, Interrupted):
            raise Interrupted(self.signum) from None
        if full is not None:
            raise self._space_error(full, written, free) from None
        if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise io_error(exc, exc.filename or self.out.parent, "cannot write the output") \
                from None

    def _space_error(self, full: BaseException, written: int, free: int | None) -> OutputError:
        name = getattr(full, "filename", None)
        where = Path(name) if isinstance(name, str) and name else self.out.parent
        if self.tmp is not None and where.is_relative_to(self.tmp):  # name the final path
            where = self.out / where.relative_to(self.tmp)
        elif not where.is_relative_to(self.out.parent):  # elsewhere, e.g. TMPDIR
            free = _free_bytes(where if where.is_dir() else where.parent)
        left = f", {human_bytes(free)} were left" if free is not None else ""
        return OutputError(
            f"{show(where)}: no space left on device (this run had written "
            f"{human_bytes(written)} next to --out{left}; it needs more than that): free some "
            "space or choose another --out; nothing was written"
        )

    def need(self, size: int, why: str) -> None:
        """Refuse up front when the filesystem of ``out`` has less than ``size`` bytes free.

        Raises:
            OutputError: not enough free space (the message gives both numbers and ``why``).
        """
        free = _free_bytes(self.out.parent)
        if free is not None and free < size:
            raise OutputError(
                f"{show(self.out.parent)}: not enough space for --out {show(self.out.name)}: "
                f"needs at least {human_bytes(size)} ({why}), {human_bytes(free)} left: free "
                "some space or choose another --out"
            )
