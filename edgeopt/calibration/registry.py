"""The calibration reader interface and its registry (readers register by name)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from edgeopt_runtime.spec import TensorSpec

from ..limits import CalibrationLimits
from .preprocessing import Preprocessing


class CalibrationReader(ABC):
    """Reads raw samples from one kind of storage. Subclasses register with ``register_reader``.

    The constructor checks shapes and dtypes from headers only (no sample data read) and sets
    ``count`` (available samples), ``labels`` (all of them, or None) and ``warnings``; sizes a
    header declares are checked against ``limits`` before anything is read.
    """

    name: ClassVar[str]

    def __init__(
        self,
        path: Path,
        display: str,
        inputs: list[TensorSpec],
        preprocessing: Preprocessing | None,
        *,
        limits: CalibrationLimits | None = None,
    ) -> None:
        self.path, self.display, self.inputs = path, display, inputs
        self.preprocessing = preprocessing
        self.limits = limits or CalibrationLimits()
        self.count = 0
        self.labels: np.ndarray | None = None
        self.warnings: list[str] = []
        self._open()

    @abstractmethod
    def _open(self) -> None:
        """Read and check the headers, set ``count`` / ``labels`` (subclasses; called last by
        ``__init__``, so every reader shares the one constructor signature).

        Raises:
            CalibrationError: headers that cannot feed the model inputs, or over ``limits``.
        """

    @classmethod
    @abstractmethod
    def matches(cls, path: Path) -> bool:
        """Whether this reader handles ``path`` (cheap: suffix or a directory listing)."""

    @abstractmethod
    def read(self, indices: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """Yield ``(where, raw arrays)`` for the given sorted sample indices, one at a time.

        ``where`` names the file and sample for messages; the raw arrays are what gets hashed.
        """

    @abstractmethod
    def convert(self, where: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Turn one raw sample into model input (batch dim 1, the input's dtype)."""

    def manifest_preprocessing(self) -> dict[str, Any] | None:
        """The preprocessing as applied (resolved defaults), for the manifest."""
        return self.preprocessing.to_dict() if self.preprocessing else None

    def values_before(self, collect: bool) -> dict[str, Any]:
        """Per input, ``ValueStats`` of the values preprocessing was applied to (decoded pixels,
        raw arrays) so far; empty when none was applied. ``collect=False`` stops collecting
        (after the validating pass)."""
        return {}


_READERS: dict[str, type[CalibrationReader]] = {}


def register_reader(cls: type[CalibrationReader]) -> type[CalibrationReader]:
    """Class decorator: register a reader under ``cls.name``.

    Raises:
        ValueError: a reader with that name is already registered.
    """
    if cls.name in _READERS:
        raise ValueError(
            f"calibration reader {cls.name!r} is already registered "
            f"({_READERS[cls.name].__qualname__})"
        )
    _READERS[cls.name] = cls
    return cls


def reader_names() -> list[str]:
    """Names of the registered calibration readers (valid ``format=`` values)."""
    return sorted(_READERS)


def registered() -> dict[str, type[CalibrationReader]]:
    """Name -> reader class, for every registered reader (a copy)."""
    return dict(_READERS)
