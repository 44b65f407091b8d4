"""Capacity discovery: Nodes minus bound Pods, kept by list+watch; feasibility with numbers.

Pure tests fold API objects into ``CapacityIndex`` and script the watch protocol (410 Gone, errors); the cluster
tests run the cache against the real apiserver with fake GPU Nodes and a Pod bound to one of them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.status import Reason
from inference_placement.policy.capacity import ClusterCapacity, ResourceCapacity, replica_fit
from inference_placement.policy.decide import PlacementState, TrafficWindow, decide
from inference_placement.policy.feasibility import assess_feasibility
from inference_placement.policy.gpu_scheduling import MigStrategy
from inference_placement.policy.price_book import default_price_book
from inference_placement.targets import capacity as capacity_module
from inference_placement.targets.capacity import (
    CapacityCache,
    CapacityIndex,
    PodUsage,
    node_view_from_object,
    pod_usage_from_object,
)
from tests.plugins.cluster import KubeCluster
from tests.test_target_cluster import (
    BASE_ALLOCATABLE,
    FakeNode,
    FakeNodes,
    client_for,
    create_fake_nodes,
    delete_fake_nodes,
    eventually,
    gfd_labels,
)

MIB = 2**20


def spec(accelerator: dict[str, Any] | None = None, **extra: Any) -> InferenceWorkloadSpec:
    raw: dict[str, Any] = {"model": {"image": "m:1", "sizeMb": 100, "cpu": "1", "memory": "1Gi"}, **extra}
    if accelerator is not None:
        raw["accelerator"] = accelerator
    return InferenceWorkloadSpec.model_validate(raw)


MIG_3G = {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"}
MIG_1G = {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "1g.10gb"}
MIG_2G = {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "2g.20gb"}


def node_object(name: str, labels: dict[str, str], allocatable: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "spec": spec, "status": {"allocatable": allocatable}}


def pod_object(
    name: str,
    node: str | None,
    requests: dict[str, str],
    *,
    phase: str = "Pending",
    namespace: str = "ml",
    labels: dict[str, str] | None = None,
    limits_only: bool = False,
) -> dict[str, Any]:
    resources = {"limits": requests} if limits_only else {"requests": requests, "limits": requests}
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i", "resources": resources}]}
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
        "status": {"phase": phase},
    }


A100_LABELS = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/mig.strategy": "mixed"}
A100_ALLOCATABLE = {"cpu": "16", "memory": "64Gi", "nvidia.com/mig-3g.40gb": "1", "nvidia.com/mig-2g.20gb": "2"}


def a100_index() -> CapacityIndex:
    index = CapacityIndex()
    index.replace_nodes([node_view_from_object(node_object("a100", A100_LABELS, A100_ALLOCATABLE))])
    return index


# ------------------------------------------------------------------------------------------- pure: folding


def test_node_view_reads_labels_allocatable_and_cordon() -> None:
    view = node_view_from_object(node_object("n", {"a": "b"}, {"cpu": "3500m", "memory": "2Gi"}, unschedulable=True))
    assert view.labels == {"a": "b"}
    assert view.allocatable == {"cpu": 3.5, "memory": 2 * 2**30}
    assert view.unschedulable


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(pod_object("p", None, {"cpu": "1"}), None, id="unbound-holds-nothing"),
        pytest.param(pod_object("p", "n", {"cpu": "1"}, phase="Succeeded"), None, id="terminated"),
        pytest.param(
            pod_object("p", "n", {"nvidia.com/gpu": "1"}, limits_only=True),
            PodUsage(node="n", requests={"nvidia.com/gpu": 1.0}),
            id="limits-imply-requests",
        ),
        pytest.param(
            pod_object("p", "n", {"cpu": "250m"}, labels={"placement.inference.dev/workload": "x"}),
            PodUsage(node="n", requests={"cpu": 0.25}),
            id="foreign-label-is-no-owner",
        ),
        pytest.param(
            pod_object(
                "p",
                "n",
                {"cpu": "250m"},
                labels={"placement.inference.dev/workload": "x", "app.kubernetes.io/managed-by": "inference-placement"},
            ),
            PodUsage(node="n", requests={"cpu": 0.25}, owner="ml/x"),
            id="ours",
        ),
    ],
)
def test_pod_usage(pod: dict[str, Any], expected: PodUsage | None) -> None:
    assert pod_usage_from_object(pod) == expected


def test_pod_usage_counts_init_containers_and_overhead_like_the_scheduler() -> None:
    pod = pod_object("p", "n", {"cpu": "1", "memory": "1Gi"})
    pod["spec"]["containers"].append({"name": "d", "resources": {"requests": {"cpu": "500m"}}})
    pod["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "512Mi"}}}]
    pod["spec"]["overhead"] = {"cpu": "100m"}
    usage = pod_usage_from_object(pod)
    assert usage is not None
    assert usage.requests == {"cpu": pytest.approx(2.1), "memory": float(2**30)}


def test_snapshot_sums_per_resource_and_product() -> None:
    index = a100_index()
    index.upsert_node(
        node_view_from_object(
            node_object(
                "l4",
                {"nvidia.com/gpu.product": "NVIDIA-L4"},
                {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
            )
        )
    )
    index.upsert_pod(
        "ml/a", pod_usage_from_object(pod_object("a", "a100", {"nvidia.com/mig-2g.20gb": "1", "cpu": "2"}))
    )
    snap = index.snapshot()
    assert snap.known
    assert snap.resources == (
        ResourceCapacity("nvidia.com/gpu", "NVIDIA-L4", 1, 0, 1),
        ResourceCapacity("nvidia.com/mig-2g.20gb", "NVIDIA-A100-SXM4-80GB", 2, 1, 1),
        ResourceCapacity("nvidia.com/mig-3g.40gb", "NVIDIA-A100-SXM4-80GB", 1, 0, 1),
    )
    free = {n.name: (n.free["cpu"], n.free["memory"]) for n in snap.nodes}
    assert free == {"a100": (pytest.approx(14.0), 64 * 1024), "l4": (8.0, 32 * 1024)}  # per node, memory in MiB
    assert all(n.schedulable for n in snap.nodes)
    assert index.snapshot() is snap  # cached until a node or a bound Pod changes


def test_cordoned_nodes_offer_nothing() -> None:
    index = CapacityIndex()
    index.replace_nodes([node_view_from_object(node_object("a100", A100_LABELS, A100_ALLOCATABLE, unschedulable=True))])
    assert index.snapshot().resources == ()
    result = index.assess(spec(MIG_3G))
    assert (result.ok, result.reason) == (False, Reason.NO_MATCHING_NODES)


def test_pod_removal_and_termination_free_the_slice() -> None:
    index = a100_index()
    holder = pod_object("holder", "a100", {"nvidia.com/mig-3g.40gb": "1"})
    index.upsert_pod("ml/holder", pod_usage_from_object(holder))
    assert not index.assess(spec(MIG_3G)).ok
    index.upsert_pod("ml/holder", pod_usage_from_object({**holder, "status": {"phase": "Failed"}}))
    assert index.assess(spec(MIG_3G)).ok
    index.upsert_pod("ml/holder", pod_usage_from_object(holder))
    index.remove_pod("ml/holder")
    assert index.assess(spec(MIG_3G)).ok
    assert index.requested("a100") == {}


# ------------------------------------------------------------------------------------------- pure: feasibility


def test_taken_slice_is_reported_with_numbers() -> None:
    index = a100_index()
    index.upsert_pod("ml/holder", pod_usage_from_object(pod_object("holder", "a100", {"nvidia.com/mig-3g.40gb": "1"})))
    result = index.assess(spec(MIG_3G))
    assert not result.ok
    assert result.reason is Reason.CAPACITY_EXHAUSTED
    assert result.message.startswith("0 of 1 nvidia.com/mig-3g.40gb free on NVIDIA-A100-SXM4-80GB (1 node)")
    assert (result.free, result.allocatable, result.nodes, result.replicas_that_fit) == (0, 1, 1, 0)


def test_the_workloads_own_pods_do_not_count_against_it() -> None:
    index = a100_index()
    ours = {"placement.inference.dev/workload": "llm", "app.kubernetes.io/managed-by": "inference-placement"}
    index.upsert_pod(
        "ml/llm-1", pod_usage_from_object(pod_object("llm-1", "a100", {"nvidia.com/mig-3g.40gb": "1"}, labels=ours))
    )
    assert not index.assess(spec(MIG_3G), owner="ml/other").ok
    assert index.assess(spec(MIG_3G), owner="ml/llm").ok


def test_profile_no_node_offers_says_so() -> None:
    result = a100_index().assess(spec(MIG_1G))
    assert not result.ok
    assert result.reason is Reason.NO_MATCHING_NODES
    assert result.message.startswith("no schedulable node offers nvidia.com/mig-1g.10gb on nvidia-a100-80gb (")


def test_node_autoscaler_makes_missing_capacity_acceptable() -> None:
    result = a100_index().assess(spec(MIG_1G, cluster={"nodeAutoscaler": True}))
    assert result.ok
    assert "node autoscaler" in result.message


def test_the_same_capacity_answers_with_and_without_a_node_autoscaler() -> None:
    """One snapshot asked twice (the fit is memoized on it): the autoscaler changes the verdict, not the sums."""
    index = a100_index()
    without = index.assess(spec(MIG_1G))
    with_autoscaler = index.assess(spec(MIG_1G, cluster={"nodeAutoscaler": True}))
    assert not without.ok and with_autoscaler.ok
    assert "node autoscaler" in with_autoscaler.message and "node autoscaler" not in without.message


def test_gpu_is_free_but_cpu_is_not() -> None:
    index = a100_index()
    index.upsert_pod("ml/cpu-hog", pod_usage_from_object(pod_object("cpu-hog", "a100", {"cpu": "15500m"})))
    result = index.assess(spec(MIG_3G))
    assert not result.ok
    assert result.free == 1
    assert "0 replicas of 1 x nvidia.com/mig-3g.40gb + 1 CPU, 1024 MiB fit, needs 1" in result.message


def test_min_replicas_must_all_fit() -> None:
    two = spec({"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "2g.20gb"}, scaling={"minReplicas": 3})
    result = a100_index().assess(two)
    assert not result.ok
    assert result.replicas_that_fit == 2


def test_node_selector_of_the_spec_limits_the_nodes() -> None:
    result = a100_index().assess(spec(MIG_3G, cluster={"nodeSelector": {"pool": "other"}}))
    assert not result.ok
    assert result.reason is Reason.NO_MATCHING_NODES


def test_cpu_only_workload_fits_by_cpu_and_memory() -> None:
    index = a100_index()
    result = index.assess(spec())
    assert result.ok
    assert result.resource is None
    assert result.replicas_that_fit == 16


def test_facts_follow_node_changes() -> None:
    index = a100_index()
    assert index.gpu_facts().profile_strategies == {
        ("NVIDIA-A100-SXM4-80GB", "3g.40gb"): {MigStrategy.MIXED},
        ("NVIDIA-A100-SXM4-80GB", "2g.20gb"): {MigStrategy.MIXED},
    }
    version = index.version
    index.upsert_node(node_view_from_object(node_object("a100", A100_LABELS, A100_ALLOCATABLE)))
    assert index.version == version  # a heartbeat that changes nothing we read is not a change
    index.remove_node("a100")
    assert index.gpu_facts().profile_strategies == {}


# ------------------------------------------------------------- pure: one fit rule for the policy and the controller

BOOK = default_price_book()
L4_LABELS = {"nvidia.com/gpu.product": "NVIDIA-L4"}
TS_LABELS = {"nvidia.com/gpu.sharing-strategy": "time-slicing", "nvidia.com/gpu.replicas": "4"}
MIG_SINGLE_LABELS = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", "nvidia.com/mig.strategy": "single"}


def workload(accelerator: dict[str, Any] | None = None, cpu: str = "1", memory: str = "1Gi", **extra: Any) -> Any:
    raw: dict[str, Any] = {"model": {"image": "m:1", "sizeMb": 100, "cpu": cpu, "memory": memory}, **extra}
    if accelerator is not None:
        raw["accelerator"] = accelerator
    return InferenceWorkloadSpec.model_validate(raw)


def cluster_of(nodes: Sequence[dict[str, Any]], pods: Sequence[dict[str, Any]] = ()) -> CapacityIndex:
    index = CapacityIndex()
    index.replace_nodes(node_view_from_object(n) for n in nodes)
    usages = {f"ml/{p['metadata']['name']}": pod_usage_from_object(p) for p in pods}
    index.replace_pods({k: v for k, v in usages.items() if v is not None})
    return index


HALF_CPU = [node_object(f"half-{i}", {}, {"cpu": "8", "memory": "32Gi"}) for i in (1, 2)]
HALF_CPU_PODS = [pod_object(f"busy-{i}", f"half-{i}", {"cpu": "4"}) for i in (1, 2)]


@pytest.mark.parametrize(
    ("nodes", "pods", "wanted", "fits_now", "reason", "replicas"),
    [
        pytest.param(
            HALF_CPU, HALF_CPU_PODS, workload(cpu="8"), False, Reason.CAPACITY_EXHAUSTED, 0, id="cpu-split-over-nodes"
        ),
        pytest.param(HALF_CPU, HALF_CPU_PODS, workload(cpu="4"), True, Reason.CAPACITY_FREE, 2, id="cpu-fits-each"),
        pytest.param(
            HALF_CPU, [], workload(memory="48Gi"), False, Reason.CAPACITY_EXHAUSTED, 0, id="memory-split-over-nodes"
        ),
        pytest.param(
            [
                node_object("l4", L4_LABELS, {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}),
                node_object("cpu", {}, {"cpu": "32", "memory": "128Gi"}),
            ],
            [pod_object("hog", "l4", {"cpu": "6"})],
            workload({"type": "nvidia-l4"}, cpu="4"),
            False,
            Reason.CAPACITY_EXHAUSTED,
            0,
            id="gpu-on-one-node-cpu-on-another",
        ),
        pytest.param(
            [node_object(f"l4-{i}", L4_LABELS, {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}) for i in (1, 2)],
            [],
            workload({"type": "nvidia-l4", "count": 2}),
            False,
            Reason.CAPACITY_EXHAUSTED,
            0,
            id="two-gpus-on-two-nodes",
        ),
        pytest.param(
            [node_object("a100", A100_LABELS, A100_ALLOCATABLE)],
            [pod_object("one", "a100", {"nvidia.com/mig-2g.20gb": "1"})],
            workload({"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "2g.20gb"}),
            True,
            Reason.CAPACITY_FREE,
            1,
            id="mig-mixed",
        ),
        pytest.param(
            [node_object("a100", A100_LABELS, A100_ALLOCATABLE)],
            [pod_object("one", "a100", {"nvidia.com/mig-3g.40gb": "1"})],
            workload(MIG_3G),
            False,
            Reason.CAPACITY_EXHAUSTED,
            0,
            id="mig-mixed-taken",
        ),
        pytest.param(
            [node_object("single", MIG_SINGLE_LABELS, {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "7"})],
            [pod_object("six", "single", {"nvidia.com/gpu": "6"})],
            workload(MIG_1G),
            True,
            Reason.CAPACITY_FREE,
            1,
            id="mig-single",
        ),
        pytest.param(
            [node_object("single", MIG_SINGLE_LABELS, {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "7"})],
            [],
            workload(MIG_3G),
            False,
            Reason.NO_MATCHING_NODES,
            0,
            id="mig-single-other-profile",
        ),
        pytest.param(
            [
                node_object(
                    "ts",
                    {**L4_LABELS, **TS_LABELS},
                    {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu.shared": "4"},
                )
            ],
            [pod_object("three", "ts", {"nvidia.com/gpu.shared": "3"})],
            workload({"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 4}),
            True,
            Reason.CAPACITY_FREE,
            1,
            id="time-slicing-renamed",
        ),
        pytest.param(
            [
                node_object(
                    "ts",
                    {"nvidia.com/gpu.product": "NVIDIA-L4-SHARED", **TS_LABELS},
                    {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"},
                )
            ],
            [pod_object("four", "ts", {"nvidia.com/gpu": "4"})],
            workload({"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 4}),
            False,
            Reason.CAPACITY_EXHAUSTED,
            0,
            id="time-slicing-full",
        ),
        pytest.param(
            [node_object("l4", L4_LABELS, {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}, unschedulable=True)],
            [],
            workload({"type": "nvidia-l4"}),
            False,
            Reason.NO_MATCHING_NODES,
            0,
            id="cordoned",
        ),
        pytest.param(
            [node_object("a100", A100_LABELS, A100_ALLOCATABLE)],
            [],
            workload(
                {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "2g.20gb"}, scaling={"minReplicas": 3}
            ),
            False,
            Reason.CAPACITY_EXHAUSTED,
            2,
            id="min-replicas",
        ),
        pytest.param(
            [node_object("a100", A100_LABELS, A100_ALLOCATABLE)],
            [],
            workload(MIG_1G, cluster={"nodeAutoscaler": True}),
            False,
            Reason.NO_MATCHING_NODES,
            0,
            id="node-autoscaler",
        ),
        pytest.param(
            HALF_CPU,
            [],
            workload(cluster={"nodeSelector": {"pool": "gpu"}}),
            False,
            Reason.NO_MATCHING_NODES,
            0,
            id="node-selector",
        ),
    ],
)
def test_the_controller_verdict_and_the_policy_feasibility_agree(
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    wanted: InferenceWorkloadSpec,
    fits_now: bool,
    reason: Reason,
    replicas: int,
) -> None:
    """Same nodes and Pods: the CapacityAvailable verdict (targets/capacity.py) and the cluster's feasibility in
    the policy (what decide, the simulator and explain read) give one answer, with the same numbers."""
    index = cluster_of(nodes, pods)
    verdict = index.assess(wanted)
    feasibility = assess_feasibility(wanted, BOOK, index.snapshot())
    assert (verdict.fits_now, verdict.reason, verdict.replicas_that_fit) == (fits_now, reason, replicas), verdict
    assert feasibility.feasible(TargetName.CLUSTER) is verdict.ok
    assert feasibility.cluster_needs_node is (verdict.ok and not verdict.fits_now)
    if not verdict.ok:
        assert feasibility.infeasible[TargetName.CLUSTER] == verdict.message


@settings(max_examples=150, deadline=None)
@given(
    shapes=st.lists(
        st.tuples(st.integers(0, 16), st.integers(0, 64), st.integers(0, 4), st.booleans()), min_size=1, max_size=12
    ),
    cpu=st.integers(1, 8),
    memory_gib=st.integers(1, 32),
    gpus=st.integers(0, 2),
    min_replicas=st.integers(0, 6),
)
def test_the_fit_counts_replicas_node_by_node(
    shapes: list[tuple[int, int, int, bool]], cpu: int, memory_gib: int, gpus: int, min_replicas: int
) -> None:
    """Against a direct count: each node holds min(its free CPU, memory, GPUs per replica) replicas; cordoned
    nodes hold none; the policy and the controller say the same."""
    nodes = [
        node_object(
            f"n{i}",
            L4_LABELS,
            {"cpu": str(c), "memory": f"{m}Gi", "nvidia.com/gpu": str(g)},
            unschedulable=not schedulable,
        )
        for i, (c, m, g, schedulable) in enumerate(shapes)
    ]
    accelerator = {"type": "nvidia-l4", "count": gpus} if gpus else None
    wanted = workload(accelerator, cpu=str(cpu), memory=f"{memory_gib}Gi", scaling={"minReplicas": min_replicas})
    expected = sum(
        min(c // cpu, m // memory_gib, g // gpus if gpus else c // cpu)
        for c, m, g, schedulable in shapes
        if schedulable and (g > 0 or not gpus)
    )
    index = cluster_of(nodes)
    verdict = index.assess(wanted)
    if verdict.reason is not Reason.NO_MATCHING_NODES:
        assert verdict.replicas_that_fit == expected
    assert verdict.fits_now is (expected >= max(1, min_replicas))
    feasibility = assess_feasibility(wanted, BOOK, index.snapshot())
    assert feasibility.feasible(TargetName.CLUSTER) is verdict.ok is verdict.fits_now


def test_free_cpu_is_not_added_up_across_nodes() -> None:
    """The old disagreement: the policy summed 4 + 4 free cores and let a replica of 8 in; no node holds it."""
    index = cluster_of(HALF_CPU, HALF_CPU_PODS)
    wanted = workload(cpu="8", placement={"allowedTargets": ["cluster"]})
    verdict = index.assess(wanted)
    assert not verdict.ok
    assert verdict.message.startswith("0 replicas of 8 CPU, 1024 MiB fit on 2 nodes (most CPU free: 4 cores on half-1)")
    assert "0 replicas of 8 CPU" in assess_feasibility(wanted, BOOK, index.snapshot()).infeasible[TargetName.CLUSTER]
    decision = decide(wanted, None, PlacementState(None, None, 0.0), BOOK, index.snapshot(), datetime.now(UTC))
    assert decision.target is None or decision.target is not TargetName.CLUSTER


def test_unknown_capacity_gates_nothing() -> None:
    wanted = workload(cpu="64")
    assert assess_feasibility(wanted, BOOK, ClusterCapacity()).feasible(TargetName.CLUSTER)
    fit = replica_fit(wanted, ClusterCapacity())
    assert (fit.known, fit.ok, fit.message) == (False, False, "cluster capacity not read yet")


def test_the_workloads_own_pods_count_as_free_per_node() -> None:
    ours = {"placement.inference.dev/workload": "llm", "app.kubernetes.io/managed-by": "inference-placement"}
    mine = pod_object("llm-1", "half-1", {"cpu": "4"}, labels=ours)
    index = cluster_of(HALF_CPU, [mine, HALF_CPU_PODS[1]])
    wanted = workload(cpu="8")
    assert not index.assess(wanted, owner="ml/other").ok
    held = index.assess(wanted, owner="ml/llm")
    assert (held.ok, held.replicas_that_fit, held.nodes_with_room) == (True, 1, 1)
    assert "most CPU free: 8 cores on half-1" in held.message


def test_many_alike_nodes_count_per_node_and_unchanged_nodes_are_reused() -> None:
    nodes = [
        node_object(f"l4-{i}", L4_LABELS, {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}) for i in range(300)
    ]
    index = cluster_of(nodes, [pod_object("one", "l4-7", {"nvidia.com/gpu": "1"})])
    fit = index.assess(workload({"type": "nvidia-l4"}, scaling={"minReplicas": 299}))
    assert (fit.fits_now, fit.replicas_that_fit, fit.nodes, fit.free) == (True, 299, 300, 299)
    before = index.snapshot()
    index.upsert_pod("ml/two", pod_usage_from_object(pod_object("two", "l4-8", {"nvidia.com/gpu": "1"})))
    after = index.snapshot()
    assert after is not before and after.fingerprint != before.fingerprint
    changed = [i for i, (a, b) in enumerate(zip(before.nodes, after.nodes, strict=True)) if a is not b]
    assert changed == [8]  # only the node whose Pods changed is rebuilt
    assert index.assess(workload({"type": "nvidia-l4"})).replicas_that_fit == 298


# ------------------------------------------------------------------------------------------- pure: the watch loop


class FakeStream:
    def __init__(self, lines: list[bytes]) -> None:
        self._lines = list(lines)

    async def readline(self) -> bytes:
        if self._lines:
            return self._lines.pop(0)
        return b""


class FakeResponse:
    def __init__(self, status: int, body: dict[str, Any] | None = None, events: list[dict[str, Any]] | None = None):
        self.status = status
        self._body = json.dumps(body or {}).encode()
        self.content = FakeStream([json.dumps(e).encode() + b"\n" for e in events or []])

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        pass


class ScriptedApi:
    """Answers list and watch calls from a script, recording the arguments; then blocks like an idle watch."""

    def __init__(self, script: list[FakeResponse | Exception]) -> None:
        self.script = script
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, **kwargs: Any) -> FakeResponse:
        self.calls.append(kwargs)
        if not self.script:
            await asyncio.sleep(3600)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def listing(items: list[dict[str, Any]], version: str) -> FakeResponse:
    return FakeResponse(200, {"items": items, "metadata": {"resourceVersion": version}})


def a100_node() -> dict[str, Any]:
    node = node_object("a100", A100_LABELS, A100_ALLOCATABLE)
    node["metadata"]["resourceVersion"] = "10"
    return node


async def test_watch_resumes_from_the_last_version_and_relists_after_gone() -> None:
    holder = pod_object("holder", "a100", {"nvidia.com/mig-3g.40gb": "1"})
    holder["metadata"]["resourceVersion"] = "12"
    pods = ScriptedApi(
        [
            listing([], "11"),
            FakeResponse(200, events=[{"type": "ADDED", "object": holder}]),  # then the server ends the watch
            FakeResponse(200, events=[{"type": "ERROR", "object": {"kind": "Status", "code": 410}}]),
            listing([], "20"),  # the holder is gone by the time we list again
        ]
    )
    nodes = ScriptedApi([listing([a100_node()], "10")])
    cache = CapacityCache(None, list_nodes=nodes, list_pods=pods, sync_timeout_seconds=5)
    await cache.start()
    try:
        await eventually(lambda: _done(pods), timeout=5, what="script consumed")
        assert [c.get("resource_version") for c in pods.calls] == [None, "11", "12", None, "20"]
        assert [bool(c.get("watch")) for c in pods.calls] == [False, True, True, False, True]
        assert pods.calls[1]["field_selector"] == "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"
        assert cache.relists_after_gone == 1
        assert cache.check(spec(MIG_3G))[0]  # the re-list replaced the stale holder
    finally:
        await cache.stop()


async def test_watch_backs_off_on_errors_and_recovers() -> None:
    pods = ScriptedApi([ConnectionError("refused"), FakeResponse(500, {"message": "etcd"}), listing([], "5")])
    nodes = ScriptedApi([listing([a100_node()], "10")])
    cache = CapacityCache(None, list_nodes=nodes, list_pods=pods, backoff_initial_seconds=0.01, sync_timeout_seconds=5)
    assert not cache.synced
    assert cache.check(spec(MIG_3G)) == (False, "cluster capacity not read yet")
    assert not cache.snapshot().known
    await cache.start()
    try:
        assert cache.synced
        assert cache.errors == 2
        assert cache.snapshot().known
    finally:
        await cache.stop()


async def test_list_pages_are_followed() -> None:
    first = FakeResponse(200, {"items": [a100_node()], "metadata": {"continue": "tok"}})
    nodes = ScriptedApi([first, listing([node_object("b", {}, {"cpu": "1"})], "30")])
    pods = ScriptedApi([listing([], "1")])
    cache = CapacityCache(None, list_nodes=nodes, list_pods=pods, page_size=1, sync_timeout_seconds=5)
    await cache.start()
    try:
        assert set(cache.index.nodes) == {"a100", "b"}
        assert nodes.calls[1]["_continue"] == "tok"
    finally:
        await cache.stop()


async def _done(api: ScriptedApi) -> bool:
    return not api.script and len(api.calls) >= 5


def test_public_names_are_exported() -> None:
    for name in capacity_module.__all__:
        assert hasattr(capacity_module, name), name


# ------------------------------------------------------------------------------------------- the real apiserver

A100_ONE_3G = FakeNode(
    "a100-one-3g",
    gfd_labels(
        "NVIDIA-A100-SXM4-80GB",
        1,
        81920,
        **{"nvidia.com/mig.capable": "true", "nvidia.com/mig.strategy": "mixed"},
    ),
    {**BASE_ALLOCATABLE, "nvidia.com/gpu": "0", "nvidia.com/mig-3g.40gb": "1", "nvidia.com/mig-2g.20gb": "2"},
)


L4_ONE = FakeNode("l4-one", gfd_labels("NVIDIA-L4", 1, 23034), {**BASE_ALLOCATABLE, "nvidia.com/gpu": "1"})


@pytest.fixture(scope="module")
def capacity_nodes(kube_cluster: KubeCluster) -> Iterator[FakeNodes]:
    fake = create_fake_nodes(kube_cluster, (A100_ONE_3G, L4_ONE))
    yield fake
    delete_fake_nodes(kube_cluster, fake)


@pytest.fixture
async def live_api(kube_cluster: KubeCluster) -> AsyncIterator[ApiClient]:
    client = await client_for(kube_cluster)
    yield client
    await client.close()


async def create_pod(api: ApiClient, namespace: str, pod: Any) -> None:
    """Create a Pod, retrying while the new namespace's service account token is not there yet (HTTP 500)."""
    for _ in range(60):
        try:
            await CoreV1Api(api).create_namespaced_pod(namespace, pod)
            return
        except ApiException as e:
            if e.status != 500:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError(f"could not create Pod in {namespace}")


