"""A spot pre-emption through the real Envoy (issue 17, item 6): burst spillover in force covers it, nothing else does.

What ``policy/spot.py`` assumes, checked on the router: while a spill is in force (the composite route with the
serverless overflow), a workload whose pods are all reclaimed keeps answering every request (a pods cluster with
no host falls through to the overflow at once), and a replacement pod takes the traffic back; without the spill
route the same reclaim fails the requests that arrive before the replacement (``no healthy upstream``), which is
why the policy counts them as SLO misses then.

Loopback only, with the processes of ``tests/test_routing_spill.py``: the pods are ``e2e/model_server.py``, the
overflow a second one standing in for Cloud Run. The reclaim is graceful, as a drain at the cloud's notice makes
it: the pods' addresses leave the route first (their EndpointSlice), the processes stop a preStop later.
"""

from __future__ import annotations

import asyncio

import pytest

from inference_placement.routing.model import Overflow
from tests.plugins.envoy import EnvoyRouter
from tests.plugins.http_load import HttpLoad
from tests.test_routing_spill import HOST, Processes, R, _applier, _cloudrun, _route, envoy_router, processes

__all__ = ["envoy_router", "processes"]  # the fixtures this module borrows

pytestmark = pytest.mark.slow  # real Envoy and model-server processes

PRE_STOP_SECONDS = 1.0
"""Seconds a reclaimed pod keeps serving after its address left the route (the chart's preStop sleep is 5 s)."""


@pytest.mark.parametrize("spilling", [True, False], ids=["spill-in-force", "no-spill-route"])
async def test_a_reclaim_of_every_pod_under_load_fails_nothing_only_while_a_spill_covers_it(
    spilling: bool, envoy_router: EnvoyRouter, processes: Processes
) -> None:
    serverless = processes.model_server("cloudrun")
    overflow = Overflow(R, _cloudrun(serverless.address)) if spilling else None
    spot = [processes.model_server("cluster"), processes.model_server("cluster")]
    applier = _applier(envoy_router)
    await applier.apply([_route(tuple(p.address for p in spot), overflow=overflow)])
    workers, per_worker = 10, 30
    load = HttpLoad(envoy_router.listen_port, workers, "/predict?sleep=0.1", host=HOST, per_worker=per_worker)
    await load.wait_answered(40)
    # the reclaim: the drain removes the pods' addresses, the pods stop a preStop later
    await applier.apply([_route((), overflow=overflow)])
    await asyncio.sleep(PRE_STOP_SECONDS)
    for pod in spot:
        pod.stop()
    reclaimed_at = load.answered()
    # the requests the replacement's new node and cold start keep waiting (refused ones go fast: maybe all of them)
    await load.wait_answered(min(reclaimed_at + 40, workers * per_worker))
    # the replacement, on an on-demand node
    replacement = processes.model_server("cluster")
    await applier.apply([_route((replacement.address,), overflow=overflow)])
    outcomes = load.join()
    assert sum(outcomes.values()) == workers * per_worker
    assert outcomes["cluster"] > 0
    if spilling:
        # every request answered: by the pods, then the overflow while none is left, then the replacement
        assert set(outcomes) <= {"cluster", "cloudrun"}, outcomes
        assert outcomes["cloudrun"] >= 40, outcomes
    else:
        # nothing catches them: what arrives between the reclaim and the replacement fails
        failed = sum(n for outcome, n in outcomes.items() if outcome not in ("cluster", "cloudrun"))
        assert failed >= 40 and outcomes["cloudrun"] == 0, outcomes
