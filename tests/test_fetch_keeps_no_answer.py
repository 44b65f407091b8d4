"""A metrics fetch keeps what it folded in (the kept floats, the latest samples), never the decoded answers.

The answers of a fleet-wide fetch are ~10^5 containers per query at 10,000 workloads. While anything holds them
past the fetch (a finished asyncio task's result, which its gather future keeps), they are resident between ticks and
every young collection after the fetch walks them: the operator's fetch ran with the collector paused, then paid a
0.2-0.4 CPU-s collection of them per tick at 10,000 (measured in-process, ``gc.callbacks``). Here reference counting
alone (the collector off) must free every answer's points once ``fetch`` returns.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from datetime import UTC, datetime
from typing import Any

from inference_placement.api.workload import WorkloadKey
from inference_placement.metrics.prometheus import PrometheusSource

WORKLOADS = 50
STEP = 30
NOW_TS = 1_790_000_000 // 3600 * 3600


class _Points(list[Any]):
    """A series' points as the decoder hands them over, but weakly referenceable (a plain list is not)."""


class _AnsweringSource(PrometheusSource):
    """The real source; its queries answered in-process (every workload at 1.5 everywhere), each answer's series
    watched through weak references."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1", range_seconds=1800)
        self.answered: list[weakref.ref[_Points]] = []

    def _query_range(self, query: str, start: datetime, end: datetime, step: int | None = None) -> Any:
        first, last = round(start.timestamp()), round(end.timestamp())
        grid = range(first, last + 1, step or self.step_seconds)
        answer = []
        for i in range(WORKLOADS):
            points = _Points([[ts, "1.5"] for ts in grid])
            self.answered.append(weakref.ref(points))
            answer.append({"metric": {"namespace": "fleet", "workload": f"w{i}"}, "values": points})
        return answer

    def _query_instant(self, query: str, at: datetime) -> Any:
        if query.startswith("count by (le)"):  # the histogram's bucket bounds (slo_buckets.bounds_query)
            return [{"metric": {"le": le}, "value": [at.timestamp(), "1"]} for le in ("0.1", "0.5", "+Inf")]
        return [{"metric": {"instance": "router"}, "value": [at.timestamp(), "1"]}]  # router_up


async def _alive_after_the_workers_let_go(refs: list[weakref.ref[_Points]]) -> int:
    """The answers still alive, once the query threads have let go: a worker thread holds its work item (and through
    its future the answer it returned) until it gets the CPU again after handing the result over, which on a loaded
    machine can be a moment after ``fetch`` returns (CI saw [50, 0, 0] without this wait). Up to 2 s: a leak keeps
    them until the next fetch, far longer."""
    alive = len(refs)
    for _ in range(100):
        alive = sum(1 for ref in refs if ref() is not None)
        if not alive:
            break
        await asyncio.sleep(0.02)
    return alive


def test_no_answer_outlives_the_fetch_that_folded_it_in() -> None:
    source = _AnsweringSource()
    keys = [WorkloadKey("fleet", f"w{i}") for i in range(WORKLOADS)]
    objectives = dict.fromkeys(keys, 0.5)

    async def fetches() -> list[int]:
        alive = []
        for tick in range(3):  # a whole window, then two incremental fetches
            source.answered.clear()
            snapshot = await source.fetch(keys, datetime.fromtimestamp(NOW_TS + tick * STEP, UTC), objectives)
            assert snapshot.problem is None and len(snapshot.windows) == WORKLOADS, snapshot.problem
            assert snapshot.windows[keys[0]].rps[-1] == 1.5
            assert source.answered
            alive.append(await _alive_after_the_workers_let_go(source.answered))
        return alive

    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # reference counting alone must free them
    try:
        alive = asyncio.run(fetches())
    finally:
        if was_enabled:
            gc.enable()
    assert alive == [0, 0, 0], f"answers' series still alive after each fetch: {alive}"