@pytest.fixture
async def live_namespace(live_api: ApiClient) -> AsyncIterator[str]:
    name = f"ipcap-{uuid.uuid4().hex[:8]}"
    body: Any = {"metadata": {"name": name}}
    await CoreV1Api(live_api).create_namespace(body)
    yield name
    await CoreV1Api(live_api).delete_namespace(name, grace_period_seconds=0)


def holder_pod(node: str, gpu: dict[str, str], labels: dict[str, str] | None = None, name: str = "slice-holder") -> Any:
    resources = {**gpu, "cpu": "2", "memory": "8Gi"}
    container = {
        "name": "c",
        "image": "registry.local/batch:1",
        "resources": {"requests": resources, "limits": resources},
    }
    return {
        "metadata": {"name": name, "labels": labels or {"app": "batch"}},
        # Bound directly (no scheduler involved), like a Pod the scheduler already placed.
        "spec": {"nodeName": node, "containers": [container]},
    }


LISTS = 5
"""Lists a capacity cache sends at start: Nodes, Pods, and (``gpu_request`` auto) DeviceClasses, ResourceSlices,
ResourceClaims."""


def slice_holder(node: str, labels: dict[str, str] | None = None) -> Any:
    return holder_pod(node, {"nvidia.com/mig-3g.40gb": "1"}, labels)


