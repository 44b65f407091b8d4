"""The periodic sweep for leaked cloud resources: every Cloud Run service and Lambda function labelled/tagged as
this operator's whose workload no longer exists is retired (or, in dry-run mode, reported).

Retire and finalize act on the identity recorded in status and on the spec's, so a resource leaks only when no
record of it survived: the operator was killed between a cloud create and the status write, and the workload was
then deleted with its finalizer removed by hand (or the operator was uninstalled first). The sweep closes that
gap. A resource is an orphan only when all of these hold, each checked at the time of the sweep:

* its ownership label/tag names a workload uid (``targets.naming``): resources of other tools are never listed;
* its owner's namespace is one this operator watches (a namespaced operator cannot see the others' workloads);
* the apiserver answers 404 for the owner's namespace/name, or holds an object with another uid there (a workload
  re-created under the same name is a different owner);
* the target re-reads the resource's owner tag right before it deletes it.

A resource whose workload lives is **stale** when the workload moved to another region or project (a spec edit):
its status records a ready resource of the same target elsewhere and no migration is in flight, so the router
(which routes by that record) no longer sends it anything. Stale resources are retired like orphans (make before
break: the new one was ready and recorded first).

Every finding is one log line and ``inference_placement_orphans_total{target, action}`` (``retired``,
``dry-run``, ``failed``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.rest import ApiException

from inference_placement.api.spec import TargetName
from inference_placement.api.workload import GROUP, PLURAL, VERSION
from inference_placement.controller.leader import NotLeaderError
from inference_placement.controller.telemetry import Telemetry
from inference_placement.targets.naming import OwnedResource, gcp_label_value

__all__ = ["Finding", "OrphanSweep", "SweptTarget"]

log = logging.getLogger(__name__)


def _same_resource(target: TargetName, resource: OwnedResource, recorded: str) -> bool:
    """``recorded`` (status.targets.X.name) names ``resource``: the Lambda ARN's region and function, or the Cloud
    Run service's full name."""
    if target is TargetName.LAMBDA:
        parts = recorded.split(":")
        return len(parts) >= 7 and parts[3] == resource.location and parts[6] == resource.name
    return recorded == f"{resource.location}/services/{resource.name}"


class SweptTarget(Protocol):
    """A cloud target the sweep can list and retire by identity (``LambdaTarget``, ``CloudRunTarget``)."""

    async def retire_owned(self, resource: OwnedResource) -> bool: ...


@dataclass(frozen=True)
class Finding:
    target: TargetName
    resource: OwnedResource
    action: str
    """``retired``, ``dry-run`` or ``failed``."""


@dataclass
class OrphanSweep:
    api: Any
    """The Kubernetes API client (``kubernetes_asyncio``)."""
    listers: dict[TargetName, Callable[[], Any]]
    """Per target: an async function listing what it owns (``list_owned`` with the configured regions)."""
    targets: dict[TargetName, SweptTarget]
    namespaces: Sequence[str] = ()
    """The namespaces this operator watches; empty = all."""
    dry_run: bool = False
    telemetry: Telemetry | None = None
    fence: Callable[[], None] | None = None
    """Raises ``NotLeaderError`` when this replica may not act (``leader.LeaseElector.fence``): checked before each
    pass and each retire, so a standby, or a replica that lost its Lease, deletes nothing (its passes are skipped
    until it leads)."""
    findings: list[Finding] = field(default_factory=list)

    async def sweep_once(self) -> list[Finding]:
        """One pass over every target; returns what it found (also kept in ``findings``)."""
        if self.fence is not None:
            self.fence()  # NotLeaderError: only the leader lists and retires
        found: list[Finding] = []
        for target_name, lister in self.listers.items():
            try:
                owned: list[OwnedResource] = await lister()
            except Exception as err:  # a cloud outage must not stop the operator; the next sweep tries again
                log.warning("sweep: cannot list %s resources: %s", target_name.value, getattr(err, "message", err))
                continue
            for resource in owned:
                why = await self._unused(target_name, resource)
                if why is not None:
                    found.append(await self._handle(target_name, resource, why))
        self.findings.extend(found)
        return found

    async def run(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.sweep_once()
            except NotLeaderError:
                continue  # a standby (or a leader whose Lease lapsed) sweeps nothing; it sweeps once it leads
            except Exception:  # the sweep is a safety net: it never takes the operator down
                log.exception("sweep failed; the next one runs on schedule")

    async def _unused(self, target_name: TargetName, resource: OwnedResource) -> str | None:
        """Why ``resource`` serves nobody (its workload is gone, or moved elsewhere); None = in use or unknown."""
        owner = resource.owner
        if self.namespaces and owner.namespace not in self.namespaces:
            return None  # not ours to judge: another operator may watch that namespace
        if not owner.namespace or not owner.name:
            return None  # cannot be confirmed against the apiserver: left alone
        custom = k8s.CustomObjectsApi(self.api)
        try:
            obj = await custom.get_namespaced_custom_object(GROUP, VERSION, owner.namespace, PLURAL, owner.name)
        except ApiException as err:
            if err.status == 404:
                return "its workload no longer exists"
            log.warning("sweep: cannot confirm the owner of %s (HTTP %s); left alone", resource.name, err.status)
            return None
        uid = str((obj.get("metadata") or {}).get("uid", ""))
        if gcp_label_value(uid) != gcp_label_value(owner.uid):
            return "its workload no longer exists (one with the same name has another uid)"
        status = obj.get("status") or {}
        key = "lambda" if target_name is TargetName.LAMBDA else target_name.value
        recorded = (status.get("targets") or {}).get(key) or {}
        if status.get("migration") or not recorded.get("ready") or not recorded.get("name"):
            return None
        if _same_resource(target_name, resource, str(recorded["name"])):
            return None
        return f"its workload moved to {recorded['name']}"

    async def _handle(self, target_name: TargetName, resource: OwnedResource, why: str) -> Finding:
        where = f"{target_name.value} {resource.name} in {resource.location}"
        whose = f"{resource.owner.namespace}/{resource.owner.name} (uid {resource.owner.uid})"
        if self.dry_run:
            action = "dry-run"
            log.warning("sweep (dry run): would retire %s of %s: %s", where, whose, why)
        else:
            if self.fence is not None:
                self.fence()  # NotLeaderError: not ours to delete any more
            try:
                gone = await self.targets[target_name].retire_owned(resource)
            except Exception as err:
                gone = False
                log.warning("sweep: retiring %s failed: %s", where, getattr(err, "message", type(err).__name__))
            action = "retired" if gone else "failed"
            if gone:
                log.warning("sweep: retired %s of %s: %s", where, whose, why)
        if self.telemetry is not None:
            self.telemetry.orphans.labels(target_name.value, action).inc()
        return Finding(target_name, resource, action)
