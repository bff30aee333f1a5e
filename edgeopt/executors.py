"""Executors: run independent tasks serially, in a local process pool, or on a Ray cluster.

One interface, three engines, the same results. ``edgeopt sweep`` runs its jobs (one convert per
model x target x recipe, validation shards, on-device profiles) through it, and the tuning loop
runs its candidate evaluations through it.

Vocabulary
----------
``Task(fn, args=(), kwargs={}, key="", resources=Resources(), max_retries=2)``
    One call ``fn(*args, **kwargs)``. ``fn`` must be a module-level function (it is pickled by
    reference and imported in the worker) and ``args`` / ``kwargs`` / the return value must be
    picklable; tasks must not rely on shared memory with the caller (a worker may be another
    process or another machine). ``key`` names the task in progress events and errors.
    ``max_retries`` is how many times the task is re-run after the *worker running it was
    lost* (killed by a signal, out of memory, node gone). An exception raised by ``fn`` is never
    retried: tasks are meant to be deterministic, the same exception would come back.
``Resources(num_cpus=1.0, memory=None, custom={})``
    What one running task holds. ``memory`` is its expected peak RSS in bytes (give the measured
    peak of an earlier run, see ``Outcome.peak_rss``); ``custom`` are named resources such as
    ``{"device:pi4": 1}`` (the machine the board is attached to) or
    ``{"edgetpu-compiler": 1}`` (a machine with the Edge TPU compiler, i.e. x86-64 Linux). A
    task only starts where every resource fits; one that can never fit (asks for more than the
    executor has, or a custom resource no node offers) finishes at once with an ``infeasible``
    error instead of waiting forever.
``Outcome(key, ok, value, error, attempts, seconds, peak_rss, worker)``
    Failures are values: ``ok`` is False and ``error`` is a ``TaskError(kind, type, message,
    traceback)`` with ``kind`` one of ``"exception"`` (``fn`` raised; ``type`` is the exception
    class name, e.g. ``"TargetError"``), ``"worker-lost"`` (the worker died ``max_retries + 1``
    times), ``"infeasible"`` or ``"cancelled"``. A failed task never stops the others.
    ``attempts`` counts runs (1 + retries after worker loss), ``seconds`` the wall time of the
    last run, ``peak_rss`` the peak resident memory of the worker process during the last run
    (bytes; Linux VmHWM reset at task start, so it is the task's own peak even in a reused
    worker; None where unavailable), ``worker`` is ``"pid@host"``.
``Event(kind, ticket, key, attempt, outcome)``
    Passed to the ``progress`` callback: ``"started"`` when a task is handed to a worker (for
    Ray: submitted to the cluster), ``"retrying"`` after a worker loss (``outcome`` holds the
    loss), ``"finished"`` with the final ``Outcome``. Called in the caller's thread.

The executor
------------
``make_executor(name, jobs=None, *, ray_address=None, resources=None) -> Executor`` with
``name`` one of ``EXECUTORS`` (``serial``, ``process``, ``ray``). Every executor is a context
manager (``close()`` on exit) and offers:

``submit(task) -> int``
    Queue a task; returns its ticket (0, 1, 2, ... in submission order). Never blocks on the
    task; may be called while iterating ``as_completed`` (to add follow-up work).
``as_completed(progress=None) -> Iterator[tuple[int, Outcome]]``
    Yield ``(ticket, outcome)`` for every submitted task exactly once, in completion order,
    until nothing is pending. The serial executor runs the tasks here, in submission order.
``run(tasks, progress=None) -> list[Outcome]``
    Submit all, wait for all, return outcomes in the order of ``tasks`` (tickets submitted
    earlier are collected too but not returned).
``capacity() -> dict[str, float]``
    What the largest single worker / node can give one task: ``"CPU"``, ``"memory"`` (bytes)
    and each custom resource. Callers use it to decide soft placement (e.g. pin Edge TPU jobs
    to compiler nodes only when some node has the compiler).
``cancel()``
    Cancel every pending and running task (running workers are terminated); they are yielded
    as ``cancelled`` outcomes by a later ``as_completed``.

Example (the tuning loop evaluating candidate recipes, one task each)::

    from edgeopt.executors import Resources, Task, make_executor

    with make_executor("process", jobs=2) as ex:          # or "serial", or "ray"
        outcomes = ex.run([Task(evaluate, (model, cand.to_dict()), key=cand.name,
                                resources=Resources(memory=peak_bytes))
                           for cand in candidates])
    for cand, out in zip(candidates, outcomes):          # same order as the tasks
        if out.ok:
            use(cand, out.value)
        else:                                            # out.error.kind says why
            log(f"{cand.name}: {out.error}")

Ctrl-C: a ``KeyboardInterrupt`` while ``as_completed`` / ``run`` waits cancels everything
(workers are terminated, so a convert in them removes its staging folder) and is re-raised;
outcomes already yielded stand. Process-pool workers ignore SIGINT so that only the caller
decides; the serial executor simply raises in the running task.

The engines
-----------
``serial``   In the calling process, one task at a time, in submission order. For tests and
             debugging (breakpoints work). A worker loss cannot be survived here: it is this
             process.
``process``  A local pool of ``jobs`` worker processes (default: CPU count), through Pebble's
             ``ProcessPool``. The standard library's pools cannot tell which task a dead
             worker was running (``ProcessPoolExecutor`` marks the whole pool broken and fails
             every pending future; ``multiprocessing.Pool`` hangs); Pebble reports
             ``ProcessExpired`` for exactly that task and replaces the worker. Tasks start only
             when their resources fit: ``jobs`` CPUs, 80 % of physical memory, and the custom
             resources given to ``make_executor`` (plus ``edgetpu-compiler`` when
             ``edgetpu_compiler`` is on PATH).
``ray``      Ray tasks (``pip install "edgeopt[ray]"``) with ``num_cpus``, ``memory`` and
             ``resources`` set from ``Resources``. ``ray_address=None`` starts a local
             single-node cluster on 127.0.0.1 (``jobs`` CPUs, the given custom resources) and
             stops it on ``close()``; an address (``auto``, ``HOST:6379``, ``ray://HOST:10001``)
             joins an existing cluster; an already initialised Ray in this process is reused
             and left running. Retries after worker loss are done here rather than with Ray's
             ``max_retries``, so that ``attempts`` is exact and the semantics match the local
             executors (results are fetched as soon as they exist, so lineage reconstruction is
             not needed). Ray's own task retries and exception retries are switched off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import time
import traceback as tb
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeopt_runtime.errors import EdgeOptError, MissingDependencyError

EXECUTORS = ("serial", "process", "ray")
# TaskError.kind values
EXCEPTION, WORKER_LOST = "exception", "worker-lost"
INFEASIBLE, CANCELLED = "infeasible", "cancelled"
EDGETPU_COMPILER = "edgetpu-compiler"  # custom resource: a node with edgetpu_compiler on PATH
LOCAL_MEMORY_FRACTION = 0.8  # of physical memory, what local tasks may reserve in total
_POLL_SECONDS = 0.2  # how often a waiting executor wakes up (Ctrl-C, new submissions)


class ExecutorError(EdgeOptError):
    """The executor cannot be created or reached (bad name, -j, Ray address)."""


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Resources:
    """What one running task holds; see the module docstring."""

    num_cpus: float = 1.0
    memory: int | None = None  # bytes (expected peak RSS)
    custom: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """``{"CPU": n, "memory": bytes, **custom}``: the names ``capacity()`` uses."""
        out: dict[str, float] = {"CPU": float(self.num_cpus)}
        if self.memory:
            out["memory"] = float(self.memory)
        out.update({k: float(v) for k, v in self.custom.items()})
        return out


@dataclass(frozen=True)
class Task:
    """One call ``fn(*args, **kwargs)`` to run somewhere; see the module docstring."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    key: str = ""
    resources: Resources = field(default_factory=Resources)
    max_retries: int = 2


