"""Quantize backends: one object per output format, registered by name.

A backend turns a ``ModelSource`` into model files for one target profile: the float reference
(``build_float``) and the artifacts the profile asks for (``build``). Backends import their
frameworks inside their methods; ``get_backend`` imports a backend module on first use.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..recipes import Recipe
from ..sources import ModelSource
from ..targets import CalibrationMethod, TargetProfile

# One calibration sample: {input_name: array with a leading batch dim of 1}.
Sample = Mapping[str, np.ndarray]
Shapes = dict[str, tuple[int | None, ...]]


@dataclass(frozen=True)
class BuildRequest:
    """Everything a backend needs to produce one model file.

    ``calib`` must be re-iterable (each ``iter()`` starts again): a ``CalibrationSource`` or a
    list of samples. ``input_shapes`` are the source's input shapes after the profile's shape
    rules (static targets get concrete dims).
    """

    source: ModelSource
    profile: TargetProfile
    precision: str
    input_shapes: Shapes
    workdir: Path
    out_path: Path
    calib: Iterable[Sample] | None = None
    calib_method: CalibrationMethod = CalibrationMethod.MINMAX
    keep_float: tuple[re.Pattern[str], ...] = ()
    rewrites: tuple[str, ...] = ()  # e.g. ("edgetpu",): exact op rewrites (ONNX sources)
    # Every quantization choice as one value. None: the profile's choices for ``precision``
    # with ``calib_method`` and ``keep_float`` (what ``convert`` builds); see ``resolved``.
    recipe: Recipe | None = None

    def resolved(self, fmt: str) -> Recipe:
        """The recipe this request builds in format ``fmt``."""
        if self.recipe is not None:
            return self.recipe
        return Recipe.from_profile(self.profile, fmt, self.precision, self.calib_method,
                                   tuple(p.pattern for p in self.keep_float))


@dataclass
class Built:
    """One produced model file and what the backend learned while making it."""

    path: Path
    format: str
    precision: str
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # The float model the quantizer read (ONNX: after transforms and ORT's pre-processing), in
    # the request's workdir; the tuning loop's per-layer signal compares against it.
    float_model: Path | None = None
    # the float model this one was quantized from, when it is not ``build_float``'s (ONNX
    # sources through onnx2tf: the float TFLite of the converted graph)
    float_path: Path | None = None


class Backend(Protocol):
    """What the pipeline needs from a quantize backend."""

    name: str  # the output format: "tflite" | "onnx"
    extension: str  # ".tflite" | ".onnx"

    def refuses(self, source: ModelSource) -> str | None:
        """Why this backend cannot take ``source`` (None when it can)."""
        ...

    def precisions(self, profile: TargetProfile) -> list[str]:
        """Precisions the profile asks for from this backend, primary first."""
        ...

    def build_float(self, source: ModelSource, input_shapes: Shapes, workdir: Path) -> Path:
        """The unquantized model in this format (the latency / drift reference)."""
        ...

    def build(self, req: BuildRequest) -> Built:
        """Produce ``req.out_path`` in ``req.precision`` for ``req.profile``."""
        ...


_BACKENDS: dict[str, Backend] = {}
_MODULES = {"tflite": "edgeopt.backends.tflite", "onnx": "edgeopt.backends.onnx"}


def register_backend(backend: Backend) -> None:
    """Register ``backend`` under ``backend.name``.

    Raises:
        ValueError: a backend of that name is already registered (a programming error).
    """
    if backend.name in _BACKENDS:
        raise ValueError(f"quantize backend {backend.name!r} is already registered")
    _BACKENDS[backend.name] = backend


def get_backend(name: str) -> Backend:
    """The backend producing format ``name``, importing its module on first use.

    Raises:
        KeyError: no backend produces that format.
    """
    if name not in _BACKENDS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    return _BACKENDS[name]


def matching(names: Iterable[str], patterns: tuple[re.Pattern[str], ...]) -> list[str]:
    """Names (tensor or node names) that any ``--keep-float`` pattern finds (``re.search``)."""
    return [n for n in names if any(p.search(n) for p in patterns)]


def keep_float_names(names: Iterable[str], recipe: Recipe, details: dict[str, Any]) -> list[str]:
    """The ``names`` the recipe's keep-float patterns match, recorded in ``details``
    (``keep_float``; ``keep_float_unmatched`` when patterns were given but none matched)."""
    patterns = recipe.keep_float_patterns()
    matched = matching(names, patterns)
    if patterns:
        details["keep_float"] = matched
        if not matched:
            details["keep_float_unmatched"] = list(recipe.keep_float)
    return matched
