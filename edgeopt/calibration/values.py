"""Raw array values -> model input: normalization per channel and the cast to the input dtype."""

from __future__ import annotations

import numpy as np
from edgeopt_runtime.errors import CalibrationError
from edgeopt_runtime.spec import TensorSpec

from .layout import fmt_shape
from .preprocessing import Preprocessing, ValueStats


def channel_vector(
    where: str, spec: TensorSpec, pre: Preprocessing, values: tuple[float, ...], what: str
) -> np.ndarray:
    """``mean`` / ``std`` shaped to broadcast over a sample ``[1, ...]`` along the channel axis."""
    if len(values) == 1:
        return np.float32(values[0])
    rank = len(spec.shape)
    axis = 1 if pre.layout == "NCHW" else rank - 1
    channels = spec.shape[axis] if rank >= 2 else None
    if rank < 2 or channels != len(values):
        raise CalibrationError(
            f"{where}: preprocessing {what} has {len(values)} values but input '{spec.name}' "
            f"{fmt_shape(spec.dtype, spec.shape)} has {channels} channels on the {pre.layout} "
            "channel axis: give one value or one per channel"
        )
    shape = [1] * rank
    shape[axis] = len(values)
    return np.asarray(values, dtype=np.float32).reshape(shape)


def to_dtype(where: str, name: str, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast one converted sample to the input dtype; integers are rounded and range-checked."""
    if dtype.kind == "f" or dtype == x.dtype:
        return x.astype(dtype, copy=False)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise CalibrationError(f"{where}: input '{name}' holds NaN or Inf")
        x = np.rint(x)
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    if info is not None and x.size and (x.min() < info.min or x.max() > info.max):
        raise CalibrationError(
            f"{where}: input '{name}' holds values in [{x.min()}, {x.max()}] outside the "
            f"{dtype.name} range [{info.min}, {info.max}]"
        )
    return x.astype(dtype)


class ArrayConverter:
    """Applies optional normalization and the dtype cast to raw array samples."""

    def __init__(
        self, where: str, inputs: list[TensorSpec], preprocessing: Preprocessing | None
    ) -> None:
        self.pre = preprocessing
        # values before preprocessing, per input (filled while ``collect``; see
        # CalibrationSource.statistics)
        self.before: dict[str, ValueStats] = {}
        self.collect = True
        self.dtypes = {s.name: np.dtype(s.dtype) for s in inputs}
        self.norm: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if preprocessing is not None:
            for s in inputs:
                self.norm[s.name] = (
                    channel_vector(where, s, preprocessing, preprocessing.mean, "mean"),
                    channel_vector(where, s, preprocessing, preprocessing.std, "std"),
                )

    def __call__(self, where: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name, x in raw.items():
            if self.pre is not None:
                if self.collect:
                    self.before.setdefault(name, ValueStats()).update(x)
                mean, std = self.norm[name]
                x = (x.astype(np.float32) * np.float32(self.pre.scale) - mean) / std
            out[name] = to_dtype(where, name, x, self.dtypes[name])
        return out
