"""``build_bundle``: an artifact folder → a self-checking deploy bundle.

The bundle format (``bundle.json``, golden files, flat layout) is defined in
``edgeopt_runtime.bundle`` and ``edgeopt_runtime.check`` — the device reads it with the runtime
alone. This module writes it on the build machine:

1. read the artifact's manifest; copy ``manifest.json``, every model it lists (a compiled
   ``*_edgetpu.tflite`` included; each checked against its manifest sha256 while copying) and the
   Edge TPU compiler logs next to them;
2. snapshot the target profile (the TOML the artifact was converted with, from ``report.json``,
   else the built-in profile of that name, else ``--target``);
3. golden data: N inputs (from ``data`` through the same readers as ``--calib``/``--val``, or
   seeded random values that cover each quantized input's range) and, per ``(format,
   precision)`` model group, the outputs this machine computes for them with
   ``edgeopt_runtime`` — stored per sample, as the device will run them;
4. the build machine's own latency for each model from ``report.json`` (``host_reference``),
   so the deploy report can put device and host side by side;
5. ``README.md`` with the device commands, and ``bundle.json`` (sha256 of every file).

Everything is written into a staging folder and renamed into place; a bundle's bytes depend only
on its inputs (fixed zip timestamps, no creation time), so re-bundling an unchanged artifact gives
identical files and ``edgeopt deploy`` has nothing to upload.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.bundle import (
    BUNDLE_INDEX,
    BUNDLE_SCHEMA,
    BundleError,
    BundleIndex,
    check_name,
    parse_index,
    read_index,
    verify_files,
)
from edgeopt_runtime.check import DEFAULT_TOLERANCE
from edgeopt_runtime.manifest import MANIFEST_NAME, read_manifest, sha256_file
from edgeopt_runtime.spec import TensorSpec

#: the first edgeopt-runtime with ``check`` and ``device``; the device must have at least this
MIN_DEVICE_RUNTIME = "0.1.0"
DEFAULT_SAMPLES = 8
MAX_SAMPLES = 1000
MAX_GOLDEN_BYTES = 64 << 20
GOLDEN_INPUTS = "golden_inputs.npz"
TARGET_SNAPSHOT = "target.toml"
README = "README.md"
FLOAT16_TOLERANCE = {"atol": 1e-3, "rtol": 1e-2}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

Log = Callable[[str], None]


@dataclass(frozen=True)
class LocalBundle:
    """A bundle folder on this machine, verified against its index."""

    directory: Path
    index: BundleIndex
    index_sha256: str
    index_size: int

    @property
    def name(self) -> str:
        return self.index.name

    @property
    def target(self) -> str | None:
        return self.index.target

    def expected(self) -> dict[str, tuple[str, int]]:
        """Every file the device must end up with: name -> (sha256, size), index included."""
        files = {f.name: (f.sha256, f.size_bytes) for f in self.index.files}
        files[BUNDLE_INDEX] = (self.index_sha256, self.index_size)
        return files

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.expected().values())


def open_bundle(directory: str | os.PathLike[str]) -> LocalBundle:
    """Read a bundle folder and check every file against ``bundle.json``.

    Raises:
        BundleError: not a bundle, or a file that does not match its index.
    """
    d = Path(directory)
    index = read_index(d)
    problems = verify_files(index)
    if problems:
        p = problems[0]
        raise BundleError(
            f"{d / p['file']}: {p['problem']} (bundle.json lists it); rebuild the bundle with "
            "`edgeopt bundle`"
        )
    path = d / BUNDLE_INDEX
    return LocalBundle(d, index, sha256_file(path), path.stat().st_size)


def default_name(artifact: Path) -> str:
    """``<source model stem>-<target>`` as a plain name, e.g. ``digits_cnn-arm-cpu``."""
    manifest = read_manifest(artifact)
    stem = Path(str((manifest.data.get("source") or {}).get("path") or "model")).stem
    target = manifest.target_name or artifact.name
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{stem}-{target}").lstrip(".") or "bundle"


def default_out(artifact: Path, name: str) -> Path:
    """Where ``edgeopt bundle ARTIFACT`` writes without ``--out``: ``<OUT>/bundles/<name>``."""
    return artifact.parent / "bundles" / name


def build_bundle(
    artifact: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    data: str | os.PathLike[str] | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    target: str | None = None,
    name: str | None = None,
    tolerance: dict[str, float] | None = None,
    log: Log | None = None,
) -> LocalBundle:
    """Build a deploy bundle from an artifact folder.

    Args:
        artifact: an artifact folder (``manifest.json`` + models) written by ``edgeopt convert``.
        out: the bundle folder (default ``<artifact's parent>/bundles/<name>``); an existing
            bundle there is replaced, any other non-empty folder is refused.
        data: golden inputs (``.npz``/``.npy``/image or array folder, as ``--val``); default
            seeded random inputs.
        samples: number of golden samples (1..1000).
        seed: seed of the sample choice / random inputs.
        target: target profile name or TOML to snapshot, when the artifact's cannot be found.
        name: bundle name (default ``<model>-<target>``); also the folder name on the device.
        tolerance: overrides of ``quantized_steps`` / ``atol`` / ``rtol`` for the golden check.
        log: called with progress lines.

    Returns:
        The written bundle.

    Raises:
        EdgeOptError (BundleError, ModelLoadError, CalibrationError, TargetError): bad inputs.
    """
    say = log or (lambda line: None)
    art = Path(artifact)
    if (art / BUNDLE_INDEX).is_file():
        raise BundleError(f"{art}: is already a bundle; pass the artifact folder it was made from")
    manifest = read_manifest(art)
    if not 1 <= samples <= MAX_SAMPLES:
        raise BundleError(f"--samples must be in [1, {MAX_SAMPLES}], got {samples}")
    name = check_name(name or default_name(art), "bundle name")
    dest = Path(out) if out is not None else default_out(art, name)
    _check_dest(dest)
    staging = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        files = _copy_artifact(art, manifest, staging)
        files.append(_snapshot_target(art, manifest, staging, target))
        say(f"golden data: {samples} sample(s) from {data or f'random inputs (seed {seed})'}")
        golden, golden_files = _golden(art, manifest, staging, data, samples, seed, tolerance)
        files += golden_files
        index = {
            "schema": BUNDLE_SCHEMA,
            "name": name,
            "target": manifest.target_name,
            "requires": {"edgeopt-runtime": MIN_DEVICE_RUNTIME},
            "files": [],
            "golden": golden,
            "host_reference": host_reference(art, manifest.target_name),
            "source": {
                "artifact": str(art.resolve()),
                "manifest_created": manifest.data.get("created"),
                "model": manifest.data.get("source"),
                "runtime": manifest.runtime,
            },
            "commands": {
                "check": "python3 -m edgeopt_runtime check .",
                "profile": "python3 -m edgeopt_runtime profile . --runs 100",
            },
        }
        files.append(_write_readme(staging, index, files))
        index["files"] = [_entry(staging, n, role) for n, role in files]
        raw = (json.dumps(index, indent=2) + "\n").encode()
        parse_index(raw, f"{staging / BUNDLE_INDEX}")  # the device will accept what we wrote
        (staging / BUNDLE_INDEX).write_bytes(raw)
        _commit(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"wrote {dest} ({len(files) + 1} files)")
    return open_bundle(dest)


def _check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise BundleError(f"{dest}: exists and is not a folder; choose another --out")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / BUNDLE_INDEX).is_file():
        raise BundleError(
            f"{dest}: refusing to replace a non-empty folder that is not an edgeopt bundle "
            f"(no {BUNDLE_INDEX}); choose another --out"
        )


def _commit(staging: Path, dest: Path) -> None:
    """Swap the staging folder into place (the previous bundle is removed after the rename)."""
    aside = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, aside)
    os.replace(staging, dest)
    shutil.rmtree(aside, ignore_errors=True)


def _entry(directory: Path, name: str, role: str) -> dict[str, Any]:
    path = directory / name
    return {
        "name": name,
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "role": role,
    }


def _copy_artifact(art: Path, manifest: Any, staging: Path) -> list[tuple[str, str]]:
    files = [(MANIFEST_NAME, "manifest")]
    shutil.copyfile(art / MANIFEST_NAME, staging / MANIFEST_NAME)
    for entry in manifest.models:
        name = check_name(entry.file, f"{art / MANIFEST_NAME}: model file name")
        src = art / name
        if not src.is_file():
            raise BundleError(f"{src}: listed in the manifest but missing; re-run edgeopt convert")
        shutil.copyfile(src, staging / name)
        if sha256_file(staging / name) != entry.sha256:
            raise BundleError(
                f"{src}: sha256 does not match the manifest: the artifact was changed after "
                "conversion; re-run edgeopt convert"
            )
        files.append((name, "model"))
        log = src.with_name(src.name[: -len(".tflite")] + ".log")
        if name.endswith("_edgetpu.tflite") and log.is_file():
            shutil.copyfile(log, staging / log.name)
            files.append((check_name(log.name), "log"))
    return files


def _snapshot_target(art: Path, manifest: Any, staging: Path, target: str | None) -> tuple:
    """Copy the target profile's TOML (comments and all) as ``target.toml``."""
    from edgeopt_runtime.errors import TargetError

    from edgeopt.targets import load_target

    candidates = [target] if target else []
    report = _read_report(art.parent)
    for t in (report or {}).get("targets", []):
        if t.get("name") == manifest.target_name and t.get("profile_path"):
            candidates.append(t["profile_path"])
    if manifest.target_name:
        candidates.append(manifest.target_name)
    for cand in candidates:
        try:
            profile = load_target(str(cand))
        except TargetError:
            if cand == target:
                raise
            continue
        if profile.path and Path(profile.path).is_file():
            shutil.copyfile(profile.path, staging / TARGET_SNAPSHOT)
            return (TARGET_SNAPSHOT, "target-profile")
    raise BundleError(
        f"{art}: cannot find the target profile {manifest.target_name!r} this artifact was "
        "converted for; pass --target NAME_OR_TOML"
    )


def _read_report(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "report.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("kind") == "convert" else None


def host_reference(art: Path, target: str | None) -> dict[str, Any] | None:
    """The build machine's latency per model file of this target, from ``report.json``."""
    report = _read_report(art.parent)
    if report is None:
        return None
    entry = next((t for t in report.get("targets", []) if t.get("name") == target), None)
    if entry is None:
        return None
    models = []
    for a in entry.get("artifacts") or []:
        block = a.get("latency") or {}
        lat = block.get("candidate") or {}
        models.append(
            {
                "file": a.get("file"),
                "format": a.get("format"),
                "precision": a.get("precision"),
                "latency": {k: v for k, v in lat.items() if k != "samples_ms"},
                "threads": block.get("threads"),
                "runtime": a.get("runtime"),
            }
        )
    host = report.get("host") or {}
    return {
        "measured_on": "build machine "
        + str(host.get("processor") or host.get("machine") or host.get("platform") or "?"),
        "host": host,
        "report": str((art.parent / "report.json").resolve()),
        "report_created": report.get("created"),
        "how": "edgeopt convert's latency run: Model.run wall time per call after warm-up, "
        "interleaved with the float model",
        "models": models,
    }


# -- golden data -------------------------------------------------------------------------------
def _feed_specs(specs: list[TensorSpec]) -> list[TensorSpec]:
    """What a user feeds: float32 for quantized integer inputs, the model dtype otherwise."""
    return [TensorSpec(s.name, s.shape, "float32", None) if s.is_quantized else s for s in specs]


def _groups(manifest: Any) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for m in manifest.models:
        if (m.format, m.precision) not in seen:
            seen.append((m.format, m.precision))
    return seen


def _golden(
    art: Path,
    manifest: Any,
    staging: Path,
    data: str | os.PathLike[str] | None,
    samples: int,
    seed: int,
    tolerance: dict[str, float] | None,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    from edgeopt_runtime import load

    models = [(fmt, prec, load(art, format=fmt, precision=prec)) for fmt, prec in _groups(manifest)]
    first = models[0][2]
    names = [s.name for s in first.inputs]
    for fmt, prec, m in models[1:]:
        if [s.name for s in m.inputs] != names:
            raise BundleError(
                f"{art}: the {fmt} {prec} model's inputs {[s.name for s in m.inputs]} differ "
                f"from {names}; bundle each model separately"
            )
    feeds = _golden_feeds(first.inputs, data, samples, seed)
    _write_npz(staging / GOLDEN_INPUTS, {f"i{k}": a for k, a in enumerate(feeds)})
    files = [(GOLDEN_INPUTS, "golden")]
    entries = []
    for k, (fmt, prec, model) in enumerate(models):
        outs: list[list[np.ndarray]] = [[] for _ in model.outputs]
        for i in range(samples):
            for j, value in enumerate(model.run([a[i] for a in feeds]).values()):
                outs[j].append(np.asarray(value))
        fname = f"golden_outputs_{k}.npz"
        _write_npz(staging / fname, {f"o{j}": np.stack(v) for j, v in enumerate(outs)})
        files.append((fname, "golden"))
        tol = {
            **DEFAULT_TOLERANCE,
            **(FLOAT16_TOLERANCE if prec == "float16" else {}),
            **(tolerance or {}),
        }
        entries.append(
            {
                "format": fmt,
                "precision": prec,
                "outputs": fname,
                "names": [s.name for s in model.outputs],
                "host": {
                    "file": model.path.name,
                    "backend": model.backend,
                    "delegate": model.delegate,
                    "notes": list(model.notes),
                },
                "tolerance": tol,
            }
        )
    size = sum((staging / f).stat().st_size for f, _ in files)
    if size > MAX_GOLDEN_BYTES:
        raise BundleError(
            f"golden data would take {size} bytes (limit {MAX_GOLDEN_BYTES}); use fewer --samples"
        )
    source = f"{data} ({samples} samples, seed {seed})" if data else f"random (seed {seed})"
    golden = {
        "inputs": {
            "file": GOLDEN_INPUTS,
            "names": names,
            "samples": samples,
            "source": source,
            "dtypes": [a.dtype.name for a in feeds],
        },
        "models": entries,
    }
    return golden, files


def _golden_feeds(
    specs: list[TensorSpec], data: str | os.PathLike[str] | None, samples: int, seed: int
) -> list[np.ndarray]:
    """``[samples, *one run's shape]`` per input, in input order."""
    feed_specs = _feed_specs(specs)
    if data is not None:
        from edgeopt.calibration import open_calibration

        source = open_calibration(data, feed_specs, num=samples, seed=seed)
        rows = list(source)
    else:
        rows = [_random_row(specs, seed + i) for i in range(samples)]
    arrays = []
    for s in feed_specs:
        shapes = {tuple(r[s.name].shape) for r in rows}
        if len(shapes) != 1:
            raise BundleError(
                f"golden input '{s.name}': samples have different shapes {sorted(shapes)}; "
                "golden data must share one shape"
            )
        arrays.append(np.stack([np.asarray(r[s.name], dtype=s.dtype) for r in rows]))
    return arrays


def _random_row(specs: list[TensorSpec], seed: int) -> dict[str, np.ndarray]:
    """Seeded random inputs; a quantized input gets floats spanning its whole integer range."""
    from edgeopt_runtime.feeds import random_feeds

    plain = random_feeds([s for s in specs if not s.is_quantized], seed)
    rng = np.random.default_rng(seed)
    for s in specs:
        if s.is_quantized:
            info = np.iinfo(np.dtype(s.dtype))
            scale, zp = s.quantization.scale[0], s.quantization.zero_point[0]
            lo, hi = (info.min - zp) * scale, (info.max - zp) * scale
            shape = tuple(1 if d is None else d for d in s.shape)
            plain[s.name] = rng.uniform(lo, hi, shape).astype(np.float32)
    return plain


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A ``.npz`` whose bytes depend only on the arrays (fixed timestamps, fixed order)."""
    with zipfile.ZipFile(path, "w") as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(
                    member, np.ascontiguousarray(arrays[key]), allow_pickle=False
                )


def _write_readme(staging: Path, index: dict[str, Any], files: list[tuple[str, str]]) -> tuple:
    need = index["requires"]["edgeopt-runtime"]
    rows = "\n".join(
        f"| `{n}` | {role} | `{hashlib.sha256((staging / n).read_bytes()).hexdigest()}` |"
        for n, role in files
    )
    text = f"""# edgeopt bundle `{index["name"]}` (target `{index["target"]}`)

Runs on a device with only **edgeopt-runtime >= {need}** installed (numpy, ai-edge-litert,
onnxruntime; no TensorFlow):

```sh
python3 -m pip install 'edgeopt-runtime>={need}'
```

From this folder:

```sh
python3 -m edgeopt_runtime check .               # sha256 of each file; outputs vs build machine
python3 -m edgeopt_runtime profile . --runs 100  # latency, memory, per-op time (add --json)
python3 -m edgeopt_runtime device                # this device's facts and delegates
```

`check` exits 0 when every file matches `bundle.json` and every model's outputs on the golden
inputs agree with the build machine's (quantized outputs within
{index["golden"]["models"][0]["tolerance"]["quantized_steps"]:g} quantization steps); 1 otherwise.
`edgeopt deploy` runs both over SSH and merges the results into its report.

| file | role | sha256 |
|---|---|---|
{rows}
| `bundle.json` | index | (lists every file above) |
"""
    (staging / README).write_text(text, encoding="utf-8")
    return (README, "readme")


__all__ = [
    "LocalBundle",
    "MIN_DEVICE_RUNTIME",
    "build_bundle",
    "default_name",
    "default_out",
    "host_reference",
    "open_bundle",
]
