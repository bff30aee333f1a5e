"""What long work tells the user while it runs: progress, stage lines, warnings, the log file.

One :class:`Console` per command run, shared by every command (convert, compare, inspect, tune,
sweep, compress, deploy) and installed for the duration with :func:`use`. Library code never
takes a console parameter: it asks the current one (``progress.task(...)``, ``progress.info``,
``progress.warn``), and without one installed (the Python API, an executor's worker) every call
is a no-op, as with ``logging``.

On a terminal a step with a known size is a tqdm bar with rate and ETA; otherwise (CI logs,
``nohup``, pipes) the same step is plain lines: one every ``interval`` seconds while it runs
with done / total, percent, elapsed and ETA (``EDGEOPT_PROGRESS_INTERVAL``, default 10 s), and
one when it ends (``...: done, 200 samples in 1.2s``). Steps of unknown size (a framework
converter running) get the same periodic line with the time elapsed. Only the innermost running
step speaks, so nested steps (calibration inside a conversion) do not repeat each other.

Verbosity: ``quiet`` prints warnings and errors only; ``normal`` adds steps and progress;
``verbose`` adds detail lines and the frameworks' own output (TensorFlow's C++ log, tf2onnx).
``--log-file PATH`` receives everything at every verbosity, with times: each line shown, each
detail line, the frameworks' full output (``framework_output``) and full, untruncated error
texts (``log``).

Warnings are printed once each (the same text twice is shown once), so a command can pass every
warning of its report through :meth:`Console.warn` at the end and the ones already shown while
running are not repeated.

Standard library + tqdm only (tqdm is imported when the first bar is drawn).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from enum import IntEnum
from pathlib import Path
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

PREFIX = "edgeopt"
DEFAULT_INTERVAL = 10.0  # seconds between plain progress lines (EDGEOPT_PROGRESS_INTERVAL)
_TICK = 0.5  # how often the heartbeat thread looks at running steps


class Verbosity(IntEnum):
    QUIET = 0
    NORMAL = 1
    VERBOSE = 2


def fmt_duration(seconds: float | None) -> str:
    """``4.2s``, ``3m07s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _interval_from_env() -> float:
    text = os.environ.get("EDGEOPT_PROGRESS_INTERVAL", "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_INTERVAL
    return value if 0 < value < 86_400 else DEFAULT_INTERVAL


class Task:
    """One long step: ``update(n)`` as work is done; ends (and says so) when the block exits.

    Shown as a bar (terminal) or as plain lines; without a console, counts silently.
    """

    def __init__(self, console: Console | None, desc: str, total: int | None, unit: str) -> None:
        self.console, self.desc, self.total, self.unit = console, desc, total, unit
        self.n = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._bar: Any = None
        self.closed = False

    # -- counting
    def update(self, n: int = 1) -> None:
        self.n += n
        if self.console is not None:
            self.console._progressed(self)

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def track(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, counting each one."""
        for item in items:
            yield item
            self.update()

    # -- facts
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self) -> float | None:
        if not self.total or not self.n or self.n >= self.total:
            return None
        return self.elapsed / self.n * (self.total - self.n)

    def status(self) -> str:
        """``12/200 samples (6%), 3.1s elapsed, ETA 48.2s`` (or ``3.1s elapsed`` unsized)."""
        if self.total:
            pct = 100.0 * self.n / self.total
            return (f"{self.n}/{_count(self.total, self.unit)} ({pct:.0f}%), "
                    f"{fmt_duration(self.elapsed)} elapsed, ETA {fmt_duration(self.eta())}")
        if self.n:
            return f"{_count(self.n, self.unit)}, {fmt_duration(self.elapsed)} elapsed"
        return f"{fmt_duration(self.elapsed)} elapsed"

    def __enter__(self) -> Task:
        if self.console is not None:
            self.console._begin(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.closed = True
        if self.console is not None:
            self.console._end(self, failed=exc_type is not None)


class Console:
    """Where a command's progress, messages and log go (see the module docstring).

    Args:
        stream: the user's stream (stderr).
        verbosity: quiet / normal / verbose.
        bar: draw tqdm bars (None: when ``stream`` is a terminal).
        log_file: also write everything, with times, to this file (created or truncated).
        interval: seconds between plain progress lines and heartbeats.
        prefix: the first word of every line (``edgeopt`` -> ``edgeopt: ...``).
    """

    def __init__(self, stream: TextIO | None = None, *, verbosity: Verbosity = Verbosity.NORMAL,
                 bar: bool | None = None, log_file: str | os.PathLike[str] | None = None,
                 interval: float | None = None, prefix: str = PREFIX) -> None:
        self.stream, self._own = _private_stream(stream if stream is not None else sys.stderr)
        self.verbosity = verbosity
        self.bar = _isatty(self.stream) if bar is None else bar
        self.interval = interval if interval is not None else _interval_from_env()
        self.prefix = prefix
        self.log_path = Path(log_file) if log_file is not None else None
        self._log: TextIO | None = None
        if self.log_path is not None:
            self._log = _open_log(self.log_path)
        self._lock = threading.RLock()
        self._warned: set[str] = set()
        self.warnings: list[str] = []  # every distinct warning, in order
        self._tasks: list[Task] = []
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    # -- messages -------------------------------------------------------------------------
    @property
    def shows_progress(self) -> bool:
        return self.verbosity >= Verbosity.NORMAL

    def info(self, message: str) -> None:
        """A stage line (normal and verbose)."""
        self._line(message, shown=self.shows_progress)

    def detail(self, message: str) -> None:
        """A detail line (verbose only; always in the log file)."""
        self._line(message, shown=self.verbosity >= Verbosity.VERBOSE)

    def warn(self, message: str) -> bool:
        """Print a warning once per distinct text (at every verbosity).

        Returns:
            True when it was new (and printed), False when it had been shown already.
        """
        text = message.strip()
        with self._lock:
            if not text or text in self._warned:
                return False
            self._warned.add(text)
            self.warnings.append(text)
        self._line(f"warning: {text}", shown=True)
        return True

    def notice(self, message: str) -> None:
        """A line shown at every verbosity, without a label (``interrupted by SIGINT; ...``)."""
        self._line(message, shown=True)

    def error(self, message: str) -> None:
        """An error line (always shown; the log gets it too)."""
        self._line(f"error: {message}", shown=True)

    def log(self, text: str) -> None:
        """Write ``text`` (any length, any number of lines) to the log file only; in verbose
        mode it is shown too."""
        self._line(text, shown=self.verbosity >= Verbosity.VERBOSE, plain=True)

    def framework_output(self, what: str, text: str) -> None:
        """Output a framework printed while ``what`` ran (captured by ``framework_sink``)."""
        text = text.rstrip()
        if text:
            self.log(f"--- output of {what} ---\n{text}\n--- end of output of {what} ---")

    def _line(self, message: str, *, shown: bool, plain: bool = False) -> None:
        with self._lock:
            if shown:
                text = message if plain else f"{self.prefix}: {message}"
                self._write_user(text)
            self._write_log(message)

    def _write_user(self, text: str) -> None:
        bars = [t._bar for t in self._tasks if t._bar is not None]
        if bars:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _write_log(self, message: str) -> None:
        if self._log is None:
            return
        stamp = _dt.datetime.now().isoformat(timespec="milliseconds")
        try:
            for i, line in enumerate(message.splitlines() or [""]):
                self._log.write(f"{stamp} {line}\n" if i == 0 else f"{' ' * len(stamp)} {line}\n")
            self._log.flush()
        except OSError:  # a full disk under the log must not fail the conversion
            pass

    # -- steps ------------------------------------------------------------------------------
    def task(self, desc: str, total: int | None = None, unit: str = "sample") -> Task:
        """A long step (use as a context manager)."""
        return Task(self, desc, total, unit)

    def _begin(self, task: Task) -> None:
        with self._lock:
            self._tasks.append(task)
            self._write_log(f"{task.desc}: started"
                            + (f" ({_count(task.total, task.unit)})" if task.total else ""))
            if not self.shows_progress:
                return
            if self.bar:
                from tqdm import tqdm

                width = _columns(self.stream)
                task._bar = tqdm(total=task.total, desc=f"{self.prefix}: {task.desc}",
                                 unit=task.unit, file=self.stream, leave=False,
                                 dynamic_ncols=width is None, ncols=width or None,
                                 mininterval=0.2)
            # plain lines: nothing at the start (most steps are short); a status line every
            # `interval` seconds while the step runs, and one when it ends
        self._start_ticker()

    def _progressed(self, task: Task) -> None:
        if task._bar is not None:
            with self._lock:
                task._bar.update(task.n - task._bar.n)
            return
        if (self.shows_progress and self._tasks and self._tasks[-1] is task
                and time.monotonic() - task._last_line >= self.interval):
            self._periodic(task)

    def _periodic(self, task: Task) -> None:
        with self._lock:
            task._last_line = time.monotonic()
            self._write_user(f"{self.prefix}: {task.desc}: {task.status()}")

    def _end(self, task: Task, failed: bool) -> None:
        with self._lock:
            if task in self._tasks:
                self._tasks.remove(task)
            now = time.monotonic()
            for outer in self._tasks:  # the inner step just spoke for them
                outer._last_line = now
            if task._bar is not None:
                task._bar.close()
                task._bar = None
            what = "stopped" if failed else "done"
            amount = f"{_count(task.n, task.unit)} in " if task.n else ""
            line = f"{task.desc}: {what}, {amount}{fmt_duration(task.elapsed)}"
            self._write_log(line)
            if self.shows_progress:
                print(f"{self.prefix}: {line}", file=self.stream, flush=True)

    def _start_ticker(self) -> None:
        with self._lock:
            if self._ticker is not None and self._ticker.is_alive():
                return
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, name="edgeopt-progress",
                                            daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        """Heartbeat: plain lines for steps that have not moved, bar refreshes for ETAs."""
        while not self._stop.wait(_TICK):
            with self._lock:
                tasks = list(self._tasks)
                if not tasks:
                    self._ticker = None
                    return
                for t in tasks:
                    if t._bar is not None:
                        t._bar.refresh()
                inner = tasks[-1]  # plain lines: the innermost step speaks for the outer ones
                if (inner._bar is None and self.shows_progress and not inner.closed
                        and time.monotonic() - inner._last_line >= self.interval):
                    self._periodic(inner)

    def close(self) -> None:
        """Stop the heartbeat and close the log file (bars still open are closed)."""
        self._stop.set()
        ticker = self._ticker
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout=2)
        with self._lock:
            for t in list(self._tasks):
                if t._bar is not None:
                    t._bar.close()
                    t._bar = None
            self._tasks.clear()
            if self._log is not None:
                with contextlib.suppress(OSError):
                    self._log.close()
                self._log = None
            if self._own:
                with contextlib.suppress(OSError):
                    self.stream.flush()
                    self.stream.close()
                self._own = False

    # -- framework output -----------------------------------------------------------------------
    def log_fd(self) -> int | None:
        """A file descriptor the frameworks' C-level output may be sent to (the log file)."""
        if self._log is None:
            return None
        try:
            self._log.flush()
            return self._log.fileno()
        except (OSError, ValueError):
            return None


def _private_stream(stream: TextIO) -> tuple[TextIO, bool]:
    """A stream on a duplicate of ``stream``'s descriptor when it is the process's stdout or
    stderr: the frameworks' output is redirected at the descriptor level while they run
    (``edgeopt.backends._frameworks``), and progress lines must still reach the user then.

    Returns:
        (the stream to write to, whether it is ours to close).
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream, False
    if fd not in (1, 2):
        return stream, False
    stream.flush()
    dup = os.dup(fd)
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return os.fdopen(dup, "w", buffering=1, encoding=encoding, errors="backslashreplace"), True


def _columns(stream: TextIO) -> int | None:
    """None when the terminal reports its width (tqdm follows it), else 100: a pseudo-terminal
    without a size (``script``, CI runners' ptys) reports 0 columns and tqdm then draws
    nothing."""
    try:
        return None if os.get_terminal_size(stream.fileno()).columns > 0 else 100
    except (AttributeError, OSError, ValueError):
        return 100


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _open_log(path: Path) -> TextIO:
    """The log file, created or truncated (an unusable path is a one-line error)."""
    from edgeopt_runtime.errors import EdgeOptError

    try:
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory")
        path.write_text("", encoding="utf-8")
        # Append mode: the frameworks write to the same file through a duplicate descriptor
        # (framework_sink), so every write must land at the end, not at a stale offset.
        return open(path, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise EdgeOptError(f"--log-file {path}: cannot write the log file: {why}") from None


# -- the current console -----------------------------------------------------------------------
_current: contextvars.ContextVar[Console | None] = contextvars.ContextVar(
    "edgeopt_console", default=None)


def current() -> Console | None:
    """The console installed by :func:`use`, or None (API use: everything is silent)."""
    return _current.get()


@contextlib.contextmanager
def use(console: Console) -> Iterator[Console]:
    """Install ``console`` for the block (closed at the end); logging of the ``edgeopt``
    loggers goes to it too."""
    token = _current.set(console)
    handler = _ConsoleHandler(console)
    logger = logging.getLogger("edgeopt")
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    # the console is the one place these records go (a framework may have configured the root
    # logger, which would print them a second time, unformatted)
    logger.propagate = False
    try:
        yield console
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
        _current.reset(token)
        console.close()


class _ConsoleHandler(logging.Handler):
    """``logging`` records of ``edgeopt.*``: INFO as detail lines, WARNING+ as warnings, DEBUG
    to the log file only."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.DEBUG)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # noqa: BLE001 - a bad log call must not break the run
            return
        if record.levelno >= logging.WARNING:
            self.console.warn(text)
        elif record.levelno >= logging.INFO:
            self.console.detail(text)
        else:
            self.console.log(text)


def task(desc: str, total: int | None = None, unit: str = "sample") -> Task:
    """A long step on the current console (silent without one)."""
    return Task(current(), desc, total, unit)


def info(message: str) -> None:
    c = current()
    if c is not None:
        c.info(message)


def detail(message: str) -> None:
    c = current()
    if c is not None:
        c.detail(message)


def warn(message: str) -> None:
    c = current()
    if c is not None:
        c.warn(message)


def log(text: str) -> None:
    """Full text for the log file (error messages before they are shortened, tracebacks)."""
    c = current()
    if c is not None:
        c.log(text)


def counted(items: Iterable[T], desc: str, total: int | None = None,
            unit: str = "sample") -> Iterator[T]:
    """Iterate ``items`` as one step ``desc`` (a bar / lines while it runs)."""
    with task(desc, total, unit) as t:
        yield from t.track(items)


class Passes:
    """A re-iterable wrapper whose every pass is one progress step (calibration data that a
    converter reads once or several times: ``calibrating``, ``calibrating (pass 2)``)."""

    def __init__(self, items: Any, desc: str, total: int | None, unit: str = "sample") -> None:
        self.items, self.desc, self.total, self.unit = items, desc, total, unit
        self.passes = 0

    def __iter__(self) -> Iterator[Any]:
        self.passes += 1
        desc = self.desc if self.passes == 1 else f"{self.desc} (pass {self.passes})"
        return counted(self.items, desc, self.total, self.unit)

    def __len__(self) -> int:
        return len(self.items)

    def __getattr__(self, name: str) -> Any:  # count, sha256, ... of the wrapped source
        return getattr(self.items, name)


@contextlib.contextmanager
def framework_sink() -> Iterator[int | None]:
    """The file descriptor framework output should go to while a framework runs: the log file
    (None: discard it; verbose without a log file: the user's stderr)."""
    c = current()
    if c is None:
        yield None
        return
    fd = c.log_fd()
    if fd is None and c.verbosity >= Verbosity.VERBOSE:
        try:
            fd = c.stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
    yield fd
