"""A target that applies nothing: decisions are made and recorded, no resource is created, patched or deleted.

Enabled with ``--set cluster.dryRun=true`` in place of the real cluster target. Made for the fleet-scale benchmark
(``inference-placement bench-scale``), which must run the whole fleet loop over 10,000 workloads without creating
10,000 Deployments on a real node; it also serves as a shadow mode (see what the operator would do). ``ensure``
reports the desired replicas as ready at once, so a placement completes on the next reconcile and the workload
settles like one whose target is healthy. It sends no request anywhere.
"""

from __future__ import annotations

from inference_placement.api.spec import TargetName
from inference_placement.api.workload import InferenceWorkload
from inference_placement.targets.base import DesiredTarget, TargetState
from inference_placement.targets.cluster_render import deployment_name

__all__ = ["DRY_RUN_MESSAGE", "DryRunTarget"]

DRY_RUN_MESSAGE = "dry run: nothing applied"


class DryRunTarget:
    """Stands in for ``name``; ``ensures`` counts the calls (nothing else is kept per workload)."""

    def __init__(self, name: TargetName = TargetName.CLUSTER) -> None:
        self.name = name
        self.ensures = 0

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        self.ensures += 1
        return TargetState(
            name=deployment_name(workload),
            endpoint=None,
            ready=True,
            replicas=desired.replicas,
            message=DRY_RUN_MESSAGE,
        )

    async def observe(self, workload: InferenceWorkload) -> TargetState | None:
        return None

    async def retire(self, workload: InferenceWorkload) -> bool:
        return True
