"""Rendering the model server Deployment/Service and the minimal patch against a live object (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from inference_placement.api.workload import InferenceWorkload
from inference_placement.policy.gpu_scheduling import CPU_ONLY, GPUNodeFacts, GPUScheduling, scheduling_for
from inference_placement.targets import cluster_render
from inference_placement.targets.cluster_render import (
    PRE_STOP_SLEEP_SECONDS,
    deployment_name,
    is_ours,
    left_by_predecessor,
    merge_patch,
    render_deployment,
    render_service,
    service_name,
)

UID = "0b9c6c1e-8d1f-4a53-9d43-8a3c5e0f7f10"


def workload(name: str = "sentiment", accelerator: dict[str, Any] | None = None, **spec: Any) -> InferenceWorkload:
    model = {"image": "registry.local/sentiment:1", "sizeMb": 400, "port": 9000, "healthPath": "/ready"}
    model.update(spec.pop("model", {}))
    raw_spec: dict[str, Any] = {"model": model, **spec}
    if accelerator is not None:
        raw_spec["accelerator"] = accelerator
    return InferenceWorkload.model_validate(
        {"metadata": {"name": name, "namespace": "ml", "uid": UID}, "spec": raw_spec}
    )


def gpu(accelerator: dict[str, Any]) -> tuple[InferenceWorkload, GPUScheduling]:
    w = workload(accelerator=accelerator)
    return w, scheduling_for(w.spec, GPUNodeFacts())


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(deployment)["containers"]
    assert len(containers) == 1
    return containers[0]


LABELS = {
    "app.kubernetes.io/managed-by": "inference-placement",
    "app.kubernetes.io/name": "sentiment",
    "app.kubernetes.io/component": "model-server",
    "placement.inference.dev/workload": "sentiment",
}


def test_deployment_identity_labels_and_owner_reference() -> None:
    d = render_deployment(workload(), 2, CPU_ONLY)
    assert d["apiVersion"] == "apps/v1"
    assert d["kind"] == "Deployment"
    assert d["metadata"]["name"] == "sentiment-model"
    assert d["metadata"]["namespace"] == "ml"
    assert d["metadata"]["labels"] == LABELS
    assert d["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "placement.inference.dev/v1alpha1",
            "kind": "InferenceWorkload",
            "name": "sentiment",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"] == {
        "matchLabels": {"placement.inference.dev/workload": "sentiment", "app.kubernetes.io/component": "model-server"}
    }
    assert d["spec"]["template"]["metadata"]["labels"] == LABELS


def test_model_server_container_has_probe_port_resources_env() -> None:
    w = workload(model={"cpu": "500m", "memory": "3Gi", "env": [{"name": "MODEL", "value": "x"}, {"name": "EMPTY"}]})
    c = container(render_deployment(w, 1, CPU_ONLY, image_pull_policy="Never"))
    assert c["image"] == "registry.local/sentiment:1"
    assert c["imagePullPolicy"] == "Never"
    assert c["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    # a removed replica serves until the router stopped sending to it
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}}
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "3Gi"}, "limits": {"memory": "3Gi"}}
    assert c["env"] == [{"name": "MODEL", "value": "x"}, {"name": "EMPTY"}]


def test_image_pull_policy_is_left_to_the_apiserver_by_default() -> None:
    assert "imagePullPolicy" not in container(render_deployment(workload(), 1, CPU_ONLY))


def test_cpu_only_workload_has_no_gpu_fields_at_all() -> None:
    d = render_deployment(workload(), 1, CPU_ONLY)
    spec = pod_spec(d)
    assert "affinity" not in spec
    assert "tolerations" not in spec
    assert "nodeSelector" not in spec
    resources = container(d)["resources"]
    assert not any(k.startswith("nvidia.com/") for part in resources.values() for k in part)


@pytest.mark.parametrize(
    ("accelerator", "resource", "value", "products"),
    [
        pytest.param({"type": "nvidia-t4"}, "nvidia.com/gpu", "1", ["Tesla-T4"], id="t4-exclusive"),
        pytest.param(
            {"type": "nvidia-h100-80gb", "count": 2},
            "nvidia.com/gpu",
            "2",
            ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"],
            id="h100-exclusive",
        ),
        pytest.param(
            {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"},
            "nvidia.com/mig-3g.40gb",
            "1",
            ["NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe", "A100-SXM4-80GB", "A100-SXM-80GB", "A100-80GB-PCIe"],
            id="a100-mig-mixed",
        ),
        pytest.param(
            {"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 4},
            "nvidia.com/gpu",
            "1",
            ["NVIDIA-L4", "NVIDIA-L4-SHARED"],
            id="l4-time-sliced",
        ),
    ],
)
def test_gpu_workload_gets_resources_affinity_and_tolerations(
    accelerator: dict[str, Any], resource: str, value: str, products: list[str]
) -> None:
    w, scheduling = gpu(accelerator)
    d = render_deployment(w, 1, scheduling)
    resources = container(d)["resources"]
    assert resources["requests"][resource] == value
    assert resources["limits"][resource] == value
    spec = pod_spec(d)
    term = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term[0]["matchExpressions"][0] == {"key": "nvidia.com/gpu.product", "operator": "In", "values": products}
    assert {"key": "nvidia.com/gpu", "operator": "Exists"} in spec["tolerations"]
    assert d["metadata"]["annotations"]["placement.inference.dev/gpu-scheduling"] == scheduling.description


def test_node_selector_from_the_spec_is_kept() -> None:
    w = workload(cluster={"nodeSelector": {"pool": "gpu-spot"}})
    assert pod_spec(render_deployment(w, 1, CPU_ONLY))["nodeSelector"] == {"pool": "gpu-spot"}


def test_rendering_is_deterministic() -> None:
    w, scheduling = gpu({"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "1g.10gb"})
    assert render_deployment(w, 3, scheduling) == render_deployment(w, 3, scheduling)
    assert render_service(w) == render_service(w)


def test_service_selects_the_model_server_pods() -> None:
    w = workload()
    s = render_service(w)
    d = render_deployment(w, 1, CPU_ONLY)
    assert s["metadata"]["name"] == "sentiment-model"
    assert s["metadata"]["labels"] == LABELS
    assert s["metadata"]["ownerReferences"] == d["metadata"]["ownerReferences"]
    assert s["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
    assert s["spec"]["ports"] == [{"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}]


def test_router_name_stays_free() -> None:
    w = workload()
    assert deployment_name(w) != w.metadata.name
    assert service_name(w) != w.metadata.name


def test_long_names_fit_dns_and_label_limits_and_stay_distinct() -> None:
    a = workload(name="a" * 100 + "-one")
    b = workload(name="a" * 100 + "-two")
    assert len(service_name(a)) <= 63
    assert service_name(a) != service_name(b)
    labels = render_deployment(a, 1, CPU_ONLY)["metadata"]["labels"]
    assert all(len(v) <= 63 for v in labels.values())


def test_render_without_uid_is_refused() -> None:
    w = InferenceWorkload.model_validate(
        {"metadata": {"name": "x", "namespace": "ml"}, "spec": {"model": {"image": "i", "sizeMb": 1}}}
    )
    with pytest.raises(ValueError, match="uid"):
        render_deployment(w, 1, CPU_ONLY)


def test_negative_replicas_are_refused() -> None:
    with pytest.raises(ValueError, match="replicas"):
        render_deployment(workload(), -1, CPU_ONLY)


# --------------------------------------------------------------------------------------------- ownership


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param(
            {"ownerReferences": [{"kind": "InferenceWorkload", "uid": UID, "controller": True}]}, True, id="ref"
        ),
        pytest.param({"labels": LABELS}, True, id="labels-adopted"),
        pytest.param({"ownerReferences": [{"kind": "InferenceWorkload", "uid": "other", "controller": True}]}, False),
        pytest.param(
            {"ownerReferences": [{"kind": "HelmRelease", "uid": "x", "controller": True}], "labels": LABELS}, False
        ),
        pytest.param({"labels": {"app": "sentiment"}}, False, id="someone-elses"),
    ],
)
def test_is_ours(metadata: dict[str, Any], expected: bool) -> None:
    assert is_ours({"metadata": metadata}, workload()) is expected


# --------------------------------------------------------------------------------------------- minimal patches


def as_stored(obj: dict[str, Any]) -> dict[str, Any]:
    """What the apiserver returns for a created object: defaults filled in, quantities canonical, status added."""
    live = copy.deepcopy(obj)
    live["metadata"].update(
        {"uid": "d1", "resourceVersion": "42", "generation": 1, "creationTimestamp": "2024-01-01T00:00:00Z"}
    )
    live["metadata"]["labels"]["added-by-someone"] = "x"
    live["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "1"
    if live["kind"] == "Deployment":
        spec = live["spec"]
        spec["progressDeadlineSeconds"] = 600
        spec["template"]["metadata"]["creationTimestamp"] = None
        pod = spec["template"]["spec"]
        pod.update({"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"})
        for c in pod["containers"]:
            c.setdefault("imagePullPolicy", "IfNotPresent")
            c["terminationMessagePath"] = "/dev/termination-log"
            c["readinessProbe"].update({"timeoutSeconds": 1, "successThreshold": 1})
            c["readinessProbe"]["httpGet"]["scheme"] = "HTTP"
            requests = c["resources"]["requests"]
            if requests.get("cpu") == "1":
                requests["cpu"] = "1000m"  # the same quantity, spelt differently
        live["status"] = {"replicas": 0}
    else:
        live["spec"]["clusterIP"] = "10.0.0.12"
        live["spec"]["sessionAffinity"] = "None"
    return live


def test_unchanged_objects_need_no_patch() -> None:
    w, scheduling = gpu({"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"})
    d = render_deployment(w, 2, scheduling)
    s = render_service(w)
    assert merge_patch(d, as_stored(d)) is None
    assert merge_patch(s, as_stored(s)) is None


def test_replica_change_patches_only_replicas() -> None:
    w = workload()
    live = as_stored(render_deployment(w, 1, CPU_ONLY))
    assert merge_patch(render_deployment(w, 3, CPU_ONLY), live) == {"spec": {"replicas": 3}}


def test_becoming_cpu_only_removes_gpu_fields() -> None:
    w, scheduling = gpu({"type": "nvidia-t4"})
    live = as_stored(render_deployment(w, 1, scheduling))
    patch = merge_patch(render_deployment(workload(), 1, CPU_ONLY), live)
    assert patch is not None
    template = patch["spec"]["template"]["spec"]
    assert template["affinity"] is None
    assert template["tolerations"] is None
    assert "nvidia.com/gpu" not in template["containers"][0]["resources"]["limits"]
    assert patch["metadata"]["annotations"] == {"placement.inference.dev/gpu-scheduling": "CPU only"}


def test_removed_node_selector_key_is_deleted() -> None:
    live = as_stored(render_deployment(workload(cluster={"nodeSelector": {"a": "1", "b": "2"}}), 1, CPU_ONLY))
    patch = merge_patch(render_deployment(workload(cluster={"nodeSelector": {"a": "1"}}), 1, CPU_ONLY), live)
    assert patch == {"spec": {"template": {"spec": {"nodeSelector": {"b": None}}}}}


def test_labels_added_by_others_are_kept_but_ours_restored() -> None:
    w = workload()
    desired = render_deployment(w, 1, CPU_ONLY)
    live = as_stored(desired)
    live["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "helm"
    assert merge_patch(desired, live) == {
        "metadata": {"labels": {"app.kubernetes.io/managed-by": "inference-placement"}}
    }


def test_adoption_sets_the_owner_reference() -> None:
    desired = render_service(workload())
    live = as_stored(desired)
    del live["metadata"]["ownerReferences"]
    assert merge_patch(desired, live) == {"metadata": {"ownerReferences": desired["metadata"]["ownerReferences"]}}


def test_image_change_replaces_the_container_list() -> None:
    live = as_stored(render_deployment(workload(), 1, CPU_ONLY))
    desired = render_deployment(workload(model={"image": "registry.local/sentiment:2"}), 1, CPU_ONLY)
    patch = merge_patch(desired, live)
    assert patch == {"spec": {"template": {"spec": {"containers": desired["spec"]["template"]["spec"]["containers"]}}}}


def test_public_names_are_exported() -> None:
    for name in cluster_render.__all__:
        assert hasattr(cluster_render, name), name


def test_children_of_a_deleted_namesake_are_recognised() -> None:
    stale = {
        "metadata": {
            "ownerReferences": [{"kind": "InferenceWorkload", "name": "sentiment", "uid": "old", "controller": True}]
        }
    }
    assert not is_ours(stale, workload())
    assert left_by_predecessor(stale, workload())
    assert not left_by_predecessor({"metadata": {"labels": {"app": "x"}}}, workload())
