"""What every array file reader shares: one ``.npy`` / ``.npz`` file's columns (one per model
input), its sample count and labels; and the directory listing the folder readers use."""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from edgeopt_runtime.errors import CalibrationError

from ...limits import CalibrationLimits, human_bytes
from ..layout import Column, fmt_shape


class ArrayFile(ABC):
    """One .npy or .npz file: its columns (one per model input), sample count and labels."""

    def __init__(self, path: Path, where: str, limits: CalibrationLimits) -> None:
        self.path, self.where, self.limits = path, where, limits
        self.columns: list[Column] = []
        self.labels: np.ndarray | None = None
        self.warnings: list[str] = []

    @property
    def n(self) -> int:
        counts = {c.n for c in self.columns}
        return counts.pop() if len(counts) == 1 else 0

    def _check_counts(self) -> None:
        counts = {c.key: c.n for c in self.columns}
        if self.labels is not None:
            counts["labels"] = len(self.labels)
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"'{k}' {v}" for k, v in counts.items())
            raise CalibrationError(
                f"{self.where}: arrays hold different sample counts ({listed}); "
                "every array needs one row per sample"
            )
        if self.n == 0:
            raise CalibrationError(f"{self.where}: no samples (the arrays have 0 rows)")
        sample = sum(math.prod(c.row_shape) * c.dtype.itemsize for c in self.columns)
        if sample > self.limits.max_sample_bytes:
            raise CalibrationError(
                f"{self.where}: one sample is {human_bytes(sample)} "
                f"({', '.join(fmt_shape(c.dtype, c.row_shape) for c in self.columns)}), over the "
                f"limit of {human_bytes(self.limits.max_sample_bytes)} per sample: is the first "
                "axis the sample axis? (EDGEOPT_CALIB_MAX_SAMPLE_BYTES raises the limit)"
            )

    def check_whole(self, key: str, nbytes: int, why: str) -> None:
        """Refuse to read an array whole (``why``) when it declares more than the limit."""
        if nbytes > self.limits.max_whole_bytes:
            raise CalibrationError(
                f"{self.where}: array '{key}' declares {human_bytes(nbytes)}, and {why} it would "
                f"be read whole: over the limit of {human_bytes(self.limits.max_whole_bytes)}"
            )

    @abstractmethod
    def read(self, rows: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """Yield ``(where, raw)`` for sorted local row indices."""


def listing(path: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Names of non-hidden files directly in ``path`` with one of ``suffixes``, sorted.

    Plain names, not Path objects: a listing of many thousand files stays small.
    """
    with os.scandir(path) as entries:
        return sorted(
            e.name
            for e in entries
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in suffixes
            and e.is_file()
        )
