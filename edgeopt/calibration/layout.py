"""Shape / dtype planning: how one stored array lays out the samples of one model input.

Layout rules: the first dim is the sample axis. For an input of shape ``[B, *s]`` (B is the
batch dim, usually ``?`` or 1) a stored array may be ``[N, *s]`` (N samples), ``[N, 1, *s]``
(N samples with their batch dim) or ``[*s]`` (one sample). Everything here works from headers
alone: no sample data is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgeopt_runtime.errors import CalibrationError
from edgeopt_runtime.spec import TensorSpec

from .preprocessing import Preprocessing


def fmt_shape(dtype: Any, shape: Sequence[int | None]) -> str:
    dims = ", ".join("?" if d is None else str(d) for d in shape)
    return f"{np.dtype(dtype).name}[{dims}]"


def dims_match(got: Sequence[int], want: Sequence[int | None]) -> bool:
    if len(got) != len(want):
        return False
    return all(w is None or g == w for g, w in zip(got, want, strict=True))


@dataclass(frozen=True)
class Column:
    """How one input's samples are laid out in one stored array."""

    spec: TensorSpec
    key: str
    dtype: np.dtype
    shape: tuple[int, ...]  # the stored array's full shape
    mode: str  # "batched" [N, *s] | "stacked" [N, 1, *s] | "single" [*s]

    @property
    def n(self) -> int:
        return 1 if self.mode == "single" else self.shape[0]

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one stored row (``arr[i]``, or the whole array for ``single``)."""
        return self.shape if self.mode == "single" else self.shape[1:]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one yielded sample: batch dim 1, then the input's other dims."""
        return self.row_shape if self.mode == "stacked" else (1, *self.row_shape)


def _layout_mode(spec: TensorSpec, shape: tuple[int, ...]) -> str | None:
    inner = spec.shape[1:]
    if len(shape) == len(spec.shape) and dims_match(shape[1:], inner):
        return "batched"
    if len(shape) == len(spec.shape) + 1 and dims_match(shape[1:], (1, *inner)):
        return "stacked"
    if len(shape) == len(spec.shape) - 1 and dims_match(shape, inner):
        return "single"
    return None


def _shape_hint(spec: TensorSpec, shape: tuple[int, ...]) -> str:
    inner = spec.shape[1:]
    dims = ", ".join("?" if d is None else str(d) for d in inner)
    hint = f"store [N, {dims}] (N samples) or [N, 1, {dims}]"
    if inner and inner[-1] == 1 and dims_match(shape[1:], inner[:-1]):
        hint += "; add the channel axis with x[..., None]"
    elif len(inner) == 3 and len(shape) == 4 and dims_match((shape[2], shape[3], shape[1]), inner):
        hint += "; the data looks channels-first: x.transpose(0, 2, 3, 1)"
    elif len(inner) == 3 and len(shape) == 4 and dims_match((shape[3], shape[1], shape[2]), inner):
        hint += "; the data looks channels-last: x.transpose(0, 3, 1, 2)"
    return hint


def _dtype_problem(
    spec: TensorSpec, dtype: np.dtype, preprocessing: Preprocessing | None
) -> str | None:
    """Why ``dtype`` data cannot feed ``spec`` (None if it can), with a fix hint."""
    want = np.dtype(spec.dtype)
    if dtype.hasobject:
        return (
            "object arrays (ragged or Python objects) are not supported; pickled data is "
            "never loaded: save a regular numeric array"
        )
    if dtype.fields is not None or dtype.kind not in "biuf":
        return f"unsupported dtype {dtype}: save a numeric array"
    if dtype.kind == "f" and preprocessing is not None and not preprocessing.applies_to_floats:
        from .preprocessing import float_refusal

        return float_refusal(dtype.name)
    if dtype == want or (want.kind == "f" and dtype.kind == "f"):
        return None
    if want.kind == "f" and preprocessing is None:
        return (
            f"{dtype.name} data where {want.name} is expected: pass preprocessing saying how "
            f"to convert it (e.g. scale=1/255 for [0, 1] inputs) or save {want.name} data"
        )
    if want.kind == "f":
        return None
    if want.kind in "iu" and dtype.kind in "iu" and preprocessing is None:
        return None  # integer -> integer: range-checked per sample
    if want.kind in "iu" and preprocessing is not None:
        return None  # normalized then rounded; range-checked per sample
    return f"{dtype.name} data cannot feed a {want.name} input: save {want.name} data"


def plan_column(
    where: str,
    spec: TensorSpec,
    key: str,
    dtype: np.dtype,
    shape: tuple[int, ...],
    preprocessing: Preprocessing | None,
) -> Column:
    """Check one stored array against one model input; raise a one-line error if it can't feed it.

    Raises:
        CalibrationError: wrong shape or dtype, naming both, with a hint.
    """
    if not spec.shape:
        raise CalibrationError(
            f"{where}: input '{spec.name}' is a scalar (rank 0); calibration "
            "needs inputs with a batch dimension"
        )
    mode = _layout_mode(spec, shape)
    problems = []
    if mode is None:
        problems.append(_shape_hint(spec, shape))
    dtype_problem = _dtype_problem(spec, dtype, preprocessing)
    if dtype_problem:
        problems.append(dtype_problem)
    label = f"input '{spec.name}'" + (f" (array '{key}')" if key != spec.name else "")
    if problems == [dtype_problem] and dtype.kind == "f" and preprocessing is not None \
            and not preprocessing.applies_to_floats:  # the shape fits: only the refusal
        raise CalibrationError(f"{where}: {label}: {dtype_problem}")
    if problems:
        raise CalibrationError(
            f"{where}: {label} expects {fmt_shape(spec.dtype, spec.shape)}, got "
            f"{fmt_shape(dtype, shape)}: {'; '.join(problems)}"
        )
    return Column(spec, key, dtype, shape, mode)


# --------------------------------------------------------------------------------------------
