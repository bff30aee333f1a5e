"""The float reference an artifact was measured against, kept inside the artifact folder.

``convert`` measures every artifact against the float model converted to the same format
(``backend.build_float``). With ``--keep-reference`` (on by default when small, see
``AUTO_MAX_BYTES``) that float model is copied to ``OUT/<target>/reference/float32.<ext>`` and
listed in the manifest's ``reference`` block, so ``edgeopt compare OUT/<target>`` later measures
against exactly the same bytes without the source model or TensorFlow.

The reference is not one of the manifest's ``models``: the runtime never loads it, and deploy
bundles (which copy the listed models only) never ship it to a device.

Manifest block (rows added to the runtime's schema table below)::

    "reference": {"kept": true, "policy": "auto",
                  "models": [{"file": "reference/float32.tflite", "format": "tflite",
                              "precision": "float32", "sha256": "...", "size_bytes": 123,
                              "for": ["model_int8.tflite"]}]}

``file`` is null when the reference was measured but not kept (its sha256 still says which
float model the drift numbers belong to).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt_runtime.errors import ModelLoadError
from edgeopt_runtime.manifest_schema import Field, add_field, one_of, pattern

FOLDER = "reference"
# "Small" = at most 100 MB of float reference per target: every model in benchmarks/ fits
# (MobileNetV2 14 MB, ResNet-18 45 MB, a 6-layer MiniLM-class transformer ~90 MB), so a later
# `edgeopt compare OUT/<target>` works without the source; copying and hashing that much costs
# well under a second. Above it the float copies would multiply OUT several times over the
# artifacts' own size (a 12-layer BERT-base is 440 MB per format): opt in with --keep-reference.
AUTO_MAX_BYTES = 100_000_000
_FILE = re.compile(rf"{FOLDER}/float32\.(tflite|onnx)")

for _f in (
    Field("reference", "object", nullable=True,
          doc="the float model(s) drift was measured against"),
    Field("reference.kept", "bool"),
    Field("reference.policy", "str", check=one_of("auto", "always", "never")),
    Field("reference.models", "list"),
    Field("reference.models[]", "object"),
    Field("reference.models[].file", "str", nullable=True,
          check=pattern(_FILE.pattern, "reference/float32.tflite or reference/float32.onnx")),
    Field("reference.models[].format", "str", required=True, check=one_of("tflite", "onnx")),
    Field("reference.models[].sha256", "str", required=True,
          check=pattern(r"[0-9a-f]{64}", "64 lower-case hex digits")),
    Field("reference.models[].size_bytes", "int"),
):
    add_field(_f)


@dataclass
class Kept:
    """The float references of one target folder, collected while its artifacts are built."""

    policy: str  # auto | always | never
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # format -> entry

    def add(self, fmt: str, float_path: Path, sha256: str, artifact: str) -> None:
        entry = self.models.setdefault(fmt, {
            "file": None, "format": fmt, "precision": "float32", "sha256": sha256,
            "size_bytes": float_path.stat().st_size, "for": [], "_path": float_path})
        entry["for"].append(artifact)

    @property
    def total_bytes(self) -> int:
        return sum(int(e["size_bytes"]) for e in self.models.values())

    def decide(self) -> tuple[bool, str | None]:
        """(keep the files?, why not when the automatic rule says no)."""
        if self.policy == "never":
            return False, None
        if self.policy == "always" or self.total_bytes <= AUTO_MAX_BYTES:
            return True, None
        return False, (f"float reference not kept ({self.total_bytes / 1e6:.0f} MB > "
                       f"{AUTO_MAX_BYTES / 1e6:.0f} MB); pass --keep-reference to keep it, or "
                       "compare against the source model")

    def write(self, tdir: Path) -> dict[str, Any]:
        """Copy the references into ``tdir/reference/`` (when kept); the manifest block."""
        keep, _ = self.decide()
        models = []
        for fmt, entry in self.models.items():
            out = {k: v for k, v in entry.items() if not k.startswith("_")}
            if keep:
                dest = tdir / FOLDER / f"float32.{fmt}"
                dest.parent.mkdir(exist_ok=True)
                shutil.copyfile(entry["_path"], dest)
                out["file"] = dest.relative_to(tdir).as_posix()
            models.append(out)
        return {"kept": keep and bool(models), "policy": self.policy, "models": models}


def find(artifact_dir: Path, fmt: str) -> Path:
    """The kept float reference of ``fmt`` in an artifact folder, checked against its sha256.

    Raises:
        ModelLoadError: no manifest, no kept reference for ``fmt`` (the message says how to
            compare instead), a missing file or one whose sha256 does not match.
    """
    from edgeopt_runtime.manifest import read_manifest
    from edgeopt_runtime.model import vet_model_file

    manifest = read_manifest(artifact_dir)
    block = manifest.data.get("reference") or {}
    entry = next((m for m in block.get("models") or [] if m.get("format") == fmt), None)
    if entry is None or not entry.get("file"):
        source = (manifest.data.get("source") or {}).get("path") or "MODEL"
        why = ("it was converted with --no-keep-reference" if block.get("policy") == "never"
               else "its float reference was too large to keep by default" if block
               else "it was written before edgeopt kept float references")
        raise ModelLoadError(
            f"{artifact_dir}: holds no float {fmt} reference ({why}): pass the float model "
            f"as the reference, e.g. `edgeopt compare {source} {artifact_dir} --data ...`")
    path = artifact_dir / entry["file"]
    if not _FILE.fullmatch(entry["file"]) or path.is_symlink() or not path.is_file():
        raise ModelLoadError(f"{path}: the manifest lists this float reference but it is "
                             "missing (or not a regular file); re-run edgeopt convert")
    # regular file inside the folder, size cap, sha256, structure (the probe comes with load)
    vet_model_file(path, fmt=fmt, sha256=entry["sha256"], inside=artifact_dir, isolate=False)
    return path
