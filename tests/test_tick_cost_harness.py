"""The fleet-loop harness (``devtools/scale/tick_cost.py``) on a small fleet: it settles every workload, and what a
steady tick reconciles is what the live fleet would (the resync share only, whether or not the history is still
being read back; most workloads under noisy traffic), with 0 status writes at steady traffic."""

from __future__ import annotations

import asyncio
import math

import pytest

from inference_placement.devtools.scale.tick_cost import measure

WORKLOADS = 40
RESYNC_SHARE = math.ceil(WORKLOADS * 30 / 300)  # Fleet's default resync: every workload at least every 300 s


@pytest.mark.parametrize("history", ["filling", "complete"])
def test_a_steady_fleet_reconciles_only_the_resync_share_and_writes_nothing(history: str) -> None:
    result = asyncio.run(measure(WORKLOADS, ticks=2, traffic="steady", history=history))
    assert result["placed"] == WORKLOADS
    assert result["reconciles_per_tick"] == [RESYNC_SHARE, RESYNC_SHARE]
    assert result["status_writes_per_tick"] == [0, 0]
    assert result["rss_mb"] > 0 and result["tick_cpu_mean"] > 0


def test_noisy_traffic_reconciles_most_workloads() -> None:
    result = asyncio.run(measure(WORKLOADS, ticks=2, traffic="noisy", history="complete"))
    assert result["placed"] == WORKLOADS
    assert all(count > WORKLOADS // 2 for count in result["reconciles_per_tick"])
