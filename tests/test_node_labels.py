"""What a pending replica carries for the node autoscaler (issue 22, item 8): GPU requests, the node labels GKE node
auto-provisioning or Karpenter can act on before the node exists (``cluster.gpuNodeLabels``), and the GPU
toleration; rendered into the Deployment's Pod template. docs/operations.md lists the same."""

from __future__ import annotations

from typing import Any

import pytest

from inference_placement.controller.settings import OperatorSettings
from inference_placement.policy.gpu_scheduling import GPUNodeFacts, scheduling_for
from inference_placement.policy.node_labels import (
    GKE_SPOT_TOLERATION,
    NodeLabels,
    SpotLabels,
    for_capacity,
    for_node_labels,
    spot_labels_for,
)
from inference_placement.targets.cluster_render import render_deployment
from tests.test_cluster_render import workload

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists"}  # any effect: GKE and EKS GPU taints


def rendered(accelerator: dict[str, Any], labels: NodeLabels, **spec: Any) -> dict[str, Any]:
    """The Pod template's spec as the cluster target renders it."""
    w = workload(accelerator=accelerator, **spec)
    scheduling = for_node_labels(scheduling_for(w.spec, GPUNodeFacts()), w.spec, labels)
    pod: dict[str, Any] = render_deployment(w, 1, scheduling)["spec"]["template"]["spec"]
    return pod


def required(pod: dict[str, Any]) -> list[dict[str, Any]]:
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (term,) = terms
    expressions: list[dict[str, Any]] = term["matchExpressions"]
    return expressions


def preferred(pod: dict[str, Any]) -> list[dict[str, Any]]:
    (term,) = pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["weight"] == 100
    expressions: list[dict[str, Any]] = term["preference"]["matchExpressions"]
    return expressions


def gpu_requests(pod: dict[str, Any]) -> dict[str, str]:
    (container,) = pod["containers"]
    requests: dict[str, str] = container["resources"]["requests"]
    limits: dict[str, str] = container["resources"]["limits"]
    gpu = {k: v for k, v in requests.items() if k.startswith("nvidia.com/")}
    assert gpu == {k: v for k, v in limits.items() if k.startswith("nvidia.com/")}  # a GPU is requested = limited
    return gpu


