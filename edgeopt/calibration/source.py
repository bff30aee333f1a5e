"""``open_calibration`` and ``CalibrationSource``: the checked, hashed stream of samples.

``open_calibration(path, inputs)`` picks a reader from the registry, the reader checks every
stored array's shape and dtype against the model inputs from the file headers alone, then one
streaming pass converts each selected sample, rejects NaN/Inf and hashes the raw bytes. The
``CalibrationSource`` yields one ``{input name: array}`` dict per sample (batch dim 1, the
input's dtype) and never holds more than one sample per input in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import CalibrationError
from edgeopt_runtime.spec import TensorSpec

from ..limits import MAX_ABS_VALUE, CalibrationLimits
from .hashing import SampleHasher
from .layout import dims_match, fmt_shape
from .preprocessing import Preprocessing, ValueStats
from .readers import ARRAY_SUFFIXES, IMAGE_SUFFIXES, SyntheticReader
from .registry import CalibrationReader, reader_names, registered

DEFAULT_SYNTHETIC_SAMPLES = 100


@dataclass
class _Stats:
    """Running per-input statistics of every yielded value (model input)."""

    values: dict[str, ValueStats] = field(default_factory=dict)

    def update(self, sample: dict[str, np.ndarray]) -> None:
        for name, x in sample.items():
            self.values.setdefault(name, ValueStats()).update(x)

    @property
    def lo(self) -> dict[str, float]:
        return {n: v.lo for n, v in self.values.items() if v.count}

    @property
    def hi(self) -> dict[str, float]:
        return {n: v.hi for n, v in self.values.items() if v.count}


def _check_magnitude(where: str, name: str, x: np.ndarray) -> None:
    """Refuse finite values the converters cannot take (see ``edgeopt.limits.MAX_ABS_VALUE``)."""
    lo, hi = float(x.min()), float(x.max())
    worst = hi if abs(hi) >= abs(lo) else lo
    if abs(worst) > MAX_ABS_VALUE:
        at = np.unravel_index(int(np.argmax(np.abs(x))), x.shape)
        raise CalibrationError(
            f"{where}: input '{name}' holds {worst:.3g} at {list(map(int, at))}, beyond the "
            f"+-{MAX_ABS_VALUE:.0e} the quantizers take (TF's crashes at 1e38; any such range "
            "rounds real inputs to zero): this looks like padding (-FLT_MAX) or damaged data"
        )


class CalibrationSource:
    """Calibration samples for one model, checked, hashed and streamed.

    Attributes:
        inputs: the model inputs the data was checked against.
        count: number of samples yielded per pass.
        sha256: hash of the selected samples' raw bytes, shapes, dtypes and the preprocessing.
        synthetic: True for generated data.
        source: the path as given, or "synthetic".
        format: the reader's name (npz, npy, image-dir, array-dir, synthetic).
        labels: labels aligned with the yielded samples, or None.
        indices / available: the selected rows, and how many rows the data holds.
        ranges: per input (min, max) over all yielded values.
        warnings: things worth telling the user (degenerate ranges, ignored arrays, ...).
    """

    def __init__(
        self,
        reader: CalibrationReader,
        indices: np.ndarray,
        source: str,
        synthetic: bool,
        preprocessing: dict[str, Any] | None,
        warnings: list[str],
    ) -> None:
        self._reader, self._indices = reader, indices
        self.inputs = reader.inputs
        self.count = len(indices)
        self.source, self.synthetic, self.format = source, synthetic, reader.name
        self.preprocessing = preprocessing
        self.labels = reader.labels[indices] if reader.labels is not None else None
        self.warnings = list(warnings)
        self._specs = {s.name: s for s in self.inputs}
        self.sha256 = ""
        stats = _Stats()
        from .. import progress

        # validate everything and hash once, up front
        for _ in progress.counted(self._pass(stats), f"checking {source}", self.count):
            pass
        lo, hi = stats.lo, stats.hi
        self.ranges = {n: (lo[n], hi[n]) for n in lo}
        before = reader.values_before(collect=False)
        self.statistics = {
            n: {"before_preprocessing": before[n].to_dict() if n in before else None,
                "model_input": v.to_dict()}
            for n, v in stats.values.items()}
        self._flag_degenerate()
        self._flag_float_preprocessing(reader)

    def _pass(self, stats: _Stats | None = None) -> Iterator[dict[str, np.ndarray]]:
        """One streaming pass: read, hash, convert, check each sample; then verify the hash."""
        h = SampleHasher(self.count, self.preprocessing)
        for where, raw in self._reader.read(self._indices):
            h.update(raw)
            sample = self._reader.convert(where, raw)
            self._check(where, sample)
            if stats is not None:
                stats.update(sample)
            yield sample
        digest = h.hexdigest()
        if not self.sha256:
            self.sha256 = digest
        elif digest != self.sha256:
            raise CalibrationError(
                f"{self.source}: calibration data changed while in use "
                f"(sha256 {self.sha256[:12]} became {digest[:12]})"
            )

    def _check(self, where: str, sample: dict[str, np.ndarray]) -> None:
        for name, x in sample.items():
            spec = self._specs[name]
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
                raise CalibrationError(
                    f"{where}: input '{name}' holds {nan} NaN and {inf} Inf "
                    "values: calibration data must be finite"
                )
            if x.dtype.kind == "f" and x.size:
                _check_magnitude(where, name, x)
            if x.dtype != np.dtype(spec.dtype) or not dims_match(x.shape[1:], spec.shape[1:]):
                raise AssertionError(
                    f"reader {self.format} produced {fmt_shape(x.dtype, x.shape)} for {spec}"
                )  # a reader bug, not a user error

    def _flag_degenerate(self) -> None:
        if self.count == 1:
            self.warnings.append(
                f"{self.source}: only 1 calibration sample; quantization ranges "
                "will fit it exactly and may clip real inputs"
            )
        for name, (lo, hi) in self.ranges.items():
            # integer inputs (token ids, masks, token_type_ids) are never quantized: a constant
            # one has no range to get wrong
            if lo == hi and np.dtype(self._specs[name].dtype).kind == "f":
                self.warnings.append(
                    f"{self.source}: input '{name}' is constant ({lo:g}) across "
                    "all calibration samples: its quantization range is "
                    "degenerate; use varied, representative data"
                )

    def _flag_float_preprocessing(self, reader: CalibrationReader) -> None:
        pre = reader.preprocessing
        if pre is None or not pre.applies_to_floats:
            return
        floats = [c.spec.name for f in getattr(reader, "files", []) or []
                  for c in getattr(f, "columns", []) if np.dtype(c.dtype).kind == "f"]
        for name in dict.fromkeys(floats):
            st = self.statistics.get(name) or {}
            b, a = st.get("before_preprocessing") or {}, st.get("model_input") or {}
            self.warnings.append(
                f"{self.source}: preprocessing applied to already-float input '{name}' "
                f"(apply_to=all): values [{b.get('min')}, {b.get('max')}] mean {b.get('mean')} "
                f"became [{a.get('min')}, {a.get('max')}] mean {a.get('mean')}; make sure the "
                "device applies the same steps")

    def __len__(self) -> int:
        return self.count

    @property
    def indices(self) -> np.ndarray:
        """The selected rows of the data, sorted (all of them without a subset)."""
        return self._indices.copy()

    @property
    def available(self) -> int:
        """How many samples the data holds (the subset is chosen among these)."""
        return self._reader.count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield one ``{input name: array}`` dict per sample (batch dim 1, the input's dtype).

        Raises:
            CalibrationError: the data on disk changed since it was opened and hashed.
        """
        return self._pass()

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield samples stacked along the batch dim, ``batch_size`` at a time (last may be short).

        Raises:
            ValueError: ``batch_size`` < 1.
            CalibrationError: samples in one batch differ in a dynamic dimension.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pending: list[dict[str, np.ndarray]] = []
        for sample in self:
            pending.append(sample)
            if len(pending) == batch_size:
                yield self._stack(pending)
                pending = []
        if pending:
            yield self._stack(pending)

    def _stack(self, samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        out = {}
        for name in samples[0]:
            shapes = {s[name].shape for s in samples}
            if len(shapes) > 1:
                raise CalibrationError(
                    f"{self.source}: input '{name}' samples differ in shape "
                    f"({', '.join(map(str, sorted(shapes)))}) and cannot be "
                    "batched: use batch size 1"
                )
            out[name] = np.concatenate([s[name] for s in samples])
        return out

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``calibration`` entry (the converter adds ``method``)."""
        return {
            "sha256": self.sha256,
            "count": self.count,
            "source": self.source,
            "synthetic": self.synthetic,
            "format": self.format,
            "preprocessing": self.preprocessing,
        }

    def stats_dict(self) -> dict[str, Any]:
        """Per input, the value statistics before preprocessing (None when none applied) and
        of the model input (the report's ``statistics``)."""
        return {n: dict(v) for n, v in self.statistics.items()}


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _select(total: int, num: int | None, seed: int, display: str) -> np.ndarray:
    """Sorted indices of the chosen samples: all, or a seeded random subset of ``num``."""
    if total == 0:
        raise CalibrationError(f"{display}: no calibration samples found")
    if num is None or num >= total:  # ``num`` is a cap (callers pass e.g. an eval limit)
        return np.arange(total, dtype=np.int64)
    # Sorted so files are read front to back (compressed members can only stream forward).
    return np.sort(np.random.default_rng(seed).choice(total, size=num, replace=False))


def _pick_reader(path: Path, display: str, format: str | None) -> type[CalibrationReader]:
    if format is not None:
        readers = registered()
        if format not in readers:
            raise CalibrationError(
                f"unknown calibration format {format!r} (known: {', '.join(reader_names())})"
            )
        return readers[format]
    if not path.exists():
        raise CalibrationError(f"{display}: no such file or directory")
    found = [r for r in registered().values() if r.matches(path)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise CalibrationError(
            f"{display}: ambiguous calibration data (matches "
            f"{', '.join(r.name for r in found)}): keep one kind of file per "
            "directory"
        )
    if path.is_dir():
        raise CalibrationError(
            f"{display}: no calibration samples found (expected "
            f"{', '.join(IMAGE_SUFFIXES + ARRAY_SUFFIXES)} files)"
        )
    raise CalibrationError(
        f"{display}: unsupported calibration file (expected .npz, .npy, or a "
        "directory of images or .npy/.npz files)"
    )


def open_calibration(
    path: str | os.PathLike[str] | None,
    inputs: list[TensorSpec],
    *,
    num: int | None = None,
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
    allow_synthetic: bool = False,
    format: str | None = None,
    limits: CalibrationLimits | None = None,
) -> CalibrationSource:
    """Open calibration data for a model, check it against the inputs, and hash it.

    Shapes and dtypes are checked from file headers before any sample is read; then one
    streaming pass converts every selected sample (so bad values fail here, not mid-conversion)
    and computes the hash.

    Args:
        path: an ``.npz``, ``.npy``, or a directory of images or of ``.npy``/``.npz`` files;
            None for synthetic data (needs ``allow_synthetic``).
        inputs: the model's inputs; the first dim of each is its batch dim.
        num: use a random subset of this many samples (all if None or larger than available).
        seed: seed of the subset choice and of synthetic data.
        preprocessing: how raw data becomes model input. For arrays, None means the data is
            already model-ready; for images, None means x/255 with layout and color from the
            model (recorded, with a warning).
        allow_synthetic: with ``path=None``, generate seeded random data instead of failing.
        format: force a registered reader (see ``reader_names()``) instead of detecting it.
        limits: how much data to read (default: ``CalibrationLimits.from_env()``); sizes
            declared in headers are checked against it before any data is read.

    Returns:
        A ``CalibrationSource`` streaming the selected samples.

    Raises:
        CalibrationError: missing, malformed or mismatched data, NaN/Inf or values beyond
            ``MAX_ABS_VALUE``, no samples, more data than ``limits`` allow.
    """
    if not inputs:
        raise CalibrationError("the model has no inputs to calibrate")
    limits = limits or CalibrationLimits.from_env()
    if num is not None and num < 1:
        raise CalibrationError(f"number of calibration samples must be >= 1, got {num}")
    if num is not None and num > limits.max_samples:
        raise CalibrationError(
            f"number of calibration samples must be at most {limits.max_samples:,}, got {num:,}"
        )
    if path is None:
        if not allow_synthetic:
            raise CalibrationError("no calibration data: pass --calib PATH or --allow-synthetic")
        reader: CalibrationReader = SyntheticReader(inputs, num or DEFAULT_SYNTHETIC_SAMPLES, seed)
        indices = np.arange(reader.count, dtype=np.int64)
        return CalibrationSource(reader, indices, "synthetic", True, None, reader.warnings)
    display = os.fspath(path)
    p = Path(path)
    reader = _pick_reader(p, display, format)(
        p, display, list(inputs), preprocessing, limits=limits
    )
    if num is None and reader.count > limits.max_samples:
        raise CalibrationError(
            f"{display}: holds {reader.count:,} samples, more than the {limits.max_samples:,} "
            "read per run: pass --num-calib N for a seeded random subset (a few hundred "
            "calibrate well)"
        )
    indices = _select(reader.count, num, seed, display)
    return CalibrationSource(
        reader, indices, display, False, reader.manifest_preprocessing(), reader.warnings
    )
