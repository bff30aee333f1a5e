"""The executor interface on all three engines: ordered results, failures as values, retries after
worker loss, resources, cancellation, peak memory. Ray runs as a real local cluster."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeopt.executors import (
    CANCELLED,
    EXCEPTION,
    INFEASIBLE,
    WORKER_LOST,
    ExecutorError,
    Resources,
    Task,
    make_executor,
)

from . import _tasks
from .conftest import TEST_BOARD


@pytest.fixture(params=["serial", "process", "ray"])
def executor(request: pytest.FixtureRequest) -> Iterator[object]:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    resources = {TEST_BOARD: 1} if request.param != "ray" else None
    with make_executor(request.param, 2, resources=resources) as ex:
        yield ex


@pytest.fixture(params=["process", "ray"])
def pool(request: pytest.FixtureRequest) -> Iterator[object]:
    """Executors whose workers are other processes (a killed worker is survivable)."""
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    with make_executor(request.param, 2) as ex:
        yield ex


def test_ordered_results_and_failures_as_values(executor: object) -> None:
    tasks = [Task(_tasks.fail_on, (i, 3), key=f"t{i}") for i in range(6)]
    events: list[tuple[str, str]] = []
    outcomes = executor.run(tasks, progress=lambda e: events.append((e.kind, e.key)))
    assert [o.key for o in outcomes] == [f"t{i}" for i in range(6)]
    assert [o.value for o in outcomes] == [0, 1, 2, None, 4, 5]
    bad = outcomes[3]
    assert not bad.ok and bad.error.kind == EXCEPTION and bad.error.type == "ValueError"
    assert "no 3s here" in bad.error.message and "Traceback" in bad.error.traceback
    assert all(o.ok and o.attempts == 1 and o.worker for i, o in enumerate(outcomes) if i != 3)
    assert sorted(k for kind, k in events if kind == "finished") == sorted(t.key for t in tasks)
    assert sorted(k for kind, k in events if kind == "started") == sorted(t.key for t in tasks)


def test_same_results_on_every_executor(executor: object) -> None:
    assert [o.value for o in executor.run([Task(_tasks.square, (i,)) for i in range(5)])] == \
        [0, 1, 4, 9, 16]


def test_submit_while_iterating_adds_follow_up_work(executor: object) -> None:
    executor.submit(Task(_tasks.square, (3,), key="first"))
    seen = []
    for _ticket, outcome in executor.as_completed():
        seen.append((outcome.key, outcome.value))
        if outcome.key == "first":
            executor.submit(Task(_tasks.square, (outcome.value,), key="second"))
    assert seen == [("first", 9), ("second", 81)]


def test_killed_worker_is_retried(pool: object, tmp_path: Path) -> None:
    marker = tmp_path / "died"
    events = []
    [outcome] = pool.run([Task(_tasks.die_once, (str(marker), 7), key="fragile")],
                         progress=lambda e: events.append(e.kind))
    assert marker.exists(), "the first attempt did not run"
    assert outcome.ok and outcome.value == 7 and outcome.attempts == 2
    assert events.count("retrying") == 1 and events.count("started") == 2
    assert outcome.worker.split("@")[0] != marker.read_text()  # a new worker ran it


def test_worker_lost_after_retries_is_a_value_and_others_finish(pool: object) -> None:
    outcomes = pool.run([
        Task(_tasks.always_die, key="doomed", max_retries=1),
        Task(_tasks.square, (4,), key="fine"),
    ])
    doomed, fine = outcomes
    assert not doomed.ok and doomed.error.kind == WORKER_LOST and doomed.attempts == 2
    assert "attempt 2 of 2" in doomed.error.message
    assert fine.ok and fine.value == 16


def test_infeasible_resources_fail_at_once(executor: object) -> None:
    outcomes = executor.run([
        Task(_tasks.square, (2,), key="needs-pi", resources=Resources(custom={"device:pi": 1})),
        Task(_tasks.square, (2,), key="too-big", resources=Resources(memory=2**50)),
        Task(_tasks.square, (2,), key="board", resources=Resources(custom={TEST_BOARD: 1})),
    ])
    pi, big, board = outcomes
    assert pi.error.kind == INFEASIBLE and "'device:pi'" in pi.error.message
    assert big.error.kind == INFEASIBLE and "GiB" in big.error.message
    assert board.ok and board.value == 4
    assert TEST_BOARD in executor.capacity() and executor.capacity()["CPU"] >= 1


def test_custom_resource_limits_concurrency(pool: object, tmp_path: Path) -> None:
    """Two jobs on the one board never overlap, even with two free CPUs."""
    board = Resources(custom={TEST_BOARD: 1})
    if pool.name == "process":  # the local pool is told about the board explicitly
        pool.close()
        pool = make_executor("process", 2, resources={TEST_BOARD: 1})
    with pool:
        outcomes = pool.run([Task(_tasks.hold, (str(tmp_path), f"b{i}", 0.6), resources=board)
                             for i in range(2)])
    assert all(o.ok for o in outcomes)
    spans = sorted(tuple(float(x) for x in (p.read_text().split()[1:])) for p in
                   tmp_path.iterdir())
    assert spans[0][1] <= spans[1][0], f"board jobs overlapped: {spans}"


def test_peak_rss_is_per_task(pool: object) -> None:
    big, small = pool.run([Task(_tasks.allocate, (300,), resources=Resources(num_cpus=2)),
                           Task(_tasks.allocate, (10,), resources=Resources(num_cpus=2))])
    assert big.peak_rss is not None and big.peak_rss > 300 * 2**20
    assert small.peak_rss is not None and small.peak_rss < big.peak_rss - 200 * 2**20


def test_cancel_from_progress_cancels_the_rest(executor: object, tmp_path: Path) -> None:
    def progress(event: object) -> None:
        if event.kind == "finished" and event.key == "h0":
            executor.cancel()

    tasks = [Task(_tasks.hold, (str(tmp_path), f"h{i}", 0.3 if i == 0 else 5.0), key=f"h{i}",
                  resources=Resources(num_cpus=2)) for i in range(3)]
    t0 = time.monotonic()
    outcomes = executor.run(tasks, progress=progress)
    assert outcomes[0].ok
    assert [o.error.kind for o in outcomes[1:]] == [CANCELLED, CANCELLED]
    assert time.monotonic() - t0 < 4.0


def test_keyboard_interrupt_terminates_running_workers(pool: object, tmp_path: Path) -> None:
    ticket = pool.submit(Task(_tasks.hold, (str(tmp_path), "long", 60.0), key="long"))
    assert ticket == 0
    deadline = time.monotonic() + 60
    with pytest.raises(KeyboardInterrupt):
        for _ in pool.as_completed(progress=_interrupt_when(tmp_path / "long", deadline)):
            pass
    pid = int((tmp_path / "long").read_text().split()[0])
    for _ in range(100):
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid), "the worker running the cancelled task is still alive"


def _interrupt_when(started: Path, deadline: float) -> object:
    def progress(event: object) -> None:
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyboardInterrupt

    return progress


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_bad_executor_options() -> None:
    with pytest.raises(ExecutorError, match="unknown executor 'threads'"):
        make_executor("threads")
    with pytest.raises(ExecutorError, match="must be >= 1"):
        make_executor("process", 0)
    with pytest.raises(ExecutorError, match="needs --executor ray"):
        make_executor("process", 2, ray_address="auto")
