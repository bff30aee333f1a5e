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


@dataclass(frozen=True)
class Preprocessing:
    """How raw data becomes model input; recorded verbatim in the artifact manifest.

    Images: decode -> color (``rgb`` / ``grayscale``) -> resize to ``(height, width)`` with
    ``interpolation`` -> channel order -> ``x * scale`` -> ``(x - mean) / std`` per channel ->
    ``layout``. Arrays (``.npy``/``.npz``): only ``x * scale`` and ``(x - mean) / std`` apply,
    per channel along the ``layout``'s channel axis; arrays are never resized or transposed.
    """

    resize: tuple[int, int] | None = None  # (height, width); None = use the model input's H, W
    scale: float = 1 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NHWC"
    channel_order: str = "RGB"
    color: str = "rgb"
    interpolation: str = "bilinear"

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
