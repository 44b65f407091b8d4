"""Coexisting with the autoscalers users already run (issue 22, item 8).

* the model Deployment and Service are written by server-side apply under the field manager
  ``inference-placement``; a label or annotation another manager added survives the operator's next apply;
* a user's HorizontalPodAutoscaler or KEDA ScaledObject on the model Deployment owns ``spec.replicas``: the operator
  leaves it out of its apply (handing it over first, so it never falls back to 1), says so in
  ``status.targets.cluster.replicasManagedBy``, and takes replicas back once the autoscaler is gone;
* the decision logic (who owns replicas, what the operator's decision becomes) is pure (``policy.replica_ownership``).

The cluster tests run on the shared local apiserver + controller-manager (whose HPA controller enforces an HPA's
bounds: there is no metrics API here, so within its bounds an HPA leaves the count alone); no Pod needs to run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import kubernetes
import pytest
from kubernetes_asyncio.client import ApiClient, AppsV1Api, AutoscalingV2Api, CoreV1Api, CustomObjectsApi

from inference_placement.api.spec import TargetName
from inference_placement.api.workload import GROUP, PLURAL, VERSION
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.gpu_scheduling import scheduling_for
from inference_placement.policy.replica_ownership import (
    ExternalScaler,
    actuators_under,
    replica_ownership,
    scalers_targeting,
)
from inference_placement.targets.base import DesiredTarget
from inference_placement.targets.cluster import FIELD_MANAGER, HANDOVER_FIELD_MANAGER, ClusterTarget
from inference_placement.targets.cluster_render import render_deployment
from tests.plugins.cluster import KubeCluster
from tests.plugins.operator import OperatorProcess, wait_for
from tests.test_target_cluster import (
    MERGE_PATCH,
    client_for,
    create_workload,
    delete_workload,
    raw_get,
    workload_manifest,
)

# ------------------------------------------------------------------------------------------------ pure


def hpa(name: str, target: str, *, kind: str = "Deployment", owner: str | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": owner}]
    return {
        "metadata": meta,
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target}, **spec},
    }


def scaled_object(name: str, target: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"scaleTargetRef": {"name": target}, **spec}}


def test_an_hpa_on_the_deployment_owns_its_replicas_and_the_decision_becomes_advisory() -> None:
    found = scalers_targeting(
        "llm-model",
        [
            hpa("web", "llm-model", minReplicas=2, maxReplicas=6),
            hpa("other", "other-model"),
            hpa("rs", "llm-model", kind="ReplicaSet"),
        ],
        [],
    )
    assert found == (ExternalScaler("HorizontalPodAutoscaler", "web", 2, 6),)
    ownership = replica_ownership(found)
    assert ownership.external and ownership.managed_by == "HorizontalPodAutoscaler/web"
    assert ownership.applied_replicas(3) is None
    assert ownership.note(3) == (
        "spec.replicas is managed by HorizontalPodAutoscaler/web (replicas 2..6); the operator's 3 replica(s) are "
        "advisory and never written"
    )


def test_keda_is_named_once_as_its_scaled_object_not_as_the_hpa_it_made() -> None:
    found = scalers_targeting(
        "llm-model",
        [hpa("keda-hpa-llm", "llm-model", owner="llm", minReplicas=1, maxReplicas=8)],
        [scaled_object("llm", "llm-model", minReplicaCount=0, maxReplicaCount=8), scaled_object("x", "x-model")],
    )
    assert [s.ref for s in found] == ["ScaledObject/llm"]
    assert found[0].bounds == "0..8"


def test_without_an_autoscaler_the_operator_owns_replicas() -> None:
    ownership = replica_ownership(scalers_targeting("llm-model", [hpa("web", "web-model")], []))
    assert not ownership.external and ownership.managed_by is None
    assert ownership.applied_replicas(3) == 3 and ownership.note(3) is None


def test_two_autoscalers_are_both_named() -> None:
    ownership = replica_ownership(scalers_targeting("m-model", [hpa("a", "m-model")], [scaled_object("b", "m-model")]))
    assert ownership.managed_by == "HorizontalPodAutoscaler/a, ScaledObject/b"
    assert "more than one autoscaler" in (ownership.note(1) or "")


def test_an_autoscaler_being_deleted_no_longer_counts() -> None:
    going = hpa("web", "llm-model")
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert scalers_targeting("llm-model", [going], []) == ()


def test_no_scale_to_zero_under_an_autoscaler_and_everything_else_unchanged() -> None:
    live = Actuators(cluster_scale_to_zero=True, spillover=True, zero_fall_through=True)
    assert actuators_under(live, None) == live
    assert actuators_under(live, "HorizontalPodAutoscaler/web") == Actuators(
        cluster_scale_to_zero=False, spillover=True, zero_fall_through=True
    )


def test_the_render_leaves_replicas_out_for_an_autoscaler() -> None:
    from inference_placement.api.workload import InferenceWorkload
    from inference_placement.policy.gpu_scheduling import GPUNodeFacts

    workload = InferenceWorkload.model_validate(
        {**workload_manifest("llm", "ns"), "metadata": {"name": "llm", "namespace": "ns", "uid": "u1"}}
    )
    scheduling = scheduling_for(workload.spec, GPUNodeFacts())
    assert "replicas" not in render_deployment(workload, None, scheduling)["spec"]
    assert render_deployment(workload, 2, scheduling)["spec"]["replicas"] == 2


# ------------------------------------------------------------------------------------------------ cluster


@pytest.fixture
async def api(kube_cluster: KubeCluster) -> AsyncIterator[ApiClient]:
    client = await client_for(kube_cluster)
    yield client
    await client.close()


@pytest.fixture
async def namespace(api: ApiClient) -> AsyncIterator[str]:
    name = f"ipa-{uuid.uuid4().hex[:8]}"
    body: Any = {"metadata": {"name": name}}
    await CoreV1Api(api).create_namespace(body)
    yield name
    await CoreV1Api(api).delete_namespace(name, grace_period_seconds=0)


class NoGPUs:
    """A CPU workload needs no GPU facts (the capacity cache is not involved)."""

    def gpu_facts(self) -> Any:
        from inference_placement.policy.gpu_scheduling import GPUNodeFacts

        return GPUNodeFacts()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        return True


async def deployment(api: ApiClient, namespace: str, name: str = "llm-model") -> dict[str, Any]:
    found = await raw_get(AppsV1Api(api).read_namespaced_deployment, name, namespace)
    assert found is not None
    return found


def managers(obj: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(manager, operation) -> the fields it owns (main resource only)."""
    return {
        (str(e["manager"]), str(e["operation"])): e.get("fieldsV1") or {}
        for e in obj["metadata"].get("managedFields") or []
        if not e.get("subresource")
    }


