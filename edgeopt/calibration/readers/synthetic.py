"""Synthetic calibration data (``--allow-synthetic``): seeded random samples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from edgeopt_runtime.errors import CalibrationError
from edgeopt_runtime.spec import TensorSpec

from ..layout import fmt_shape
from ..registry import CalibrationReader


class SyntheticReader(CalibrationReader):
    """Seeded random samples matching the specs: floats uniform in [0, 1), int8 in [-128, 127],
    other integers in [0, 255], booleans fair coins. Sample i depends only on (seed, i)."""

    name = "synthetic"

    def __init__(self, inputs: list[TensorSpec], count: int, seed: int) -> None:
        super().__init__(Path("."), "synthetic", inputs, None)
        self.count, self.seed = count, seed
        dynamic = [s for s in inputs if s.is_dynamic and None in s.shape[1:]]
        if dynamic:
            raise CalibrationError(
                f"synthetic calibration needs static shapes but input '{dynamic[0].name}' is "
                f"{fmt_shape(dynamic[0].dtype, dynamic[0].shape)}: pass --calib PATH with real data"
            )
        self.warnings.append(
            "synthetic calibration data: quantization ranges will not reflect "
            "real inputs; pass --calib PATH for a deployable model"
        )

    def _open(self) -> None:
        pass  # nothing stored to check: the samples are generated

    @classmethod
    def matches(cls, path: Path) -> bool:
        return False

    def read(self, indices: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        for i in indices:
            rng = np.random.default_rng((self.seed, int(i)))
            yield f"synthetic: sample {int(i)}", {s.name: self._sample(rng, s) for s in self.inputs}

    @staticmethod
    def _sample(rng: np.random.Generator, spec: TensorSpec) -> np.ndarray:
        shape, dtype = (1, *spec.shape[1:]), np.dtype(spec.dtype)
        if dtype.kind == "f":
            return rng.random(shape, dtype=np.float32).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(bool)
        lo, hi = (-128, 127) if dtype == np.int8 else (0, 255)
        return rng.integers(lo, hi, shape, endpoint=True).astype(dtype)

    def convert(self, where: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return raw
