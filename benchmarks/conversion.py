"""Build one benchmark model, then convert it for every target with ``edgeopt.convert`` — each in
its own child process — and measure the conversion's cost per stage.

Why child processes: TensorFlow is imported only there (the measuring process stays free of it,
as a device would be), and the conversion starts from a fresh process that has not built the
Keras model, so its peak RSS is what a user's ``edgeopt convert`` would see.

Stages (wall time and peak RSS each; the kernel's ``VmHWM`` is reset at every boundary):

* ``load``: ``load_source`` (includes importing TensorFlow / Keras, as for a user);
* ``data_check``: opening, checking and hashing the calibration data;
* ``calibrate``: from the first calibration sample the backend pulls to the last — the
  converter running the float model over the samples (TFLite's representative dataset, ORT's
  calibration data reader);
* ``convert``: the rest of each artifact's build (export, quantization, float reference);
* ``validate``: edgeopt's own check of each artifact (load, drift and latency vs float);
* ``report``: writing the report and renaming the output into place.

Boundaries come from ``edgeopt.convert``'s public ``progress`` callback; the calibrate window
from wrapping ``CalibrationSource.__iter__`` so the first / last sample is timestamped (the
converter exposes no stage timings of its own — instrumentation only, behaviour unchanged).

The float references the artifacts are timed against are the very files ``convert`` built and
measured against (copied as its backends return them; ``convert`` deletes its scratch folder),
checked against the ``float_sha256`` its report recorded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import models

CHILD_TIMEOUT_S = 40 * 60  # one model, every target; EfficientNet-B0 is the slowest
_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- parent


def convert_model(name: str, config: Any, mdir: Path, log: Any) -> dict[str, Any]:
    """Build ``name`` and convert it for ``config.targets``, each step in a child process.

    Returns:
        ``build`` (seconds, params), ``float`` ({format: float reference path}),
        ``artifacts`` (per target x model file: target, format, precision, file,
        artifact_dir, sha256, size_bytes, details...) and ``conversion`` (wall_s,
        peak_rss_mib, stages, per_target, float_refs).

    Raises:
        RuntimeError: a child failed; the message has the tail of its log.
    """
    mdir.mkdir(parents=True, exist_ok=True)
    request = {
        "model": name,
        "targets": list(config.targets),
        "calib_samples": config.calib_samples,
        "seed": config.seed,
        "workdir": str(mdir),
    }
    req_path = mdir / "request.json"
    req_path.write_text(json.dumps(request), encoding="utf-8")
    t0 = time.perf_counter()
    _child(req_path, "build", mdir)
    build = json.loads((mdir / "build.json").read_text(encoding="utf-8"))
    log(f"{name}: built in {build['seconds']:.0f} s; converting")
    _child(req_path, "convert", mdir)
    result = json.loads((mdir / "convert.json").read_text(encoding="utf-8"))
    log(f"{name}: converted in {time.perf_counter() - t0:.0f} s")
    return {"build": build, **result}


def _child(req_path: Path, phase: str, mdir: Path) -> None:
    log_path = mdir / f"{phase}.log"
    (mdir / f"{phase}.json").unlink(missing_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w", encoding="utf-8") as logf:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks", "_convert", str(req_path), "--phase", phase],
            cwd=_ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT,
            timeout=CHILD_TIMEOUT_S, check=False,
        )
    if proc.returncode != 0 or not (mdir / f"{phase}.json").is_file():
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(
            f"{phase} of {mdir.name} failed (exit {proc.returncode}); last lines of {log_path}:\n"
            + "\n".join(tail)
        )


# --------------------------------------------------------------------------- child


def child_main(request_path: Path, phase: str) -> int:
    """``build``: build and save the Keras model and the calibration data. ``convert``: run
    ``edgeopt.convert`` for every target with stage clocks, then rebuild the float references."""
    req = json.loads(Path(request_path).read_text(encoding="utf-8"))
    mdir = Path(req["workdir"])
    spec = models.get(req["model"])
    result = _build(spec, req, mdir) if phase == "build" else _convert(spec, req, mdir)
    _write_json(mdir / f"{phase}.json", result)
    return 0


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _build(spec: models.ModelSpec, req: dict[str, Any], mdir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = spec.build(req["seed"])
    model.save(mdir / f"{spec.name}.keras")
    write_calibration(spec, req["calib_samples"], req["seed"] + 2, mdir / "calib.npz")
    return {"seconds": round(time.perf_counter() - t0, 2), "params": int(model.count_params())}


def write_calibration(spec: models.ModelSpec, n: int, seed: int, path: Path) -> Path:
    """``n`` seeded samples as an ``.npz`` keyed by the model's input name ([n, ...] array).

    The seed differs from the drift / timing inputs' seed: validation data is held out.
    """
    stacked = np.concatenate(spec.inputs(n, seed), axis=0)
    np.savez(path, **{spec.input_name: stacked})
    return path


def _convert(spec: models.ModelSpec, req: dict[str, Any], mdir: Path) -> dict[str, Any]:
    """One ``edgeopt.convert`` call per target, so a target that refuses the model (e.g. an op
    the Edge TPU cannot run in int8) is recorded as refused without losing the others."""
    from edgeopt import calibration

    clock = StageClock()
    restore = _instrument_calibration(calibration.CalibrationSource, clock)
    floats, restore_floats = _keep_floats(mdir / "float")
    artifacts: list[dict[str, Any]] = []
    refused: dict[str, str] = {}
    try:
        clock.start()
        for target in req["targets"]:
            artifacts += _convert_target(spec, mdir, target, clock, refused)
        clock.stop()
    finally:
        restore()
        restore_floats()
    return {
        "float": floats,
        "artifacts": artifacts,
        "conversion": {
            "wall_s": round(clock.total_s, 2),
            "peak_rss_mib": clock.peak_mib(),
            "stages": clock.by_stage(),
            "per_target": clock.by_target(),
            "refused": refused,
            "float_refs": _check_floats(floats, artifacts),
            "method": "one edgeopt.convert call per target in one fresh process (the first "
            "call's load includes importing TensorFlow); stage boundaries from its progress "
            "callback; calibrate = first to last calibration sample pulled during a build; peak "
            "RSS = VmHWM after a reset via /proc/self/clear_refs at each boundary",
        },
    }


def _convert_target(spec: models.ModelSpec, mdir: Path, target: str, clock: StageClock,
                    refused: dict[str, str]) -> list[dict[str, Any]]:
    """Convert for one target; when it refuses, retry each of its formats alone, so one
    format's failure (say ONNX) does not hide the other's artifacts (TFLite)."""
    from edgeopt_runtime.errors import EdgeOptError

    import edgeopt
    from edgeopt.targets import load_target

    formats = [f.value for f in load_target(target).formats]
    attempts = [("all", "all")] + ([(f, f) for f in formats] if len(formats) > 1 else [])
    artifacts: list[dict[str, Any]] = []
    for label, fmt in attempts:
        out = mdir / "out" / (target if fmt == "all" else f"{target}-{fmt}")
        clock.target = target
        try:
            report = edgeopt.convert(
                mdir / f"{spec.name}.keras", targets=[target], calib=mdir / "calib.npz",
                formats=fmt, out=out, force=True, progress=clock.progress,
            )
        except EdgeOptError as exc:
            key = target if label == "all" else f"{target} ({label})"
            refused[key] = f"{type(exc).__name__}: {exc}"
            clock.switch("refused", target)
            continue
        artifacts += [artifact_entry(a, out) for a in report.artifacts]
        if label == "all":
            return artifacts
    if artifacts:  # some formats converted alone: the all-formats failure is explained per format
        refused.pop(target, None)
    return artifacts


def _check_floats(floats: dict[str, str], artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """sha256 of each kept float model, and whether the report names it as the reference."""
    from edgeopt_runtime.manifest import sha256_file

    out = {}
    for fmt, path in floats.items():
        sha = sha256_file(path)
        claimed = {a["float_sha256"] for a in artifacts if a["format"] == fmt}
        # Each target's convert call exports its own float model; deterministic exports match.
        out[fmt] = {"sha256": sha, "matches_report": claimed == {sha} if claimed else None}
    return out


def artifact_entry(a: dict[str, Any], out: Path) -> dict[str, Any]:
    """What the suite needs from one artifact of the converter's report."""
    details = a.get("details") or {}
    lat = a.get("latency") or {}
    return {
        "target": a["target"],
        "file": a["file"],
        "artifact_dir": str(out / a["target"]),
        "format": a["format"],
        "precision": a["precision"],
        "sha256": a["sha256"],
        "size_bytes": a["size_bytes"],
        "float_sha256": a.get("float_sha256"),
        "converter_size_ratio": a.get("size_ratio"),
        "conversion_seconds": a.get("conversion_seconds"),
        "io_dtype": details.get("io_dtype"),
        "onnx_types": {k: details[k] for k in ("activation_type", "weight_type", "quant_format")
                       if k in details} or None,
        "ops": details.get("ops"),
        "float_ops": details.get("float_ops"),
        "converter_speedup_p50": lat.get("speedup_p50"),
        "notes": a.get("notes", []),
    }