async def create_hpa(api: ApiClient, namespace: str, name: str, *, low: int, high: int) -> None:
    body: Any = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm-model"},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }
            ],
        },
    }
    await AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(namespace, body)


@pytest.mark.cluster
async def test_children_are_applied_server_side_and_a_users_label_and_annotation_survive(
    crd_installed: KubeCluster, api: ApiClient, namespace: str
) -> None:
    workload = await create_workload(api, workload_manifest("llm", namespace))
    target = ClusterTarget(api, NoGPUs())
    await target.ensure(workload, DesiredTarget(replicas=1))
    for read in (AppsV1Api(api).read_namespaced_deployment, CoreV1Api(api).read_namespaced_service):
        obj = await raw_get(read, "llm-model", namespace)
        assert obj is not None
        owned = managers(obj)
        assert (FIELD_MANAGER, "Apply") in owned, owned.keys()
        assert (FIELD_MANAGER, "Update") not in owned  # created by the apply, not by a POST

    # the platform team labels and annotates both, with its own field manager
    user_meta = {"metadata": {"labels": {"team": "search"}, "annotations": {"cost-center": "42"}}}
    for patch in (AppsV1Api(api).patch_namespaced_deployment, CoreV1Api(api).patch_namespaced_service):
        call: Any = patch  # the stub lacks _content_type; the client has it
        await call("llm-model", namespace, user_meta, _content_type=MERGE_PATCH, field_manager="platform-team")

    # unchanged: nothing is written; a changed decision is one apply that leaves their fields alone
    writes = target.writes
    await target.ensure(workload, DesiredTarget(replicas=1))
    assert target.writes == writes
    await target.ensure(workload, DesiredTarget(replicas=2, max_in_flight=4))
    assert target.writes == writes + 1
    live = await deployment(api, namespace)
    assert live["spec"]["replicas"] == 2
    assert live["metadata"]["labels"]["team"] == "search"
    assert live["metadata"]["annotations"]["cost-center"] == "42"
    assert live["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "inference-placement"
    assert "f:team" in managers(live)[("platform-team", "Update")]["f:metadata"]["f:labels"]
    service = await raw_get(CoreV1Api(api).read_namespaced_service, "llm-model", namespace)
    assert service is not None and service["metadata"]["labels"]["team"] == "search"
    await delete_workload(api, workload)


@pytest.mark.cluster
async def test_an_hpa_keeps_the_replica_count_across_reconciles_and_gets_it_handed_over(
    crd_installed: KubeCluster, api: ApiClient, namespace: str
) -> None:
    workload = await create_workload(api, workload_manifest("llm", namespace, scaling={"maxReplicas": 6}))
    target = ClusterTarget(api, NoGPUs(), autoscalers_ttl_seconds=0.0)
    await target.ensure(workload, DesiredTarget(replicas=3))
    assert "f:replicas" in managers(await deployment(api, namespace))[(FIELD_MANAGER, "Apply")]["f:spec"]

    # an HPA whose bounds hold the count (no metrics API here: it leaves 3 as it is, it writes nothing)
    await create_hpa(api, namespace, "web", low=1, high=5)
    for decided, cap in ((1, None), (5, None), (0, 4), (2, 2)):  # the last two change the template: applies
        state = await target.ensure(workload, DesiredTarget(replicas=decided, max_in_flight=cap))
        assert state.replicas_managed_by == "HorizontalPodAutoscaler/web"
        assert "HorizontalPodAutoscaler/web (replicas 1..5)" in (state.message or "")
        assert (await deployment(api, namespace))["spec"]["replicas"] == 3, decided
    live = await deployment(api, namespace)
    env = live["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MAX_IN_FLIGHT", "value": "2"} in env  # the applies did happen
    owned = managers(live)
    assert "f:replicas" not in owned[(FIELD_MANAGER, "Apply")]["f:spec"]
    assert "f:replicas" in owned[(HANDOVER_FIELD_MANAGER, "Apply")]["f:spec"]

    # the HPA gone, the operator sets replicas again
    await AutoscalingV2Api(api).delete_namespaced_horizontal_pod_autoscaler("web", namespace)
    state = await target.ensure(workload, DesiredTarget(replicas=2))
    assert state.replicas_managed_by is None
    live = await deployment(api, namespace)
    assert live["spec"]["replicas"] == 2
    assert "f:replicas" in managers(live)[(FIELD_MANAGER, "Apply")]["f:spec"]
    await delete_workload(api, workload)


@pytest.mark.cluster
async def test_an_hpa_the_operator_has_not_listed_yet_is_found_before_its_count_is_overwritten(
    crd_installed: KubeCluster, api: ApiClient, namespace: str
) -> None:
    workload = await create_workload(api, workload_manifest("llm", namespace, scaling={"maxReplicas": 6}))
    target = ClusterTarget(api, NoGPUs(), autoscalers_ttl_seconds=3600.0)  # listed once, at the first ensure
    await target.ensure(workload, DesiredTarget(replicas=1))
    # an HPA whose minimum is above the count: the HPA controller itself scales the Deployment to 2
    await create_hpa(api, namespace, "web", low=2, high=4)

    async def scaled_by_hpa() -> bool:
        return int((await deployment(api, namespace))["spec"]["replicas"]) == 2

    deadline = time.monotonic() + 60
    while not await scaled_by_hpa():
        assert time.monotonic() < deadline, "the HPA controller did not enforce minReplicas"
        await asyncio.sleep(0.5)
    writes = target.writes
    for _ in range(3):
        state = await target.ensure(workload, DesiredTarget(replicas=1))
        assert state.replicas_managed_by == "HorizontalPodAutoscaler/web"
    assert target.writes == writes  # nothing to apply: the count is the HPA's
    assert (await deployment(api, namespace))["spec"]["replicas"] == 2
    await delete_workload(api, workload)


@pytest.mark.cluster
async def test_a_keda_scaled_object_owns_replicas_and_a_missing_keda_is_no_scaler(
    crd_installed: KubeCluster, api: ApiClient, namespace: str
) -> None:
    cluster = crd_installed
    workload = await create_workload(api, workload_manifest("llm", namespace))
    # KEDA absent (no such CRD): listing its ScaledObjects answers 404, read as none
    absent = ClusterTarget(api, NoGPUs())
    absent.scaled_objects = ("keda.sh", "v1alpha1", f"absent{uuid.uuid4().hex[:6]}s")
    assert (await absent.ensure(workload, DesiredTarget(replicas=2))).replicas_managed_by is None
    assert (await deployment(api, namespace))["spec"]["replicas"] == 2

    ensure_keda_crd(cluster)
    body: Any = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "llm"},
        "spec": {"scaleTargetRef": {"name": "llm-model"}, "minReplicaCount": 0, "maxReplicaCount": 8},
    }
    await CustomObjectsApi(api).create_namespaced_custom_object("keda.sh", "v1alpha1", namespace, "scaledobjects", body)
    target = ClusterTarget(api, NoGPUs())
    state = await target.ensure(workload, DesiredTarget(replicas=0, max_in_flight=3))
    assert state.replicas_managed_by == "ScaledObject/llm"
    live = await deployment(api, namespace)
    assert live["spec"]["replicas"] == 2
    assert {"name": "MAX_IN_FLIGHT", "value": "3"} in live["spec"]["template"]["spec"]["containers"][0]["env"]
    await delete_workload(api, workload)


