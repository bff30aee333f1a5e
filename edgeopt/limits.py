"""Bounds on what the converter accepts: numeric options and calibration data.

Each bound is here, as data, with the reason for its value; the CLI's option types, the
``convert`` API and the calibration readers all read them from this module.

Calibration data limits (``CalibrationLimits``) can be raised for one run through environment
variables (``EDGEOPT_CALIB_MAX_SAMPLES``, ``EDGEOPT_CALIB_MAX_SAMPLE_BYTES``); the value range
cannot: it is where the converters crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from edgeopt_runtime.errors import CalibrationError, EdgeOptError

MAX_LATENCY_RUNS = 100_000  # timed runs per model; the default is 50
MAX_SEED = 2**32 - 1  # numpy seeds are non-negative; 32 bits is what every tool accepts

# Calibration values: TF's quantizer (mlir_quantize) dies with SIGSEGV on a calibration range
# of 1e38 (measured: tiny conv model, inputs up to 1e37 convert, 1e38 and 3e38 kill the
# process); activations grow past the input (a conv of fan-in k multiplies the range by up to
# k * max|w|), so the input bound keeps 8 orders of magnitude of headroom below 1e38. No real
# input comes near it; values this large are padding (-FLT_MAX), uninitialised memory or a
# damaged file, and clamping them would still give a scale that rounds every real value to
# the zero point. So they are refused, naming the input and the sample.
MAX_ABS_VALUE = 1e30
# Decompression-bomb guard for images: calibration images are small; 40 MP is a 7,300 x 5,500
# photo. Also the largest ``resize`` (a resized image is decoded to float32 in memory).
MAX_IMAGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class CalibrationLimits:
    """How much calibration data one run reads, checked from headers before any data is read.

    Attributes:
        max_samples: samples per pass (all of a file, or ``--num-calib N``). Every pass costs
            per-sample time in both converters; 100,000 is far past what min/max or histogram
            calibration needs (hundreds) and keeps index arrays small.
        max_sample_bytes: one sample (all inputs), which is held in memory (ORT holds up to 16).
        max_whole_bytes: an array read whole (labels; a Fortran-ordered ``.npz`` member).
        bomb_bytes, bomb_ratio: a deflated ``.npz`` member that inflates to more than
            ``bomb_bytes`` at more than ``bomb_ratio`` times its compressed size is refused as
            a decompression bomb (real arrays compress 1-5x; zeros ~230x).
    """

    max_samples: int = 100_000
    max_sample_bytes: int = 256 << 20
    max_whole_bytes: int = 1 << 30
    bomb_bytes: int = 1 << 30
    bomb_ratio: float = 100.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> CalibrationLimits:
        """Defaults, with ``EDGEOPT_CALIB_<FIELD>`` environment variables applied.

        Raises:
            CalibrationError: a variable that is not a positive integer.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"EDGEOPT_CALIB_{f.name.upper()}"
            text = env.get(name)
            if text is None:
                continue
            try:
                value = int(text)
            except ValueError:
                value = 0
            if value < 1:
                raise CalibrationError(f"{name}={text!r}: expected a positive integer")
            values[f.name] = value
        return cls(**values)


def human_bytes(n: float) -> str:
    """``n`` bytes as ``512 bytes`` / ``37.6 MiB`` / ``8.0 GiB`` / ``8.0 TiB``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class OptionError(EdgeOptError):
    """An option value is invalid (format name, regex, calibration method, out of range...)."""


def check_numbers(*, latency_runs: Any, num_calib: Any, seed: Any) -> None:
    """The numeric options of ``convert``, bounded (the CLI's option types use the same).

    Raises:
        OptionError: a value that is not an integer in its range, naming the option.
    """
    for name, value, low, high in (
        ("latency_runs", latency_runs, 1, MAX_LATENCY_RUNS),
        ("num_calib", num_calib, 1, CalibrationLimits.from_env().max_samples),
        ("seed", seed, 0, MAX_SEED),
    ):
        if value is None and name == "num_calib":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise OptionError(f"{name} must be an integer from {low} to {high}, got {value!r}")
