"""Array readers: one ``.npz`` / ``.npy`` file, or a directory of them, indexed across files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from edgeopt_runtime.errors import CalibrationError

from ..registry import CalibrationReader, register_reader
from ..values import ArrayConverter
from .files import ArrayFile, listing
from .npy import NpyFile
from .npz import NpzFile

ARRAY_SUFFIXES = (".npy", ".npz")


_FILE_KINDS: dict[str, type[ArrayFile]] = {".npy": NpyFile, ".npz": NpzFile}


class _ArrayReader(CalibrationReader):
    """Samples from one or more ``.npy`` / ``.npz`` files, indexed across files in order."""

    def _open(self) -> None:
        inputs, preprocessing, display = self.inputs, self.preprocessing, self.display
        self.files = [
            _FILE_KINDS[p.suffix.lower()](p, w, inputs, preprocessing, self.limits)
            for p, w in self._files()
        ]
        self.starts = np.cumsum([0] + [f.n for f in self.files])
        self.count = int(self.starts[-1])
        for f in self.files:
            self.warnings.extend(f.warnings)
        self.labels = self._gather_labels()
        self._convert = ArrayConverter(display, inputs, preprocessing)

    def _files(self) -> list[tuple[Path, str]]:
        return [(self.path, self.display)]

    def _gather_labels(self) -> np.ndarray | None:
        have = [f.labels is not None for f in self.files]
        if not any(have):
            return None
        if not all(have):
            self.warnings.append(
                f"{self.display}: only {sum(have)} of {len(have)} files hold "
                "labels; labels are ignored"
            )
            return None
        try:
            return np.concatenate([f.labels for f in self.files])
        except ValueError as exc:
            raise CalibrationError(
                f"{self.display}: labels differ in shape across files ({exc})"
            ) from None

    def read(self, indices: np.ndarray) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        cuts = np.searchsorted(indices, self.starts)
        for k, f in enumerate(self.files):
            local = indices[cuts[k] : cuts[k + 1]] - self.starts[k]
            if len(local):
                yield from f.read(local)

    def convert(self, where: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._convert(where, raw)

    def values_before(self, collect: bool) -> dict:
        """Statistics of the values before preprocessing (empty without preprocessing); stop
        collecting with ``collect=False``."""
        self._convert.collect = collect
        return self._convert.before

    @classmethod
    def matches(cls, path: Path) -> bool:
        """A single file whose suffix is the reader's name (``.npz`` / ``.npy``)."""
        return path.is_file() and path.suffix.lower() == f".{cls.name}"


@register_reader
class NpzReader(_ArrayReader):
    """``.npz``: one array per input (named after it), optional ``labels`` / ``y``."""

    name = "npz"


@register_reader
class NpyReader(_ArrayReader):
    """``.npy``: one array, for single-input models."""

    name = "npy"


@register_reader
class ArrayDirReader(_ArrayReader):
    """A directory of ``.npy`` / ``.npz`` files (one or more samples each), in name order."""

    name = "array-dir"

    @classmethod
    def matches(cls, path: Path) -> bool:
        return path.is_dir() and bool(listing(path, ARRAY_SUFFIXES))

    def _files(self) -> list[tuple[Path, str]]:
        return [
            (self.path / name, os.path.join(self.display, name))
            for name in listing(self.path, ARRAY_SUFFIXES)
        ]
