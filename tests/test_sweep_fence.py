"""The orphan sweep acts only while its replica leads: a standby lists and retires nothing, and sweeps once it
leads (the sweep task lives with the fleet a standby keeps warm)."""

from __future__ import annotations

import asyncio
from typing import Any

from inference_placement.api.spec import TargetName
from inference_placement.controller.leader import NotLeaderError
from inference_placement.controller.sweep import OrphanSweep


def test_a_standby_sweeps_nothing_and_sweeps_once_it_leads() -> None:
    leading = False
    listed: list[int] = []

    def fence() -> None:
        if not leading:
            raise NotLeaderError("not the leader")

    async def lister() -> list[Any]:
        listed.append(1)
        return []

    sweep = OrphanSweep(api=None, listers={TargetName.LAMBDA: lister}, targets={}, fence=fence)

    async def scenario() -> None:
        nonlocal leading
        task = asyncio.create_task(sweep.run(0.01))
        await asyncio.sleep(0.1)
        assert not listed and not task.done(), "a standby lists nothing and keeps its sweep for later"
        leading = True
        await asyncio.sleep(0.1)
        assert listed, "once it leads, it sweeps"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
