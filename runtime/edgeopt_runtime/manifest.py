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
          "precision": "int8" | "uint8" | "float16" | "dynamic" | "float32" | "int16x8",
          "sha256": "<hex>",
          "size_bytes": 12345,
          "inputs":  [TensorSpec...],   # see edgeopt_runtime.model.TensorSpec.to_dict
          "outputs": [TensorSpec...]
        }
      ],
      "source": {"path": "...", "format": "keras", "sha256": "<hex>"},
      "preprocessing": {...} | null,    # how raw data becomes model input (calibration config)
      "calibration": {"sha256": "<hex>", "count": 100, "source": "...", "synthetic": false,
                      "method": "minmax"},
      "tools": {"edgeopt": "0.1.0", "tensorflow": "2.21.0", ...}
    }

Unknown top-level keys are kept (forward compatible); a different major schema is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

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


def read_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Read and validate ``directory/manifest.json``.

    Raises:
        ModelLoadError: missing, unreadable or malformed manifest.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelLoadError(
            f"{directory}: directory has no {MANIFEST_NAME}; expected an edgeopt artifact "
            "directory or a .tflite / .onnx file"
        ) from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _fail(path, f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _fail(path, "expected a JSON object")
    schema = data.get("schema")
    if not isinstance(schema, str) or not schema.startswith("edgeopt.manifest/"):
        raise _fail(path, f"expected schema {MANIFEST_SCHEMA!r}, got {schema!r}")
    if schema.split("/", 1)[1].split(".")[0] != MANIFEST_SCHEMA.split("/", 1)[1]:
        raise _fail(path, f"schema {schema!r} is not supported by this runtime ({MANIFEST_SCHEMA})")
    models_raw = data.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise _fail(path, "'models' must be a non-empty list")
    models = []
    for i, m in enumerate(models_raw):
        if not isinstance(m, dict):
            raise _fail(path, f"models[{i}] must be an object")
        try:
            entry = ModelEntry(
                file=str(m["file"]),
                format=str(m["format"]),
                precision=str(m.get("precision", "unknown")),
                sha256=str(m["sha256"]),
                size_bytes=int(m.get("size_bytes", -1)),
                inputs=list(m.get("inputs") or []),
                outputs=list(m.get("outputs") or []),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _fail(path, f"models[{i}] is missing or has a bad field: {exc}") from None
        name = entry.file
        if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
            raise _fail(path, f"models[{i}].file {name!r} must be a plain file name in the folder")
        if entry.format not in MODEL_FORMATS:
            raise _fail(path, f"models[{i}].format {entry.format!r} is not one of {MODEL_FORMATS}")
        models.append(entry)
    runtime = data.get("runtime") or {}
    if not isinstance(runtime, dict):
        raise _fail(path, "'runtime' must be an object")
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
