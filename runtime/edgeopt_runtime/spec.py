"""Tensor descriptions and the exact integer quantization helpers.

``TensorSpec`` is shared by the runtime (model IO), the manifest and the converter (source model
signature), so all three describe tensors the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Integer ranges of the quantized dtypes the runtime converts to and from.
_INT_RANGES = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "int32": (-(2**31), 2**31 - 1),
}


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization: ``real = (q - zero_point) * scale`` (per tensor or per channel)."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None  # channel axis for per-channel params, None for per-tensor

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1

    def to_dict(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "axis": self.axis}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> QuantParams | None:
        if not d or not d.get("scale"):
            return None
        return cls(
            scale=tuple(float(s) for s in d["scale"]),
            zero_point=tuple(int(z) for z in d.get("zero_point") or [0] * len(d["scale"])),
            axis=d.get("axis"),
        )


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (``None`` marks a dynamic dimension), numpy dtype name and quantization."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    quantization: QuantParams | None = None

    @property
    def is_dynamic(self) -> bool:
        return any(d is None for d in self.shape)

    @property
    def is_quantized(self) -> bool:
        return self.quantization is not None and self.dtype in _INT_RANGES

    def shape_str(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": [d if d is not None else None for d in self.shape],
            "dtype": self.dtype,
            "dynamic_dims": [i for i, d in enumerate(self.shape) if d is None],
            "quantization": self.quantization.to_dict() if self.quantization else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(
            name=str(d["name"]),
            shape=tuple(
                None if x is None or (isinstance(x, int) and x < 0) else int(x) for x in d["shape"]
            ),
            dtype=str(d["dtype"]),
            quantization=QuantParams.from_dict(d.get("quantization")),
        )

    def __str__(self) -> str:
        q = ""
        if self.quantization:
            if self.quantization.per_channel:
                q = f" per-channel(axis={self.quantization.axis})"
            else:
                q = f" scale={self.quantization.scale[0]:.6g} zp={self.quantization.zero_point[0]}"
        return f"{self.name}: {self.dtype}{self.shape_str()}{q}"


def _broadcast(params: QuantParams, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    scale = np.asarray(params.scale, dtype=np.float32)
    zp = np.asarray(params.zero_point, dtype=np.float32)
    if params.per_channel and params.axis is not None:
        shape = [1] * ndim
        shape[params.axis] = -1
        return scale.reshape(shape), zp.reshape(shape)
    return scale[0], zp[0]


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties away from zero (TFLite's QUANTIZE op, std::round)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize(x: np.ndarray, params: QuantParams, dtype: str, *, ties: str = "away") -> np.ndarray:
    """Quantize a float array to ``dtype``: round to nearest, saturating to the dtype's range.

    Args:
        x: float array.
        params: scale / zero point (per tensor, or per channel along ``params.axis``).
        dtype: target integer dtype name (``int8``, ``uint8``, ``int16``, ``int32``).
        ties: ``"away"`` (TFLite, ties away from zero) or ``"even"`` (ONNX QuantizeLinear).
    """
    lo, hi = _INT_RANGES[dtype]
    scale, zp = _broadcast(params, np.ndim(x))
    v = np.asarray(x, dtype=np.float32) / scale
    v = np.rint(v) if ties == "even" else round_half_away(v)
    return np.clip(v + zp, lo, hi).astype(dtype)


def dequantize(q: np.ndarray, params: QuantParams) -> np.ndarray:
    """``(q - zero_point) * scale`` as float32."""
    scale, zp = _broadcast(params, np.ndim(q))
    return ((np.asarray(q, dtype=np.float32) - zp) * scale).astype(np.float32, copy=False)


class Quantizer:
    """Repeated quantization of one tensor, as ``quantize`` but without per-call allocations.

    Per-tensor parameters are kept as float32 scalars and the float / integer buffers are reused
    while the shape stays the same, so a 224x224x3 input costs a few passes over memory instead
    of a dozen temporaries (page faults dominate fresh large allocations). The integer array it
    returns is overwritten by the next call: hand it to the interpreter, don't keep it.
    """

    def __init__(self, params: QuantParams, dtype: str, *, ties: str = "away") -> None:
        self.params, self.dtype, self.ties = params, dtype, ties
        self._lo, self._hi = (np.float32(v) for v in _INT_RANGES[dtype])
        self._scale = np.float32(params.scale[0])
        self._zp = np.float32(params.zero_point[0])
        self._shape: tuple[int, ...] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.params.per_channel:
            return quantize(x, self.params, self.dtype, ties=self.ties)
        if x.shape != self._shape:
            self._buf = np.empty(x.shape, np.float32)
            self._tmp = np.empty(x.shape, np.float32)
            self._out = np.empty(x.shape, self.dtype)
            self._shape = x.shape
        buf = self._buf
        if x.dtype != np.float32:
            np.copyto(buf, x, casting="same_kind")  # float32 first, as the engine would see it
            np.divide(buf, self._scale, out=buf)
        else:
            np.divide(x, self._scale, out=buf)
        if self.ties == "even":
            np.rint(buf, out=buf)
        else:  # half away from zero: trunc(v + copysign(0.5, v))
            np.copysign(np.float32(0.5), buf, out=self._tmp)
            np.add(buf, self._tmp, out=buf)
            np.trunc(buf, out=buf)
        np.add(buf, self._zp, out=buf)
        np.clip(buf, self._lo, self._hi, out=buf)
        np.copyto(self._out, buf, casting="unsafe")
        return self._out


class Dequantizer:
    """Repeated dequantization of one output: ``(q - zero_point) * scale`` in two passes."""

    def __init__(self, params: QuantParams) -> None:
        self.params = params
        self._scale = np.float32(params.scale[0])
        self._zp = np.float32(params.zero_point[0])

    def __call__(self, q: np.ndarray) -> np.ndarray:
        if self.params.per_channel:
            return dequantize(q, self.params)
        # A new array (it is returned to callers); out= keeps a 0-d output an array, not a
        # numpy scalar (a scalar int16 output made np.multiply(out=...) raise TypeError).
        out = np.subtract(q, self._zp, dtype=np.float32, out=np.empty(np.shape(q), np.float32))
        np.multiply(out, self._scale, out=out)
        return out


MAX_SHAPE_DIM = 2**31 - 1  # a dimension the engines can index


def parse_input_shapes(
    items: Any, specs: Any = None, *, option: str = "--input-shape"
) -> dict[str, tuple[int, ...]]:
    """``["image=1,224,224,3", ...]`` -> ``{"image": (1, 224, 224, 3)}``, checked against the
    model inputs ``specs`` when given (TFLite ``benchmark_model --input_layer_shape``, ORT
    ``perf_test -f``, Polygraphy ``--input-shapes``). The converter's CLI and the runtime's
    profiler share this parser.

    ``1,224,224,3`` without a name is allowed for a model with one input (needs ``specs``).

    Raises:
        InputError: malformed item, a name given twice or not an input, a rank that differs,
            or a dim that contradicts a fixed dim of the model.
    """
    from .errors import InputError

    specs = list(specs) if specs is not None else None
    by_name = {s.name: s for s in specs} if specs is not None else None
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims_text = str(item).rpartition("=")
        if not sep:
            if specs is None or len(specs) != 1:
                known = ", ".join(s.name for s in specs) if specs else "the input names"
                raise InputError(f"{option} {item!r}: expected NAME=D0,D1,... (inputs: {known})")
            name, dims_text = specs[0].name, item
        name = name.strip()
        try:
            dims = tuple(int(d) for d in dims_text.split(","))
        except ValueError:
            raise InputError(
                f"{option} {item!r}: expected NAME=D0,D1,... with integer dims, e.g. "
                "image=1,224,224,3") from None
        if not name or not dims or any(not 1 <= d <= MAX_SHAPE_DIM for d in dims):
            raise InputError(f"{option} {item!r}: expected NAME=D0,D1,... with dims >= 1")
        if name in out:
            raise InputError(f"{option}: input {name!r} given twice")
        if by_name is not None:
            spec = by_name.get(name)
            if spec is None:
                raise InputError(f"{option} {item!r}: the model has no input {name!r} (inputs: "
                                 f"{', '.join(by_name)})")
            if len(spec.shape) != len(dims):
                raise InputError(f"{option} {item!r}: input {name!r} has rank "
                                 f"{len(spec.shape)} {spec.shape_str()}, got {len(dims)} dims")
            pairs = enumerate(zip(spec.shape, dims, strict=True))
            fixed = [i for i, (d, g) in pairs if d is not None and d != g]
            if fixed:
                raise InputError(f"{option} {item!r}: input {name!r} is {spec.shape_str()}; dim "
                                 f"{fixed[0]} is fixed at {spec.shape[fixed[0]]} (only dynamic "
                                 "dims '?' can be chosen)")
        out[name] = dims
    return out