def ensure_keda_crd(cluster: KubeCluster) -> None:
    """A minimal ``scaledobjects.keda.sh`` CRD (what KEDA's chart installs, schema left open) unless one exists;
    additive and used by no other test."""
    import yaml

    if cluster.kubectl("get", "crd", "scaledobjects.keda.sh", check=False).returncode == 0:
        return
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "scaledobjects.keda.sh"},
        "spec": {
            "group": "keda.sh",
            "names": {
                "kind": "ScaledObject",
                "listKind": "ScaledObjectList",
                "plural": "scaledobjects",
                "singular": "scaledobject",
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(crd))
    cluster.wait_crd_established("scaledobjects.keda.sh", timeout=60)


# ------------------------------------------------------------------------------------------------ the operator


def _served_schema_has(cluster: KubeCluster, field: str) -> bool:
    crd = cluster.kubectl("get", "crd", "inferenceworkloads.placement.inference.dev", "-o", "json").stdout
    return f'"{field}"' in crd


def _custom(cluster: KubeCluster) -> Any:
    return kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(config_file=cluster.kubeconfig))


@pytest.mark.cluster
def test_the_running_operator_leaves_replicas_to_the_hpa_and_says_so_in_status(
    crd_installed: KubeCluster, operator_factory: Callable[..., OperatorProcess]
) -> None:
    cluster = crd_installed
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        _operator_under_an_hpa(cluster, namespace, operator_factory)
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _operator_under_an_hpa(
    cluster: KubeCluster, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    import yaml

    api = _custom(cluster)
    apps = kubernetes.client.AppsV1Api(kubernetes.config.new_client_from_config(config_file=cluster.kubeconfig))
    spec = {
        "model": {"image": cluster.model_server_image, "sizeMb": 300, "cpu": "50m", "memory": "128Mi"},
        "placement": {"allowedTargets": [TargetName.CLUSTER.value]},
        "scaling": {"minReplicas": 1, "maxReplicas": 4},
    }
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceWorkload", "metadata": {"name": "llm"}, "spec": spec}
    hpa_doc = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm-model"},
            "minReplicas": 2,
            "maxReplicas": 3,
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(hpa_doc))
    op = operator_factory(namespace, "--set", "cluster.imagePullPolicy=Never")
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def recorded() -> dict[str, Any] | None:
        obj: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llm")
        cluster_status = ((obj.get("status") or {}).get("targets") or {}).get("cluster") or {}
        return obj if "HorizontalPodAutoscaler/web" in (cluster_status.get("message") or "") else None

    obj = wait_for(recorded, timeout=90, what="status.targets.cluster naming the HPA")
    cluster_status = obj["status"]["targets"]["cluster"]
    assert "the operator's 1 replica(s) are advisory and never written" in cluster_status["message"]
    if _served_schema_has(cluster, "replicasManagedBy"):
        # (the shared test cluster's CRD may be another branch's while branches are developed in parallel: the
        # apiserver then prunes the field; the message above says the same)
        assert cluster_status["replicasManagedBy"] == "HorizontalPodAutoscaler/web"
    wait_for(
        lambda: apps.read_namespaced_deployment("llm-model", namespace).spec.replicas == 2,
        timeout=60,
        what="the HPA controller setting its minimum",
    )
    # several ticks (2 s each): the operator's decision stays 1 replica (idle), and the count stays the HPA's
    seen: set[int] = set()
    first = apps.read_namespaced_deployment("llm-model", namespace).metadata.generation
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        seen.add(apps.read_namespaced_deployment("llm-model", namespace).spec.replicas)
        time.sleep(0.5)
    assert seen == {2}
    assert apps.read_namespaced_deployment("llm-model", namespace).metadata.generation == first
    decided = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llm")["status"]["lastDecision"]
    assert decided["target"] == "cluster"
    fields = [
        (m.manager, m.operation)
        for m in apps.read_namespaced_deployment("llm-model", namespace).metadata.managed_fields
    ]
    assert (FIELD_MANAGER, "Apply") in fields
    assert op.alive() and "Traceback" not in op.logs()
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llm")


