"""Artifact manifests: one ``manifest.json`` per target folder.

The output directory itself (lock, staging, atomic swap, leftovers, disk-full errors) is
``edgeopt.output``; its names are re-exported here for code written against this module.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from edgeopt_runtime import Model
from edgeopt_runtime.manifest import ModelEntry, sha256_file, write_manifest

from .output import (  # noqa: F401 - re-exported (edgeopt.artifact.Staging etc.)
    REPORT_NAME,
    Interrupted,
    OutputError,
    Staging,
    check_output,
    claim_output,
    looks_like_output,
    recover_interrupted_swap,
    remove_dead_stagings,
)
from .targets import TargetProfile


def model_entry(path: Path, fmt: str, precision: str, loaded: Model) -> ModelEntry:
    """A manifest entry for ``path``, with IO specs (incl. scale / zero point) as the runtime
    reads them from the produced model file."""
    return ModelEntry(
        file=path.name,
        format=fmt,
        precision=precision,
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        inputs=[s.to_dict() for s in loaded.inputs],
        outputs=[s.to_dict() for s in loaded.outputs],
    )


def write_target_manifest(
    directory: Path,
    profile: TargetProfile,
    entries: list[ModelEntry],
    *,
    source: dict[str, Any],
    calibration: dict[str, Any],
    preprocessing: dict[str, Any] | None,
    tools: dict[str, Any],
    reference: dict[str, Any] | None = None,
) -> Path:
    """Write ``directory/manifest.json`` (schema ``edgeopt.manifest/1``) for one target."""
    return write_manifest(
        directory,
        {
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "target": {"name": profile.name, "description": profile.description},
            "runtime": profile.runtime_manifest(),
            "models": [e.to_dict() for e in entries],
            "source": source,
            "preprocessing": preprocessing,
            "calibration": calibration,
            "tools": tools,
            # the float model(s) drift was measured against (edgeopt.reference)
            **({"reference": reference} if reference is not None else {}),
        },
    )
