"""Sweep jobs: one (model, target, recipe) each, keyed by the hash of everything it reads.

``plan_jobs`` (driver side, cheap: file hashes and profile dicts, no framework import) turns a
``SweepSpec`` into ``JobSpec`` values. ``JobSpec.key`` is the sha256 of (model sha256, target
profile after the recipe's overrides, recipe content, calibration / validation data sha256,
convert settings, edgeopt version): the job's output folder is ``OUT/jobs/<key>/``, so an
unchanged job is found there on the next run and a changed input gives a new key.

``run_job`` (worker side) is a pure function of its ``JobSpec``: it converts in a scratch folder
on the worker through the public ``edgeopt.convert`` and returns the result row plus the
produced files as bytes (so a Ray worker on another machine needs no shared output folder; it
does need the inputs at the same paths, which it checks by hash). Tune budgets go through
``_run_tune``, which calls ``edgeopt.tune`` when this edgeopt has it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import EdgeOptError, MissingDependencyError
from edgeopt_runtime.manifest import sha256_file

from .spec import ModelEntry, Recipe, SweepSpec

JOB_SCHEMA = "edgeopt.sweep.job/1"
KEY_CHARS = 16  # of the sha256 hex digest: folder names stay short, collisions stay absurd
TUNE_MISSING = ("tune not available in this edgeopt ({version}): the recipe {recipe!r} asks "
                "for a tune budget {budget}, but this edgeopt has no edgeopt.tune() yet "
                "(issue #14); nothing was converted for this job")


class SweepInputChanged(EdgeOptError):
    """An input file read by a worker is not the one the driver hashed."""


class TuneUnavailable(EdgeOptError):
    """A recipe asks for a tune budget, and this edgeopt has no ``edgeopt.tune``."""


@dataclass(frozen=True)
class JobSpec:
    """Everything one job reads; picklable, so it can run in any worker."""

    key: str
    model_name: str
    target: str  # the profile's name (the results' target column)
    recipe: Recipe
    model: str
    model_sha256: str
    calib: str
    calib_sha256: str
    val: str | None
    val_sha256: str | None
    profile: dict[str, Any]  # the target profile after the recipe's overrides (TOML values)
    target_arg: str  # what to pass to convert when the profile is unchanged (name or path)
    profile_changed: bool
    num_calib: int | None
    preprocess: dict[str, Any]
    trust_model: bool
    latency_runs: int
    seed: int
    edgeopt_version: str
    device: str | None = None  # board name: a profile job on the node that has it
    scratch_root: str | None = None  # None: a temp folder on the worker
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model_name} · {self.target} · {self.recipe.name}"

    def identity(self) -> dict[str, Any]:
        """What the key hashes (and what job.json records as the job's inputs)."""
        return {
            "schema": JOB_SCHEMA, "edgeopt": self.edgeopt_version,
            "model_sha256": self.model_sha256, "profile": self.profile,
            "recipe": self.recipe.to_dict(), "calib_sha256": self.calib_sha256,
            "val_sha256": self.val_sha256, "num_calib": self.num_calib,
            "preprocess": self.preprocess, "trust_model": self.trust_model,
            "latency_runs": self.latency_runs, "seed": self.seed,
        }


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names + contents, sorted)."""
    if path.is_file():
        return sha256_file(path)
    from ..sources import sha256_tree

    return sha256_tree(path)


def canonical_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------ planning


def derived_profile(target: str, recipe: Recipe) -> tuple[dict[str, Any], str, bool]:
    """The target profile as TOML values after ``recipe``'s overrides, validated.

    Returns:
        (profile dict without its path, the convert argument for the unchanged profile,
        whether the recipe changed it).

    Raises:
        TargetError: unknown target, or an override the profile schema rejects.
    """
    from ..targets import load_target, profile_from_dict

    base = load_target(target)
    data = base.to_dict()
    data.pop("path", None)
    overrides = recipe.profile_overrides()
    for section, items in overrides.items():
        data[section] = {**data.get(section, {}), **{k: _thaw(v) for k, v in items.items()}}
    if overrides:  # validate through the same code that reads profile files
        profile_from_dict(_toml_ready(data), f"recipe {recipe.name!r} on target {base.name!r}")
    return data, target, bool(overrides)


def _thaw(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _toml_ready(d: Any) -> Any:
    """Drop None values (TOML has no null; the dataclass defaults are None for them)."""
    if isinstance(d, dict):
        return {k: _toml_ready(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_toml_ready(v) for v in d]
    return d


def plan_jobs(spec: SweepSpec, scratch_root: str | None) -> list[JobSpec]:
    """Every (model, target, recipe) job of ``spec``, in file order (models, targets, recipes).

    Raises:
        TargetError: a target or a recipe's profile override is invalid (before any work).
    """
    from .. import __version__

    hashes: dict[Path, str] = {}

    def sha(p: Path | None) -> str | None:
        if p is None:
            return None
        if p not in hashes:
            hashes[p] = content_sha256(p)
        return hashes[p]

    devices = dict(spec.devices)
    profiles = {(t, r.name): derived_profile(t, r) for t in spec.targets for r in spec.recipes}
    jobs = []
    for m in spec.models:
        for t in spec.targets:
            for r in spec.recipes:
                data, arg, changed = profiles[(t, r.name)]
                job = _job(m, r, data, arg, changed, spec, sha, devices.get(data["name"]),
                           scratch_root, __version__)
                jobs.append(job)
    return jobs


def _job(m: ModelEntry, r: Recipe, profile: dict[str, Any], arg: str, changed: bool,
         spec: SweepSpec, sha: Any, device: str | None, scratch: str | None,
         version: str) -> JobSpec:
    job = JobSpec(
        key="", model_name=m.name, target=profile["name"], recipe=r, model=str(m.path),
        model_sha256=sha(m.path), calib=str(m.calib), calib_sha256=sha(m.calib),
        val=str(m.val) if m.val else None, val_sha256=sha(m.val), profile=profile,
        target_arg=arg, profile_changed=changed, num_calib=m.num_calib,
        preprocess=dict(m.preprocess), trust_model=m.trust_model,
        latency_runs=spec.latency_runs, seed=spec.seed, edgeopt_version=version,
        device=device, scratch_root=scratch,
    )
    key = canonical_hash(job.identity())[:KEY_CHARS]
    return JobSpec(**{**job.__dict__, "key": key})


# ------------------------------------------------------------------------------ in the worker


def run_job(job: JobSpec) -> dict[str, Any]:
    """Run one job where this is called; see the module docstring.

    Returns:
        ``{"row": {...}, "files": {relative path: bytes}, "val_total": int | None}``, or
        ``{"refused": {"type", "message"}}`` when convert refused the inputs with an
        ``EdgeOptError`` (deterministic: the sweep caches it).

    Raises:
        SweepInputChanged: an input differs from the driver's; TuneUnavailable (no tune in
            this edgeopt); MissingDependencyError; anything unexpected. The sweep records
            these as the job's error and tries again on the next run.
    """
    scratch = _scratch(job)
    try:
        _check_inputs(job)
        if job.recipe.tune is not None:
            return _run_tune(job, scratch)
        report = _convert(job, scratch / "artifact")
        val_total = _references(job, report.data, scratch) if job.val else None
        return {"row": summarize(report.data), "files": _files(scratch), "val_total": val_total}
    except (SweepInputChanged, MissingDependencyError, TuneUnavailable):
        raise  # not a property of the job's inputs: fail now, run again next time
    except EdgeOptError as exc:
        # The inputs are refused (a target that cannot take this model, an op, bad data): the
        # same inputs give the same refusal, so the sweep caches it as the job's result.
        return {"refused": {"type": type(exc).__name__, "message": str(exc)}}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _files(scratch: Path) -> dict[str, bytes]:
    return {str(p.relative_to(scratch)): p.read_bytes()
            for p in sorted(scratch.rglob("*")) if p.is_file() and p.name != "running.json"}


def _scratch(job: JobSpec) -> Path:
    root = Path(job.scratch_root) if job.scratch_root else Path(tempfile.gettempdir())
    scratch = root / f"{job.key}-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    # Who runs it (a test kills this pid to prove the retry; people read it when a job hangs).
    (scratch / "running.json").write_text(json.dumps(
        {"key": job.key, "pid": os.getpid(), "host": socket.gethostname(),
         "started": time.time()}))
    return scratch


def _check_inputs(job: JobSpec) -> None:
    for what, path, want in (("model", job.model, job.model_sha256),
                             ("calib", job.calib, job.calib_sha256),
                             ("val", job.val, job.val_sha256)):
        if path is None:
            continue
        p = Path(path)
        if not p.exists():
            raise SweepInputChanged(f"{what} {path}: not found on worker {socket.gethostname()} "
                                    "(multi-node sweeps need the inputs at the same path on "
                                    "every node: see docs/sweeps.md)")
        got = content_sha256(p)
        if got != want:
            raise SweepInputChanged(f"{what} {path} changed since the sweep was planned (sha256 "
                                    f"{want[:12]} became {got[:12]} on {socket.gethostname()})")


def _target_for_convert(job: JobSpec, scratch: Path) -> str:
    if not job.profile_changed:
        return job.target_arg
    import tomli_w

    path = scratch / "profile" / f"{job.target}.toml"
    path.parent.mkdir()
    path.write_text(f"# {job.target} with recipe {job.recipe.name!r} applied (edgeopt sweep)\n"
                    + tomli_w.dumps(_toml_ready(job.profile)), encoding="utf-8")
    return str(path)


def _convert(job: JobSpec, out: Path) -> Any:
    import edgeopt

    from .validate import preprocessing

    pre = preprocessing(job.preprocess)
    r = job.recipe
    return edgeopt.convert(
        job.model, [_target_for_convert(job, out.parent)], job.calib, val=job.val,
        formats=list(r.formats) or "all", calib_method=r.calib_method, num_calib=job.num_calib,
        seed=job.seed, keep_float=r.keep_float, out=out, force=True,
        trust_model=job.trust_model, preprocessing=pre, latency_runs=job.latency_runs,
    )


def _references(job: JobSpec, report: dict[str, Any], scratch: Path) -> int | None:
    """Float reference models next to the artifacts, when the validation set is larger than
    what convert measured (then the sweep validates the whole set in shards).

    Returns:
        The number of validation samples (None when convert already saw all of them).
    """
    from ..backends import get_backend
    from ..sources import load_source
    from .validate import count_samples

    target = report["targets"][0]
    source = load_source(job.model, trust_model=job.trust_model)
    total = count_samples(job.val, list(source.inputs), job.preprocess)
    if total <= report["data"]["count"]:
        return None
    ref_model = scratch / "reference"
    shapes = {k: tuple(v) for k, v in target["input_shapes"].items()}
    work = scratch / "_ref_work"
    work.mkdir()
    ref_model.mkdir()
    for art in target["artifacts"]:
        float_path = get_backend(art["format"]).build_float(source, shapes, work)
        dest = ref_model / f"float32{float_path.suffix}"
        if not dest.exists():
            shutil.copyfile(float_path, dest)
    shutil.rmtree(work)
    return total


# ------------------------------------------------------------------------------ tune


def _run_tune(job: JobSpec, scratch: Path) -> dict[str, Any]:
    """Run a tune budget through ``edgeopt.tune`` when this edgeopt has it.

    The contract expected from tune: ``edgeopt.tune(model, target, calib, *, val, out,
    seed, latency_runs, **budget)`` returning a report object with ``.data`` (an
    ``edgeopt.report/1`` document of kind convert); its artifacts are summarized like
    convert's.

    Raises:
        TuneUnavailable: this edgeopt has no tune (the job fails with that message and is
            tried again by the next run).
    """
    import importlib

    from .. import __version__

    tune = None
    try:
        tune = getattr(importlib.import_module("edgeopt.tune"), "tune", None)
    except ImportError:
        pass
    if not callable(tune):
        raise TuneUnavailable(TUNE_MISSING.format(
            version=__version__, recipe=job.recipe.name, budget=job.recipe.tune.to_dict()))
    from .validate import preprocessing

    r = job.recipe
    # the same inputs as a convert job (formats, keep-float, data), plus the budget; tune runs
    # its candidates serially inside this job (the sweep's executor spreads the jobs)
    report = tune(job.model, [_target_for_convert(job, scratch)], job.calib, val=job.val,
                  out=scratch / "artifact", seed=job.seed, latency_runs=job.latency_runs,
                  formats=list(r.formats) or "all", calib_method=r.calib_method,
                  num_calib=job.num_calib, keep_float=r.keep_float, force=True,
                  trust_model=job.trust_model, preprocessing=preprocessing(job.preprocess),
                  **r.tune.to_dict())
    return {"row": summarize(report.data), "files": _files(scratch), "val_total": None}


# ------------------------------------------------------------------------------ summaries


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers a results row shows, per artifact, from a convert report."""
    target = report["targets"][0]
    arts = []
    for a in target["artifacts"]:
        lat, drift = a.get("latency") or {}, (a.get("drift") or [{}])[0]
        m = drift.get("metrics") or {}
        acc = ((a.get("task") or {}).get("metrics") or {}).get("accuracy") or {}
        arts.append({
            "file": a["file"], "path": f"artifact/{a['path']}", "format": a["format"],
            "precision": a["precision"], "sha256": a["sha256"], "size_bytes": a["size_bytes"],
            "float_size_bytes": a.get("float_size_bytes"), "size_ratio": a.get("size_ratio"),
            "latency_p50_ms": (lat.get("candidate") or {}).get("p50_ms"),
            "float_latency_p50_ms": (lat.get("reference") or {}).get("p50_ms"),
            "speedup_p50": lat.get("speedup_p50"),
            "sqnr_db": m.get("sqnr_db"), "cosine": m.get("cosine"),
            "top1_agreement": m.get("top1_agreement"),
            "accuracy": acc.get("quantized"), "float_accuracy": acc.get("float"),
            "accuracy_drop": acc.get("drop"),
            "samples": report["data"]["count"], "notes": list(a.get("notes") or []),
        })
    row = {"directory": f"artifact/{target['directory']}", "report": "artifact/report.html",
           "artifacts": arts, "wall_seconds": report.get("wall_seconds")}
    if target.get("tune") is not None:  # a tune job: what each search found
        row["tune"] = [{"format": t["format"], "status": t["status"],
                        "budget_met": t["budget_met"], "budget": t["budget"]["text"],
                        "evaluations": t["evaluations"], "seconds": t["seconds"],
                        "chosen": None if t.get("best") is None
                        else t["trials"][t["best"]]["label"]} for t in target["tune"]]
    return row
