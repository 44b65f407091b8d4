"""GPUs through DRA, pure: the claim a spec gets, its ResourceClaimTemplate and Pod template, and how published
devices and allocated claims become the capacity the fit rule reads (the real scheduler: tests/test_kwok_dra.py)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from inference_placement.api.workload import InferenceWorkload
from inference_placement.policy.dra import (
    CONFIG_API_VERSION,
    DRAClasses,
    claim_for,
    claim_template_spec,
    device_keys,
    exclusive_key,
    mig_key,
    shares_key,
)
from inference_placement.policy.gpu_scheduling import GPU_RESOURCE, GPUNodeFacts, SchedulingMode, scheduling_for
from inference_placement.targets.capacity import (
    CapacityCache,
    CapacityIndex,
    claim_usage_from_object,
    node_view_from_object,
    slice_from_object,
)
from inference_placement.targets.cluster_render import (
    claim_template_name,
    merge_patch,
    render_claim_template,
    render_deployment,
)
from tests.test_capacity import FakeResponse, ScriptedApi

UID = "0b9c6c1e-8d1f-4a53-9d43-8a3c5e0f7f10"
NVIDIA = DRAClasses()
H100 = {"type": "nvidia-h100-80gb", "count": 2}
MIG = {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "1g.10gb"}
L4_SHARED = {"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 4}


def workload(accelerator: dict[str, Any] | None = None, name: str = "llm", min_replicas: int = 1) -> InferenceWorkload:
    spec: dict[str, Any] = {
        "model": {"image": "registry.local/llm:1", "sizeMb": 4000, "cpu": "1", "memory": "1Gi"},
        "scaling": {"minReplicas": min_replicas, "maxReplicas": 8},
    }
    if accelerator is not None:
        spec["accelerator"] = accelerator
    return InferenceWorkload.model_validate({"metadata": {"name": name, "namespace": "ml", "uid": UID}, "spec": spec})


# ------------------------------------------------------------------------------------------------ the claim


def test_a_whole_gpu_is_claimed_from_the_gpu_class_by_product_and_never_as_a_share() -> None:
    claim = claim_for(workload(H100).spec, NVIDIA)
    assert claim is not None
    request = claim_template_spec(claim)["spec"]["devices"]["requests"][0]
    assert request["name"] == "gpu"
    exactly = request["exactly"]
    assert exactly["deviceClassName"] == "gpu.nvidia.com"
    assert (exactly["allocationMode"], exactly["count"]) == ("ExactCount", 2)
    expressions = [s["cel"]["expression"] for s in exactly["selectors"]]
    assert expressions[0] == (
        "device.attributes['gpu.nvidia.com'].productName.replace(' ', '-') in "
        "['NVIDIA-H100-80GB-HBM3', 'NVIDIA-H100-PCIe']"
    )
    assert expressions[1] == "!device.allowMultipleAllocations"
    assert "capacity" not in exactly and "config" not in claim_template_spec(claim)["spec"]["devices"]
    assert claim.capacity_key == exclusive_key(workload(H100).spec.accelerator.type)


def test_a_mig_slice_is_claimed_from_the_mig_class_by_profile() -> None:
    claim = claim_for(workload(MIG).spec, NVIDIA)
    assert claim is not None
    exactly = claim_template_spec(claim)["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly["deviceClassName"] == "mig.nvidia.com"
    assert exactly["count"] == 1
    assert exactly["selectors"][1] == {
        "cel": {"expression": "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'"}
    }
    assert claim.capacity_key == "dra.gpu.nvidia.com/nvidia-a100-80gb-mig-1g.10gb"


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        pytest.param("TimeSlicing", {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Default"}}, id="ts"),
        pytest.param("MPS", {"strategy": "MPS"}, id="mps"),
        pytest.param("none", None, id="driver-default"),
    ],
)
def test_a_shared_gpu_is_one_share_of_a_gpu_sliced_at_most_n_ways_with_the_drivers_sharing_config(
    strategy: Any, expected: dict[str, Any] | None
) -> None:
    claim = claim_for(workload(L4_SHARED).spec, DRAClasses(sharing_strategy=strategy))
    assert claim is not None
    devices = claim_template_spec(claim)["spec"]["devices"]
    exactly = devices["requests"][0]["exactly"]
    assert exactly["capacity"] == {"requests": {"shares": "1"}}
    assert exactly["selectors"][1]["cel"]["expression"] == (
        "device.allowMultipleAllocations && 'shares' in device.capacity['gpu.nvidia.com'] && "
        "device.capacity['gpu.nvidia.com'].shares.compareTo(quantity('4')) <= 0"
    )
    if expected is None:
        assert "config" not in devices, "no opaque config unless one is asked for (the driver gates each strategy)"
    else:
        assert devices["config"] == [
            {
                "requests": ["gpu"],
                "opaque": {
                    "driver": "gpu.nvidia.com",
                    "parameters": {"apiVersion": CONFIG_API_VERSION, "kind": "GpuConfig", "sharing": expected},
                },
            }
        ]
    assert claim.capacity_key == "dra.gpu.nvidia.com/nvidia-l4-shares-max4"


def test_no_claim_without_a_gpu_or_without_the_kinds_device_class() -> None:
    assert claim_for(workload().spec, NVIDIA) is None
    assert claim_for(workload(MIG).spec, DRAClasses(mig=None)) is None
    assert claim_for(workload(H100).spec, DRAClasses(gpu=None)) is None
    assert claim_for(workload(MIG).spec, DRAClasses(gpu=None)) is not None


def test_scheduling_claims_through_dra_only_where_the_facts_say_it_applies() -> None:
    spec = workload(MIG).spec
    extended = scheduling_for(spec, GPUNodeFacts())
    assert extended.mode is SchedulingMode.MIG_MIXED and extended.claim is None
    assert extended.resources == {"nvidia.com/mig-1g.10gb": "1"}
    dra = scheduling_for(spec, GPUNodeFacts(dra=NVIDIA))
    assert dra.mode is SchedulingMode.DRA
    assert dra.resources == {} and dra.affinity() is None, "the device class and selectors pick the node"
    assert dra.tolerations == ({"key": GPU_RESOURCE, "operator": "Exists"},)
    assert (dra.resource_name, dra.resource_count) == (mig_key(spec.accelerator.type, "1g.10gb"), 1)
    # MIG on a GPU without MIG stays refused whichever way the GPU would be requested
    with pytest.raises(ValueError, match="does not support MIG"):
        scheduling_for(
            workload({"type": "nvidia-l4", "sharing": "mig", "migProfile": "1g.10gb"}).spec, GPUNodeFacts(dra=NVIDIA)
        )


# ------------------------------------------------------------------------------------------------ rendering


def test_the_pod_template_claims_its_gpu_from_the_workloads_claim_template() -> None:
    w = workload(H100)
    scheduling = scheduling_for(w.spec, GPUNodeFacts(dra=NVIDIA))
    assert scheduling.claim is not None
    template = render_claim_template(w, scheduling.claim)
    deployment = render_deployment(w, 2, scheduling)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": template["metadata"]["name"]}]
    resources = pod["containers"][0]["resources"]
    assert resources["claims"] == [{"name": "gpu"}]
    assert not [r for r in {**resources["requests"], **resources["limits"]} if r.startswith("nvidia.com/")]
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert "affinity" not in pod

    assert (template["apiVersion"], template["kind"]) == ("resource.k8s.io/v1", "ResourceClaimTemplate")
    assert template["metadata"]["namespace"] == "ml"
    assert template["metadata"]["ownerReferences"][0]["uid"] == UID
    assert template["metadata"]["name"].startswith("llm-model-gpu-")
    assert len(template["metadata"]["name"]) <= 63
    # the claims made from it carry the workload's labels: the capacity view knows them as the workload's own
    assert template["spec"]["metadata"]["labels"]["placement.inference.dev/workload"] == "llm"
    assert template["spec"]["spec"] == claim_template_spec(scheduling.claim)["spec"]


def test_another_claim_is_another_template_name_and_the_same_claim_the_same_name() -> None:
    w = workload(H100)
    a = scheduling_for(w.spec, GPUNodeFacts(dra=NVIDIA)).claim
    b = scheduling_for(workload(L4_SHARED).spec, GPUNodeFacts(dra=NVIDIA)).claim
    assert a is not None and b is not None
    assert claim_template_name(w, a) == claim_template_name(w, copy.deepcopy(a))
    assert claim_template_name(w, a) != claim_template_name(w, b)


def test_moving_from_dra_to_extended_resources_patches_the_claims_away() -> None:
    w = workload(H100)
    live = render_deployment(w, 1, scheduling_for(w.spec, GPUNodeFacts(dra=NVIDIA)))
    wanted = render_deployment(w, 1, scheduling_for(w.spec, GPUNodeFacts()))
    patch = merge_patch(wanted, live)
    assert patch is not None
    pod = patch["spec"]["template"]["spec"]
    assert pod["resourceClaims"] is None
    assert "claims" not in pod["containers"][0]["resources"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert merge_patch(live, live) is None


# ---------------------------------------------------------------------------------------- published devices


def gpu_device(name: str, product: str = "NVIDIA H100 80GB HBM3", **extra: Any) -> dict[str, Any]:
    return {"name": name, "attributes": {"type": {"string": "gpu"}, "productName": {"string": product}}, **extra}


def shared_device(name: str, shares: int, product: str = "NVIDIA L4") -> dict[str, Any]:
    return gpu_device(name, product, allowMultipleAllocations=True, capacity={"shares": {"value": str(shares)}})


def mig_device(name: str, profile: str = "1g.10gb") -> dict[str, Any]:
    attributes = {"type": {"string": "mig"}, "productName": {"string": "NVIDIA A100-SXM4-80GB"}}
    attributes["profile"] = {"string": profile}
    return {"name": name, "attributes": attributes}


def test_devices_count_under_the_key_the_claim_for_them_is_counted_against() -> None:
    h100 = workload(H100).spec.accelerator.type
    assert device_keys(gpu_device("gpu-0")).keys == {exclusive_key(h100): 1.0}
    assert device_keys(mig_device("m0")).keys == {"dra.gpu.nvidia.com/nvidia-a100-80gb-mig-1g.10gb": 1.0}
    shared = device_keys(shared_device("gpu-1", 8))
    l4 = workload(L4_SHARED).spec.accelerator.type
    assert shared.shared
    assert shared.keys[shares_key(l4)] == 8.0
    assert shares_key(l4, 8) in shared.keys and shares_key(l4, 64) in shared.keys
    assert shares_key(l4, 4) not in shared.keys, "a GPU sliced 8 ways is no GPU for a spec allowing 4"
    assert device_keys(gpu_device("x", "Some Other GPU")).keys == {}
    assert device_keys({"name": "nic", "attributes": {"type": {"string": "nic"}}}).keys == {}


def node(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"pool": "gpu"}},
        "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"}},
    }


def slice_object(node_name: str, devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{node_name}-gpu.nvidia.com"},
        "spec": {"driver": "gpu.nvidia.com", "nodeName": node_name, "pool": {"name": node_name}, "devices": devices},
    }


def claim_object(name: str, node_name: str, devices: list[str], *, shares: bool = False, owner: str = "") -> Any:
    results: list[dict[str, Any]] = []
    for device in devices:
        result: dict[str, Any] = {"driver": "gpu.nvidia.com", "pool": node_name, "device": device, "request": "gpu"}
        if shares:
            result["consumedCapacity"] = {"shares": "1"}
            result["shareID"] = f"{name}-{device}"
        results.append(result)
    labels = {"app.kubernetes.io/managed-by": "inference-placement", "placement.inference.dev/workload": owner}
    return {
        "metadata": {"name": name, "namespace": "ml", "labels": labels if owner else {}},
        "status": {"allocation": {"devices": {"results": results}}},
    }


def index_with(mode: Any = "auto", classes: tuple[str, ...] = ("gpu.nvidia.com", "mig.nvidia.com")) -> CapacityIndex:
    index = CapacityIndex(gpu_request=mode)
    index.replace_nodes([node_view_from_object(node("n1")), node_view_from_object(node("n2"))])
    index.replace_device_classes(classes)
    slices = {
        "n1": slice_from_object(slice_object("n1", [gpu_device(f"gpu-{i}") for i in range(4)])),
        "n2": slice_from_object(slice_object("n2", [shared_device("gpu-0", 4), mig_device("m0"), mig_device("m1")])),
    }
    index.replace_slices({k: v for k, v in slices.items() if v is not None})
    return index


def test_dra_applies_per_kind_where_its_device_class_exists_in_auto_mode() -> None:
    assert index_with().dra() == NVIDIA
    assert index_with(classes=("mig.nvidia.com",)).dra() == DRAClasses(gpu=None, mig="mig.nvidia.com")
    assert index_with(classes=()).dra() is None
    assert index_with("extendedResources").dra() is None
    assert index_with("dra", classes=()).dra() == NVIDIA
    # without DRA the claim-less fit reads extended resources: none here
    assert not index_with(classes=()).assess(workload(H100).spec).fits_now


def test_allocated_claims_take_devices_and_shares_from_the_published_capacity() -> None:
    index = index_with()
    fit = index.assess(workload(H100, min_replicas=2).spec)
    assert fit.fits_now, fit.message
    assert "4 of 4 dra.gpu.nvidia.com/nvidia-h100-80gb free" in fit.message
    assert fit.replicas_that_fit == 2  # 2 GPUs per replica

    index.upsert_claim("ml/a", claim_usage_from_object(claim_object("a", "n1", ["gpu-0", "gpu-1"], owner="llm")))
    index.upsert_claim("other/b", claim_usage_from_object(claim_object("b", "n1", ["gpu-2"])))
    fit = index.assess(workload(H100, min_replicas=2).spec)
    assert "1 of 4 dra.gpu.nvidia.com/nvidia-h100-80gb free" in fit.message, fit.message
    assert not fit.fits_now
    own = index.assess(workload(H100, min_replicas=2).spec, owner="ml/llm")
    assert "3 of 4" in own.message and own.replicas_that_fit == 1, own.message

    shared = workload(L4_SHARED, min_replicas=4).spec
    assert "4 of 4 dra.gpu.nvidia.com/nvidia-l4-shares-max4 free" in index.assess(shared).message
    for i in range(3):
        index.upsert_claim(f"ml/s{i}", claim_usage_from_object(claim_object(f"s{i}", "n2", ["gpu-0"], shares=True)))
    fit = index.assess(shared)
    assert "1 of 4 dra.gpu.nvidia.com/nvidia-l4-shares-max4 free" in fit.message and not fit.fits_now, fit.message

    mig = workload(MIG, min_replicas=2).spec
    assert index.assess(mig).fits_now
    index.upsert_claim("ml/m", claim_usage_from_object(claim_object("m", "n2", ["m1"])))
    assert "1 of 2 dra.gpu.nvidia.com/nvidia-a100-80gb-mig-1g.10gb free" in index.assess(mig).message
    index.upsert_claim("ml/m", None)  # the claim is deleted (its Pod went): the device is free again
    assert index.assess(mig).fits_now


def test_an_unallocated_claim_holds_nothing() -> None:
    assert claim_usage_from_object({"metadata": {"name": "c"}, "status": {}}) is None


# ------------------------------------------------------------------------------------------ the watch feeds


def listed(items: list[dict[str, Any]], version: str = "1") -> FakeResponse:
    return FakeResponse(200, {"items": items, "metadata": {"resourceVersion": version}})


def scripted_cache(dra: tuple[ScriptedApi, ScriptedApi, ScriptedApi], **kwargs: Any) -> CapacityCache:
    nodes = ScriptedApi([listed([node("n1"), node("n2")])])
    pods = ScriptedApi([listed([])])
    return CapacityCache(
        None, list_nodes=nodes, list_pods=pods, list_dra=dra, sync_timeout_seconds=5, backoff_max_seconds=60, **kwargs
    )


@pytest.mark.parametrize("status", [404, 403], ids=["not-served", "forbidden"])
async def test_a_cluster_without_dra_reads_as_one_without_device_classes(status: int) -> None:
    gone = [ScriptedApi([FakeResponse(status, {"message": "no"})]) for _ in range(3)]
    cache = scripted_cache((gone[0], gone[1], gone[2]))
    await cache.start()
    try:
        assert cache.synced, "an absent DRA API must not hold the capacity view unread"
        assert cache.index.dra() is None
        assert cache.errors == 0
        assert scheduling_for(workload(H100).spec, cache.gpu_facts()).claim is None
    finally:
        await cache.stop()


async def test_the_feeds_fold_device_classes_slices_and_claims_as_they_change() -> None:
    gpu_class = {"metadata": {"name": "gpu.nvidia.com", "resourceVersion": "2"}}
    claim = claim_object("a", "n1", ["gpu-0", "gpu-1"])
    claim["metadata"]["resourceVersion"] = "3"
    classes = ScriptedApi([listed([]), FakeResponse(200, events=[{"type": "ADDED", "object": gpu_class}])])
    slices = ScriptedApi([listed([slice_object("n1", [gpu_device(f"gpu-{i}") for i in range(4)])])])
    claims = ScriptedApi([listed([]), FakeResponse(200, events=[{"type": "ADDED", "object": claim}])])
    cache = scripted_cache((classes, slices, claims))
    await cache.start()
    try:
        spec = workload(H100).spec

        async def folded() -> bool:
            return "2 of 4 dra.gpu.nvidia.com/nvidia-h100-80gb free" in cache.check(spec)[1]

        deadline = asyncio.get_running_loop().time() + 5
        while not await folded():
            assert asyncio.get_running_loop().time() < deadline, cache.check(spec)[1]
            await asyncio.sleep(0.01)
        assert cache.index.dra() == DRAClasses(gpu="gpu.nvidia.com", mig=None)
        assert cache.check(spec)[0]
    finally:
        await cache.stop()
