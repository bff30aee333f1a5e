"""Validation of a large set in shards, merged exactly.

``edgeopt.convert`` measures drift on at most 256 validation samples. When a sweep's validation
set is larger, each finished job gets ``plan_shards`` sample ranges; ``validate_shard`` (one
executor task per range) runs the float reference and every artifact of the job on its range
through ``edgeopt_runtime`` and returns the **per-sample outputs** (and labels). ``merge_shards``
concatenates them in sample order and computes the metrics once, on the concatenation, with the
same functions convert and compare use (``edgeopt.drift.compare_outputs`` / ``task_metrics``):
nothing is an average of per-shard averages, so any shard size gives the same numbers as one
shard (a test checks it).

Data are read by the calibration readers (the same checks as convert: shapes, dtypes, NaN/Inf)
for the shard's index range only. Per-sample outputs are kept in ``validation.npz`` next to the
job (``a<i>.o<j>.reference`` / ``.candidate``, ``labels``, and per-sample ``a<i>.cosine`` /
``a<i>.top1_agree``), so later analyses do not need to re-run anything.

When the shared evaluator (``edgeopt/evaluate.py``) lands, ``validate_shard``'s loop is where
it plugs in: it already produces per-sample outputs for a sample range.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import CalibrationError

VALIDATION_SCHEMA = "edgeopt.sweep.validation/1"


def preprocessing(options: Mapping[str, Any]) -> Any:
    """A ``Preprocessing`` from the sweep file's ``preprocess`` table (None when empty)."""
    if not options:
        return None
    from ..commands.convert import parse_preprocess

    text = {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
            for k, v in options.items()}
    return parse_preprocess(tuple(f"{k}={v}" for k, v in text.items()))


def _reader(path: str | os.PathLike[str], inputs: list[Any], pre: Any) -> Any:
    from ..calibration import ArrayDirReader, ImageDirReader, NpyReader, NpzReader
    from ..limits import CalibrationLimits

    p = Path(path)
    found = [c for c in (NpzReader, NpyReader, ImageDirReader, ArrayDirReader) if c.matches(p)]
    if len(found) != 1:
        raise CalibrationError(f"{path}: validation data must be one .npz, .npy, image folder "
                               f"or folder of arrays")
    # the readers' own limits (sample size, bombs, EDGEOPT_CALIB_* overrides); the sample count
    # limit is open_calibration's, per pass: a shard reads shard_size samples
    return found[0](p, str(path), inputs, pre, limits=CalibrationLimits.from_env())


def count_samples(path: str | os.PathLike[str], inputs: list[Any],
                  options: Mapping[str, Any]) -> int:
    """How many samples the validation data holds (file headers only)."""
    return int(_reader(path, inputs, preprocessing(options)).count)


def open_range(path: str | os.PathLike[str], inputs: list[Any], start: int, stop: int,
               options: Mapping[str, Any]) -> Any:
    """A ``CalibrationSource`` over samples ``start .. stop-1`` (checked like convert's data)."""
    from ..calibration import CalibrationSource

    reader = _reader(path, inputs, preprocessing(options))
    if not 0 <= start < stop <= reader.count:
        raise CalibrationError(f"{path}: samples {start}..{stop} out of range (0..{reader.count})")
    return CalibrationSource(reader, np.arange(start, stop, dtype=np.int64), str(path), False,
                             reader.manifest_preprocessing(), reader.warnings)


def plan_shards(total: int, shard_size: int, max_samples: int | None = None) -> list[tuple[int,
                                                                                         int]]:
    """Consecutive ``(start, stop)`` ranges covering the first ``min(total, max_samples)``."""
    n = total if max_samples is None else min(total, max_samples)
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


def validate_shard(files: Mapping[str, bytes], pairs: Sequence[tuple[str, str]], val: str,
                   start: int, stop: int, options: Mapping[str, Any]) -> dict[str, Any]:
    """Per-sample outputs of every (artifact, float reference) pair on samples start..stop-1.

    Args:
        files: relative path -> bytes of the model files the pairs name.
        pairs: (artifact model path, float reference path) per artifact.
        val: validation data path (must exist on this worker).
        options: the model's ``preprocess`` table.

    Returns:
        ``{"start", "stop", "labels", "artifacts": [{"names", "reference", "candidate"}],
        "worker", "seconds"}`` with arrays stacked along the sample axis.
    """
    from ..evaluate import ModelRef

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeopt-shard-") as tmp:
        for rel, data in files.items():
            dest = Path(tmp) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        models = [(ModelRef.host_cpu(Path(tmp) / cand).load(),
                   ModelRef.host_cpu(Path(tmp) / ref).load()) for cand, ref in pairs]
        source = open_range(val, list(models[0][1].inputs), start, stop, options)
        outs = [_run_all(source, quant, ref) for quant, ref in models]
    return {"start": start, "stop": stop, "labels": source.labels, "artifacts": outs,
            "worker": f"{os.getpid()}@{socket.gethostname()}",
            "seconds": round(time.perf_counter() - t0, 3)}


