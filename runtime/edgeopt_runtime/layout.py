"""Tensor layouts: feed a TFLite model converted from an NCHW (PyTorch / ONNX) source in the
source's layout.

onnx2tf turns NCHW inputs and outputs into NHWC. The manifest records, per converted tensor,
``"layout": {"source": "NCHW", "model": "NHWC", "perm": [0, 2, 3, 1]}`` in its IO spec
(``model_array = source_array.transpose(perm)``; ``shape`` stays the model file's own). A
``Model`` with layouts then shows its ``inputs`` / ``outputs`` in the source layout, takes
source-layout feeds and returns source-layout outputs, so the same app code feeds the ONNX
artifact and the TFLite one; ``run(..., raw=True)`` passes the model's own layout (and its
integers) untouched. The batch axis must stay first (``perm[0] == 0``), so ``run_batch`` splits
the same axis in both layouts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError, ModelLoadError
from .spec import TensorSpec

LAYOUT_KEY = "layout"
_NAME = re.compile(r"^[A-Z]{1,8}$")
_SOURCE_NAMES = {3: "NCW", 4: "NCHW", 5: "NCDHW"}
_MODEL_NAMES = {3: "NWC", 4: "NHWC", 5: "NDHWC"}


@dataclass(frozen=True)
class Layout:
    """How one tensor's source layout maps to the model's: ``model = source.transpose(perm)``."""

    source: str
    model: str
    perm: tuple[int, ...]

    @property
    def inverse(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.argsort(self.perm))

    def source_shape(self, model_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(model_shape[i] for i in self.inverse)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "model": self.model, "perm": list(self.perm)}

    @classmethod
    def from_dict(cls, d: Any, rank: int, where: str) -> Layout:
        """Parse and check a manifest ``layout`` block for a tensor of ``rank``.

        Raises:
            ModelLoadError: not an object, names that are not short upper-case words, or a
                ``perm`` that is not a permutation of ``range(rank)`` keeping axis 0 first.
        """
        if not isinstance(d, Mapping):
            raise ModelLoadError(f"{where}: layout must be an object, got {type(d).__name__}")
        src, model, perm = d.get("source"), d.get("model"), d.get("perm")
        if not (isinstance(src, str) and isinstance(model, str) and _NAME.match(src)
                and _NAME.match(model)):
            raise ModelLoadError(f"{where}: layout source/model must be layout names like "
                                 f"'NCHW', got {src!r} / {model!r}")
        if (not isinstance(perm, list) or len(perm) != rank
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in perm)
                or sorted(perm) != list(range(rank)) or perm[0] != 0):
            raise ModelLoadError(f"{where}: layout perm {perm!r} must be a permutation of "
                                 f"0..{rank - 1} that keeps the batch axis 0 first")
        return cls(src, model, tuple(perm))


def channels_last(rank: int) -> Layout | None:
    """The NC... -> N...C layout onnx2tf uses for a tensor of ``rank`` (None below rank 3)."""
    if rank < 3:
        return None
    perm = (0, *range(2, rank), 1)
    return Layout(_SOURCE_NAMES.get(rank, "NC" + "X" * (rank - 2)),
                  _MODEL_NAMES.get(rank, "N" + "X" * (rank - 2) + "C"), perm)


def infer(source_shape: Sequence[int | None], model_shape: Sequence[int | None]) -> Layout | None:
    """The layout that turns ``source_shape`` into ``model_shape``: None when they are equal,
    channels-last when that explains the change.

    Raises:
        ValueError: neither explains it (the caller reports which tensor).
    """
    src, mod = list(source_shape), list(model_shape)
    if src == mod:
        return None
    cl = channels_last(len(src))
    if cl is not None and len(mod) == len(src) and [src[i] for i in cl.perm] == mod:
        return cl
    raise ValueError(f"shape {src} does not become {mod} by identity or channels-last")


class IOLayouts:
    """The layouts of a model's inputs and outputs, aligned with their order (None = as is)."""

    def __init__(self, inputs: Sequence[Layout | None], outputs: Sequence[Layout | None]) -> None:
        self.inputs = list(inputs)
        self.outputs = list(outputs)

    @classmethod
    def from_specs(
        cls, declared_inputs: Sequence[Any], declared_outputs: Sequence[Any],
        inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], where: str,
    ) -> IOLayouts | None:
        """Layouts from manifest IO specs (dicts with an optional ``layout``), matched to the
        model's ``inputs`` / ``outputs`` by name. None when no tensor has one.

        Raises:
            ModelLoadError: a malformed layout block.
        """
        def pick(declared: Sequence[Any], specs: Sequence[TensorSpec]) -> list[Layout | None]:
            by_name = {d.get("name"): d.get(LAYOUT_KEY) for d in declared
                       if isinstance(d, Mapping) and d.get(LAYOUT_KEY) is not None}
            return [Layout.from_dict(by_name[s.name], len(s.shape), f"{where}: '{s.name}'")
                    if s.name in by_name else None for s in specs]

        found = cls(pick(declared_inputs, inputs), pick(declared_outputs, outputs))
        return found if any(found.inputs) or any(found.outputs) else None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], inputs: Sequence[TensorSpec],
                  outputs: Sequence[TensorSpec]) -> IOLayouts | None:
        """From ``{"inputs": {name: layout}, "outputs": {name: layout}}`` (converter details)."""
        return cls.from_specs(
            [{"name": k, LAYOUT_KEY: v} for k, v in (d.get("inputs") or {}).items()],
            [{"name": k, LAYOUT_KEY: v} for k, v in (d.get("outputs") or {}).items()],
            inputs, outputs, "layouts")

    def source_specs(self, specs: Sequence[TensorSpec], which: str) -> list[TensorSpec]:
        """``specs`` as the source layout sees them (shapes permuted back)."""
        layouts = self.inputs if which == "inputs" else self.outputs
        return [s if lay is None else TensorSpec(s.name, lay.source_shape(s.shape), s.dtype,
                                                  s.quantization)
                for s, lay in zip(specs, layouts, strict=True)]

    def to_model(self, arrays: Sequence[np.ndarray],
                 source: Sequence[TensorSpec]) -> list[np.ndarray]:
        """Source-layout feeds -> the model's layout (checked against the source shapes).

        Raises:
            InputError: rank or shape differs from the source layout's.
        """
        out = []
        for a, lay, spec in zip(arrays, self.inputs, source, strict=True):
            if lay is None:
                out.append(a)
                continue
            if a.ndim != len(lay.perm) or any(
                w is not None and w != g for w, g in zip(spec.shape, a.shape, strict=True)
            ):
                raise InputError(
                    f"input '{spec.name}': expected shape {spec.shape_str()} ({lay.source}, the "
                    f"source model's layout), got {list(a.shape)}; raw=True feeds the model's "
                    f"own {lay.model} layout"
                )
            out.append(np.ascontiguousarray(a.transpose(lay.perm)))
        return out

    def to_source(self, results: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Model-layout outputs -> the source layout."""
        return [r if lay is None else np.ascontiguousarray(r.transpose(lay.inverse))
                for r, lay in zip(results, self.outputs, strict=True)]

    def to_dict(self, inputs: Sequence[TensorSpec],
                outputs: Sequence[TensorSpec]) -> dict[str, dict[str, Any]]:
        return {
            "inputs": {s.name: lay.to_dict() for s, lay in zip(inputs, self.inputs, strict=True)
                       if lay is not None},
            "outputs": {s.name: lay.to_dict()
                        for s, lay in zip(outputs, self.outputs, strict=True) if lay is not None},
        }


def annotate(specs: Sequence[dict[str, Any]],
             layouts: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Manifest IO spec dicts with each tensor's ``layout`` added (by name)."""
    return [{**s, LAYOUT_KEY: dict(layouts[s["name"]])} if s.get("name") in layouts else dict(s)
            for s in specs]
