"""The sweep driver: plan, skip what is cached, run the rest through an executor, write results.

Per job folder ``OUT/jobs/<key>/`` (written only by the driver, each file atomically):

``job.json``         the job's inputs (identity), status ok / failed, its row, attempts, peak RSS
``artifact/``        the ``edgeopt convert`` output (``<target>/`` + ``report.{json,md,html}``)
``reference/``       float reference models (only when the validation set is sharded)
``validation.json``  full validation set metrics (+ ``validation.npz``, per-sample outputs)
``profile.json``     the on-device profile (targets with a board in ``[devices]``)

A job counts as done when its ``job.json`` says ok (or failed with a refusal of its inputs,
which the same inputs would repeat; ``rerun_failed`` tries those again). Validation shards and
device profiles are follow-up tasks submitted as soon as their job's convert finishes; a sweep
interrupted between the two resumes with only the follow-ups.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import EdgeOptError

from ..executors import Executor, Outcome, Resources, Task
from .jobs import JobSpec, plan_jobs, run_job
from .progress import SweepProgress
from .spec import SweepSpec
from .validate import apply_to_row, merge_shards, plan_shards, validate_shard

JOBS_DIR = "jobs"
SCRATCH_DIR = ".scratch"
GiB = 2**30
DEFAULT_JOB_MEMORY = {"tensorflow": int(1.5 * GiB), "onnx": int(0.75 * GiB)}
SHARD_MEMORY = int(0.5 * GiB)
PEAK_MARGIN = 1.25  # memory asked for a job = 1.25 x the peak measured for its model + target
DEVICE_PROFILE_RUNS = 50


class SweepError(EdgeOptError):
    """The output folder cannot be used (another sweep holds it, not a sweep folder)."""


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM: finished jobs are kept, ``results`` holds what exists."""

    def __init__(self, results: dict[str, Any], signum: int = signal.SIGINT) -> None:
        super().__init__("sweep interrupted")
        self.results, self.signum = results, int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class _State:
    """One job's progress through convert -> shards -> profile."""

    job: JobSpec
    record: dict[str, Any] | None = None  # job.json
    cached: bool = False
    shards: list[dict[str, Any]] = field(default_factory=list)
    shards_left: int = 0
    profile_pending: bool = False


def _atomic_json(path: Path, data: Any) -> None:
    from ..report import dumps

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    from ..report import from_jsonable

    try:
        return from_jsonable(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None  # missing or torn (a kill mid-write cannot tear: writes are renames)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One sweep per OUT at a time (flock: released by the kernel even after SIGKILL)."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(f"{out}: another edgeopt sweep is writing this folder") from None
        yield
    finally:
        os.close(fd)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out}: exists and is not a folder; --out needs a folder")
    if out.is_dir() and any(out.iterdir()):
        known = {JOBS_DIR, SCRATCH_DIR, ".lock", "results.json", "results.csv",
                 "results.html"}
        if not (out / JOBS_DIR).is_dir() and not set(p.name for p in out.iterdir()) <= known:
            raise SweepError(f"{out}: not empty and not an edgeopt sweep folder; choose an "
                             "empty or new --out")


def run_sweep(spec: SweepSpec, out: str | os.PathLike[str], executor: Executor, *,
              rerun_failed: bool = False, progress: SweepProgress | None = None,
              shared_scratch: bool = True) -> dict[str, Any]:
    """Run every job of ``spec`` not already finished in ``out``; write the results.

    Args:
        spec: the parsed sweep file.
        out: the sweep folder (created; reused by later runs as the cache).
        executor: where tasks run (see ``edgeopt.executors``).
        rerun_failed: also rerun jobs whose inputs were refused last time.
        progress: shows progress (None: silent).
        shared_scratch: workers see this machine's filesystem (local executors, a local Ray);
            their scratch folders then live in ``OUT/.scratch``, else in the worker's temp.

    Returns:
        The results document (``edgeopt.sweep/1``), also written to ``OUT/results.*``.

    Raises:
        SweepError / EdgeOptError: unusable OUT, invalid targets or recipes (before any job).
        SweepInterrupted: Ctrl-C; finished jobs are in ``out``, results written as they stand.
    """
    out = Path(out)
    _check_out(out)
    with _locked(out):
        scratch = out / SCRATCH_DIR
        shutil.rmtree(scratch, ignore_errors=True)  # leftovers of killed runs (we hold the lock)
        scratch.mkdir()
        jobs = plan_jobs(spec, str(scratch.resolve()) if shared_scratch else None)
        (out / JOBS_DIR).mkdir(exist_ok=True)
        driver = _Driver(spec, out, executor, jobs, rerun_failed, progress)
        try:
            driver.run()
        except KeyboardInterrupt as exc:  # edgeopt.signals.Interrupted says which signal
            signum = getattr(exc, "signum", signal.SIGINT)
            raise SweepInterrupted(driver.results(interrupted=True), signum) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return driver.results(interrupted=False)