def _run_all(source: Any, quant: Any, ref: Any) -> dict[str, Any]:
    # the one evaluator's loop, so a shard's per-sample outputs are produced exactly as
    # convert's and compare's drift numbers are
    from ..evaluate import run_pair

    out = run_pair(ref, quant, source)
    return {"names": list(out.reference.names), "reference": out.reference.stacked(),
            "candidate": out.candidate.stacked()}


def merge_shards(shards: Sequence[Mapping[str, Any]], artifact_paths: Sequence[str],
                 npz_path: Path) -> dict[str, Any]:
    """Concatenate shard outputs in sample order; metrics once over all samples.

    Writes the per-sample arrays to ``npz_path`` (atomically) and returns the validation
    document (``edgeopt.sweep.validation/1``).
    """
    from ..drift import compare_outputs, task_metrics

    shards = sorted(shards, key=lambda s: s["start"])
    for a, b in zip(shards, shards[1:], strict=False):
        if a["stop"] != b["start"]:
            raise ValueError(f"validation shards do not tile: {a['stop']} != {b['start']}")
    labels = None
    if shards[0]["labels"] is not None:
        labels = np.concatenate([s["labels"] for s in shards])
    arrays: dict[str, np.ndarray] = {} if labels is None else {"labels": labels}
    results = []
    for i, path in enumerate(artifact_paths):
        names = shards[0]["artifacts"][i]["names"]
        ref = [np.concatenate([s["artifacts"][i]["reference"][j] for s in shards])
               for j in range(len(names))]
        cand = [np.concatenate([s["artifacts"][i]["candidate"][j] for s in shards])
                for j in range(len(names))]
        for j in range(len(names)):
            arrays[f"a{i}.o{j}.reference"], arrays[f"a{i}.o{j}.candidate"] = ref[j], cand[j]
        arrays.update(_per_sample(i, ref[0], cand[0]))
        drift = compare_outputs(ref, cand, names)
        task = task_metrics(ref, cand, labels) if labels is not None else None
        results.append({"path": path, "outputs": names, "drift": drift, "task": task})
    _save_npz(npz_path, arrays)
    return {
        "schema": VALIDATION_SCHEMA,
        "samples": int(shards[-1]["stop"] - shards[0]["start"]),
        "shards": [{"start": s["start"], "stop": s["stop"], "worker": s.get("worker"),
                    "seconds": s.get("seconds"), "peak_rss_bytes": s.get("peak_rss_bytes")}
                   for s in shards],
        "per_sample": npz_path.name,
        "artifacts": results,
    }


def _per_sample(i: int, ref: np.ndarray, cand: np.ndarray) -> dict[str, np.ndarray]:
    r = ref.reshape(len(ref), -1).astype(np.float64)
    c = cand.reshape(len(cand), -1).astype(np.float64)
    denom = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, np.sum(r * c, axis=1) / denom, np.nan)
    out = {f"a{i}.cosine": cos, f"a{i}.max_abs_error": np.abs(r - c).max(axis=1)}
    if r.shape[1] > 1:
        out[f"a{i}.top1_agree"] = np.argmax(r, axis=1) == np.argmax(c, axis=1)
    return out


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def apply_to_row(row: dict[str, Any], validation: Mapping[str, Any]) -> None:
    """Replace a row's per-artifact drift / accuracy by the full-set validation numbers."""
    by_path = {a["path"]: a for a in validation["artifacts"]}
    for art in row["artifacts"]:
        v = by_path.get(art["path"])
        if v is None:
            continue
        m = (v["drift"][0].get("metrics") or {}) if v["drift"] else {}
        acc = ((v.get("task") or {}).get("metrics") or {}).get("accuracy") or {}
        art.update({"convert_samples": art.get("samples"), "samples": validation["samples"],
                    "sqnr_db": m.get("sqnr_db"), "cosine": m.get("cosine"),
                    "top1_agreement": m.get("top1_agreement"),
                    "accuracy": acc.get("quantized"), "float_accuracy": acc.get("float"),
                    "accuracy_drop": acc.get("drop")})
    row["validation"] = {"samples": validation["samples"], "shards": len(validation["shards"]),
                         "file": "validation.json"}
