"""``edgeopt tune``: find the fastest (or smallest) artifact that meets an accuracy budget.

Data flow (one search per target and format)::

    options.py    CLI values -> TuneOptions (budget, limits, objective, executor)
    space.py      the model's shape (transformer?) and layer groups; the target's starts
    driver.py     float reference once -> search -> record; candidates timed here
    candidate.py  one recipe on an executor: build -> evaluate (edgeopt.evaluate) -> signal
    accuracy.py   per-sample cosine / SQNR, the budget's number
    signal.py     per-layer ranking (edgeopt.layers) on the worst samples
    search.py     the search core: starts, greedy revert with step back, limits
    progress.py   one line per candidate on stderr, ETA

``edgeopt.convert(..., auto=TuneOptions)`` runs it and installs the chosen candidate of each
format into ``OUT/<target>/`` like any artifact, with the search record in
``targets[].tune`` and ``OUT/<target>/tune.json``. :func:`tune` is that call with keyword
options (what ``edgeopt sweep``'s ``tune = {...}`` recipes pass).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

_TUNE_KEYS = ("max_drop", "min_cosine", "min_sqnr", "budget", "objective", "executor", "jobs",
              "threads", "ranking_samples", "tune_latency_runs", "ray_address")


def tune(model: str | Path, targets: str | list[str], calib: str | Path | None = None, *,
         val: str | Path | None = None, out: str | Path = "out", **options: Any) -> Any:
    """Tune ``model`` for ``targets`` and write the chosen artifacts like ``convert``.

    Args:
        model, targets, calib, val, out: as ``edgeopt.convert`` (``val`` is required).
        **options: the accuracy budget (exactly one of ``max_drop`` points, ``min_cosine``,
            ``min_sqnr`` dB), ``budget`` (N evaluations or ``"600s"``), ``objective``
            (``latency`` / ``size``), ``executor`` / ``jobs``, ``threads``,
            ``ranking_samples``, ``tune_latency_runs``; any other keyword goes to
            ``edgeopt.convert`` (``seed``, ``latency_runs``, ``formats``, ``keep_float``, ...).

    Returns:
        The ``ConvertReport`` (kind ``convert``; each target carries ``tune``).

    Raises:
        TuneOptionError: a bad or missing budget, an unknown option.
        EdgeOptError: what ``convert`` raises.
    """
    from ..convert import convert
    from .options import TuneOptionError, make_options

    tune_opts = {k: options.pop(k) for k in _TUNE_KEYS if k in options}
    allowed = set(inspect.signature(convert).parameters) - {"model", "targets", "calib", "val",
                                                            "out", "auto"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TuneOptionError(f"unknown tune option(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted((*_TUNE_KEYS, *allowed)))}")
    runs = tune_opts.pop("tune_latency_runs", None)
    auto = make_options(**tune_opts, latency_runs=runs)
    return convert(model, targets, calib, val=val, out=out, auto=auto, **options)


__all__ = ["tune"]