class _Driver:
    def __init__(self, spec: SweepSpec, out: Path, executor: Executor, jobs: list[JobSpec],
                 rerun_failed: bool, progress: SweepProgress | None) -> None:
        self.spec, self.out, self.ex, self.rerun_failed = spec, out, executor, rerun_failed
        self.states = [_State(j) for j in jobs]
        self.tickets: dict[int, tuple[str, _State, Any]] = {}
        self.progress = progress
        self.peaks = self._known_peaks()

    # -- planning

    def jdir(self, st: _State) -> Path:
        return self.out / JOBS_DIR / st.job.key

    def _known_peaks(self) -> dict[tuple[str, str], int]:
        """Peak RSS measured by earlier runs, per (model sha256, target)."""
        peaks: dict[tuple[str, str], int] = {}
        for st in self.states:
            rec = _read_json(self.jdir(st) / "job.json")
            if rec and rec.get("peak_rss_bytes"):
                k = (st.job.model_sha256, st.job.target)
                peaks[k] = max(peaks.get(k, 0), int(rec["peak_rss_bytes"]))
        return peaks

    def _memory(self, job: JobSpec) -> int:
        peak = self.peaks.get((job.model_sha256, job.target))
        if peak:
            return int(peak * PEAK_MARGIN)
        heavy = "tensorflow" if not job.model.endswith(".onnx") or "tflite" in \
            job.profile.get("formats", []) else "onnx"
        return DEFAULT_JOB_MEMORY[heavy] + 10 * _size(Path(job.model))

    def _resources(self, job: JobSpec) -> Resources:
        from ..executors import EDGETPU_COMPILER

        custom = {}
        # Edge TPU jobs go where edgetpu_compiler is (x86-64 Linux) when some worker has it;
        # elsewhere they still convert and pre-flight, and say the compiler was not there.
        delegate = (job.profile.get("runtime") or {}).get("tflite_delegate")
        if delegate == "edgetpu" and self.ex.capacity().get(EDGETPU_COMPILER):
            custom[EDGETPU_COMPILER] = 1
        return Resources(num_cpus=1, memory=self._memory(job), custom=custom)

    # -- running

    def run(self) -> None:
        todo = []
        for st in self.states:
            rec = _read_json(self.jdir(st) / "job.json")
            if rec and (rec["status"] == "ok" or (rec.get("refused") and not self.rerun_failed)):
                st.record, st.cached = rec, True
            else:
                todo.append(st)
        if self.progress:
            self.progress.begin(len(self.states), len(self.states) - len(todo))
            self.progress.say(f"{len(self.states)} jobs: {len(self.states) - len(todo)} "
                              f"cached, {len(todo)} to run on {self.ex.name}")
        for st in todo:
            self._submit("convert", st, None, Task(
                run_job, (st.job,), key=st.job.label, resources=self._resources(st.job)))
        for st in self.states:
            if st.cached:
                self._follow_ups(st)
        for ticket, outcome in self.ex.as_completed(self._event):
            kind, st, extra = self.tickets.pop(ticket)
            getattr(self, f"_on_{kind}")(st, outcome, extra)

    def _submit(self, kind: str, st: _State, extra: Any, task: Task) -> None:
        self.tickets[self.ex.submit(task)] = (kind, st, extra)

    def _event(self, event: Any) -> None:
        if self.progress is None:
            return
        if event.kind == "started":
            self.progress.started()
        elif event.kind == "retrying":
            self.progress.retrying(event.key)
        else:
            self.progress.finished(bool(event.outcome and event.outcome.ok and not (
                isinstance(event.outcome.value, dict) and "refused" in event.outcome.value)),
                event.key)

    def _on_convert(self, st: _State, outcome: Outcome, _extra: Any) -> None:
        jdir = self.jdir(st)
        rec: dict[str, Any] = {
            "schema": "edgeopt.sweep.job/1", "key": st.job.key, "model": st.job.model_name,
            "target": st.job.target, "recipe": st.job.recipe.name,
            "inputs": st.job.identity(), "paths": {"model": st.job.model,
                                                   "calib": st.job.calib, "val": st.job.val},
            "attempts": outcome.attempts, "seconds": outcome.seconds,
            "peak_rss_bytes": outcome.peak_rss, "worker": outcome.worker,
        }
        value = outcome.value if outcome.ok else None
        if value and "row" in value:
            self._materialize(jdir, value["files"])
            rec.update(status="ok", error=None, row=value["row"], val_total=value["val_total"])
        elif value:  # refused inputs: deterministic, cached
            jdir.mkdir(parents=True, exist_ok=True)
            rec.update(status="failed", refused=True, error={"kind": "refused", **value[
                "refused"]}, row=None)
        else:
            jdir.mkdir(parents=True, exist_ok=True)
            rec.update(status="failed", refused=False, error=outcome.error.to_dict(), row=None)
        _atomic_json(jdir / "job.json", rec)
        st.record = rec
        if rec["status"] == "ok":
            self._follow_ups(st)

    def _materialize(self, jdir: Path, files: dict[str, bytes]) -> None:
        """Write a job's files into a temp folder, then swap it in (no half-written job)."""
        tmp = jdir.with_name(f".{jdir.name}.tmp-{uuid.uuid4().hex[:8]}")
        for rel, data in files.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        tmp.mkdir(exist_ok=True)
        if jdir.exists():
            shutil.rmtree(jdir)  # a failed attempt's folder (its job.json said failed)
        os.replace(tmp, jdir)

    # -- follow-ups: validation shards, device profile

    def _follow_ups(self, st: _State) -> None:
        rec, jdir = st.record or {}, self.jdir(st)
        total = rec.get("val_total")
        if total and not (jdir / "validation.json").exists():
            self._submit_shards(st, total)
        if st.job.device and not (jdir / "profile.json").exists():
            files = {str(p.relative_to(jdir / rec["row"]["directory"])): p.read_bytes()
                     for p in (jdir / rec["row"]["directory"]).iterdir() if p.is_file()}
            st.profile_pending = True
            self._submit("profile", st, None, Task(
                profile_on_device, (files, DEVICE_PROFILE_RUNS), key=f"{st.job.label} · "
                f"profile on {st.job.device}",
                resources=Resources(custom={f"device:{st.job.device}": 1})))
            if self.progress:
                self.progress.add(1)

    def _submit_shards(self, st: _State, total: int) -> None:
        jdir, row = self.jdir(st), st.record["row"]
        refs = {p.suffix: str(p.relative_to(jdir)) for p in (jdir / "reference").iterdir()}
        pairs = [(a["path"], refs["." + a["format"]]) for a in row["artifacts"]]
        files = {rel: (jdir / rel).read_bytes() for pair in pairs for rel in pair}
        ranges = plan_shards(total, self.spec.shard_size, self.spec.max_val_samples)
        st.shards, st.shards_left = [], len(ranges)
        for start, stop in ranges:
            self._submit("shard", st, None, Task(
                validate_shard, (files, pairs, st.job.val, start, stop, st.job.preprocess),
                key=f"{st.job.label} · val {start}:{stop}",
                resources=Resources(num_cpus=1, memory=SHARD_MEMORY)))
        if self.progress:
            self.progress.add(len(ranges))

    def _on_shard(self, st: _State, outcome: Outcome, _extra: Any) -> None:
        st.shards_left -= 1
        if not outcome.ok:
            st.shards.append({"error": outcome.error.to_dict()})
        else:
            st.shards.append({**outcome.value, "peak_rss_bytes": outcome.peak_rss})
        if st.shards_left:
            return
        jdir = self.jdir(st)
        errors = [s["error"] for s in st.shards if "error" in s]
        if errors:  # not cached: the next run validates again
            st.record["validation_error"] = errors[0]
            return
        paths = [a["path"] for a in st.record["row"]["artifacts"]]
        doc = merge_shards(st.shards, paths, jdir / "validation.npz")
        _atomic_json(jdir / "validation.json", doc)
        st.shards = []

    def _on_profile(self, st: _State, outcome: Outcome, _extra: Any) -> None:
        st.profile_pending = False
        if outcome.ok:
            _atomic_json(self.jdir(st) / "profile.json", {**outcome.value,
                                                          "worker": outcome.worker})
        else:
            st.record["profile_error"] = outcome.error.to_dict()

    # -- results

    def results(self, interrupted: bool) -> dict[str, Any]:
        from .results import build_results, write_results

        rows = [self._row(st) for st in self.states]
        doc = build_results(self.spec, rows, self.ex.name, interrupted)
        write_results(doc, self.out)
        return doc

    def _row(self, st: _State) -> dict[str, Any]:
        job, rec, jdir = st.job, st.record, self.jdir(st)
        row: dict[str, Any] = {
            "job": job.key, "model": job.model_name, "target": job.target,
            "recipe": job.recipe.name, "recipe_spec": job.recipe.to_dict(),
            "dir": f"{JOBS_DIR}/{job.key}", "cached": st.cached,
        }
        if rec is None:
            return {**row, "status": "pending", "error": None, "artifacts": []}
        row.update(status=rec["status"], error=rec.get("error"), attempts=rec.get("attempts"),
                   seconds=rec.get("seconds"), peak_rss_bytes=rec.get("peak_rss_bytes"),
                   worker=rec.get("worker"))
        if rec["status"] != "ok":
            return {**row, "artifacts": []}
        body = json.loads(json.dumps(rec["row"]))  # a copy: validation edits it
        val = _read_json(jdir / "validation.json")
        if val:
            apply_to_row(body, val)
        elif rec.get("val_total"):
            body["validation"] = {"samples": rec["val_total"], "pending": True,
                                  "error": rec.get("validation_error")}
        prof = _read_json(jdir / "profile.json")
        if prof:
            body["device_profile"] = {"device": job.device, "file": "profile.json",
                                      "p50_ms": prof.get("latency", {}).get("p50_ms"),
                                      "where": prof.get("where")}
        elif job.device:
            body["device_profile"] = {"device": job.device, "error": rec.get("profile_error"),
                                      "pending": True}
        for art in body["artifacts"]:
            art["path"] = f"{row['dir']}/{art['path']}"
        body["directory"] = f"{row['dir']}/{body['directory']}"
        body["report"] = f"{row['dir']}/{body['report']}"
        return {**row, **body}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def profile_on_device(files: dict[str, bytes], runs: int) -> dict[str, Any]:
    """Profile an artifact where this task runs (the node that has the board).

    The files of one target's artifact folder come as bytes, so the node needs only
    ``edgeopt-runtime``; the artifact's manifest chooses the delegate (the Edge TPU or GPU
    delegate where the board's library is installed, the CPU with a note otherwise).
    """
    import socket
    import tempfile

    import edgeopt_runtime as rt

    with tempfile.TemporaryDirectory(prefix="edgeopt-profile-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        result = rt.profile(tmp, runs=runs, op_profile=False).to_dict()
    result["where"] = {"host": socket.gethostname(), "resources": _assigned()}
    return result


def _assigned() -> dict[str, float] | None:
    """The resources Ray gave this task (None outside Ray)."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    with contextlib.suppress(Exception):
        return {k: float(v) for k, v in ray.get_runtime_context().get_assigned_resources()
                .items()}
    return None