def _keep_floats(keep: Path) -> tuple[dict[str, str], Any]:
    """Wrap each backend's ``build_float`` to copy the float model it returns into ``keep``.

    ``convert`` builds the float reference of each format in a scratch folder it deletes; the
    suite times artifacts against exactly those files. (Rebuilding them is not the same: tf2onnx
    names nodes with process-wide counters, so a second export differs in bytes.)

    Returns:
        ({format: kept path}, filled in as ``convert`` runs; the function that restores).
    """
    import shutil

    from edgeopt.backends import get_backend

    kept: dict[str, str] = {}
    restores = []
    keep.mkdir(parents=True, exist_ok=True)
    for fmt in ("tflite", "onnx"):
        cls = type(get_backend(fmt))
        original = cls.build_float

        def build_float(self: Any, *args: Any, _orig: Any = original, _fmt: str = fmt,
                        **kwargs: Any) -> Path:
            path = _orig(self, *args, **kwargs)
            if _fmt not in kept:
                dest = keep / f"float32{Path(path).suffix}"
                shutil.copyfile(path, dest)
                kept[_fmt] = str(dest)
            return path

        cls.build_float = build_float
        restores.append(lambda c=cls, o=original: setattr(c, "build_float", o))
    return kept, lambda: [r() for r in restores]


