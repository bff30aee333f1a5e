"""``Recipe``: every quantization choice for one artifact, as a frozen value.

A recipe is what a candidate list, a report row, a build request and a cache key are all made
from (Olive's search space, INC's tuning config). Its values are the strings that appear in
TOML / JSON (``to_dict`` / ``from_dict`` round-trip exactly); ``key()`` is stable across runs
and Python versions (sha256 of the canonical JSON).

Format-specific choices:

* ONNX ``static``: QDQ / QOperator, activation / weight types (U8S8, S8S8), per-channel,
  calibration method, op types to quantize, exclusion presets, keep-float regexes, transforms.
* ONNX ``dynamic``: per-channel, op types (``("MatMul",)`` = the weight MatMuls only), keep-float.
* ONNX ``weight-only``: int8 weights dequantized to float at load (size, not speed).
* TFLite ``int8`` (full integer), ``int16x8``, ``dynamic`` (dynamic range), ``float16``,
  ``float32``: per-channel, keep-float regexes (int8 only).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from edgeopt_runtime.errors import EdgeOptError

from ..targets import (
    CalibrationMethod,
    ExclusionPreset,
    Format,
    OnnxScheme,
    QuantFormat,
    QuantType,
    Scheme,
    TargetProfile,
    TransformName,
)


class RecipeError(EdgeOptError):
    """A recipe is invalid (unknown mode for its format, bad regex, unknown transform, ...)."""


# Modes each format builds, and the artifact precision name each gives (file model_<p>.*).
_MODES: dict[Format, tuple[str, ...]] = {
    Format.ONNX: tuple(s.value for s in OnnxScheme),
    Format.TFLITE: tuple(s.value for s in Scheme),
}
_ONNX_PRECISION = {"static": "int8", "dynamic": "dynamic", "weight-only": "weight-only"}

# Default parameters of each transform, and their allowed ranges (inclusive).
TRANSFORM_PARAMS: dict[TransformName, dict[str, tuple[float, float, float]]] = {
    # alpha: how much of the activation range moves into the weights (SmoothQuant's 0.5)
    TransformName.SMOOTH: {"alpha": (0.5, 0.0, 1.0)},
    # ratio: a channel is an outlier when its calibration max exceeds ratio x the median
    TransformName.OUTLIER_SPLIT: {"ratio": (6.0, 1.5, 1000.0)},
}


@dataclass(frozen=True)
class TransformSpec:
    """One graph transform and its parameters (``{"name": "smooth", "alpha": 0.5}``)."""

    name: TransformName
    params: tuple[tuple[str, float], ...] = ()

    @classmethod
    def make(cls, name: str | TransformName, **params: float) -> TransformSpec:
        """Validated spec with every parameter present (defaults filled in).

        Raises:
            RecipeError: unknown transform or parameter, or a value out of range.
        """
        try:
            tname = TransformName(name)
        except ValueError:
            allowed = ", ".join(t.value for t in TransformName)
            raise RecipeError(f"unknown transform {name!r}; use one of {allowed}") from None
        spec = TRANSFORM_PARAMS[tname]
        bad = set(params) - set(spec)
        if bad:
            raise RecipeError(f"transform {tname.value!r} has no parameter(s) "
                              f"{', '.join(sorted(bad))}; allowed: {', '.join(spec)}")
        values = []
        for key, (default, lo, hi) in spec.items():
            v = params.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                raise RecipeError(f"transform {tname.value!r}: {key} = {v!r} must be a number "
                                  f"in [{lo}, {hi}]")
            values.append((key, float(v)))
        return cls(tname, tuple(values))

    def get(self, key: str) -> float:
        return dict(self.params)[key]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name.value, **dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformSpec:
        if not isinstance(data, dict) or "name" not in data:
            raise RecipeError(f"a transform must be a table with a 'name', got {data!r}")
        rest = {k: v for k, v in data.items() if k != "name"}
        return cls.make(data["name"], **rest)

    def label(self) -> str:
        return f"{self.name.value}({', '.join(f'{k}={v:g}' for k, v in self.params)})"


@dataclass(frozen=True)
class Recipe:
    """All quantization choices for one artifact of one format.

    Fields that do not apply to ``mode`` keep their defaults (``normalized()`` resets them), so
    two recipes that build the same artifact compare and hash equal.
    """

    format: Format
    mode: str  # OnnxScheme value for ONNX, Scheme value for TFLite
    per_channel: bool = True
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    activation_type: QuantType = QuantType.UINT8  # ONNX static
    weight_type: QuantType = QuantType.INT8  # ONNX
    quant_format: QuantFormat = QuantFormat.QDQ  # ONNX static
    reduce_range: bool = False  # ONNX
    op_types: tuple[str, ...] = ()  # ONNX: op types to quantize (empty: ORT's defaults)
    exclude: tuple[ExclusionPreset, ...] = ()  # ONNX static: op-type presets kept float
    keep_float: tuple[str, ...] = ()  # regexes (re.search) on node / tensor names
    transforms: tuple[TransformSpec, ...] = field(default=())  # ONNX, applied in order

    def __post_init__(self) -> None:
        fmt = Format(self.format)
        object.__setattr__(self, "format", fmt)
        if self.mode not in _MODES[fmt]:
            raise RecipeError(f"recipe mode {self.mode!r} is not a {fmt.value} mode; use one of "
                              f"{', '.join(_MODES[fmt])}")
        for pattern in self.keep_float:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise RecipeError(f"keep_float pattern {pattern!r} is not a valid regex: "
                                  f"{exc}") from None
        if fmt is Format.TFLITE and (self.transforms or self.exclude or self.op_types):
            raise RecipeError("TFLite recipes take no transforms, exclusion presets or op "
                              "types (those are ONNX graph choices)")

    # ------------------------------------------------------------------ derived views

    @property
    def precision(self) -> str:
        """The artifact precision name (``model_<precision>.<ext>``)."""
        return _ONNX_PRECISION[self.mode] if self.format is Format.ONNX else self.mode

    @property
    def calibrated(self) -> bool:
        """Whether building this recipe needs calibration data."""
        if self.format is Format.ONNX:
            return self.mode == "static" or bool(self.transforms)
        return self.mode in (Scheme.INT8.value, Scheme.INT16X8.value)

    def keep_float_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.keep_float)

    def normalized(self) -> Recipe:
        """The same recipe with fields that ``mode`` ignores reset to their defaults."""
        d = {f.name: f.default for f in fields(self) if f.name not in ("format", "mode")}
        keep: set[str] = {"per_channel", "keep_float"}
        if self.format is Format.ONNX:
            keep |= {"weight_type", "reduce_range", "transforms"}
            if self.mode == "static":
                keep |= {"calibration_method", "activation_type", "quant_format", "op_types",
                         "exclude"}
            elif self.mode == "dynamic":
                keep |= {"op_types"}
            else:  # weight-only: block-wise int8 weights, no per-channel / reduce-range choice
                keep -= {"per_channel", "reduce_range"}
        elif self.mode not in (Scheme.INT8.value, Scheme.INT16X8.value):
            keep -= {"keep_float"}
            if self.mode != Scheme.DYNAMIC.value:
                keep -= {"per_channel"}
        return replace(self, **{k: v for k, v in d.items() if k not in keep})

    def with_keep_float(self, patterns: tuple[str, ...]) -> Recipe:
        """This recipe with ``patterns`` added to its keep-float set (order kept, no repeats)."""
        return replace(self, keep_float=tuple(dict.fromkeys((*self.keep_float, *patterns))))

    def label(self) -> str:
        """A short human description for report rows (``onnx dynamic pc MatMul +smooth``)."""
        r = self.normalized()
        parts = [r.format.value, r.mode]
        if r.format is Format.ONNX and r.mode == "static":
            parts.append(("U8" if r.activation_type is QuantType.UINT8 else "S8")
                         + ("S8" if r.weight_type is QuantType.INT8 else "U8"))
            parts.append(r.calibration_method.value)
        if r.per_channel and r.mode in ("static", "dynamic", "int8", "int16x8"):
            parts.append("per-channel")
        if r.op_types:
            parts.append("+".join(r.op_types))
        parts += [f"-{e.value}" for e in r.exclude]
        parts += [f"+{t.label()}" for t in r.transforms]
        if r.keep_float:
            parts.append(f"float[{len(r.keep_float)}]")
        return " ".join(parts)

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-ready dict (enum values as their strings), every field present."""
        r = self.normalized()
        return {
            "format": r.format.value,
            "mode": r.mode,
            "per_channel": r.per_channel,
            "calibration_method": r.calibration_method.value,
            "activation_type": r.activation_type.value,
            "weight_type": r.weight_type.value,
            "quant_format": r.quant_format.value,
            "reduce_range": r.reduce_range,
            "op_types": list(r.op_types),
            "exclude": [e.value for e in r.exclude],
            "keep_float": list(r.keep_float),
            "transforms": [t.to_dict() for t in r.transforms],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of ``to_dict``; missing keys take their defaults.

        Raises:
            RecipeError: unknown key, or a value of the wrong kind (the message names it).
        """
        if not isinstance(data, dict):
            raise RecipeError(f"a recipe must be a table, got {type(data).__name__}")
        allowed = {f.name for f in fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise RecipeError(f"unknown recipe key(s) {', '.join(sorted(unknown))}; allowed: "
                              f"{', '.join(sorted(allowed))}")
        for key in ("format", "mode"):
            if key not in data:
                raise RecipeError(f"a recipe needs {key!r}")
        kw: dict[str, Any] = {}
        enums = {"format": Format, "calibration_method": CalibrationMethod,
                 "activation_type": QuantType, "weight_type": QuantType,
                 "quant_format": QuantFormat}
        for key, value in data.items():
            if key in enums:
                kw[key] = _enum(enums[key], key, value)
            elif key in ("per_channel", "reduce_range"):
                if not isinstance(value, bool):
                    raise RecipeError(f"recipe {key} must be true or false, got {value!r}")
                kw[key] = value
            elif key == "exclude":
                kw[key] = tuple(_enum(ExclusionPreset, key, v) for v in _strings(key, value))
            elif key in ("op_types", "keep_float"):
                kw[key] = tuple(_strings(key, value))
            elif key == "transforms":
                if not isinstance(value, list):
                    raise RecipeError("recipe transforms must be a list of tables")
                kw[key] = tuple(TransformSpec.from_dict(t) for t in value)
            else:
                kw[key] = str(value)
        return cls(**kw).normalized()

    def key(self) -> str:
        """Stable cache key: 16 hex digits of sha256 over the canonical JSON of ``to_dict``."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ from a profile

    @classmethod
    def from_profile(cls, profile: TargetProfile, fmt: str, precision: str,
                     calibration_method: CalibrationMethod | None = None,
                     keep_float: tuple[str, ...] = ()) -> Recipe:
        """The recipe ``convert`` builds for ``profile``'s ``precision`` artifact of ``fmt``
        (the profile's TOML choices, ``--calib-method`` and ``--keep-float`` applied)."""
        method = calibration_method or profile.quantization.calibration_method
        if Format(fmt) is Format.TFLITE:
            return cls(Format.TFLITE, precision, per_channel=profile.quantization.per_channel,
                       calibration_method=method, keep_float=keep_float).normalized()
        spec = profile.onnx
        mode = {"int8": "static", "dynamic": "dynamic", "weight-only": "weight-only"}[precision]
        return cls(
            Format.ONNX, mode, per_channel=profile.quantization.per_channel,
            calibration_method=method, activation_type=spec.activation_type,
            weight_type=spec.weight_type, quant_format=spec.quant_format,
            reduce_range=spec.reduce_range, keep_float=keep_float,
        ).normalized()


def _enum(cls: type, key: str, value: Any) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(e.value) for e in cls)
        raise RecipeError(f"recipe {key} = {value!r} is not valid; use one of {allowed}") from None


def _strings(key: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise RecipeError(f"recipe {key} must be a list of strings, got {value!r}")
    return list(value)
