"""``edgeopt sweep``: many (model, target, recipe) jobs through an executor, cached by hash.

Data flow, one module per step::

    spec.py      SWEEP.toml -> SweepSpec (models, targets, Recipe values, settings)
    jobs.py      SweepSpec -> JobSpec per (model, target, recipe), keyed by the hash of its
                 inputs; run_job = edgeopt.convert in a worker (or edgeopt.tune for budgets)
    runner.py    the driver: skip finished jobs, run the rest through edgeopt.executors,
                 follow-ups (validation shards, device profiles), OUT/jobs/<key>/ folders
    validate.py  large validation sets in shards, per-sample outputs merged exactly
    results.py   OUT/results.json / .csv / .html (Pareto plot per target)
    progress.py  jobs done / running / failed and ETA on stderr

See docs/sweeps.md for the sweep file and for running the same sweep on a Ray cluster.
"""

from __future__ import annotations

from .runner import SweepError, SweepInterrupted, run_sweep
from .spec import Recipe, SweepSpec, TuneBudget, load_sweep

__all__ = ["Recipe", "SweepError", "SweepInterrupted", "SweepSpec", "TuneBudget", "load_sweep",
           "run_sweep"]
