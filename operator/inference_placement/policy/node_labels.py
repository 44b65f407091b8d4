"""The node labels a replica selects its GPU by, in the vocabulary the cluster's node autoscaler can act on (pure).

A pending replica makes a node autoscaler add a node only when the autoscaler can tell, before the node exists,
that the node would satisfy the Pod: its resource requests (``nvidia.com/gpu``), its node selector and required
node affinity, its tolerations. NVIDIA's GPU feature discovery labels (``nvidia.com/gpu.product``, what
``gpu_scheduling`` selects by) appear only once a node runs GFD, so:

- ``gfd`` (the default): GFD's labels. The cluster-autoscaler acts on them when each GPU node group's template
  carries them (on EKS the ASG tag ``k8s.io/cluster-autoscaler/node-template/label/nvidia.com/gpu.product``; on
  GKE and AKS node pools, the node pool's labels), and on ``nvidia.com/gpu`` requests.
- ``gke``: GKE's own labels, which GKE node auto-provisioning and the cluster-autoscaler act on:
  ``cloud.google.com/gke-accelerator`` (the GPU), ``cloud.google.com/gke-gpu-partition-size`` (a MIG profile: GKE
  exposes each partition as ``nvidia.com/gpu``), ``cloud.google.com/gke-gpu-sharing-strategy: time-sharing`` and
  ``cloud.google.com/gke-max-shared-clients-per-gpu`` (time-sharing).
- ``karpenter-aws``: the labels Karpenter's AWS provider knows before it launches an instance:
  ``karpenter.k8s.aws/instance-gpu-name`` (``t4``, ``l4``, ``a10g``, ``a100``, ``h100``),
  ``karpenter.k8s.aws/instance-gpu-memory`` (MiB per GPU, telling A100 40GB from 80GB),
  Karpenter provisions whole GPUs (``nvidia.com/gpu``); a MIG profile's resource (``nvidia.com/mig-<profile>``)
  is nothing it can launch, so MIG workloads keep GFD's labels and land on GPU nodes that exist (or a node pool
  the cluster-autoscaler manages).

Spot capacity is a separate vocabulary (``cluster.spotNodeLabels``, ``for_capacity``), as the labels a cloud puts
on its spot nodes do not depend on how GPUs are selected (each checked against the provider's documentation):

- ``eks``: EKS managed node groups label every node ``eks.amazonaws.com/capacityType: SPOT`` or ``ON_DEMAND``;
- ``gke``: GKE labels Spot VM nodes ``cloud.google.com/gke-spot: "true"`` (and, on recent versions,
  ``cloud.google.com/gke-provisioning: spot``); Autopilot taints the spot nodes it provisions
  ``cloud.google.com/gke-spot=true:NoSchedule`` (a Standard node pool carries that taint when the admin sets it,
  to keep other Pods off), so a spot replica tolerates it;
- ``karpenter``: Karpenter's well-known ``karpenter.sh/capacity-type: spot`` / ``on-demand``.

A workload the policy runs on spot prefers those nodes (a preferred node affinity, weight 100) and tolerates their
taint, so when no spot node has room (a pre-emption took it, or the pool is empty) the scheduler falls back to an
on-demand node at once; Karpenter acts on the preference (it launches spot first). A workload that asked for spot
but that the policy keeps on on-demand (the pre-emption risk breaks its SLO budget) requires on-demand nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Final, Literal, cast

from inference_placement.api.spec import AcceleratorType, GPUSharing, InferenceWorkloadSpec
from inference_placement.policy.gpu_scheduling import GPU_RESOURCE, GPUScheduling, Requirement, SchedulingMode

__all__ = [
    "EKS_CAPACITY_TYPE_LABEL",
    "GKE_PROVISIONING_LABEL",
    "GKE_SPOT_TOLERATION",
    "GKE_ACCELERATOR_LABEL",
    "GKE_ACCELERATORS",
    "GKE_MAX_SHARED_LABEL",
    "GKE_PARTITION_LABEL",
    "GKE_SHARING_LABEL",
    "GKE_SPOT_LABEL",
    "KARPENTER_CAPACITY_TYPE_LABEL",
    "KARPENTER_GPU_MEMORY_LABEL",
    "KARPENTER_GPU_NAME_LABEL",
    "KARPENTER_GPUS",
    "NodeLabels",
    "SpotLabels",
    "SpotProvider",
    "for_capacity",
    "for_node_labels",
    "spot_labels_for",
    "spot_provider",
]

NodeLabels = Literal["gfd", "gke", "karpenter-aws"]
SpotLabels = Literal["none", "eks", "gke", "karpenter"]
"""How the cluster labels its spot nodes (``none``: the operator cannot tell spot nodes, so it never runs on spot)."""
SpotProvider = Literal["aws", "gcp"]
"""The cloud whose spot pre-emption facts apply (``platforms.cluster.spot_interruption`` of the price book)."""

GKE_ACCELERATOR_LABEL: Final = "cloud.google.com/gke-accelerator"
GKE_PARTITION_LABEL: Final = "cloud.google.com/gke-gpu-partition-size"
GKE_SHARING_LABEL: Final = "cloud.google.com/gke-gpu-sharing-strategy"
GKE_MAX_SHARED_LABEL: Final = "cloud.google.com/gke-max-shared-clients-per-gpu"
GKE_SPOT_LABEL: Final = "cloud.google.com/gke-spot"
KARPENTER_GPU_NAME_LABEL: Final = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_GPU_MEMORY_LABEL: Final = "karpenter.k8s.aws/instance-gpu-memory"
KARPENTER_CAPACITY_TYPE_LABEL: Final = "karpenter.sh/capacity-type"
EKS_CAPACITY_TYPE_LABEL: Final = "eks.amazonaws.com/capacityType"
GKE_PROVISIONING_LABEL: Final = "cloud.google.com/gke-provisioning"
GKE_SPOT_TOLERATION: Final[dict[str, str]] = {
    "key": "cloud.google.com/gke-spot",
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}
"""Tolerates the taint GKE Autopilot puts on the spot nodes it provisions (and admins put on spot node pools)."""

_SPOT: Final[Mapping[str, tuple[str, str]]] = {
    "eks": (EKS_CAPACITY_TYPE_LABEL, "SPOT"),
    "gke": (GKE_SPOT_LABEL, "true"),
    "karpenter": (KARPENTER_CAPACITY_TYPE_LABEL, "spot"),
}
_ON_DEMAND: Final[Mapping[str, dict[str, object]]] = {
    "eks": {"key": EKS_CAPACITY_TYPE_LABEL, "operator": "In", "values": ["ON_DEMAND"]},
    # GKE labels spot nodes only; an on-demand node lacks the label, which NotIn accepts
    "gke": {"key": GKE_SPOT_LABEL, "operator": "NotIn", "values": ["true"]},
    "karpenter": {"key": KARPENTER_CAPACITY_TYPE_LABEL, "operator": "In", "values": ["on-demand"]},
}

GKE_ACCELERATORS: Final[Mapping[AcceleratorType, str]] = {
    AcceleratorType.NVIDIA_T4: "nvidia-tesla-t4",
    AcceleratorType.NVIDIA_L4: "nvidia-l4",
    AcceleratorType.NVIDIA_A100_40GB: "nvidia-tesla-a100",
    AcceleratorType.NVIDIA_A100_80GB: "nvidia-a100-80gb",
    AcceleratorType.NVIDIA_H100_80GB: "nvidia-h100-80gb",
}
"""``cloud.google.com/gke-accelerator`` values (GKE offers no A10G)."""

KARPENTER_GPUS: Final[Mapping[AcceleratorType, tuple[str, str | None]]] = {
    AcceleratorType.NVIDIA_T4: ("t4", None),
    AcceleratorType.NVIDIA_L4: ("l4", None),
    AcceleratorType.NVIDIA_A10G: ("a10g", None),
    AcceleratorType.NVIDIA_A100_40GB: ("a100", "40960"),
    AcceleratorType.NVIDIA_A100_80GB: ("a100", "81920"),
    AcceleratorType.NVIDIA_H100_80GB: ("h100", None),
}
"""``karpenter.k8s.aws/instance-gpu-name`` and, where the name is ambiguous, ``instance-gpu-memory`` (MiB)."""


def _in(key: str, *values: str) -> Requirement:
    return {"key": key, "operator": "In", "values": list(values)}


def for_node_labels(scheduling: GPUScheduling, spec: InferenceWorkloadSpec, labels: NodeLabels) -> GPUScheduling:
    """``scheduling`` (GFD's vocabulary, from ``gpu_scheduling.scheduling_for``) with its node selection in the
    vocabulary ``labels`` names. CPU-only and DRA scheduling are returned as they are (no GPU label involved, or
    the claim's device selectors pick the GPU). Raises ``ValueError`` for a GPU the platform does not offer."""
    if labels == "gfd" or scheduling.mode in (SchedulingMode.CPU, SchedulingMode.DRA):
        return scheduling
    acc = spec.accelerator
    if labels == "gke":
        name = GKE_ACCELERATORS.get(acc.type)
        if name is None:
            raise ValueError(f"{acc.type.value} is not offered on GKE ({GKE_ACCELERATOR_LABEL})")
        expressions = [_in(GKE_ACCELERATOR_LABEL, name)]
        resources = dict(scheduling.resources)
        note = f"GKE {name}"
        if acc.sharing is GPUSharing.MIG and acc.mig_profile is not None:
            # GKE exposes a partition as nvidia.com/gpu on a node pool created with that partition size
            expressions.append(_in(GKE_PARTITION_LABEL, acc.mig_profile))
            resources = {GPU_RESOURCE: "1"}
            note += f", partition {acc.mig_profile} as {GPU_RESOURCE}"
        elif acc.sharing is GPUSharing.TIME_SLICING:
            expressions.append(_in(GKE_SHARING_LABEL, "time-sharing"))
            if acc.time_slicing_replicas is not None:
                bound = str(acc.time_slicing_replicas + 1)
                expressions.append({"key": GKE_MAX_SHARED_LABEL, "operator": "Lt", "values": [bound]})
            resources = {GPU_RESOURCE: "1"}
            note += f", time-sharing as {GPU_RESOURCE}"
        return replace(
            scheduling,
            resources=resources,
            match_expressions=tuple(expressions),
            description=f"{scheduling.description} [{note}]",
        )
    if scheduling.mode in (SchedulingMode.MIG_MIXED, SchedulingMode.MIG_SINGLE):
        return scheduling  # no instance type offers a MIG profile: GFD's labels, on nodes that exist
    gpu_name, memory = KARPENTER_GPUS[acc.type]
    expressions = [_in(KARPENTER_GPU_NAME_LABEL, gpu_name)]
    note = f"Karpenter {gpu_name}"
    if memory is not None:
        expressions.append(_in(KARPENTER_GPU_MEMORY_LABEL, memory))
        note += f" {int(memory) // 1024}GB"
    return replace(
        scheduling,
        resources={GPU_RESOURCE: next(iter(scheduling.resources.values()), "1")},
        match_expressions=tuple(expressions),
        description=f"{scheduling.description} [{note}]",
    )


def spot_labels_for(gpu_labels: NodeLabels) -> SpotLabels:
    """The spot vocabulary that goes with a GPU vocabulary when ``cluster.spotNodeLabels`` is not set: GKE's with
    GKE's, Karpenter's with Karpenter's, none with GFD's (GFD says nothing about spot)."""
    if gpu_labels == "gke":
        return "gke"
    if gpu_labels == "karpenter-aws":
        return "karpenter"
    return "none"


def spot_provider(labels: SpotLabels) -> SpotProvider | None:
    """The cloud whose spot nodes carry ``labels``; None = the operator does not run anything on spot."""
    if labels == "gke":
        return "gcp"
    if labels in ("eks", "karpenter"):
        return "aws"
    return None


def for_capacity(scheduling: GPUScheduling, labels: SpotLabels, spot: bool | None) -> GPUScheduling:
    """``scheduling`` with the capacity type the decision chose, in the vocabulary ``labels`` names.

    ``spot`` True: prefer spot nodes and tolerate their taint (the scheduler falls back to on-demand nodes when no
    spot node has room); False: require on-demand nodes (the workload asked for spot but its pre-emption risk
    breaks the SLO budget); None: unchanged (the workload did not ask for spot). Applies to GPU and CPU replicas
    alike; ``none`` changes nothing."""
    if spot is None or labels == "none":
        return scheduling
    if spot:
        key, value = _SPOT[labels]
        tolerations = scheduling.tolerations
        if labels == "gke" and GKE_SPOT_TOLERATION not in tolerations:
            tolerations = (*tolerations, dict(GKE_SPOT_TOLERATION))
        return replace(
            scheduling,
            preferred_expressions=(*scheduling.preferred_expressions, _in(key, value)),
            tolerations=tolerations,
            description=f"{scheduling.description} [prefers spot: {key}={value}]",
        )
    requirement = dict(_ON_DEMAND[labels])
    values = cast("list[str]", requirement["values"])
    return replace(
        scheduling,
        match_expressions=(*scheduling.match_expressions, requirement),
        description=f"{scheduling.description} [on-demand: {requirement['key']} {requirement['operator']} "
        f"{','.join(values)}]",
    )
