"""The cluster's ServerlessTargets as the fleet sees them: read once per tick, status written by the leader.

The admission itself (``policy.tenancy.admit_serverless``) is pure; this module is its I/O: one LIST of the
cluster-scoped ServerlessTargets per tick (a handful of objects, level-triggered: a missed event cannot leave a stale
permission behind for longer than a tick), the labels of the namespaces when a target selects namespaces by label,
and each target's status (Ready/Accepted/WithinSpendCap, the workloads on it and their projected spend), written only
when it changed. A read that fails keeps the last good view; before any read succeeded no workload that names a
target gets a cloud call (``TenancyView.problem``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.rest import ApiException
from pydantic import ValidationError

from inference_placement.api.serverless_target import (
    TARGET_PLURAL,
    ServerlessProvider,
    ServerlessTarget,
    ServerlessTargetConditionType,
    ServerlessTargetReason,
    ServerlessTargetSpec,
    target_problems,
)
from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.workload import GROUP, VERSION
from inference_placement.controller.kube import KubeWriter, now_rfc3339
from inference_placement.policy.tenancy import TenancyView

__all__ = ["TenancyCache", "spend_by_target"]

log = logging.getLogger(__name__)


def spend_by_target(
    workloads: Iterable[tuple[InferenceWorkloadSpec, Mapping[str, Any]]],
) -> tuple[dict[str, float], dict[str, int]]:
    """(projected monthly USD, workload count) per ServerlessTarget name, over the workloads placed on a serverless
    target through a targetRef (status ``placement`` and ``currentMonthlyCostUsd``)."""
    spend: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for spec, status in workloads:
        placement = status.get("placement")
        ref = (
            spec.cloud_run.target_ref
            if placement == TargetName.CLOUDRUN.value
            else spec.lambda_.target_ref
            if placement == TargetName.LAMBDA.value
            else None
        )
        if ref is None:
            continue
        cost = status.get("currentMonthlyCostUsd")
        spend[ref.name] += float(cost) if isinstance(cost, (int, float)) else 0.0
        count[ref.name] += 1
    return dict(spend), dict(count)


class TenancyCache:
    """The ServerlessTargets (and the namespace labels their selectors need) behind a ``TenancyView``."""

    def __init__(self, api: k8s.ApiClient | None, *, allow_inline_cloud_identity: bool = False) -> None:
        self._custom = k8s.CustomObjectsApi(api) if api is not None else None
        self._core = k8s.CoreV1Api(api) if api is not None else None
        self.allow_inline_cloud_identity = allow_inline_cloud_identity
        self._targets: dict[str, ServerlessTarget] = {}
        self._raw: dict[str, dict[str, Any]] = {}
        self._labels: dict[str, dict[str, str]] = {}
        self._spend: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._problem: str | None = "not read yet" if api is not None else None

    @property
    def view(self) -> TenancyView:
        return TenancyView(
            targets=self._targets,
            namespace_labels=self._labels,
            allow_inline_cloud_identity=self.allow_inline_cloud_identity,
            spend_usd=self._spend,
            problem=self._problem,
        )

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever an admission could: the fleet reconciles every workload again then."""
        return (
            tuple(sorted((name, t.generation, t.spec.model_dump_json()) for name, t in self._targets.items())),
            tuple(sorted((ns, tuple(sorted(labels.items()))) for ns, labels in self._labels.items())),
            tuple(sorted(self._capped())),  # only crossing a cap changes an admission, not every dollar of spend
            self._problem,
        )

    def lambda_scope(self) -> frozenset[tuple[str, str]] | None:
        """The (account, region) pairs of the Lambda targets, when workloads may deploy nowhere else (inline cloud
        identity off, the targets read): what the router checks a function ARN against
        (``routing.model.UpstreamTrust.lambda_scope``); None otherwise."""
        if self.allow_inline_cloud_identity or self._problem is not None:
            return None
        return frozenset(
            (t.spec.account, region)
            for t in self._targets.values()
            if t.spec.provider is ServerlessProvider.LAMBDA and t.spec.account is not None
            for region in t.spec.regions
        )

    def _capped(self) -> list[str]:
        return [
            name
            for name, t in self._targets.items()
            if t.spec.monthly_spend_cap_usd is not None and self._spend.get(name, 0.0) >= t.spec.monthly_spend_cap_usd
        ]

    def set_spend(self, spend: Mapping[str, float], count: Mapping[str, int]) -> None:
        self._spend = {k: round(v, 2) for k, v in spend.items()}
        self._count = dict(count)

    async def refresh(self) -> None:
        """Read the targets (and, when a selector needs them, the namespaces' labels); keep the last good view."""
        if self._custom is None or self._core is None:
            return
        try:
            listed = await self._custom.list_cluster_custom_object(GROUP, VERSION, TARGET_PLURAL)
        except ApiException as err:
            self._read_failed(
                "the ServerlessTarget CRD is not installed" if err.status == 404 else f"HTTP {err.status}"
            )
            return
        except Exception as err:  # the apiserver unreachable: keep what we know
            self._read_failed(type(err).__name__)
            return
        targets: dict[str, ServerlessTarget] = {}
        raw: dict[str, dict[str, Any]] = {}
        for item in listed.get("items", []):
            meta = item.get("metadata") or {}
            name = str(meta.get("name", ""))
            raw[name] = item
            try:
                spec = ServerlessTargetSpec.model_validate(item.get("spec") or {})
            except ValidationError as err:
                log.warning("ServerlessTarget %s does not parse: %s", name, err.errors()[0].get("msg"))
                continue  # absent for admission: a workload naming it is told it does not exist as a valid target
            targets[name] = ServerlessTarget(name=name, generation=int(meta.get("generation") or 0), spec=spec)
        labels: dict[str, dict[str, str]] = {}
        if any(t.spec.allowed_namespaces.selector is not None for t in targets.values()):
            try:
                namespaces = await self._core.list_namespace()
            except Exception as err:
                self._read_failed(f"namespaces: {getattr(err, 'status', None) or type(err).__name__}")
                return
            for ns in namespaces.items:
                labels[ns.metadata.name] = dict(ns.metadata.labels or {})
        self.load(targets.values(), labels, raw)

    def load(
        self,
        targets: Iterable[ServerlessTarget],
        namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
        raw: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        """Take this view of the cluster (what ``refresh`` read; a test's targets without an apiserver)."""
        self._targets = {t.name: t for t in targets}
        self._labels = {ns: dict(labels) for ns, labels in (namespace_labels or {}).items()}
        self._raw = dict(raw or {})
        self._problem = None

    def _read_failed(self, why: str) -> None:
        if self._problem is not None:  # never read: nothing that names a target may act yet
            self._problem = why
            log.warning("cannot read ServerlessTargets (%s): workloads naming one wait", why)
        else:
            log.warning("cannot read ServerlessTargets (%s): keeping the last view", why)

    async def write_statuses(self, writer: KubeWriter, now: datetime) -> int:
        """Each target's conditions and spend, written where they changed; returns how many were written."""
        written = 0
        stamp = now_rfc3339(now)
        for name, item in self._raw.items():
            current = item.get("status") or {}
            wanted = self._status_of(name, item, current, stamp)
            if _same(current, wanted):
                continue
            try:
                await writer.patch_cluster_status(TARGET_PLURAL, name, wanted)
                written += 1
            except ApiException as err:
                log.warning("cannot write the status of ServerlessTarget %s: HTTP %s", name, err.status)
        return written

    def _status_of(self, name: str, item: Mapping[str, Any], current: Mapping[str, Any], stamp: str) -> dict[str, Any]:
        generation = int((item.get("metadata") or {}).get("generation") or 0)
        target = self._targets.get(name)
        if target is None:
            problems = ["spec does not match the ServerlessTarget schema"]
        else:
            problems = target_problems(target.spec)
        accepted = (
            ("False", ServerlessTargetReason.INVALID, "; ".join(problems))
            if problems
            else (
                "True",
                ServerlessTargetReason.VALID,
                "workloads in the allowed namespaces may name this target",
            )
        )
        spend = self._spend.get(name, 0.0)
        cap = target.spec.monthly_spend_cap_usd if target is not None else None
        if cap is None:
            within = ("True", ServerlessTargetReason.NO_CAP, f"${spend:,.2f}/mo projected, no cap")
        elif spend >= cap:
            within = (
                "False",
                ServerlessTargetReason.CAP_REACHED,
                f"${spend:,.2f}/mo projected >= cap ${cap:,.2f}/mo: no further workload moves onto this target",
            )
        else:
            within = ("True", ServerlessTargetReason.UNDER_CAP, f"${spend:,.2f}/mo projected < cap ${cap:,.2f}/mo")
        ready = accepted if problems else ("True", ServerlessTargetReason.VALID, "accepted")
        previous = {c.get("type"): c for c in current.get("conditions") or [] if isinstance(c, Mapping)}
        conditions = [
            _condition(ServerlessTargetConditionType.READY, ready, previous, stamp, generation),
            _condition(ServerlessTargetConditionType.ACCEPTED, accepted, previous, stamp, generation),
            _condition(ServerlessTargetConditionType.WITHIN_SPEND_CAP, within, previous, stamp, generation),
        ]
        return {
            "observedGeneration": generation,
            "conditions": conditions,
            "workloads": self._count.get(name, 0),
            "projectedMonthlyUsd": round(spend, 2),
        }


def _condition(
    type_: ServerlessTargetConditionType,
    state: tuple[str, ServerlessTargetReason, str],
    previous: Mapping[Any, Mapping[str, Any]],
    stamp: str,
    generation: int,
) -> dict[str, Any]:
    status, reason, message = state
    before = previous.get(type_.value)
    moved = before is None or before.get("status") != status
    return {
        "type": type_.value,
        "status": status,
        "reason": reason.value,
        "message": message,
        "lastTransitionTime": stamp if moved or before is None else before.get("lastTransitionTime", stamp),
        "observedGeneration": generation,
    }


def _same(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(current.get(k) == v for k, v in wanted.items())
