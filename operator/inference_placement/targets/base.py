"""The one small interface every placement target implements: ensure, observe, retire.

Targets are idempotent: ``ensure`` called twice with the same inputs writes nothing the second time; a resource
found by its deterministic name and carrying this workload's ownership label/tag is adopted, one with another
owner is never touched (``NotOwnedError``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from inference_placement.api.spec import AcceleratorOption, TargetName
from inference_placement.api.status import TargetResourceStatus
from inference_placement.api.workload import InferenceWorkload

__all__ = [
    "BlockingTarget",
    "DesiredTarget",
    "InvalidLocationError",
    "NotOwnedError",
    "PermanentTargetError",
    "RetryableTargetError",
    "Target",
    "TargetError",
    "TargetState",
    "as_target_error",
    "held_while_moving",
]


@dataclass(frozen=True)
class DesiredTarget:
    """What the policy asks of a target on this reconcile."""

    replicas: int
    """In-cluster replicas, or warm instances (Cloud Run min instances / Lambda provisioned concurrency)."""
    max_replicas: int | None = None
    """Cap on replicas or instances (serverless: the bill cap derived from the budget); None = the spec's."""
    max_in_flight: int | None = None
    """Cluster: each model server's queue cap while the workload spills its overflow; None = no cap."""
    accelerator: AcceleratorOption | None = None
    """Cluster: the acceptable accelerator the replicas run on (the decision's); None = the spec's first."""
    spot: bool | None = None
    """Cluster: True = prefer spot nodes (tolerating their taint), False = on-demand nodes only, None = no
    capacity type asked for (``policy.node_labels.for_capacity``)."""
    gpu_zonal_redundancy: bool = False
    """Cloud Run: keep GPU zonal redundancy (Cloud Run's default) when True; False deploys GPU revisions with
    ``gpuZonalRedundancyDisabled: true``. The controller passes the price book's
    ``platforms.cloudrun.gpu_zonal_redundancy``, so what is deployed is what is priced."""


@dataclass(frozen=True)
class TargetState:
    """What a target looks like now, as its own API reports it."""

    name: str
    endpoint: str | None
    ready: bool
    replicas: int | None = None
    message: str | None = None
    replicas_managed_by: str | None = None
    """Cluster: the user's autoscaler(s) owning ``spec.replicas`` (``HorizontalPodAutoscaler/web``); None = ours."""


class TargetError(Exception):
    """Base of every target failure. ``message`` is safe to show in status and Events (no secrets)."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after_seconds: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after_seconds = retry_after_seconds
        """How long the cloud asked us to wait before the next call (``Retry-After``), when it said."""


class RetryableTargetError(TargetError):
    """Throttling, 5xx, timeouts: the next reconcile tries again."""


class PermanentTargetError(TargetError):
    """Permission, quota, invalid request: retrying the same call cannot help until something changes."""


class InvalidLocationError(PermanentTargetError):
    """The workload names a region/location no client can even address: nothing can exist there, so retiring there
    is done at once (a deletion never waits on it)."""


class NotOwnedError(PermanentTargetError):
    """A resource with our deterministic name exists but belongs to someone else; it is never modified."""


def as_target_error(exc: BaseException) -> TargetError:
    """``exc`` as a target error: itself, or a permanent one naming only its type (its text may be anything). The
    controller's last line of defence: whatever a client raises, the workload gets a status and the loop goes on."""
    if isinstance(exc, TargetError):
        return exc
    return PermanentTargetError(f"unexpected {type(exc).__name__} from the target (see the operator's log)")


def held_while_moving(recorded: TargetResourceStatus | None, moving: bool, state: TargetState) -> TargetState:
    """Make before break for a region or project edit: while the resource in the new location is not ready, report
    the one ``recorded`` in the old location (still serving; the router routes by that record), with a message
    saying where it moves. ``moving``: the recorded resource is this workload's own, in another location."""
    if recorded is None or not moving or not recorded.ready or not recorded.name or state.ready:
        return state
    return TargetState(
        name=recorded.name,
        endpoint=recorded.endpoint,
        ready=True,
        replicas=recorded.replicas,
        message=f"moving to {state.name}: {state.message or 'not ready yet'}",
    )


class Target(Protocol):
    """A placement target. Implementations: ``cluster``, ``cloudrun``, ``aws_lambda``."""

    name: TargetName

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        """Create or update the workload's resource so it matches the spec and ``desired``; return its state."""
        ...

    async def observe(self, workload: InferenceWorkload) -> TargetState | None:
        """The resource's current state, or None when it does not exist."""
        ...

    async def retire(self, workload: InferenceWorkload) -> bool:
        """Remove the workload's resource; True once it is gone (call again until it is)."""
        ...


class BlockingTarget:
    """A target whose cloud client blocks (boto3, google-cloud-run's REST transport): its ``*_sync`` methods do the
    work, and the async interface runs them in a worker thread so no call freezes the event loop."""

    def ensure_sync(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        raise NotImplementedError

    def observe_sync(self, workload: InferenceWorkload) -> TargetState | None:
        raise NotImplementedError

    def retire_sync(self, workload: InferenceWorkload) -> bool:
        raise NotImplementedError

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        return await asyncio.to_thread(self.ensure_sync, workload, desired)

    async def observe(self, workload: InferenceWorkload) -> TargetState | None:
        return await asyncio.to_thread(self.observe_sync, workload)

    async def retire(self, workload: InferenceWorkload) -> bool:
        return await asyncio.to_thread(self.retire_sync, workload)