@dataclass(frozen=True)
class TaskError:
    """Why a task failed: ``kind`` is exception | worker-lost | infeasible | cancelled."""

    kind: str
    type: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.kind == EXCEPTION else self.message

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "type": self.type, "message": self.message,
                "traceback": self.traceback}


@dataclass(frozen=True)
class Outcome:
    """The result of one task: a value or an error, never an exception."""

    key: str
    ok: bool
    value: Any = None
    error: TaskError | None = None
    attempts: int = 1
    seconds: float = 0.0
    peak_rss: int | None = None
    worker: str = ""


@dataclass(frozen=True)
class Event:
    """A progress event: ``kind`` is started | retrying | finished."""

    kind: str
    ticket: int
    key: str
    attempt: int
    outcome: Outcome | None = None


Progress = Callable[[Event], None]


# ------------------------------------------------------------------------------ in the worker


@dataclass(frozen=True)
class _Ran:
    """What a worker sends back for one run (exceptions are caught into it)."""

    ok: bool
    value: Any
    error: TaskError | None
    seconds: float
    peak_rss: int | None
    worker: str


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux: ``5`` to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss(reset_worked: bool) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if reset_worked:
        return None
    import resource  # lifetime peak: an upper bound for a reused worker

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> _Ran:
    """Run one task in the current process, catching ``Exception`` into a value.

    ``KeyboardInterrupt`` / ``SystemExit`` (cancellation) propagate.
    """
    reset = _reset_peak()
    t0 = time.perf_counter()
    worker = f"{os.getpid()}@{socket.gethostname()}"
    try:
        value = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - failures are values
        err = TaskError(EXCEPTION, type(exc).__name__, str(exc), tb.format_exc())
        return _Ran(False, None, err, time.perf_counter() - t0, _peak_rss(reset), worker)
    return _Ran(True, value, None, time.perf_counter() - t0, _peak_rss(reset), worker)


