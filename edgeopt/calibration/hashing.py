"""The calibration hash: what the manifest's ``calibration.sha256`` is a hash of.

It covers the selected samples' raw bytes (before preprocessing), their shapes and dtypes, the
sample count and the preprocessing, and nothing about where the data came from (no paths, no
mtimes): the same samples in an ``.npy``, an ``.npz`` or a folder of files hash the same.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

HASH_SCHEMA = b"edgeopt.calibration/1"


class SampleHasher:
    """Incremental sha256 over one pass of raw samples (schema ``edgeopt.calibration/1``)."""

    def __init__(self, count: int, preprocessing: dict[str, Any] | None) -> None:
        self._h = hashlib.sha256(HASH_SCHEMA)
        self._h.update(
            json.dumps({"count": count, "preprocessing": preprocessing}, sort_keys=True).encode()
        )

    def update(self, raw: dict[str, np.ndarray]) -> None:
        """Add one raw sample (``{input name: array}``, hashed in name order)."""
        for name in sorted(raw):
            x = np.ascontiguousarray(raw[name])
            self._h.update(f"{name}|{x.dtype.str}|{x.shape}|".encode())
            self._h.update(x.data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()