@pytest.mark.cluster
async def test_taken_mig_slice_makes_capacity_unavailable_with_the_numbers(
    capacity_nodes: FakeNodes, live_api: ApiClient, live_namespace: str
) -> None:
    node = capacity_nodes.names[A100_ONE_3G.key]
    cache = CapacityCache(live_api, node_label_selector=capacity_nodes.selector)
    await cache.start()
    try:
        assert cache.synced
        ok, message = cache.check(spec(MIG_3G))
        assert ok, message
        assert message.startswith("1 of 1 nvidia.com/mig-3g.40gb free on NVIDIA-A100-SXM4-80GB (1 node)")

        await create_pod(live_api, live_namespace, slice_holder(node))

        async def taken() -> bool:
            return not cache.check(spec(MIG_3G))[0]

        await eventually(taken, timeout=15, what="the watch to see the bound Pod")
        result = cache.assess(spec(MIG_3G))
        assert result.reason is Reason.CAPACITY_EXHAUSTED
        assert result.message.startswith("0 of 1 nvidia.com/mig-3g.40gb free on NVIDIA-A100-SXM4-80GB (1 node)")
        entry = next(r for r in cache.snapshot().resources if r.resource == "nvidia.com/mig-3g.40gb")
        assert (entry.product, entry.allocatable, entry.requested, entry.nodes) == ("NVIDIA-A100-SXM4-80GB", 1, 1, 1)

        # Other profiles on the same GPU are still free; with a node autoscaler the slice is not fatal.
        assert cache.check(spec({"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "2g.20gb"}))[0]
        assert cache.check(spec(MIG_3G, cluster={"nodeAutoscaler": True}))[0]

        # Reads cost no API calls: one list per kind at start (Nodes, Pods; DeviceClasses, ResourceSlices and
        # ResourceClaims for DRA), everything since came from the watches.
        for _ in range(100):
            cache.check(spec(MIG_3G))
            cache.snapshot()
        assert cache.list_requests == LISTS

        await CoreV1Api(live_api).delete_namespaced_pod("slice-holder", live_namespace, grace_period_seconds=0)

        async def free_again() -> bool:
            return cache.check(spec(MIG_3G))[0]

        await eventually(free_again, timeout=15, what="the watch to see the Pod gone")
        assert cache.list_requests == LISTS
    finally:
        await cache.stop()


@pytest.mark.cluster
async def test_the_workloads_own_slice_is_not_a_competitor(
    capacity_nodes: FakeNodes, live_api: ApiClient, live_namespace: str
) -> None:
    node = capacity_nodes.names[A100_ONE_3G.key]
    ours = {"app.kubernetes.io/managed-by": "inference-placement", "placement.inference.dev/workload": "llm"}
    await create_pod(live_api, live_namespace, slice_holder(node, ours))
    cache = CapacityCache(live_api, node_label_selector=capacity_nodes.selector)
    await cache.start()
    try:
        assert not cache.check(spec(MIG_3G))[0]
        assert cache.check(spec(MIG_3G), owner=f"{live_namespace}/llm")[0]
    finally:
        await cache.stop()
        await CoreV1Api(live_api).delete_namespaced_pod("slice-holder", live_namespace, grace_period_seconds=0)


@pytest.mark.cluster
async def test_profile_no_node_offers_is_not_placed_in_cluster(capacity_nodes: FakeNodes, live_api: ApiClient) -> None:
    cache = CapacityCache(live_api, node_label_selector=capacity_nodes.selector)
    await cache.start()
    try:
        result = cache.assess(spec(MIG_1G))
        assert not result.ok
        assert result.reason is Reason.NO_MATCHING_NODES
        assert "no schedulable node offers nvidia.com/mig-1g.10gb on nvidia-a100-80gb" in result.message
    finally:
        await cache.stop()


@pytest.mark.cluster
async def test_node_changes_arrive_through_the_watch(
    kube_cluster: KubeCluster, capacity_nodes: FakeNodes, live_api: ApiClient
) -> None:
    node = capacity_nodes.names[A100_ONE_3G.key]
    cache = CapacityCache(live_api, node_label_selector=capacity_nodes.selector)
    await cache.start()
    core = CoreV1Api(live_api)
    try:
        assert cache.check(spec(MIG_3G))[0]
        await core.patch_node(node, {"spec": {"unschedulable": True}})

        async def cordoned() -> bool:
            return not cache.check(spec(MIG_3G))[0]

        await eventually(cordoned, timeout=15, what="the cordon to arrive")
        assert cache.list_requests == LISTS
    finally:
        await core.patch_node(node, {"spec": {"unschedulable": False}})
        await cache.stop()


@pytest.mark.cluster
async def test_placement_avoids_the_cluster_when_its_only_gpu_is_taken(
    capacity_nodes: FakeNodes, live_api: ApiClient, live_namespace: str
) -> None:
    """The policy's feasibility reads the cache's snapshot: no free slice, no cluster; another allowed target wins."""
    cache = CapacityCache(live_api, node_label_selector=capacity_nodes.selector)
    await cache.start()
    core = CoreV1Api(live_api)
    try:
        await create_pod(live_api, live_namespace, slice_holder(capacity_nodes.names[A100_ONE_3G.key]))
        l4_holder = holder_pod(capacity_nodes.names[L4_ONE.key], {"nvidia.com/gpu": "1"}, name="l4-holder")
        await create_pod(live_api, live_namespace, l4_holder)

        async def both_taken() -> bool:
            snapshot = cache.snapshot()
            return sum(r.requested for r in snapshot.resources) == 2

        await eventually(both_taken, timeout=15, what="the watch to see both holders")
        snapshot = cache.snapshot()
        book = default_price_book()

        # The MIG workload: cluster infeasible, with the numbers; nothing else can run an A100 slice.
        mig = spec(MIG_3G)
        assert not cache.check(mig)[0]
        feasibility = assess_feasibility(mig, book, snapshot)
        assert "0 of 1 nvidia.com/mig-3g.40gb free" in feasibility.infeasible[TargetName.CLUSTER]

        # An L4 workload that Cloud Run may also serve: the cluster is avoided, Cloud Run is chosen.
        l4 = spec(
            {"type": "nvidia-l4"},
            placement={"allowedTargets": ["cluster", "cloudrun"]},
            cloudRun={"project": "demo"},
        )
        ok, message = cache.check(l4)
        assert not ok
        assert message.startswith("0 of 1 nvidia.com/gpu free on NVIDIA-L4 (1 node)")
        now = datetime.now(UTC)
        window = TrafficWindow(step_seconds=15, rps=(2.0,) * 40, observed_p99_seconds=None, end=now)
        decision = decide(l4, window, PlacementState(None, None, 0.0), book, snapshot, now)
        assert TargetName.CLUSTER in decision.infeasible
        assert decision.target is TargetName.CLOUDRUN, decision.reason
    finally:
        await cache.stop()
        for name in ("slice-holder", "l4-holder"):
            await core.delete_namespaced_pod(name, live_namespace, grace_period_seconds=0)
