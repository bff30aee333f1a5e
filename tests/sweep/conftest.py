"""Sweep test set-up: one real local Ray cluster per test session (started on first use)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_BOARD = "device:testboard"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    """``ray.init`` with 2 CPUs and a pretend board resource, shut down at the end.

    Single-node mode: Ray binds and talks on 127.0.0.1 only.

    Workers inherit the environment at start-up, so PYTHONPATH makes ``tests.sweep._tasks``
    importable in them.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # 127.0.0.1 only
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, resources={TEST_BOARD: 1},
             log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
