"""Training / validation data for compression: read through edgeopt's calibration readers (the
same formats, checks and hashes as ``--calib``), then held in memory as arrays, because
fine-tuning makes many shuffled passes.

Memory: ``samples x input size`` per input (the digits set: 1,297 x 1 KiB). ``MAX_SAMPLES``
bounds it; a larger set is subsampled (seeded) with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeopt_runtime.errors import CalibrationError
from edgeopt_runtime.spec import TensorSpec

MAX_SAMPLES = 50_000


@dataclass
class Dataset:
    """Samples stacked per input (sample axis first), labels if the file has them."""

    path: Path
    inputs: list[np.ndarray]
    names: list[str]
    labels: np.ndarray | None
    sha256: str
    format: str
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.inputs[0].shape[0])

    def feeds(self, i: int) -> dict[str, np.ndarray]:
        """Sample ``i`` as a runtime feed dict (batch dim 1)."""
        return {n: x[i:i + 1] for n, x in zip(self.names, self.inputs, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "count": self.count, "sha256": self.sha256,
                "format": self.format,
                "labels": int(len(self.labels)) if self.labels is not None else None,
                "notes": list(self.notes)}


def load_dataset(path: str | Path | None, inputs: tuple[TensorSpec, ...], role: str,
                 seed: int = 0, max_samples: int = MAX_SAMPLES) -> Dataset:
    """Read ``path`` for the model's inputs.

    Raises:
        CalibrationError: no path, or data that does not fit the model (one line).
    """
    from ..calibration import open_calibration

    if path is None:
        raise CalibrationError(
            f"no {role} data: pass --data PATH (.npz, .npy, image folder or folder of arrays "
            "shaped like the model inputs; labels optional)"
        )
    src = open_calibration(path, list(inputs), num=max_samples, seed=seed)
    names = [s.name for s in inputs]
    stacks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for sample in src:
        for n in names:
            stacks[n].append(sample[n])
    arrays = [np.concatenate(stacks[n]) for n in names]
    notes = [f"{role}: {w}" for w in src.warnings]
    if src.count >= max_samples:
        notes.append(f"{role}: used a seeded random subset of {max_samples} samples")
    labels = None if src.labels is None else np.asarray(src.labels).reshape(src.count, -1)
    if labels is not None:
        labels = _class_ids(labels, Path(path))
    return Dataset(Path(path), arrays, names, labels, src.sha256, src.format, notes)


def _class_ids(labels: np.ndarray, path: Path) -> np.ndarray | None:
    """Integer class ids [N] (one-hot rows become their argmax); None for other targets."""
    if labels.shape[1] > 1:
        return labels.argmax(axis=1).astype(np.int64)
    flat = labels.reshape(-1)
    if not np.all(np.isfinite(flat)) or not np.all(flat == np.round(flat)) or flat.min() < 0:
        raise CalibrationError(
            f"{path}: labels must be integer class ids >= 0 (or one-hot rows); got values like "
            f"{flat[:3].tolist()}"
        )
    return flat.astype(np.int64)
