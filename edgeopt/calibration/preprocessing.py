"""Preprocessing: how raw calibration data (images, arrays) becomes model input.

Recorded verbatim in the artifact manifest, so a device app can prepare its inputs the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from edgeopt_runtime.errors import CalibrationError

from ..limits import MAX_IMAGE_PIXELS

_LAYOUTS = ("NHWC", "NCHW")
_CHANNEL_ORDERS = ("RGB", "BGR")
_COLORS = ("rgb", "grayscale")
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box")
# What scale / mean / std apply to: "raw" = image files and integer arrays (raw pixels, counts);
# float arrays are taken as model-ready and refused with preprocessing (scaling already
# normalised data by 1/255 gave a model calibrated on inputs 255x too small, measured as a
# *better* SQNR because validation was scaled the same way, and useless on real inputs: SQNR
# 0.04 dB). "all" applies it to float arrays too, with a warning and statistics in the report.
_APPLY_TO = ("raw", "all")


@dataclass(frozen=True)
class Preprocessing:
    """How raw data becomes model input; recorded verbatim in the artifact manifest.

    Images: decode -> color (``rgb`` / ``grayscale``) -> resize to ``(height, width)`` with
    ``interpolation`` -> channel order -> ``x * scale`` -> ``(x - mean) / std`` per channel ->
    ``layout``. Arrays (``.npy``/``.npz``): only ``x * scale`` and ``(x - mean) / std`` apply,
    per channel along the ``layout``'s channel axis; arrays are never resized or transposed.

    ``apply_to``: ``raw`` (default) applies to images and integer arrays only and refuses float
    arrays (already model input); ``all`` applies to float arrays too.
    """

    resize: tuple[int, int] | None = None  # (height, width); None = use the model input's H, W
    scale: float = 1 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NHWC"
    channel_order: str = "RGB"
    color: str = "rgb"
    interpolation: str = "bilinear"
    apply_to: str = "raw"

    @property
    def applies_to_floats(self) -> bool:
        return self.apply_to == "all"

    def __post_init__(self) -> None:
        # Accept lists (from JSON / TOML / CLI) but store tuples so the dataclass stays hashable.
        object.__setattr__(self, "mean", tuple(float(m) for m in _as_seq(self.mean)))
        object.__setattr__(self, "std", tuple(float(s) for s in _as_seq(self.std)))
        object.__setattr__(self, "scale", float(self.scale))
        if self.resize is not None:
            object.__setattr__(self, "resize", tuple(int(v) for v in self.resize))
        self._validate()

    def _validate(self) -> None:
        problems = []
        if self.resize is not None and (len(self.resize) != 2 or min(self.resize) < 1):
            problems.append(f"resize must be (height, width) > 0, got {self.resize}")
        elif self.resize is not None and math.prod(self.resize) > MAX_IMAGE_PIXELS:
            problems.append(
                f"resize {self.resize[0]}x{self.resize[1]} is over the limit of "
                f"{MAX_IMAGE_PIXELS:,} pixels"
            )
        if not math.isfinite(self.scale) or self.scale == 0:
            problems.append(f"scale must be finite and non-zero, got {self.scale}")
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if not vals or not all(math.isfinite(v) for v in vals):
                problems.append(f"{name} must be one or more finite numbers, got {vals}")
        if any(s == 0 for s in self.std):
            problems.append(f"std must be non-zero, got {self.std}")
        if len(self.mean) > 1 and len(self.std) > 1 and len(self.mean) != len(self.std):
            problems.append(f"mean {self.mean} and std {self.std} differ in length")
        for name, allowed in (
            ("layout", _LAYOUTS),
            ("channel_order", _CHANNEL_ORDERS),
            ("color", _COLORS),
            ("interpolation", _INTERPOLATIONS),
            ("apply_to", _APPLY_TO),
        ):
            if getattr(self, name) not in allowed:
                problems.append(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if problems:
            raise CalibrationError("invalid preprocessing: " + "; ".join(problems))

    @property
    def channels(self) -> int:
        """Channel count images are decoded to (1 for grayscale, 3 for rgb)."""
        return 1 if self.color == "grayscale" else 3

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["resize"] = list(self.resize) if self.resize else None
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.apply_to == "raw":  # the default: keep manifests and hashes as they were
            del d["apply_to"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Build from a dict such as ``to_dict()``'s; unknown keys are rejected.

        Raises:
            CalibrationError: unknown keys or invalid values.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CalibrationError(
                f"invalid preprocessing: unknown keys {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**d)


def _as_seq(v: Any) -> Sequence[Any]:
    return (v,) if isinstance(v, (int, float)) else tuple(v)


def float_refusal(dtype_name: str) -> str:
    """Why preprocessing is refused for float arrays, and the two ways out."""
    return (f"the data is already {dtype_name}, so it is taken as model input: --preprocess "
            "(scale / mean / std) applies to raw data only (image folders, integer arrays). "
            "Drop --preprocess if the arrays are model-ready, or add --preprocess apply_to=all "
            "to apply it to float arrays anyway")


@dataclass
class ValueStats:
    """Running min / max / mean / std of the values of one input (streamed, one sample at a
    time). The report shows them for the data before and after preprocessing."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def update(self, x: Any) -> None:
        import numpy as np

        a = np.asarray(x)
        if not a.size:
            return
        f = a.astype(np.float64, copy=False)
        self.count += int(f.size)
        self.total += float(f.sum())
        self.total_sq += float(np.square(f).sum())
        self.lo = min(self.lo, float(f.min()))
        self.hi = max(self.hi, float(f.max()))

    def to_dict(self) -> dict[str, float | int | None]:
        if not self.count:
            return {"count": 0, "min": None, "max": None, "mean": None, "std": None}
        mean = self.total / self.count
        var = max(self.total_sq / self.count - mean * mean, 0.0)
        return {"count": self.count, "min": _r(self.lo), "max": _r(self.hi), "mean": _r(mean),
                "std": _r(math.sqrt(var))}


def _r(x: float) -> float:
    return float(f"{x:.6g}")