# --------------------------------------------------------------------------- stage clock

_CONVERTING = re.compile(r"^(?P<target>[^:]+): converting (?P<what>.+)$")
_MEASURING = re.compile(r"^(?P<target>[^:]+): measuring (?P<what>.+)$")


class StageClock:
    """Consecutive windows (stage, target, seconds, peak RSS); a new window at each boundary."""

    def __init__(self) -> None:
        self.target: str | None = None  # the target of the convert call in progress
        self.windows: list[dict[str, Any]] = []
        self.messages: list[str] = []
        self._stage: str | None = None
        self._target: str | None = None
        self._t0 = 0.0
        self._start_rss: int | None = None
        self._started = 0.0
        self.total_s = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()
        self.switch("setup", None)

    def stop(self) -> None:
        self.switch(None, None)
        self.total_s = time.perf_counter() - self._started

    def switch(self, stage: str | None, target: str | None) -> None:
        """Close the current window (time, kernel peak since its reset) and open the next."""
        from edgeopt_runtime import memory

        now = time.perf_counter()
        if self._stage is not None:
            self.windows.append({
                "stage": self._stage, "target": self._target, "seconds": now - self._t0,
                "peak_rss": memory.peak_rss().bytes, "start_rss": self._start_rss,
            })
        memory.reset_peak()
        self._start_rss = memory.rss().bytes
        self._stage, self._target, self._t0 = stage, target, time.perf_counter()

    @property
    def stage(self) -> str | None:
        return self._stage

    def progress(self, msg: str) -> None:
        """``edgeopt.convert``'s progress callback: map its messages to stages."""
        self.messages.append(msg)
        if m := _CONVERTING.match(msg):
            self.switch("convert", m["target"])
        elif m := _MEASURING.match(msg):
            self.switch("validate", m["target"])
        elif msg.startswith("loading "):
            self.switch("load", self.target)
        elif msg.startswith("checking calibration"):
            self.switch("data_check", self.target)
        elif msg.startswith("writing report"):
            self.switch("report", self.target)

    def by_stage(self) -> dict[str, dict[str, Any]]:
        """Per stage over all targets: total seconds and the largest peak RSS (MiB)."""
        return _aggregate(self.windows, lambda w: w["stage"])

    def by_target(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per target, per stage (only the target-specific stages)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for target in dict.fromkeys(w["target"] for w in self.windows if w["target"]):
            rows = [w for w in self.windows if w["target"] == target]
            out[target] = _aggregate(rows, lambda w: w["stage"])
            out[target]["total"] = {
                "seconds": round(sum(w["seconds"] for w in rows), 3),
                "peak_rss_mib": _mib(max((w["peak_rss"] or 0) for w in rows)),
            }
        return out

    def peak_mib(self) -> float | None:
        return _mib(max((w["peak_rss"] or 0) for w in self.windows)) if self.windows else None


def _aggregate(windows: list[dict[str, Any]], key: Any) -> dict[str, dict[str, Any]]:
    """Seconds summed; ``peak_rss_mib`` the largest peak; ``growth_mib`` the largest rise of a
    window's peak over the RSS it started with (what the stage itself allocated — later
    targets start with whatever earlier ones left behind)."""
    out: dict[str, dict[str, Any]] = {}
    for w in windows:
        agg = out.setdefault(key(w), {"seconds": 0.0, "peak_rss_mib": None, "growth_mib": None,
                                      "windows": 0})
        agg["seconds"] = round(agg["seconds"] + w["seconds"], 3)
        agg["windows"] += 1
        peak = _mib(w["peak_rss"])
        if peak is not None and (agg["peak_rss_mib"] is None or peak > agg["peak_rss_mib"]):
            agg["peak_rss_mib"] = peak
        if w["peak_rss"] and w.get("start_rss"):
            growth = round(max(0, w["peak_rss"] - w["start_rss"]) / 2**20, 1)
            agg["growth_mib"] = max(agg["growth_mib"] or 0.0, growth)
    return out


def _mib(b: int | None) -> float | None:
    return None if not b else round(b / 2**20, 1)


def _instrument_calibration(cls: type, clock: StageClock) -> Any:
    """Wrap ``cls.__iter__`` so a pass pulled during a ``convert`` window is its own
    ``calibrate`` window; returns the function that restores the original."""
    original = cls.__iter__

    def __iter__(self: Any) -> Iterator[Any]:  # noqa: N807 - replaces a dunder
        inner = original(self)

        def timed() -> Iterator[Any]:
            entered = None
            try:
                for sample in inner:
                    if entered is None:
                        entered = clock.stage == "convert"
                        if entered:
                            clock.switch("calibrate", clock.target)
                    yield sample
            finally:
                if entered:
                    clock.switch("convert", clock.target)

        return timed()

    cls.__iter__ = __iter__
    return lambda: setattr(cls, "__iter__", original)
