"""The in-cluster target: a Deployment and a Service per workload, with GPU scheduling, applied as minimal patches.

``ensure`` renders both objects (``cluster_render``), reads the live ones, and writes only what differs: create
when missing, a JSON merge patch of the differing fields otherwise, nothing when equal. Where GPUs are claimed
through DRA, the ResourceClaimTemplate the Pods claim their GPU from is created first (its spec is immutable: a
changed claim is a new template, and the old one is deleted once the rollout to the new one is done). ``retire``
scales to zero, waits until no Pod is left, then deletes. Children carry a controller owner reference to the
InferenceWorkload, so deleting it garbage-collects them even when the operator is gone.

Every request goes through the async ``kubernetes_asyncio`` client with raw JSON (no model round trip, so the
comparison sees exactly what the apiserver stores). ``writes`` counts the write requests sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import aiohttp
from kubernetes_asyncio.client import ApiClient, AppsV1Api, CoreV1Api, ResourceV1Api

from inference_placement.api.spec import AcceleratorOption, TargetName
from inference_placement.api.workload import InferenceWorkload
from inference_placement.policy.accelerators import spec_on
from inference_placement.policy.gpu_scheduling import GPUNodeFacts, GPUScheduling, scheduling_for
from inference_placement.targets.base import (
    DesiredTarget,
    NotOwnedError,
    PermanentTargetError,
    RetryableTargetError,
    TargetError,
    TargetState,
)
from inference_placement.targets.cluster_render import (
    deployment_name,
    is_ours,
    left_by_predecessor,
    merge_patch,
    model_labels,
    render_claim_template,
    render_deployment,
    render_service,
    selector_labels,
    service_name,
)

__all__ = ["FIELD_MANAGER", "ClusterTarget", "GPUFactsSource", "WriteRecord", "deployment_state"]

log = logging.getLogger(__name__)

FIELD_MANAGER: Final = "inference-placement"
_MERGE_PATCH: Final = "application/merge-patch+json"
_REQUEST_TIMEOUT_SECONDS: Final = 30.0
_STUCK_TERMINATING_SECONDS: Final = 60.0
"""A Pod terminating this long past its deletionTimestamp is on a lost node and does not hold up retirement."""


class GPUFactsSource(Protocol):
    """What the cluster target needs from the capacity cache."""

    def gpu_facts(self) -> GPUNodeFacts: ...

    async def wait_synced(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class WriteRecord:
    """One write request the target sent: ``("PATCH", "Deployment", "ns/name-model")``."""

    method: str
    kind: str
    key: str


@dataclass(frozen=True)
class _Kind:
    name: str
    read: Callable[..., Awaitable[Any]]
    create: Callable[..., Awaitable[Any]]
    patch: Callable[..., Awaitable[Any]]
    delete: Callable[..., Awaitable[Any]]
    immutable_spec: bool = False
    """The apiserver refuses spec changes (a ResourceClaimTemplate's name carries its spec's hash instead)."""


def deployment_state(deployment: Mapping[str, Any], endpoint: str | None) -> TargetState:
    """Ready when the rollout is observed and done, and the available replicas meet ``spec.replicas`` (> 0).

    Done: no replica of an older template is left (``status.replicas`` beyond ``updatedReplicas``). During a
    rolling update the available count already includes the new replica while an old one still serves, so "the
    queue cap is off every replica" (the spill's uncapping) must wait for this, not for the count alone."""
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    available = int(status.get("availableReplicas") or 0)
    observed = int(status.get("observedGeneration") or 0) >= int(metadata.get("generation") or 0)
    old = int(status.get("replicas") or 0) - int(status["updatedReplicas"]) if "updatedReplicas" in status else 0
    ready = wanted > 0 and observed and available >= wanted and old <= 0
    parts = [f"{available}/{wanted} replicas available"]
    if not observed:
        parts.append("new spec not yet observed")
    if old > 0:
        parts.append(f"rollout in progress: {old} replica(s) of the previous template")
    if metadata.get("deletionTimestamp"):
        parts.append("being deleted")
    for condition in status.get("conditions") or []:
        failing = condition.get("type") == "ReplicaFailure" and condition.get("status") == "True"
        stuck = condition.get("type") == "Progressing" and condition.get("status") == "False"
        if (failing or stuck) and condition.get("message"):
            parts.append(str(condition["message"]))
    return TargetState(
        name=str(metadata.get("name", "")),
        endpoint=endpoint,
        ready=ready,
        replicas=available,
        message="; ".join(parts),
    )


