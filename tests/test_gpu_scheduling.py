"""GPU scheduling decisions: resource names, node affinity and tolerations per accelerator and sharing (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from inference_placement.api.spec import AcceleratorType, InferenceWorkloadSpec
from inference_placement.policy import gpu_scheduling
from inference_placement.policy.gpu_scheduling import (
    CPU_ONLY,
    GPU_PRODUCTS,
    GPUNodeFacts,
    GPUScheduling,
    MigStrategy,
    NodeView,
    SchedulingMode,
    accelerator_for_product,
    base_product,
    mig_profile_of_product,
    requirement_matches,
    scheduling_for,
)

A100_80 = ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe", "A100-SXM4-80GB", "A100-SXM-80GB", "A100-80GB-PCIe")
H100_80 = ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists"}


def spec(accelerator: dict[str, Any] | None = None, **extra: Any) -> InferenceWorkloadSpec:
    raw: dict[str, Any] = {"model": {"image": "registry.local/model:1", "sizeMb": 500}, **extra}
    if accelerator is not None:
        raw["accelerator"] = accelerator
    return InferenceWorkloadSpec.model_validate(raw)


def mixed_node(product: str = "NVIDIA-A100-SXM4-80GB", profile: str = "3g.40gb") -> NodeView:
    return NodeView(
        name="mixed",
        labels={"nvidia.com/gpu.product": product, "nvidia.com/mig.strategy": "mixed"},
        allocatable={"nvidia.com/gpu": 0, f"nvidia.com/mig-{profile}": 2},
    )


def single_node(product: str = "NVIDIA-A100-SXM4-80GB", profile: str = "3g.40gb") -> NodeView:
    return NodeView(
        name="single",
        labels={"nvidia.com/gpu.product": f"{product}-MIG-{profile}", "nvidia.com/mig.strategy": "single"},
        allocatable={"nvidia.com/gpu": 2},
    )


def ts_node(product: str = "NVIDIA-L4", resource: str = "nvidia.com/gpu", replicas: int = 4) -> NodeView:
    label = product if resource.endswith(".shared") else f"{product}-SHARED"
    return NodeView(
        name=f"ts-{resource}",
        labels={
            "nvidia.com/gpu.product": label,
            "nvidia.com/gpu.sharing-strategy": "time-slicing",
            "nvidia.com/gpu.replicas": str(replicas),
        },
        allocatable={resource: replicas},
    )


def facts(*nodes: NodeView) -> GPUNodeFacts:
    return GPUNodeFacts.from_nodes(nodes)


def product_in(values: tuple[str, ...]) -> dict[str, Any]:
    return {"key": "nvidia.com/gpu.product", "operator": "In", "values": list(values)}


@pytest.mark.parametrize(
    ("accelerator", "seen", "mode", "resources", "expressions", "tolerations"),
    [
        pytest.param(
            {"type": "nvidia-t4"},
            facts(),
            SchedulingMode.EXCLUSIVE,
            {"nvidia.com/gpu": "1"},
            [product_in(("Tesla-T4",))],
            [GPU_TOLERATION],
            id="t4-exclusive",
        ),
        pytest.param(
            {"type": "nvidia-h100-80gb", "count": 2},
            facts(),
            SchedulingMode.EXCLUSIVE,
            {"nvidia.com/gpu": "2"},
            [product_in(H100_80)],
            [GPU_TOLERATION],
            id="h100-exclusive-two-gpus-sxm-and-pcie",
        ),
        pytest.param(
            {"type": "nvidia-a100-80gb"},
            facts(mixed_node()),
            SchedulingMode.EXCLUSIVE,
            {"nvidia.com/gpu": "1"},
            [product_in(A100_80)],
            [GPU_TOLERATION],
            id="a100-exclusive-ignores-mig-facts",
        ),
        pytest.param(
            {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"},
            facts(mixed_node()),
            SchedulingMode.MIG_MIXED,
            {"nvidia.com/mig-3g.40gb": "1"},
            [product_in(A100_80)],
            [GPU_TOLERATION, {"key": "nvidia.com/mig-3g.40gb", "operator": "Exists"}],
            id="a100-mig-mixed",
        ),
        pytest.param(
            {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"},
            facts(single_node()),
            SchedulingMode.MIG_SINGLE,
            {"nvidia.com/gpu": "1"},
            [product_in(tuple(f"{p}-MIG-3g.40gb" for p in A100_80))],
            [GPU_TOLERATION],
            id="a100-mig-single",
        ),
        pytest.param(
            {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"},
            facts(single_node(), mixed_node()),
            SchedulingMode.MIG_MIXED,
            {"nvidia.com/mig-3g.40gb": "1"},
            [product_in(A100_80)],
            [GPU_TOLERATION, {"key": "nvidia.com/mig-3g.40gb", "operator": "Exists"}],
            id="both-strategies-offer-the-profile-mixed-wins",
        ),
        pytest.param(
            {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"},
            facts(single_node(), mixed_node(profile="1g.10gb")),
            SchedulingMode.MIG_SINGLE,
            {"nvidia.com/gpu": "1"},
            [product_in(tuple(f"{p}-MIG-3g.40gb" for p in A100_80))],
            [GPU_TOLERATION],
            id="only-single-nodes-offer-this-profile",
        ),
        pytest.param(
            {"type": "nvidia-h100-80gb", "sharing": "mig", "migProfile": "1g.10gb"},
            facts(single_node(product="NVIDIA-A100-SXM4-80GB", profile="7g.80gb")),
            SchedulingMode.MIG_SINGLE,
            {"nvidia.com/gpu": "1"},
            [product_in(tuple(f"{p}-MIG-1g.10gb" for p in H100_80))],
            [GPU_TOLERATION],
            id="no-h100-node-follows-the-clusters-strategy-label",
        ),
        pytest.param(
            {"type": "nvidia-h100-80gb", "sharing": "mig", "migProfile": "1g.10gb"},
            facts(),
            SchedulingMode.MIG_MIXED,
            {"nvidia.com/mig-1g.10gb": "1"},
            [product_in(H100_80)],
            [GPU_TOLERATION, {"key": "nvidia.com/mig-1g.10gb", "operator": "Exists"}],
            id="no-gpu-nodes-at-all-defaults-to-mixed",
        ),
        pytest.param(
            {"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 4},
            facts(ts_node()),
            SchedulingMode.TIME_SLICING,
            {"nvidia.com/gpu": "1"},
            [
                product_in(("NVIDIA-L4", "NVIDIA-L4-SHARED")),
                {"key": "nvidia.com/gpu.sharing-strategy", "operator": "In", "values": ["time-slicing"]},
                {"key": "nvidia.com/gpu.replicas", "operator": "Lt", "values": ["5"]},
            ],
            [GPU_TOLERATION],
            id="l4-time-sliced",
        ),
        pytest.param(
            {"type": "nvidia-l4", "sharing": "time-slicing"},
            facts(ts_node(resource="nvidia.com/gpu.shared")),
            SchedulingMode.TIME_SLICING,
            {"nvidia.com/gpu.shared": "1"},
            [
                product_in(("NVIDIA-L4", "NVIDIA-L4-SHARED")),
                {"key": "nvidia.com/gpu.sharing-strategy", "operator": "In", "values": ["time-slicing"]},
            ],
            [GPU_TOLERATION, {"key": "nvidia.com/gpu.shared", "operator": "Exists"}],
            id="l4-time-sliced-renamed-resource",
        ),
        pytest.param(
            {"type": "nvidia-l4", "sharing": "time-slicing"},
            facts(ts_node(resource="nvidia.com/gpu.shared"), ts_node()),
            SchedulingMode.TIME_SLICING,
            {"nvidia.com/gpu": "1"},
            [
                product_in(("NVIDIA-L4", "NVIDIA-L4-SHARED")),
                {"key": "nvidia.com/gpu.sharing-strategy", "operator": "In", "values": ["time-slicing"]},
            ],
            [GPU_TOLERATION],
            id="plain-name-wins-when-both-are-advertised",
        ),
    ],
)
def test_scheduling_decision_table(
    accelerator: dict[str, Any],
    seen: GPUNodeFacts,
    mode: SchedulingMode,
    resources: dict[str, str],
    expressions: list[dict[str, Any]],
    tolerations: list[dict[str, str]],
) -> None:
    result = scheduling_for(spec(accelerator), seen)
    assert result.mode is mode
    assert dict(result.resources) == resources
    assert list(result.match_expressions) == expressions
    assert list(result.tolerations) == tolerations


def test_cpu_only_workload_gets_no_gpu_fields() -> None:
    result = scheduling_for(spec(), facts(mixed_node(), ts_node()))
    assert result is CPU_ONLY
    assert result.resources == {}
    assert result.tolerations == ()
    assert result.affinity() is None
    assert result.resource_name is None


def test_affinity_is_one_required_term_with_every_expression() -> None:
    result = scheduling_for(spec({"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 4}), facts())
    affinity = result.affinity()
    assert affinity is not None
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 1
    assert terms[0]["matchExpressions"] == list(result.match_expressions)


@pytest.mark.parametrize(
    ("accelerator", "message"),
    [
        pytest.param({"type": "nvidia-l4", "sharing": "mig", "migProfile": "1g.10gb"}, "does not support MIG", id="l4"),
        pytest.param({"type": "nvidia-a100-80gb", "sharing": "mig"}, "migProfile", id="no-profile"),
    ],
)
def test_invalid_mig_requests_raise(accelerator: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scheduling_for(spec(accelerator), facts())


def test_scheduling_ignores_free_capacity_so_the_template_does_not_flip() -> None:
    busy = NodeView(
        name="busy",
        labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/mig.strategy": "mixed"},
        allocatable={"nvidia.com/mig-3g.40gb": 1},
    )
    idle = single_node()
    accel = {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"}
    assert scheduling_for(spec(accel), facts(busy, idle)) == scheduling_for(spec(accel), facts(idle, busy))


@pytest.mark.parametrize(
    ("label", "base", "profile", "accelerator"),
    [
        pytest.param("Tesla-T4", "Tesla-T4", None, AcceleratorType.NVIDIA_T4, id="t4"),
        pytest.param("NVIDIA-L4-SHARED", "NVIDIA-L4", None, AcceleratorType.NVIDIA_L4, id="l4-shared"),
        pytest.param(
            "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb",
            "NVIDIA-A100-SXM4-80GB",
            "1g.10gb",
            AcceleratorType.NVIDIA_A100_80GB,
            id="a100-single",
        ),
        pytest.param(
            "NVIDIA-A100-80GB-PCIe-MIG-3g.40gb",
            "NVIDIA-A100-80GB-PCIe",
            "3g.40gb",
            AcceleratorType.NVIDIA_A100_80GB,
            id="a100-pcie-single",
        ),
        pytest.param("A100-PCIE-40GB", "A100-PCIE-40GB", None, AcceleratorType.NVIDIA_A100_40GB, id="old-driver"),
        pytest.param("NVIDIA-H100-PCIe", "NVIDIA-H100-PCIe", None, AcceleratorType.NVIDIA_H100_80GB, id="h100-pcie"),
        pytest.param("NVIDIA-GeForce-RTX-4090", "NVIDIA-GeForce-RTX-4090", None, None, id="unknown"),
    ],
)
def test_product_labels_parse(label: str, base: str, profile: str | None, accelerator: AcceleratorType | None) -> None:
    assert base_product(label) == base
    assert mig_profile_of_product(label) == profile
    assert accelerator_for_product(label) is accelerator


def test_every_gpu_type_has_product_labels() -> None:
    gpu_types = {t for t in AcceleratorType if t is not AcceleratorType.NONE}
    assert set(GPU_PRODUCTS) == gpu_types
    assert "NVIDIA-A100-80GB-PCIe" in GPU_PRODUCTS[AcceleratorType.NVIDIA_A100_80GB]
    assert "NVIDIA-A100-PCIE-40GB" in GPU_PRODUCTS[AcceleratorType.NVIDIA_A100_40GB]


def test_facts_come_from_node_labels_and_allocatable() -> None:
    seen = facts(mixed_node(), single_node(profile="1g.10gb"), ts_node(resource="nvidia.com/gpu.shared"))
    assert seen.profile_strategies == {
        ("NVIDIA-A100-SXM4-80GB", "3g.40gb"): {MigStrategy.MIXED},
        ("NVIDIA-A100-SXM4-80GB", "1g.10gb"): {MigStrategy.SINGLE},
    }
    assert seen.product_strategies == {"NVIDIA-A100-SXM4-80GB": {MigStrategy.MIXED, MigStrategy.SINGLE}}
    assert seen.time_slicing_resources == {"NVIDIA-L4": {"nvidia.com/gpu.shared"}}


@pytest.mark.parametrize(
    ("operator", "values", "labels", "expected"),
    [
        pytest.param("In", ["a", "b"], {"k": "b"}, True, id="in"),
        pytest.param("In", ["a"], {}, False, id="in-missing"),
        pytest.param("NotIn", ["a"], {}, True, id="notin-missing"),
        pytest.param("NotIn", ["a"], {"k": "a"}, False, id="notin"),
        pytest.param("Exists", [], {"k": ""}, True, id="exists"),
        pytest.param("DoesNotExist", [], {"k": ""}, False, id="does-not-exist"),
        pytest.param("Lt", ["5"], {"k": "4"}, True, id="lt"),
        pytest.param("Lt", ["5"], {"k": "8"}, False, id="lt-more"),
        pytest.param("Gt", ["5"], {"k": "x"}, False, id="gt-not-a-number"),
    ],
)
def test_requirement_matches_like_the_scheduler(
    operator: str, values: list[str], labels: dict[str, str], expected: bool
) -> None:
    assert requirement_matches({"key": "k", "operator": operator, "values": values}, labels) is expected


def test_node_matches_time_slicing_only_on_finely_enough_sliced_nodes() -> None:
    result: GPUScheduling = scheduling_for(
        spec({"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 4}), facts()
    )
    assert result.node_matches(ts_node(replicas=4).labels)
    assert result.node_matches(ts_node(replicas=2).labels)
    assert not result.node_matches(ts_node(replicas=8).labels)
    assert not result.node_matches({"nvidia.com/gpu.product": "NVIDIA-L4"})


def test_public_names_are_exported() -> None:
    for name in gpu_scheduling.__all__:
        assert hasattr(gpu_scheduling, name), name