# ------------------------------------------------------------------------------------------------ the reconciler


class UnderAnHPA:
    """A cluster target whose Deployment an HPA scales (2 replicas, ready): what ``ClusterTarget`` reports then."""

    def __init__(self) -> None:
        self.applied: list[DesiredTarget] = []

    async def ensure(self, workload: Any, desired: DesiredTarget) -> Any:
        from inference_placement.targets.base import TargetState

        self.applied.append(desired)
        return TargetState(
            name="w-model",
            endpoint=None,
            ready=True,
            replicas=2,
            message="2/2 replicas available; spec.replicas is managed by HorizontalPodAutoscaler/web",
            replicas_managed_by="HorizontalPodAutoscaler/web",
        )

    async def observe(self, workload: Any) -> Any:
        return None

    async def retire(self, workload: Any) -> bool:
        return True


def test_the_reconciler_records_the_autoscaler_and_never_scales_to_zero_under_it() -> None:
    from datetime import timedelta
    from typing import cast

    from inference_placement.controller.reconciler import Reconciler
    from inference_placement.explain import explain_workload
    from inference_placement.policy.price_book import default_price_book
    from tests.test_one_decision_everywhere import _body
    from tests.test_scale_to_zero import NOW, _Events, _reconcile

    body = _body(min_replicas=0)
    writer, cluster = _Events(body), UnderAnHPA()
    reconciler = Reconciler(
        cast(Any, writer),
        {TargetName.CLUSTER: cast(Any, cluster)},
        actuators=Actuators(cluster_scale_to_zero=True),
        wake_keep_seconds=0,
    )
    # idle, and the router answers a request that finds no pod: without the HPA this goes to zero
    for step in range(4):
        _reconcile(reconciler, body, NOW + timedelta(seconds=30 * step), answers=True)
    recorded = body["status"]["targets"]["cluster"]
    assert recorded["replicasManagedBy"] == "HorizontalPodAutoscaler/web"
    assert recorded["replicas"] == 2 and recorded["ready"] is True
    assert not (body["status"].get("scaleToZero") or {}).get("zeroedAt")
    assert not [r for r, _ in writer.events if r == "ScaledToZero"]
    assert cluster.applied[-1].replicas >= 1  # once known, the decision itself no longer asks for zero
    explained = explain_workload(body, default_price_book(), now=NOW)
    assert explained.replicas_managed_by == "HorizontalPodAutoscaler/web"