def _worker_init() -> None:
    """Pool workers ignore Ctrl-C: the caller cancels (terminates) them instead."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ------------------------------------------------------------------------------ base class


@dataclass
class _Slot:
    ticket: int
    task: Task
    attempt: int = 0
    handle: Any = None  # engine-specific (future, ObjectRef)


class Executor(ABC):
    """The shared interface; see the module docstring for the contract."""

    name: str = ""

    def __init__(self) -> None:
        self._tickets = 0
        self._queue: deque[_Slot] = deque()  # submitted, not yet started
        self._running: dict[int, _Slot] = {}
        self._done: deque[tuple[int, Outcome]] = deque()  # finished, not yet yielded
        self._progress: Progress | None = None

    # -- public

    def submit(self, task: Task) -> int:
        if task.max_retries < 0:
            raise ValueError(f"task {task.key!r}: max_retries must be >= 0")
        ticket = self._tickets
        self._tickets += 1
        slot = _Slot(ticket, task)
        why = self._infeasible(task.resources)
        if why:
            self._finish(slot, Outcome(task.key, False, error=TaskError(
                INFEASIBLE, "Infeasible", f"task {task.key or ticket}: {why}"), attempts=0))
        else:
            self._queue.append(slot)
        return ticket

    def as_completed(self, progress: Progress | None = None) -> Iterator[tuple[int, Outcome]]:
        if progress is not None:
            self._progress = progress
        try:
            while self._done or self._queue or self._running:
                if self._done:
                    yield self._done.popleft()
                    continue
                self._dispatch()
                if not self._done:
                    self._collect()
        except KeyboardInterrupt:
            self.cancel()
            raise

    def run(self, tasks: Sequence[Task], progress: Progress | None = None) -> list[Outcome]:
        self._progress = progress
        tickets = [self.submit(t) for t in tasks]
        got: dict[int, Outcome] = {}
        for ticket, outcome in self.as_completed(progress):
            got[ticket] = outcome
        return [got[t] for t in tickets]

    def capacity(self) -> dict[str, float]:
        return dict(self._capacity())

    def cancel(self) -> None:
        while self._queue:
            self._cancelled(self._queue.popleft())
        for slot in list(self._running.values()):
            self._stop(slot)
            del self._running[slot.ticket]
            self._cancelled(slot)

    def close(self) -> None:
        """Release workers (cancelling anything still running)."""
        self.cancel()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for engines

    @abstractmethod
    def _capacity(self) -> Mapping[str, float]:
        """Largest single-worker resources (CPU, memory bytes, custom)."""

    @abstractmethod
    def _dispatch(self) -> None:
        """Start queued tasks that fit (moving them from ``_queue`` to ``_running``)."""

    @abstractmethod
    def _collect(self) -> None:
        """Wait a little for running tasks; ``_finish`` / ``_lost`` those that ended."""

    @abstractmethod
    def _stop(self, slot: _Slot) -> None:
        """Cancel one running task (terminating its worker)."""

    def _infeasible(self, res: Resources) -> str | None:
        cap = self._capacity()
        for name, amount in res.as_dict().items():
            have = cap.get(name, 0.0)
            if amount > have:
                shown = _fmt_amount(name, amount)
                if name in cap:
                    return (f"needs {shown} but the largest {self.name} worker has "
                            f"{_fmt_amount(name, have)}")
                offered = ", ".join(f"{k}={_fmt_amount(k, v)}" for k, v in sorted(cap.items()))
                return (f"needs resource {name!r} ({shown}) which no {self.name} worker offers "
                        f"(offered: {offered}); {_resource_hint(name, self.name)}")
        return None

    def _event(self, kind: str, slot: _Slot, outcome: Outcome | None = None) -> None:
        if self._progress is not None:
            self._progress(Event(kind, slot.ticket, slot.task.key, slot.attempt, outcome))

    def _started(self, slot: _Slot, handle: Any) -> None:
        slot.attempt += 1
        slot.handle = handle
        self._running[slot.ticket] = slot
        self._event("started", slot)

    def _finish(self, slot: _Slot, outcome: Outcome) -> None:
        self._running.pop(slot.ticket, None)
        self._done.append((slot.ticket, outcome))
        self._event("finished", slot, outcome)

    def _ran(self, slot: _Slot, ran: _Ran) -> None:
        self._finish(slot, Outcome(slot.task.key, ran.ok, ran.value, ran.error, slot.attempt,
                                   round(ran.seconds, 6), ran.peak_rss, ran.worker))

    def _lost(self, slot: _Slot, why: str) -> None:
        """The worker running ``slot`` died: retry it, or record the loss."""
        err = TaskError(WORKER_LOST, "WorkerLost",
                        f"task {slot.task.key or slot.ticket}: worker lost on attempt "
                        f"{slot.attempt} of {slot.task.max_retries + 1}: {why}")
        outcome = Outcome(slot.task.key, False, error=err, attempts=slot.attempt)
        self._running.pop(slot.ticket, None)
        if slot.attempt <= slot.task.max_retries:
            self._event("retrying", slot, outcome)
            slot.handle = None
            self._queue.appendleft(slot)
        else:
            self._finish(slot, outcome)

    def _cancelled(self, slot: _Slot) -> None:
        err = TaskError(CANCELLED, "Cancelled", f"task {slot.task.key or slot.ticket} cancelled")
        self._finish(slot, Outcome(slot.task.key, False, error=err, attempts=slot.attempt))


def _fmt_amount(name: str, amount: float) -> str:
    if name == "memory":
        return f"{amount / 2**30:.2f} GiB"
    return f"{amount:g}"


def _resource_hint(name: str, engine: str) -> str:
    if engine == "ray":
        return (f"start a node that has it with `ray start --address=HEAD:6379 "
                f"--resources='{{\"{name}\": 1}}'`")
    return f"pass it to the executor (edgeopt sweep --resource {name}=1) on the machine that has it"


def _local_memory() -> float:
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) \
            * LOCAL_MEMORY_FRACTION
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return float(8 * 2**30)


def _local_custom(resources: Mapping[str, float] | None) -> dict[str, float]:
    out = {k: float(v) for k, v in (resources or {}).items()}
    if shutil.which("edgetpu_compiler") and EDGETPU_COMPILER not in out:
        out[EDGETPU_COMPILER] = float(os.cpu_count() or 1)
    return out


class _LocalExecutor(Executor):
    """Resource accounting shared by the serial and process engines."""

    def __init__(self, jobs: int, resources: Mapping[str, float] | None) -> None:
        super().__init__()
        self._total = {"CPU": float(jobs), "memory": _local_memory(), **_local_custom(resources)}
        self._used: dict[str, float] = {}

    def _capacity(self) -> Mapping[str, float]:
        return self._total

    def _fits(self, res: Resources) -> bool:
        need = res.as_dict()
        return all(self._used.get(k, 0.0) + v <= self._total[k] + 1e-9 for k, v in need.items())

    def _hold(self, res: Resources, sign: int) -> None:
        for k, v in res.as_dict().items():
            self._used[k] = self._used.get(k, 0.0) + sign * v

    def _dispatch(self) -> None:
        while self._queue and self._fits(self._queue[0].task.resources):
            slot = self._queue.popleft()
            self._hold(slot.task.resources, +1)
            self._launch(slot)

    def _release(self, slot: _Slot) -> None:
        self._hold(slot.task.resources, -1)

    def _stop(self, slot: _Slot) -> None:
        self._terminate(slot)
        self._release(slot)

    def _finish(self, slot: _Slot, outcome: Outcome) -> None:
        if slot.ticket in self._running:
            self._release(slot)
        super()._finish(slot, outcome)

    def _lost(self, slot: _Slot, why: str) -> None:
        if slot.ticket in self._running:
            self._release(slot)
        super()._lost(slot, why)

    @abstractmethod
    def _launch(self, slot: _Slot) -> None:
        """Start ``slot`` now (resources are held)."""

    @abstractmethod
    def _terminate(self, slot: _Slot) -> None:
        """Stop the worker running ``slot``."""


# ------------------------------------------------------------------------------ serial


class SerialExecutor(_LocalExecutor):
    """Runs each task in this process when ``as_completed`` reaches it."""

    name = "serial"

    def __init__(self, resources: Mapping[str, float] | None = None) -> None:
        # One at a time, but each task has the whole machine (so any task a pool could run
        # on this machine runs here too).
        super().__init__(os.cpu_count() or 1, resources)

    def _dispatch(self) -> None:  # one task per call, so results stream out in order
        if self._queue and not self._running:
            slot = self._queue.popleft()
            self._hold(slot.task.resources, +1)
            self._launch(slot)

    def _launch(self, slot: _Slot) -> None:
        self._started(slot, None)
        self._ran(slot, _invoke(slot.task.fn, slot.task.args, slot.task.kwargs))

    def _collect(self) -> None:  # nothing runs in the background
        return

    def _terminate(self, slot: _Slot) -> None:  # the task was this process: nothing to stop
        return


# ------------------------------------------------------------------------------ process


class ProcessExecutor(_LocalExecutor):
    """A local pool of worker processes (Pebble), ``jobs`` at a time."""

    name = "process"

    def __init__(self, jobs: int | None = None, resources: Mapping[str, float] | None = None,
                 *, max_tasks_per_worker: int = 0, start_method: str = "spawn") -> None:
        jobs = jobs or os.cpu_count() or 1
        super().__init__(jobs, resources)
        import multiprocessing

        import pebble

        self._pebble = pebble
        self._pool = pebble.ProcessPool(
            max_workers=jobs, max_tasks=max_tasks_per_worker, initializer=_worker_init,
            context=multiprocessing.get_context(start_method),
        )

    def _launch(self, slot: _Slot) -> None:
        t = slot.task
        self._started(slot, self._pool.schedule(_invoke, (t.fn, tuple(t.args), dict(t.kwargs))))

    def _collect(self) -> None:
        from concurrent.futures import FIRST_COMPLETED, CancelledError, wait

        futures = {slot.handle: slot for slot in self._running.values()}
        done, _ = wait(list(futures), timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
        for fut in done:
            slot = futures[fut]
            try:
                self._ran(slot, fut.result())
            except self._pebble.ProcessExpired as exc:
                self._lost(slot, f"worker process {exc.pid} ended with exit code {exc.exitcode}")
            except CancelledError:
                self._running.pop(slot.ticket, None)
                self._release(slot)
                self._cancelled(slot)
            except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable argument or value
                self._finish(slot, Outcome(slot.task.key, False, error=TaskError(
                    EXCEPTION, type(exc).__name__, str(exc), tb.format_exc()),
                    attempts=slot.attempt))

    def _terminate(self, slot: _Slot) -> None:
        slot.handle.cancel()  # Pebble terminates the worker running it

    def close(self) -> None:
        super().close()
        self._pool.stop()
        self._pool.join()


# ------------------------------------------------------------------------------ ray


def _import_ray(local: bool) -> Any:
    if local and "ray" not in sys.modules:
        # Single-node mode: Ray then binds and talks on 127.0.0.1 instead of this host's
        # network address (read once, when ray is imported).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a private cluster reports nothing
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", '"edgeopt[ray]"', "needed by --executor ray") from None
    return ray


class RayExecutor(Executor):
    """Ray tasks on a local or remote cluster."""

    name = "ray"

    def __init__(self, jobs: int | None = None, address: str | None = None,
                 resources: Mapping[str, float] | None = None) -> None:
        super().__init__()
        ray = self._ray = _import_ray(local=not address)
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address:
                kwargs["address"] = address
            else:  # a private single-node cluster, on the loopback interface only
                kwargs.update(num_cpus=jobs or os.cpu_count() or 1,
                              resources=_local_custom(resources))
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {address!r}" if address else "locally"
                raise ExecutorError(f"cannot start or reach a Ray cluster {where}: "
                                    f"{str(exc).splitlines()[0]}") from None
            self._owns = True
        self._remote = ray.remote(_invoke)
        self._cap: dict[str, float] | None = None
        self._cap_at = 0.0

    def _capacity(self) -> Mapping[str, float]:
        if self._cap is None or time.monotonic() - self._cap_at > 10:  # nodes come and go
            best: dict[str, float] = {}
            for node in self._ray.nodes():
                if not node.get("Alive"):
                    continue
                for k, v in (node.get("Resources") or {}).items():
                    if k.startswith("node:") or k == "object_store_memory":
                        continue
                    best[k] = max(best.get(k, 0.0), float(v))
            self._cap, self._cap_at = best, time.monotonic()
        return self._cap

    def _dispatch(self) -> None:
        # Hand Ray no more than the cluster's CPUs at a time: "started" then means running
        # (or about to), and the queue order here is the order work starts in.
        cpus = max(1.0, float(self._ray.cluster_resources().get("CPU", 1.0)))
        busy = sum(s.task.resources.num_cpus for s in self._running.values())
        while self._queue and (not self._running or
                               busy + self._queue[0].task.resources.num_cpus <= cpus + 1e-9):
            slot = self._queue.popleft()
            busy += slot.task.resources.num_cpus
            t, res = slot.task, slot.task.resources
            opts: dict[str, Any] = {"num_cpus": res.num_cpus, "max_retries": 0,
                                    "retry_exceptions": False, "name": t.key or "edgeopt-task"}
            if res.memory:
                opts["memory"] = int(res.memory)
            if res.custom:
                opts["resources"] = {k: float(v) for k, v in res.custom.items()}
            ref = self._remote.options(**opts).remote(t.fn, tuple(t.args), dict(t.kwargs))
            self._started(slot, ref)

    def _collect(self) -> None:
        ray = self._ray
        refs = {slot.handle: slot for slot in self._running.values()}
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=_POLL_SECONDS)
        for ref in ready:
            slot = refs[ref]
            try:
                self._ran(slot, ray.get(ref))
            except ray.exceptions.TaskCancelledError:
                self._running.pop(slot.ticket, None)
                self._cancelled(slot)
            except ray.exceptions.RayTaskError as exc:  # the wrapper itself failed (unpickling)
                self._finish(slot, Outcome(slot.task.key, False, error=TaskError(
                    EXCEPTION, type(exc.cause).__name__ if exc.cause else "RayTaskError",
                    str(exc.cause or exc).splitlines()[0], str(exc)), attempts=slot.attempt))
            except ray.exceptions.RayError as exc:  # worker crashed, OOM-killed, node died
                self._lost(slot, f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

    def _stop(self, slot: _Slot) -> None:
        with contextlib.suppress(Exception):
            self._ray.cancel(slot.handle, force=True)

    def close(self) -> None:
        super().close()
        if self._owns:
            self._ray.shutdown()
            self._owns = False


# ------------------------------------------------------------------------------ factory


def make_executor(
    name: str, jobs: int | None = None, *, ray_address: str | None = None,
    resources: Mapping[str, float] | None = None,
) -> Executor:
    """Create an executor by name; see the module docstring.

    Args:
        name: ``serial``, ``process`` or ``ray``.
        jobs: parallel workers for ``process`` (default: CPU count) and the CPU count of a
            local Ray cluster; the serial executor runs one at a time and ignores it.
        ray_address: join this Ray cluster instead of starting a local one.
        resources: custom resources this machine offers to local executors and to a local
            Ray cluster, e.g. ``{"device:pi4": 1}``.

    Raises:
        ExecutorError: unknown name, ``jobs`` < 1, an address given to a non-Ray executor, or
            Ray could not start / connect.
        MissingDependencyError: ``ray`` without Ray installed.
    """
    if name not in EXECUTORS:
        raise ExecutorError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
    if jobs is not None and jobs < 1:
        raise ExecutorError(f"-j/--jobs must be >= 1, got {jobs}")
    if ray_address and name != "ray":
        raise ExecutorError("--ray-address needs --executor ray")
    if name == "serial":
        return SerialExecutor(resources)
    if name == "process":
        return ProcessExecutor(jobs, resources)
    return RayExecutor(jobs, ray_address, resources)