def In(key: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": list(values)}


@pytest.mark.parametrize(
    ("accelerator", "spec", "expressions", "requests"),
    [
        pytest.param(
            {"type": "nvidia-l4"},
            {},
            [In("cloud.google.com/gke-accelerator", "nvidia-l4")],
            {"nvidia.com/gpu": "1"},
            id="l4",
        ),
        pytest.param(
            {"type": "nvidia-h100-80gb", "count": 2},
            {"cluster": {"spot": True}},  # spot is the capacity vocabulary's (for_capacity), not the GPU's
            [In("cloud.google.com/gke-accelerator", "nvidia-h100-80gb")],
            {"nvidia.com/gpu": "2"},
            id="h100-x2",
        ),
        pytest.param(
            {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"},
            {},
            [
                In("cloud.google.com/gke-accelerator", "nvidia-a100-80gb"),
                In("cloud.google.com/gke-gpu-partition-size", "3g.40gb"),
            ],
            {"nvidia.com/gpu": "1"},  # GKE advertises a partition as nvidia.com/gpu
            id="a100-mig",
        ),
        pytest.param(
            {"type": "nvidia-t4", "sharing": "time-slicing", "timeSlicingReplicas": 4},
            {},
            [
                In("cloud.google.com/gke-accelerator", "nvidia-tesla-t4"),
                In("cloud.google.com/gke-gpu-sharing-strategy", "time-sharing"),
                {"key": "cloud.google.com/gke-max-shared-clients-per-gpu", "operator": "Lt", "values": ["5"]},
            ],
            {"nvidia.com/gpu": "1"},
            id="t4-time-sharing",
        ),
    ],
)
def test_gke_replicas_select_what_node_auto_provisioning_creates(
    accelerator: dict[str, Any], spec: dict[str, Any], expressions: list[dict[str, Any]], requests: dict[str, str]
) -> None:
    pod = rendered(accelerator, "gke", **spec)
    assert required(pod) == expressions
    assert gpu_requests(pod) == requests
    assert GPU_TOLERATION in pod["tolerations"]
    assert not any(e["key"].startswith("nvidia.com/") for e in required(pod))  # no GFD label a new node lacks


@pytest.mark.parametrize(
    ("accelerator", "spec", "expressions", "requests"),
    [
        pytest.param(
            {"type": "nvidia-a10g"},
            {},
            [In("karpenter.k8s.aws/instance-gpu-name", "a10g")],
            {"nvidia.com/gpu": "1"},
            id="a10g",
        ),
        pytest.param(
            {"type": "nvidia-a100-40gb", "count": 4},
            {"cluster": {"spot": True}},
            [
                In("karpenter.k8s.aws/instance-gpu-name", "a100"),
                In("karpenter.k8s.aws/instance-gpu-memory", "40960"),
            ],
            {"nvidia.com/gpu": "4"},
            id="a100-40gb-x4",
        ),
        pytest.param(
            {"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 2},
            {},
            [In("karpenter.k8s.aws/instance-gpu-name", "l4")],
            {"nvidia.com/gpu": "1"},
            id="l4-time-sliced",
        ),
    ],
)
def test_karpenter_replicas_select_what_its_aws_provider_knows_before_launch(
    accelerator: dict[str, Any], spec: dict[str, Any], expressions: list[dict[str, Any]], requests: dict[str, str]
) -> None:
    pod = rendered(accelerator, "karpenter-aws", **spec)
    assert required(pod) == expressions
    assert gpu_requests(pod) == requests
    assert GPU_TOLERATION in pod["tolerations"]


def test_karpenter_cannot_launch_a_mig_profile_so_mig_keeps_gfd_labels() -> None:
    accelerator = {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"}
    assert rendered(accelerator, "karpenter-aws") == rendered(accelerator, "gfd")
    assert gpu_requests(rendered(accelerator, "gfd")) == {"nvidia.com/mig-3g.40gb": "1"}


def test_gfd_is_the_default_and_selects_by_gpu_feature_discovery() -> None:
    assert OperatorSettings().cluster.gpu_node_labels == "gfd"
    pod = rendered({"type": "nvidia-l4"}, "gfd")
    assert required(pod)[0]["key"] == "nvidia.com/gpu.product"
    assert gpu_requests(pod) == {"nvidia.com/gpu": "1"}


def test_cpu_only_replicas_get_no_gpu_labels_whatever_the_setting() -> None:
    for labels in ("gfd", "gke", "karpenter-aws"):
        pod = rendered({"type": "none"}, labels)
        assert "affinity" not in pod and "tolerations" not in pod


def test_the_spec_node_selector_is_kept_beside_the_provider_labels() -> None:
    pod = rendered({"type": "nvidia-l4"}, "gke", cluster={"nodeSelector": {"cloud.google.com/gke-nodepool": "gpu"}})
    assert pod["nodeSelector"] == {"cloud.google.com/gke-nodepool": "gpu"}
    assert required(pod) == [In("cloud.google.com/gke-accelerator", "nvidia-l4")]


def test_a_gpu_gke_does_not_offer_is_refused_by_name() -> None:
    w = workload(accelerator={"type": "nvidia-a10g"})
    with pytest.raises(ValueError, match="nvidia-a10g is not offered on GKE"):
        for_node_labels(scheduling_for(w.spec, GPUNodeFacts()), w.spec, "gke")


def test_the_setting_is_read_from_the_operator_settings() -> None:
    settings = OperatorSettings.model_validate({"cluster": {"gpuNodeLabels": "karpenter-aws"}})
    assert settings.cluster.gpu_node_labels == "karpenter-aws"


# ------------------------------------------------------------------------------------------------ spot capacity


def on_capacity(
    accelerator: dict[str, Any], gpu: NodeLabels, spot_labels: SpotLabels, spot: bool | None
) -> dict[str, Any]:
    """The Pod template's spec for a workload asking for spot, on the capacity type the decision chose."""
    w = workload(accelerator=accelerator, cluster={"spot": True})
    scheduling = for_node_labels(scheduling_for(w.spec, GPUNodeFacts()), w.spec, gpu)
    pod: dict[str, Any] = render_deployment(w, 1, for_capacity(scheduling, spot_labels, spot))["spec"]["template"]
    return dict(pod["spec"])


@pytest.mark.parametrize(
    ("spot_labels", "gpu", "label", "value"),
    [
        pytest.param("eks", "gfd", "eks.amazonaws.com/capacityType", "SPOT", id="eks-managed-node-group"),
        pytest.param("gke", "gke", "cloud.google.com/gke-spot", "true", id="gke-spot-vms"),
        pytest.param("karpenter", "karpenter-aws", "karpenter.sh/capacity-type", "spot", id="karpenter"),
    ],
)
def test_a_spot_replica_prefers_the_providers_spot_nodes_and_falls_back_to_on_demand(
    spot_labels: SpotLabels, gpu: NodeLabels, label: str, value: str
) -> None:
    pod = on_capacity({"type": "nvidia-l4"}, gpu, spot_labels, True)
    # preferred, never required: with no spot node free the scheduler places it on an on-demand node at once
    assert preferred(pod) == [In(label, value)]
    assert all(e["key"] != label for e in required(pod))
    assert GPU_TOLERATION in pod["tolerations"]
    assert (GKE_SPOT_TOLERATION in pod["tolerations"]) is (spot_labels == "gke")


@pytest.mark.parametrize(
    ("spot_labels", "requirement"),
    [
        pytest.param("eks", In("eks.amazonaws.com/capacityType", "ON_DEMAND"), id="eks"),
        pytest.param(
            "gke", {"key": "cloud.google.com/gke-spot", "operator": "NotIn", "values": ["true"]}, id="gke-unlabelled"
        ),
        pytest.param("karpenter", In("karpenter.sh/capacity-type", "on-demand"), id="karpenter"),
    ],
)
def test_a_spot_workload_the_policy_keeps_on_demand_requires_on_demand_nodes(
    spot_labels: SpotLabels, requirement: dict[str, Any]
) -> None:
    pod = on_capacity({"type": "nvidia-l4"}, "gfd", spot_labels, False)
    assert required(pod)[-1] == requirement
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"]["nodeAffinity"]
    assert GKE_SPOT_TOLERATION not in pod["tolerations"]


def test_cpu_replicas_take_the_capacity_type_too() -> None:
    pod = on_capacity({"type": "none"}, "gfd", "karpenter", True)
    assert preferred(pod) == [In("karpenter.sh/capacity-type", "spot")]
    assert "tolerations" not in pod


@pytest.mark.parametrize("spot", [True, False, None])
def test_without_spot_labels_or_a_capacity_choice_nothing_changes(spot: bool | None) -> None:
    w = workload(accelerator={"type": "nvidia-l4"}, cluster={"spot": True})
    scheduling = scheduling_for(w.spec, GPUNodeFacts())
    assert for_capacity(scheduling, "none", spot) == scheduling
    assert for_capacity(scheduling, "gke", None) == scheduling


def test_the_spot_labels_follow_the_gpu_labels_unless_set() -> None:
    assert [spot_labels_for(g) for g in ("gfd", "gke", "karpenter-aws")] == ["none", "gke", "karpenter"]
    assert OperatorSettings().cluster.spot_provider() is None
    gke = OperatorSettings.model_validate({"cluster": {"gpuNodeLabels": "gke"}})
    assert (gke.cluster.spot_labels(), gke.cluster.spot_provider()) == ("gke", "gcp")
    eks = OperatorSettings.model_validate({"cluster": {"spotNodeLabels": "eks"}})
    assert (eks.cluster.spot_labels(), eks.cluster.spot_provider()) == ("eks", "aws")
    off = OperatorSettings.model_validate({"cluster": {"gpuNodeLabels": "gke", "spotNodeLabels": "none"}})
    assert off.cluster.spot_provider() is None


# ------------------------------------------------------------------------------------------------ cluster


@pytest.mark.cluster
async def test_pending_replicas_on_the_cluster_carry_what_gke_node_auto_provisioning_acts_on(
    crd_installed: Any, kube_cluster: Any
) -> None:
    """The apiserver takes the rendered Deployment, and the Pods the controller-manager makes from it (pending:
    no node here has a GKE accelerator) carry the GPU request, the GKE labels and the toleration."""
    import uuid

    from kubernetes_asyncio.client import CoreV1Api

    from inference_placement.targets.base import DesiredTarget
    from inference_placement.targets.cluster import ClusterTarget
    from tests.test_coexist_autoscalers import NoGPUs
    from tests.test_target_cluster import (
        children,
        client_for,
        create_workload,
        delete_workload,
        eventually,
        workload_manifest,
    )

    api = await client_for(kube_cluster)
    namespace = f"ipn-{uuid.uuid4().hex[:8]}"
    body: Any = {"metadata": {"name": namespace}}
    await CoreV1Api(api).create_namespace(body)
    try:
        manifest = workload_manifest("llm", namespace, {"type": "nvidia-l4"}, cluster={"spot": True})
        workload = await create_workload(api, manifest)
        target = ClusterTarget(api, NoGPUs(), gpu_node_labels="gke")
        await target.ensure(workload, DesiredTarget(replicas=1, spot=True))
        selector = "placement.inference.dev/workload=llm"

        async def pod_made() -> bool:
            return len((await children(api, namespace, selector))[1]) == 1

        await eventually(pod_made, timeout=30, what="the replica's Pod")
        (pod,) = (await children(api, namespace, selector))[1]
        assert required(pod["spec"]) == [In("cloud.google.com/gke-accelerator", "nvidia-l4")]
        assert preferred(pod["spec"]) == [In("cloud.google.com/gke-spot", "true")]
        assert gpu_requests(pod["spec"]) == {"nvidia.com/gpu": "1"}
        assert GPU_TOLERATION in pod["spec"]["tolerations"]
        assert GKE_SPOT_TOLERATION in pod["spec"]["tolerations"]
        assert not pod["spec"].get("nodeName")
        await delete_workload(api, workload)
    finally:
        await CoreV1Api(api).delete_namespace(namespace, grace_period_seconds=0)
        await api.close()
