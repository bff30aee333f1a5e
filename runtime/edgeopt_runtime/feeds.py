"""Seeded random model inputs, shared by ``profile``, the isolated probe and the converter's
synthetic calibration data (one generator, so "random input" means the same thing everywhere)."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .spec import TensorSpec

FLOAT_RANGE = (0.0, 1.0)  # random float inputs: uniform in [0, 1), like normalised images
OTHER_INT_RANGE = (0, 9)  # non-quantized integer inputs (ids, indices): small valid values


def random_array(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    dtype: str | np.dtype,
    *,
    int_range: tuple[int, int] | None = None,
    what: str = "input",
) -> np.ndarray:
    """One random array: floats uniform in ``FLOAT_RANGE``, booleans fair coins, integers uniform
    in the inclusive ``int_range`` (default: the dtype's whole range).

    Raises:
        InputError: a dtype random data cannot be made for (strings, ...).
    """
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.uniform(*FLOAT_RANGE, shape).astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = int_range if int_range is not None else (info.min, info.max)
        return rng.integers(max(lo, info.min), min(hi, info.max), shape, endpoint=True, dtype=dt)
    raise InputError(f"{what}: cannot make random {dt.name} data; pass inputs as a .npz")


def random_feeds(
    specs: list[TensorSpec], seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None
) -> dict[str, np.ndarray]:
    """Seeded random arrays matching ``specs`` (dynamic dims -> 1, or the dims ``shapes`` gives
    for that input: ``profile --input-shape``).

    Float inputs are uniform in ``FLOAT_RANGE``; quantized integer inputs uniform over their
    dtype's whole range (the model's raw input); other integers in ``OTHER_INT_RANGE``.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in specs:
        shape = (shapes or {}).get(s.name) or tuple(1 if d is None else d for d in s.shape)
        ints = None if s.is_quantized else OTHER_INT_RANGE
        feeds[s.name] = random_array(rng, shape, s.dtype, int_range=ints, what=f"input '{s.name}'")
    return feeds


__all__ = ["FLOAT_RANGE", "OTHER_INT_RANGE", "random_array", "random_feeds"]
