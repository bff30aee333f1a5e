"""The artifact manifest: ``manifest.json`` next to the model file(s) of one converted target.

Schema ``edgeopt.manifest/1`` (JSON object)::

    {
      "schema": "edgeopt.manifest/1",
      "created": "2026-11-24T21:00:00+00:00",
      "target": {"name": "arm-cpu", "description": "..."},
      "runtime": {                      # everything the runtime needs; it never reads targets/
        "threads": 4 | null,
        "tflite_delegate": "xnnpack" | "edgetpu" | "gpu" | "none",
        "delegate_library": "libedgetpu.so.1" | null,
        "onnx_providers": ["CPUExecutionProvider"]
      },
      "models": [                       # first entry is the default one load() picks
        {
          "file": "model_int8.tflite",  # relative to the manifest's folder, no '/' or '..'
          "format": "tflite" | "onnx",
          "precision": "int8" | "uint8" | "float16" | "dynamic" | "float32" | "int16x8"
                       | "weight-only",
          "sha256": "<hex>",
          "size_bytes": 12345,
          "inputs":  [TensorSpec...],   # see edgeopt_runtime.model.TensorSpec.to_dict, plus
          "outputs": [TensorSpec...]    # optional "layout" (edgeopt_runtime.layout)
        }
      ],
      "source": {"path": "...", "format": "keras", "sha256": "<hex>"},
      "preprocessing": {...} | null,    # how raw data becomes model input (calibration config)
      "calibration": {"sha256": "<hex>", "count": 100, "source": "...", "synthetic": false,
                      "method": "minmax"},
      "tools": {"edgeopt": "0.1.0", "tensorflow": "2.21.0", ...}
    }

Unknown keys are kept (forward compatible); a different major schema is refused. Every known
field is checked on load against the table in ``edgeopt_runtime.manifest_schema`` (type, range,
allowed values): add new fields there. ``runtime.tflite_delegate`` may only name a delegate of
``edgeopt_runtime.delegates``; ``runtime.delegate_library`` only one of that delegate's registered
library names (an artifact never chooses native code).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .files import MAX_MANIFEST_BYTES, read_capped
from .manifest_schema import MAX_DEPTH, check_fields

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "edgeopt.manifest/1"
MODEL_FORMATS = ("tflite", "onnx")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks (never whole in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelEntry:
    """One model file listed in a manifest."""

    file: str
    format: str
    precision: str
    sha256: str
    size_bytes: int
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format,
            "precision": self.precision,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated ``manifest.json``."""

    directory: Path
    models: tuple[ModelEntry, ...]
    runtime: dict[str, Any]
    data: dict[str, Any]

    @property
    def target_name(self) -> str | None:
        return (self.data.get("target") or {}).get("name")

    def select(self, format: str | None = None, precision: str | None = None) -> ModelEntry:
        """Pick a model entry: the first one matching ``format``/``precision`` (both optional)."""
        for entry in self.models:
            if format and entry.format != format:
                continue
            if precision and entry.precision != precision:
                continue
            return entry
        have = ", ".join(f"{m.file} ({m.format}, {m.precision})" for m in self.models)
        want = " ".join(x for x in (format, precision) if x)
        raise ModelLoadError(f"{self.directory / MANIFEST_NAME}: no {want} model; it lists {have}")

    def model_path(self, entry: ModelEntry) -> Path:
        return self.directory / entry.file


def _fail(path: Path, why: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: invalid manifest: {why}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _depth_and_strings(value: Any, depth: int = 1) -> str | None:
    """Why ``value`` nests too deeply or holds an un-encodable string, else None."""
    if depth > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"string {value[:40]!r} holds a lone surrogate (not valid Unicode)"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"number {value} is out of range (not finite)"
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for k, v in items:
        why = _depth_and_strings(k, depth) if isinstance(k, str) else None
        why = why or _depth_and_strings(v, depth + 1)
        if why:
            return why
    return None


def parse_manifest_bytes(raw: bytes, path: Path) -> dict[str, Any]:
    """Parse manifest bytes strictly and check them against the schema table.

    Raises:
        ModelLoadError: not UTF-8, not JSON, too deep, NaN/Infinity, duplicate keys, or a field
            of the wrong type or out of range (the message names the field).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _fail(path, f"nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise _fail(path, f"not JSON ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise _fail(path, "expected a JSON object")
    why = _depth_and_strings(data)
    if why:
        raise _fail(path, why)
    schema = data.get("schema")
    if not isinstance(schema, str) or not schema.startswith("edgeopt.manifest/"):
        raise _fail(path, f"expected schema {MANIFEST_SCHEMA!r}, got {schema!r:.80}")
    if schema.split("/", 1)[1].split(".")[0] != MANIFEST_SCHEMA.split("/", 1)[1]:
        raise _fail(path, f"schema {schema!r} is not supported by this runtime ({MANIFEST_SCHEMA})")
    why = check_fields(data)
    if why:
        raise _fail(path, why)
    return data


def read_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Read and validate ``directory/manifest.json``.

    The manifest must be a regular file inside ``directory`` of at most ``MAX_MANIFEST_BYTES``;
    every field is checked against ``manifest_schema.FIELDS``.

    Raises:
        ModelLoadError: missing, unreadable or malformed manifest.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not os.path.lexists(path):
        raise ModelLoadError(
            f"{directory}: directory has no {MANIFEST_NAME}; expected an edgeopt artifact "
            "directory or a .tflite / .onnx file"
        )
    raw = read_capped(path, max_bytes=MAX_MANIFEST_BYTES, what="manifest", inside=directory)
    data = parse_manifest_bytes(raw, path)
    models = []
    for m in data["models"]:
        models.append(
            ModelEntry(
                file=m["file"],
                format=m["format"],
                precision=m.get("precision") or "unknown",
                sha256=m["sha256"],
                size_bytes=m.get("size_bytes", -1),
                inputs=list(m.get("inputs") or []),
                outputs=list(m.get("outputs") or []),
            )
        )
    runtime = data.get("runtime") or {}
    return Manifest(directory=directory, models=tuple(models), runtime=runtime, data=data)


def write_manifest(directory: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (temp file + rename) and return its path."""
    directory = Path(directory)
    data = {"schema": MANIFEST_SCHEMA, **{k: v for k, v in data.items() if k != "schema"}}
    path = directory / MANIFEST_NAME
    tmp = directory / f".{MANIFEST_NAME}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