class ClusterTarget:
    """Places a workload on the cluster's own nodes (whole GPUs, MIG slices, time-sliced GPUs, or CPU)."""

    name = TargetName.CLUSTER

    def __init__(
        self,
        api_client: ApiClient,
        capacity_cache: GPUFactsSource,
        image_pull_policy: str | None = None,
        *,
        sync_timeout_seconds: float = 10.0,
    ) -> None:
        self._apps = AppsV1Api(api_client)
        self._core = CoreV1Api(api_client)
        self._capacity = capacity_cache
        self.image_pull_policy = image_pull_policy
        self.sync_timeout_seconds = sync_timeout_seconds
        self.writes = 0
        """Write requests sent (POST, PATCH, DELETE), successful or not."""
        self._claim_templates_left: dict[str, str | None] = {}
        """Workload key -> the one ResourceClaimTemplate it was last seen to have (None: none)."""
        self.write_log: list[WriteRecord] = []
        self._deployments = _Kind(
            "Deployment",
            self._apps.read_namespaced_deployment,
            self._apps.create_namespaced_deployment,
            self._apps.patch_namespaced_deployment,
            self._apps.delete_namespaced_deployment,
        )
        self._services = _Kind(
            "Service",
            self._core.read_namespaced_service,
            self._core.create_namespaced_service,
            self._core.patch_namespaced_service,
            self._core.delete_namespaced_service,
        )
        self._resource = ResourceV1Api(api_client)
        self._claim_templates = _Kind(
            "ResourceClaimTemplate",
            self._resource.read_namespaced_resource_claim_template,
            self._resource.create_namespaced_resource_claim_template,
            self._resource.patch_namespaced_resource_claim_template,
            self._resource.delete_namespaced_resource_claim_template,
            immutable_spec=True,
        )

    # ------------------------------------------------------------------------------------------ the contract
    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        """Create or patch the Deployment and Service to match the spec and ``desired``; no write when equal."""
        # a change of accelerator changes the Pod template: the Deployment's rolling update (maxSurge 1,
        # maxUnavailable 0) starts a replica on the new one and retires an old one only once it is Ready
        scheduling = await self.scheduling(workload, desired.accelerator)
        replicas = self.replicas(workload, desired)
        deployment = render_deployment(
            workload,
            replicas,
            scheduling,
            image_pull_policy=self.image_pull_policy,
            max_in_flight=desired.max_in_flight,
        )
        keep = None
        if scheduling.claim is not None:
            # before the Deployment: a Pod whose claim template is missing waits unschedulable
            template = render_claim_template(workload, scheduling.claim)
            keep = template["metadata"]["name"]
            await self._apply(self._claim_templates, workload, template)
        before, live = await self._apply_seen(self._deployments, workload, deployment)
        await self._apply(self._services, workload, render_service(workload))
        state = deployment_state(live, self._endpoint(workload))
        if state.ready:
            # the rollout is done: no Pod of an older template claims from an older claim template any more
            await self._prune_claim_templates(workload, before, keep=keep)
        return state

    async def observe(self, workload: InferenceWorkload) -> TargetState | None:
        live = await self._read(self._deployments, workload.metadata.namespace, deployment_name(workload))
        if live is None:
            return None
        self._check_ours(self._deployments, live, workload)
        return deployment_state(live, self._endpoint(workload))

    async def retire(self, workload: InferenceWorkload) -> bool:
        """Scale to zero, wait until no Pod is left, then delete the Deployment and the Service; True once gone."""
        namespace = workload.metadata.namespace
        deployment = await self._read(self._deployments, namespace, deployment_name(workload))
        if deployment is not None:
            self._check_ours(self._deployments, deployment, workload)
            metadata = deployment.get("metadata") or {}
            if metadata.get("deletionTimestamp"):
                return False
            spec_replicas = int((deployment.get("spec") or {}).get("replicas", 1))
            status = deployment.get("status") or {}
            if spec_replicas != 0:
                await self._write(
                    "PATCH",
                    self._deployments,
                    namespace,
                    deployment_name(workload),
                    self._deployments.patch,
                    body={"spec": {"replicas": 0}},
                    _content_type=_MERGE_PATCH,
                    field_manager=FIELD_MANAGER,
                )
                return False
            draining = int(status.get("replicas") or 0) > 0 or int(status.get("observedGeneration") or 0) < int(
                metadata.get("generation") or 0
            )
            # status.replicas no longer counts terminating Pods; they are still finishing in-flight requests.
            if draining or await self._pods_left(workload):
                return False
        service = await self._read(self._services, namespace, service_name(workload))
        if service is not None:
            self._check_ours(self._services, service, workload)
        gone = await self._prune_claim_templates(workload, deployment, keep=None)
        for kind, obj, name in (
            (self._deployments, deployment, deployment_name(workload)),
            (self._services, service, service_name(workload)),
        ):
            if obj is None:
                continue
            if (obj.get("metadata") or {}).get("deletionTimestamp"):
                gone = False
                continue
            result = await self._write("DELETE", kind, namespace, name, kind.delete, propagation_policy="Background")
            # A Status means it is gone; the object back means finalizers still hold it.
            if result is not None and result.get("kind") != "Status":
                gone = False
        return gone

    async def _prune_claim_templates(
        self, workload: InferenceWorkload, deployment: Mapping[str, Any] | None, *, keep: str | None
    ) -> bool:
        """Delete the workload's ResourceClaimTemplates other than ``keep``; True when no other is left.

        Costs no request for a workload that never claimed through DRA (its Deployment names no claim template and
        this process saw none), nor once the templates left are known to be just ``keep``."""
        key = workload.key
        known = self._claim_templates_left.get(key, _UNKNOWN)
        if known == keep:
            return True
        if known is _UNKNOWN and keep is None and not _claim_templates_of(deployment):
            return True
        namespace = workload.metadata.namespace
        selector = ",".join(f"{k}={v}" for k, v in model_labels(workload).items())
        list_templates: Callable[..., Awaitable[Any]] = self._resource.list_namespaced_resource_claim_template
        answer = await self._request(
            "GET", "ResourceClaimTemplates", namespace, "", list_templates, namespace_only=True, label_selector=selector
        )
        gone = True
        kind = self._claim_templates
        for template in (answer or {}).get("items") or []:
            metadata = template.get("metadata") or {}
            name = str(metadata.get("name", ""))
            if name == keep or not is_ours(template, workload):
                continue
            if metadata.get("deletionTimestamp"):
                gone = False
                continue
            result = await self._write("DELETE", kind, namespace, name, kind.delete)
            # a Status, or the deleted object itself; one still marked for deletion is held by a finalizer
            if result is not None and (result.get("metadata") or {}).get("deletionTimestamp"):
                gone = False
        if gone:
            self._claim_templates_left[key] = keep
        return gone

    async def _pods_left(self, workload: InferenceWorkload) -> int:
        """Model server Pods still present, terminating ones included."""
        selector = ",".join(f"{k}={v}" for k, v in selector_labels(workload).items())
        namespace = workload.metadata.namespace
        list_pods: Callable[..., Awaitable[Any]] = self._core.list_namespaced_pod  # raw answer, not a V1PodList
        answer = await self._request(
            "GET", "Pods", namespace, "", list_pods, namespace_only=True, label_selector=selector
        )
        now = datetime.now(UTC)
        return sum(1 for pod in (answer or {}).get("items") or [] if not _stuck_terminating(pod, now))

    # ------------------------------------------------------------------------------------------ decisions
    async def scheduling(
        self, workload: InferenceWorkload, accelerator: AcceleratorOption | None = None
    ) -> GPUScheduling:
        """GPU scheduling from what the capacity cache saw on the nodes (waits for its first sync if needed), on
        ``accelerator`` (one of the spec's acceptable ones, as decided) or the spec's first."""
        spec = spec_on(workload.spec, accelerator) if accelerator is not None else workload.spec
        if spec.accelerator.needs_gpu and not await self._capacity.wait_synced(self.sync_timeout_seconds):
            raise RetryableTargetError("GPU nodes not read yet (capacity cache not synced)")
        try:
            return scheduling_for(spec, self._capacity.gpu_facts())
        except ValueError as e:
            raise PermanentTargetError(str(e)) from e

    @staticmethod
    def replicas(workload: InferenceWorkload, desired: DesiredTarget) -> int:
        """The decision's replicas within the spec's bounds (``desired.max_replicas`` tightens the maximum)."""
        scaling = workload.spec.scaling
        cap = scaling.max_replicas if desired.max_replicas is None else min(desired.max_replicas, scaling.max_replicas)
        return max(0, min(max(desired.replicas, scaling.min_replicas), cap))

    # ------------------------------------------------------------------------------------------ I/O
    @staticmethod
    def _endpoint(workload: InferenceWorkload) -> str:
        ns = workload.metadata.namespace
        return f"http://{service_name(workload)}.{ns}.svc:{workload.spec.model.port}"

    @staticmethod
    def _check_ours(kind: _Kind, live: Mapping[str, Any], workload: InferenceWorkload) -> None:
        if not is_ours(live, workload):
            name = (live.get("metadata") or {}).get("name")
            if left_by_predecessor(live, workload):
                raise RetryableTargetError(
                    f"{kind.name} {workload.metadata.namespace}/{name} belongs to a deleted InferenceWorkload of the "
                    "same name; waiting for garbage collection"
                )
            raise NotOwnedError(
                f"{kind.name} {workload.metadata.namespace}/{name} exists but does not belong to {workload.key}"
            )

    async def _apply(self, kind: _Kind, workload: InferenceWorkload, desired: dict[str, Any]) -> dict[str, Any]:
        return (await self._apply_seen(kind, workload, desired))[1]

    async def _apply_seen(
        self, kind: _Kind, workload: InferenceWorkload, desired: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(the live object before, the object after): create, patch or leave ``desired``."""
        namespace = desired["metadata"]["namespace"]
        name = desired["metadata"]["name"]
        live = await self._read(kind, namespace, name)
        if live is None:
            try:
                created = await self._write(
                    "POST", kind, namespace, name, kind.create, body=desired, field_manager=FIELD_MANAGER
                )
            except RetryableTargetError as e:
                if e.status_code != 409:
                    raise
                live = await self._read(kind, namespace, name)  # created meanwhile: compare with that
                if live is None:
                    raise
            else:
                assert created is not None
                return None, created
        self._check_ours(kind, live, workload)
        if (live.get("metadata") or {}).get("deletionTimestamp"):
            raise RetryableTargetError(f"{kind.name} {namespace}/{name} is being deleted")
        patch = merge_patch({"metadata": desired["metadata"]} if kind.immutable_spec else desired, live)
        if patch is None:
            return live, live
        log.info("patching %s %s/%s: %s", kind.name, namespace, name, sorted(_leaf_paths(patch)))
        patched = await self._write(
            "PATCH",
            kind,
            namespace,
            name,
            kind.patch,
            body=patch,
            _content_type=_MERGE_PATCH,
            field_manager=FIELD_MANAGER,
        )
        assert patched is not None
        return live, patched

    async def _read(self, kind: _Kind, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._request("GET", kind.name, namespace, name, kind.read)

    async def _write(
        self,
        method: str,
        kind: _Kind,
        namespace: str,
        name: str,
        func: Callable[..., Awaitable[Any]],
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        self.writes += 1
        self.write_log.append(WriteRecord(method, kind.name, f"{namespace}/{name}"))
        if method == "POST":
            return await self._request(method, kind.name, namespace, name, func, namespace_only=True, **kwargs)
        return await self._request(method, kind.name, namespace, name, func, **kwargs)

    async def _request(
        self,
        method: str,
        kind: str,
        namespace: str,
        name: str,
        func: Callable[..., Awaitable[Any]],
        *,
        namespace_only: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        """One API call with a raw JSON answer; None on 404; errors mapped onto the target error tree."""
        what = f"{method} {kind} {namespace}/{name}"
        args = (namespace,) if namespace_only else (name, namespace)
        try:
            response = await func(*args, _preload_content=False, _request_timeout=_REQUEST_TIMEOUT_SECONDS, **kwargs)
            try:
                body = await response.read()
                status = int(response.status)
            finally:
                response.release()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise RetryableTargetError(f"{what}: {type(e).__name__}: {e}") from e
        if status == 404:
            return None
        if 200 <= status < 300:
            parsed: dict[str, Any] = json.loads(body) if body else {}
            return parsed
        raise _api_error(what, status, body)


_UNKNOWN: Final = "<unknown>"
"""Not yet seen: the workload's ResourceClaimTemplates were never listed by this process."""


def _claim_templates_of(deployment: Mapping[str, Any] | None) -> list[str]:
    """The ResourceClaimTemplates a Deployment's Pod template claims from."""
    pod_spec = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    return [
        str(c["resourceClaimTemplateName"])
        for c in pod_spec.get("resourceClaims") or []
        if c.get("resourceClaimTemplateName")
    ]


def _stuck_terminating(pod: Mapping[str, Any], now: datetime) -> bool:
    """A Pod still terminating well after its grace period: its node is gone, it serves nothing (Pod GC's job)."""
    deadline = (pod.get("metadata") or {}).get("deletionTimestamp")
    if not deadline:
        return False
    try:
        ends = datetime.fromisoformat(str(deadline).replace("Z", "+00:00"))
    except ValueError:
        return False
    return now > ends + timedelta(seconds=_STUCK_TERMINATING_SECONDS)


def _api_error(what: str, status: int, body: bytes) -> TargetError:
    try:
        detail = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        detail = body[:200].decode(errors="replace")
    message = f"{what}: HTTP {status}: {detail}".rstrip(": ")
    if status in (409, 429) or status >= 500:
        return RetryableTargetError(message, status_code=status)
    return PermanentTargetError(message, status_code=status)


def _leaf_paths(patch: Mapping[str, Any], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for key, value in patch.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            paths.extend(_leaf_paths(value, path))
        else:
            paths.append(path)
    return paths
