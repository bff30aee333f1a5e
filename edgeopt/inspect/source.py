"""Pre-flight of a source model (``edgeopt inspect model.keras --target T``).

The pre-flight rules are about the model the target is given, so the source is built the way
``convert`` builds it — the same plan (formats, precisions) and shape rules — but calibrated on
seeded synthetic data: which ops exist, their types and where the graph breaks do not depend on
the calibration values (ranges do, and the report says the ranges are not the real ones). A few
seconds per format instead of a whole conversion with real data; nothing is written.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SYNTHETIC_SAMPLES = 8


def is_source(path: Path) -> bool:
    """A source model rather than a model file / artifact directory (``.onnx`` files are
    inspected as they are)."""
    if path.is_dir():  # a SavedModel; any other folder is read as an artifact (manifest.json)
        return (path / "saved_model.pb").is_file() and not (path / "manifest.json").exists()
    return path.suffix.lower() in (".keras", ".h5", ".hdf5")


def source_reports(model: Path, profile: Any, input_shapes: Sequence[str] = (),
                   trust_model: bool = False) -> list[dict[str, Any]]:
    """One pre-flight report per artifact ``convert`` would build for ``profile``.

    Raises:
        EdgeOptError: an unreadable source, a bad ``--input-shape``, a target that cannot take
            the source, a conversion that fails (as ``convert`` would report it).
    """
    from edgeopt import progress
    from edgeopt.backends import BuildRequest
    from edgeopt.calibration import open_calibration
    from edgeopt.convert import _format_shapes, _input_specs, _plan, _target_shapes
    from edgeopt.inspect import preflight
    from edgeopt.sources import load_source

    progress.info(f"loading {model}")
    source = load_source(model, trust_model=trust_model)
    inputs = _input_specs(source, list(input_shapes))
    plan = _plan(source, profile, None, ())
    calib = open_calibration(None, inputs, num=SYNTHETIC_SAMPLES, allow_synthetic=True)
    shapes = _target_shapes(source, profile, calib, inputs)
    reports = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-inspect-") as work:
        for job in plan.jobs:
            fmt_shapes, _ = _format_shapes(shapes, job.backend.name, calib)
            out = Path(work) / f"model_{job.precision}{job.backend.extension}"
            with progress.task(f"building {job.backend.name} {job.precision} of {model.name}",
                               unit="step"):
                built = job.backend.build(BuildRequest(
                    source=source, profile=profile, precision=job.precision,
                    input_shapes=fmt_shapes, workdir=Path(work), out_path=out, calib=calib,
                    calib_method=profile.quantization.calibration_method))
            rep = preflight(built.path, profile)
            rep["model"] = f"{model} ({job.backend.name} {job.precision}, as convert builds it)"
            rep["notes"] = [
                f"built from the source as `edgeopt convert --target {profile.name}` would, "
                f"calibrated on {SYNTHETIC_SAMPLES} synthetic samples: ops, types and the "
                "partition are the converted model's; value ranges are not (inspect the "
                "convert output for those)", *rep["notes"]]
            reports.append(rep)
    return reports