@pytest.mark.cluster
async def test_a_deployment_an_older_version_created_loses_what_the_render_dropped_and_then_stays(
    crd_installed: KubeCluster, api: ApiClient, namespace: str
) -> None:
    """Made by POST and merge patches (an Update entry of the same manager: an apply cannot drop its fields), the
    queue cap the render no longer has is patched away once after the apply; the next reconcile writes nothing."""
    workload = await create_workload(api, workload_manifest("llm", namespace))
    scheduling = scheduling_for(workload.spec, NoGPUs().gpu_facts())
    old: Any = render_deployment(workload, 1, scheduling, max_in_flight=4)
    await AppsV1Api(api).create_namespaced_deployment(namespace, old, field_manager=FIELD_MANAGER)
    assert (FIELD_MANAGER, "Update") in managers(await deployment(api, namespace))
    target = ClusterTarget(api, NoGPUs())
    await target.ensure(workload, DesiredTarget(replicas=1))
    assert [(w.method, w.kind) for w in target.write_log] == [
        ("PATCH", "Deployment"),  # the apply
        ("PATCH", "Deployment"),  # the merge patch of what it left
        ("PATCH", "Service"),
    ]
    live = await deployment(api, namespace)
    assert "env" not in live["spec"]["template"]["spec"]["containers"][0]
    writes = target.writes
    await target.ensure(workload, DesiredTarget(replicas=1))
    assert target.writes == writes
    await delete_workload(api, workload)
