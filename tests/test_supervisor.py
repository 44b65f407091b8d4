"""The operator's supervisor: kopf runs that end on an error are started again; a normal end or a cancel ends it."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from inference_placement.controller.supervisor import WatchBackoffs, supervise


def test_watch_backoffs_never_run_out_and_start_over_for_each_request() -> None:
    backoffs = WatchBackoffs(first=(1, 2), cap=7)
    assert list(itertools.islice(backoffs, 6)) == [1, 2, 7, 7, 7, 7]
    assert list(itertools.islice(backoffs, 3)) == [1, 2, 7]  # a second request gets the whole schedule again
    with pytest.raises(TypeError):
        len(backoffs)  # type: ignore[arg-type]  # kopf treats an unsized schedule as endless
    with pytest.raises(ValueError):
        WatchBackoffs(cap=0)


async def test_errors_restart_with_growing_delay_and_a_normal_end_stops() -> None:
    calls: list[int] = []
    delays: list[float] = []
    restarts: list[str] = []

    async def run_once() -> None:
        calls.append(len(calls))
        if len(calls) <= 3:
            raise ConnectionError(f"watch failed #{len(calls)}")

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    await supervise(run_once, backoffs=(1, 5), sleep=sleep, on_restart=lambda err: restarts.append(str(err)))
    assert len(calls) == 4
    assert delays == [1, 5, 5]
    assert restarts == ["watch failed #1", "watch failed #2", "watch failed #3"]


async def test_a_run_that_lasted_resets_the_delay() -> None:
    delays: list[float] = []
    outcomes = iter([0.0, 0.05, 0.0, None])

    async def run_once() -> None:
        lasted = next(outcomes)
        if lasted is None:
            return
        await asyncio.sleep(lasted)
        raise RuntimeError("watch ended")

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    await supervise(run_once, backoffs=(1, 2, 3), healthy_seconds=0.04, sleep=sleep)
    assert delays == [1, 1, 2]  # the second run lasted past healthy_seconds: back to the first delay


async def test_cancel_and_system_exit_are_not_restarted() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervise(forever))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def exits() -> None:
        raise SystemExit("price book rejected")

    with pytest.raises(SystemExit):
        await supervise(exits)
