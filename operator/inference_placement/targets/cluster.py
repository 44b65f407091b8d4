"""The in-cluster target: a Deployment and a Service per workload, with GPU scheduling, applied server-side.

``ensure`` renders both objects (``cluster_render``), reads the live ones, and writes only when they differ in a
field the render owns: then the whole rendered object goes out as a server-side apply (field manager
``inference-placement``, ``force``: the operator owns what it renders), which creates a missing object too; nothing
is sent when they are equal, so a steady workload costs no write. Fields other managers set (a user's label, an
autoscaler's ``spec.replicas``) are theirs and stay. Where a user's HorizontalPodAutoscaler or KEDA ScaledObject
targets the Deployment, ``spec.replicas`` is left out of the apply (``policy.replica_ownership``): the autoscaler
owns it, the state says so (``TargetState.replicas_managed_by``). Where GPUs are claimed
through DRA, the ResourceClaimTemplate the Pods claim their GPU from is created first (its spec is immutable: a
changed claim is a new template, and the old one is deleted once the rollout to the new one is done). ``retire``
scales to zero, waits until no Pod is left, then deletes. Children carry a controller owner reference to the
InferenceWorkload, so deleting it garbage-collects them even when the operator is gone.

Every request goes through the async ``kubernetes_asyncio`` client with raw JSON (no model round trip, so the
comparison sees exactly what the apiserver stores). ``writes`` counts the write requests sent.

Objects an older operator version wrote with merge patches carry an ``Update`` entry of the same manager, which an
apply cannot drop fields from: what an apply leaves different from the render is merge-patched once (``_apply_seen``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import aiohttp
from kubernetes_asyncio.client import (
    ApiClient,
    AppsV1Api,
    AutoscalingV2Api,
    CoreV1Api,
    CustomObjectsApi,
    ResourceV1Api,
)

from inference_placement.api.spec import AcceleratorOption, TargetName
from inference_placement.api.workload import InferenceWorkload
from inference_placement.policy.accelerators import spec_on
from inference_placement.policy.gpu_scheduling import GPUNodeFacts, GPUScheduling, scheduling_for
from inference_placement.policy.node_labels import (
    NodeLabels,
    SpotLabels,
    for_capacity,
    for_node_labels,
    spot_labels_for,
)
from inference_placement.policy.replica_ownership import ReplicaOwnership, replica_ownership, scalers_targeting
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

__all__ = [
    "FIELD_MANAGER",
    "HANDOVER_FIELD_MANAGER",
    "SCALED_OBJECTS",
    "ClusterTarget",
    "GPUFactsSource",
    "WriteRecord",
    "deployment_state",
]

log = logging.getLogger(__name__)

FIELD_MANAGER: Final = "inference-placement"
HANDOVER_FIELD_MANAGER: Final = "inference-placement-handover"
"""Applies the live ``spec.replicas`` once, just before the operator's own apply first leaves replicas out for an
autoscaler: a field no manager applies any more is removed (the Deployment would fall back to 1 replica before
the autoscaler writes its own count), so this manager keeps it until the autoscaler takes it over. The handover
Kubernetes documents for moving ``replicas`` to an HPA."""
_MERGE_PATCH: Final = "application/merge-patch+json"
_APPLY_PATCH: Final = "application/apply-patch+yaml"
SCALED_OBJECTS: Final = ("keda.sh", "v1alpha1", "scaledobjects")
"""KEDA's ScaledObjects (group, version, plural), read as unstructured objects; no CRD (404) means none."""
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
        autoscalers_ttl_seconds: float = 15.0,
        gpu_node_labels: NodeLabels = "gfd",
        spot_node_labels: SpotLabels | None = None,
    ) -> None:
        self.gpu_node_labels: NodeLabels = gpu_node_labels
        """The node labels replicas select GPUs by (what the node autoscaler acts on: ``policy.node_labels``)."""
        self.spot_node_labels: SpotLabels = (
            spot_node_labels if spot_node_labels is not None else spot_labels_for(gpu_node_labels)
        )
        """How spot nodes are labelled (``policy.node_labels.for_capacity``)."""
        self._apps = AppsV1Api(api_client)
        self._core = CoreV1Api(api_client)
        self._autoscaling = AutoscalingV2Api(api_client)
        self._custom = CustomObjectsApi(api_client)
        self.scaled_objects: tuple[str, str, str] = SCALED_OBJECTS
        self.autoscalers_ttl_seconds = autoscalers_ttl_seconds
        """How long one namespace's HPAs and ScaledObjects, as listed, are used before they are listed again."""
        self._autoscalers: dict[str, tuple[float, list[Any], list[Any]]] = {}
        """Namespace -> (monotonic time listed, HPAs, ScaledObjects)."""
        self._autoscalers_refused: set[tuple[str, str]] = set()
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
            self._apps.patch_namespaced_deployment,
            self._apps.delete_namespaced_deployment,
        )
        self._services = _Kind(
            "Service",
            self._core.read_namespaced_service,
            self._core.patch_namespaced_service,
            self._core.delete_namespaced_service,
        )
        self._resource = ResourceV1Api(api_client)
        self._claim_templates = _Kind(
            "ResourceClaimTemplate",
            self._resource.read_namespaced_resource_claim_template,
            self._resource.patch_namespaced_resource_claim_template,
            self._resource.delete_namespaced_resource_claim_template,
            immutable_spec=True,
        )

    # ------------------------------------------------------------------------------------------ the contract
    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        """Create or patch the Deployment and Service to match the spec and ``desired``; no write when equal."""
        # a change of accelerator changes the Pod template: the Deployment's rolling update (maxSurge 1,
        # maxUnavailable 0) starts a replica on the new one and retires an old one only once it is Ready
        scheduling = await self.scheduling(workload, desired.accelerator, desired.spot)
        ownership = await self.replica_ownership(workload)
        decided = self.replicas(workload, desired)

        def render(owned: ReplicaOwnership) -> dict[str, Any]:
            return render_deployment(
                workload,
                owned.applied_replicas(decided),
                scheduling,
                image_pull_policy=self.image_pull_policy,
                max_in_flight=desired.max_in_flight,
            )

        async def revise(live: Mapping[str, Any]) -> dict[str, Any] | None:
            """Before the operator's replicas replace a count another manager wrote (an autoscaler created since
            the namespace was last listed), list its autoscalers again: it is theirs if one targets it now."""
            nonlocal ownership
            if ownership.external or not _replicas_set_by_another(live, decided):
                return None
            ownership = await self.replica_ownership(workload, fresh=True)
            return render(ownership) if ownership.external else None

        deployment = render(ownership)
        keep = None
        if scheduling.claim is not None:
            # before the Deployment: a Pod whose claim template is missing waits unschedulable
            template = render_claim_template(workload, scheduling.claim)
            keep = template["metadata"]["name"]
            await self._apply(self._claim_templates, workload, template)
        before, live = await self._apply_seen(self._deployments, workload, deployment, revise=revise)
        await self._apply(self._services, workload, render_service(workload))
        state = _owned_by(deployment_state(live, self._endpoint(workload)), ownership, decided)
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

    async def replica_ownership(self, workload: InferenceWorkload, *, fresh: bool = False) -> ReplicaOwnership:
        """Who owns the Deployment's ``spec.replicas``: the user's HPAs / KEDA ScaledObjects that target it
        (``fresh``: listed now, whatever the last list's age)."""
        hpas, scaled_objects = await self._autoscalers_in(workload.metadata.namespace, fresh=fresh)
        return replica_ownership(scalers_targeting(deployment_name(workload), hpas, scaled_objects))

    async def _autoscalers_in(self, namespace: str, *, fresh: bool = False) -> tuple[list[Any], list[Any]]:
        """The namespace's HPAs and ScaledObjects (listed at most every ``autoscalers_ttl_seconds``). No KEDA
        (its CRD is not installed: 404) means no ScaledObject; a list RBAC refuses is logged once and read as none
        (the chart grants both lists)."""
        now = time.monotonic()
        cached = self._autoscalers.get(namespace)
        if cached is not None and not fresh and now - cached[0] < self.autoscalers_ttl_seconds:
            return cached[1], cached[2]
        hpas = await self._list_or_none(
            "HorizontalPodAutoscalers", namespace, self._autoscaling.list_namespaced_horizontal_pod_autoscaler
        )
        group, version, plural = self.scaled_objects

        async def list_scaled_objects(ns: str, **kwargs: Any) -> Any:
            return await self._custom.list_namespaced_custom_object(group, version, ns, plural, **kwargs)

        scaled_objects = await self._list_or_none("ScaledObjects", namespace, list_scaled_objects)
        self._autoscalers[namespace] = (now, hpas, scaled_objects)
        return hpas, scaled_objects

    async def _list_or_none(self, kind: str, namespace: str, func: Callable[..., Awaitable[Any]]) -> list[Any]:
        try:
            answer = await self._request("GET", kind, namespace, "", func, namespace_only=True)
        except PermanentTargetError as e:
            if e.status_code != 403:
                raise
            if (kind, namespace) not in self._autoscalers_refused:
                self._autoscalers_refused.add((kind, namespace))
                log.warning(
                    "cannot list %s in %s (%s): replicas are set as if none targeted the model",
                    kind,
                    namespace,
                    e.message,
                )
            return []
        return list((answer or {}).get("items") or [])

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
        self, workload: InferenceWorkload, accelerator: AcceleratorOption | None = None, spot: bool | None = None
    ) -> GPUScheduling:
        """GPU scheduling from what the capacity cache saw on the nodes (waits for its first sync if needed), on
        ``accelerator`` (one of the spec's acceptable ones, as decided) or the spec's first, selecting nodes by the
        labels ``gpu_node_labels`` names (what the node autoscaler can act on), on the capacity type ``spot``
        asks for (spot preferred, or on-demand required) in the labels ``spot_node_labels`` names."""
        spec = spec_on(workload.spec, accelerator) if accelerator is not None else workload.spec
        if spec.accelerator.needs_gpu and not await self._capacity.wait_synced(self.sync_timeout_seconds):
            raise RetryableTargetError("GPU nodes not read yet (capacity cache not synced)")
        try:
            gpu = for_node_labels(scheduling_for(spec, self._capacity.gpu_facts()), spec, self.gpu_node_labels)
            return for_capacity(gpu, self.spot_node_labels, spot if spec.cluster.spot else None)
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
        self,
        kind: _Kind,
        workload: InferenceWorkload,
        desired: dict[str, Any],
        *,
        revise: Callable[[Mapping[str, Any]], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(the live object before, the object after): apply ``desired`` server-side when the live object is
        missing or differs from it in a field the render owns (``merge_patch``); leave it otherwise. ``revise``:
        asked once a live object differs, it may return another ``desired`` to compare and apply instead."""
        namespace = desired["metadata"]["namespace"]
        name = desired["metadata"]["name"]
        compared = {"metadata": desired["metadata"]} if kind.immutable_spec else desired
        live = await self._read(kind, namespace, name)
        if live is not None:
            self._check_ours(kind, live, workload)
            if (live.get("metadata") or {}).get("deletionTimestamp"):
                raise RetryableTargetError(f"{kind.name} {namespace}/{name} is being deleted")
            patch = merge_patch(compared, live)
            revised = await revise(live) if patch is not None and revise is not None else None
            if revised is not None:
                desired = compared = revised
                patch = merge_patch(compared, live)
            if patch is None:
                return live, live
            log.info("applying %s %s/%s: %s", kind.name, namespace, name, sorted(_leaf_paths(patch)))
            if "replicas" not in (desired.get("spec") or {}) and _applies(live, ("f:spec", "f:replicas")):
                await self._hand_over_replicas(kind, live)
        # missing: the apply creates it (a foreign object created meanwhile is refused: two controller references)
        applied = await self._write(
            "PATCH",
            kind,
            namespace,
            name,
            kind.patch,
            body=desired,
            _content_type=_APPLY_PATCH,
            field_manager=FIELD_MANAGER,
            force=True,
        )
        assert applied is not None
        leftover = merge_patch(compared, applied)
        if leftover is not None:
            # fields an older version set by merge patch (an Update entry): an apply does not remove them
            log.info("patching %s %s/%s: %s", kind.name, namespace, name, sorted(_leaf_paths(leftover)))
            patched = await self._write(
                "PATCH",
                kind,
                namespace,
                name,
                kind.patch,
                body=leftover,
                _content_type=_MERGE_PATCH,
                field_manager=FIELD_MANAGER,
            )
            assert patched is not None
            applied = patched
        return live, applied

    async def _hand_over_replicas(self, kind: _Kind, live: Mapping[str, Any]) -> None:
        """Co-own the live ``spec.replicas`` under ``HANDOVER_FIELD_MANAGER`` before the operator's apply leaves
        it out, so it keeps its value (not the default 1) until the autoscaler writes its own."""
        metadata = live.get("metadata") or {}
        namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
        body = {
            "apiVersion": live.get("apiVersion", "apps/v1"),
            "kind": live.get("kind", kind.name),
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": int((live.get("spec") or {}).get("replicas", 1))},
        }
        log.info("handing %s %s/%s spec.replicas over to its autoscaler", kind.name, namespace, name)
        await self._write(
            "PATCH",
            kind,
            namespace,
            name,
            kind.patch,
            body=body,
            _content_type=_APPLY_PATCH,
            field_manager=HANDOVER_FIELD_MANAGER,
        )

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


def _owned_by(state: TargetState, ownership: ReplicaOwnership, decided: int) -> TargetState:
    """``state`` naming the autoscaler that owns the replicas, when one does."""
    note = ownership.note(decided)
    if note is None:
        return state
    message = f"{state.message}; {note}" if state.message else note
    return replace(state, replicas_managed_by=ownership.managed_by, message=message)


def _replicas_set_by_another(live: Mapping[str, Any], decided: int) -> bool:
    """The live ``spec.replicas`` differs from ``decided`` and a manager other than the operator's owns it."""
    if int((live.get("spec") or {}).get("replicas", 1)) == decided:
        return False
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") in (FIELD_MANAGER, HANDOVER_FIELD_MANAGER):
            continue
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
            return True
    return False


def _applies(obj: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """The operator's apply (manager ``inference-placement``, operation Apply) owns the field at ``path``
    (``("f:spec", "f:replicas")``) in ``obj``'s managedFields."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") != FIELD_MANAGER or entry.get("operation") != "Apply" or entry.get("subresource"):
            continue
        fields: Any = entry.get("fieldsV1") or {}
        for key in path:
            fields = fields.get(key) if isinstance(fields, dict) else None
        if fields is not None:
            return True
    return False


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
