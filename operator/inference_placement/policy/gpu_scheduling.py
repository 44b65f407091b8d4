"""How a workload's GPU needs become Kubernetes scheduling: resource names, node affinity, tolerations (pure).

The vocabulary is what NVIDIA's k8s-device-plugin and GPU feature discovery (GFD) publish on Nodes:

- ``nvidia.com/gpu.product`` is the NVML device name with spaces replaced by ``-`` (``Tesla-T4``, ``NVIDIA-L4``,
  ``NVIDIA-A100-SXM4-80GB``, ``NVIDIA-A100-80GB-PCIe``, ``NVIDIA-H100-80GB-HBM3``; drivers before R470 drop the
  ``NVIDIA-`` prefix). Time-sliced GPUs get ``-SHARED`` appended unless the resource is renamed
  (``renameByDefault``, resource ``nvidia.com/gpu.shared``). Under MIG strategy ``single`` the product becomes
  ``<product>-MIG-<profile>`` and the resource stays ``nvidia.com/gpu``; under ``mixed`` the product stays and each
  profile is its own resource ``nvidia.com/mig-<profile>``.
- ``nvidia.com/mig.strategy`` (``single``/``mixed``), ``nvidia.com/gpu.sharing-strategy`` (``none``, ``mps``,
  ``time-slicing``) and ``nvidia.com/gpu.replicas`` (time-slicing replicas per GPU).

``scheduling_for`` turns a spec plus what the nodes show (``GPUNodeFacts``, from ``ClusterCapacity``) into a
``GPUScheduling``: the Deployment's template (``targets/cluster_render.py``) and the replica-fit rule
(``policy/capacity.py``) both follow it, so the nodes counted as able to hold a replica are the nodes it can land
on. The choice is deterministic for the same facts: it never depends on free capacity, so a busy cluster does not
make the Deployment's template flip back and forth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from inference_placement.api.spec import AcceleratorType, GPUSharing, InferenceWorkloadSpec
from inference_placement.policy.dra import DRAClaim, DRAClasses, claim_for

__all__ = [
    "GPU_PRODUCTS",
    "GPU_PRODUCT_LABEL",
    "GPU_REPLICAS_LABEL",
    "GPU_RESOURCE",
    "MIG_RESOURCE_PREFIX",
    "MIG_STRATEGY_LABEL",
    "SHARED_GPU_RESOURCE",
    "SHARED_PRODUCT_SUFFIX",
    "SHARING_STRATEGY_LABEL",
    "TIME_SLICING",
    "CPU_ONLY",
    "GPUNodeFacts",
    "GPUScheduling",
    "MigStrategy",
    "NodeLike",
    "NodeView",
    "SchedulingMode",
    "accelerator_for_product",
    "base_product",
    "mig_profile_of_product",
    "mig_resource",
    "product_values",
    "requirement_matches",
    "scheduling_for",
    "Requirement",
]

GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
MIG_STRATEGY_LABEL: Final = "nvidia.com/mig.strategy"
SHARING_STRATEGY_LABEL: Final = "nvidia.com/gpu.sharing-strategy"
GPU_REPLICAS_LABEL: Final = "nvidia.com/gpu.replicas"
GPU_RESOURCE: Final = "nvidia.com/gpu"
SHARED_GPU_RESOURCE: Final = "nvidia.com/gpu.shared"
MIG_RESOURCE_PREFIX: Final = "nvidia.com/mig-"
TIME_SLICING: Final = "time-slicing"
SHARED_PRODUCT_SUFFIX: Final = "-SHARED"
_MIG_PRODUCT_INFIX: Final = "-MIG-"

GPU_PRODUCTS: Mapping[AcceleratorType, tuple[str, ...]] = {
    AcceleratorType.NVIDIA_T4: ("Tesla-T4",),
    AcceleratorType.NVIDIA_L4: ("NVIDIA-L4",),
    AcceleratorType.NVIDIA_A10G: ("NVIDIA-A10G",),
    AcceleratorType.NVIDIA_A100_40GB: (
        "NVIDIA-A100-SXM4-40GB",
        "NVIDIA-A100-PCIE-40GB",
        "A100-SXM4-40GB",
        "A100-PCIE-40GB",
    ),
    AcceleratorType.NVIDIA_A100_80GB: (
        "NVIDIA-A100-SXM4-80GB",
        "NVIDIA-A100-80GB-PCIe",
        "A100-SXM4-80GB",
        "A100-SXM-80GB",
        "A100-80GB-PCIe",
    ),
    AcceleratorType.NVIDIA_H100_80GB: (
        "NVIDIA-H100-80GB-HBM3",
        "NVIDIA-H100-PCIe",
    ),
    AcceleratorType.NVIDIA_RTX_PRO_6000: (
        "NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition",
        "NVIDIA-RTX-PRO-6000-Blackwell-Workstation-Edition",
    ),
}
"""``nvidia.com/gpu.product`` values GFD writes for each accelerator type (SXM and PCIe boards, old driver names)."""

_MIG_CAPABLE: Final = frozenset(
    {AcceleratorType.NVIDIA_A100_40GB, AcceleratorType.NVIDIA_A100_80GB, AcceleratorType.NVIDIA_H100_80GB}
)

_TYPE_BY_PRODUCT: Mapping[str, AcceleratorType] = {
    product: type_ for type_, products in GPU_PRODUCTS.items() for product in products
}


class MigStrategy(StrEnum):
    """``nvidia.com/mig.strategy`` of the device plugin / GFD."""

    SINGLE = "single"
    MIXED = "mixed"


class SchedulingMode(StrEnum):
    CPU = "cpu"
    EXCLUSIVE = "exclusive"
    MIG_MIXED = "mig-mixed"
    MIG_SINGLE = "mig-single"
    TIME_SLICING = "time-slicing"
    DRA = "dra"


def product_values(accelerator: AcceleratorType) -> tuple[str, ...]:
    """The product label values of whole GPUs of this type (empty for ``none``)."""
    return GPU_PRODUCTS.get(accelerator, ())


def base_product(product_label: str) -> str:
    """The whole-GPU product behind a label: strips ``-SHARED`` and ``-MIG-<profile>``."""
    product = product_label
    if product.endswith(SHARED_PRODUCT_SUFFIX):
        product = product[: -len(SHARED_PRODUCT_SUFFIX)]
    index = product.find(_MIG_PRODUCT_INFIX)
    if index >= 0:
        product = product[:index]
    return product


def mig_profile_of_product(product_label: str) -> str | None:
    """``1g.10gb`` for ``NVIDIA-A100-SXM4-80GB-MIG-1g.10gb`` (MIG strategy single); None otherwise."""
    index = product_label.find(_MIG_PRODUCT_INFIX)
    if index < 0:
        return None
    profile = product_label[index + len(_MIG_PRODUCT_INFIX) :]
    if profile.endswith(SHARED_PRODUCT_SUFFIX):
        profile = profile[: -len(SHARED_PRODUCT_SUFFIX)]
    return profile or None


def accelerator_for_product(product_label: str) -> AcceleratorType | None:
    """The accelerator type a product label belongs to (any sharing form), or None for an unknown GPU."""
    return _TYPE_BY_PRODUCT.get(base_product(product_label))


def mig_resource(profile: str) -> str:
    """Resource name of a MIG profile under strategy mixed: ``nvidia.com/mig-3g.40gb``."""
    return f"{MIG_RESOURCE_PREFIX}{profile}"


class NodeLike(Protocol):
    """What ``GPUNodeFacts`` reads of a node: ``NodeView`` (targets) and ``NodeCapacity`` (policy) both have it."""

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def allocatable(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class NodeView:
    """The parts of a Node that scheduling and capacity read."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    allocatable: Mapping[str, float] = field(default_factory=dict)
    """``status.allocatable`` as numbers (cores for cpu, bytes for memory, counts for extended resources)."""
    unschedulable: bool = False
    """``spec.unschedulable`` (cordoned)."""

    @property
    def product(self) -> str:
        return self.labels.get(GPU_PRODUCT_LABEL, "")


@dataclass(frozen=True)
class GPUNodeFacts:
    """How the cluster's GPU nodes expose their GPUs, as the capacity cache saw them; keys are base products."""

    profile_strategies: Mapping[tuple[str, str], frozenset[MigStrategy]] = field(default_factory=dict)
    """(base product, MIG profile) -> strategies of the nodes that offer that profile now."""
    product_strategies: Mapping[str, frozenset[MigStrategy]] = field(default_factory=dict)
    """Base product -> ``nvidia.com/mig.strategy`` labels seen on its nodes (MIG devices or not)."""
    time_slicing_resources: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Base product -> resources its time-slicing nodes advertise (``nvidia.com/gpu`` and/or ``.shared``)."""
    dra: DRAClasses | None = None
    """The DeviceClasses GPUs are claimed through where DRA applies (``policy/dra.py``); None: extended resources."""

    @classmethod
    def from_nodes(cls, nodes: Iterable[NodeLike], dra: DRAClasses | None = None) -> GPUNodeFacts:
        profiles: dict[tuple[str, str], set[MigStrategy]] = {}
        products: dict[str, set[MigStrategy]] = {}
        shared: dict[str, set[str]] = {}
        for node in nodes:
            label = node.labels.get(GPU_PRODUCT_LABEL, "")
            if not label:
                continue
            base = base_product(label)
            strategy = _strategy_label(node.labels)
            if strategy is not None:
                products.setdefault(base, set()).add(strategy)
            single_profile = mig_profile_of_product(label)
            if single_profile is not None and node.allocatable.get(GPU_RESOURCE, 0.0) > 0:
                profiles.setdefault((base, single_profile), set()).add(MigStrategy.SINGLE)
            for resource, amount in node.allocatable.items():
                if resource.startswith(MIG_RESOURCE_PREFIX) and amount > 0:
                    profile = resource[len(MIG_RESOURCE_PREFIX) :]
                    profiles.setdefault((base, profile), set()).add(MigStrategy.MIXED)
            if node.labels.get(SHARING_STRATEGY_LABEL) == TIME_SLICING:
                for resource in (GPU_RESOURCE, SHARED_GPU_RESOURCE):
                    if node.allocatable.get(resource, 0.0) > 0:
                        shared.setdefault(base, set()).add(resource)
        return cls(
            profile_strategies={k: frozenset(v) for k, v in profiles.items()},
            product_strategies={k: frozenset(v) for k, v in products.items()},
            time_slicing_resources={k: frozenset(v) for k, v in shared.items()},
            dra=dra,
        )


def _strategy_label(labels: Mapping[str, str]) -> MigStrategy | None:
    try:
        return MigStrategy(labels.get(MIG_STRATEGY_LABEL, ""))
    except ValueError:
        return None


Requirement = dict[str, Any]
"""A NodeSelectorRequirement as the API writes it: ``{"key", "operator", "values"}``."""


@dataclass(frozen=True)
class GPUScheduling:
    """Everything GPU-related a Pod template needs; ``CPU_ONLY`` has none of it."""

    mode: SchedulingMode
    resources: Mapping[str, str] = field(default_factory=dict)
    """Extended resources per replica, set as both request and limit, e.g. ``{"nvidia.com/mig-3g.40gb": "1"}``."""
    match_expressions: tuple[Requirement, ...] = ()
    """One required node selector term (all expressions must hold)."""
    preferred_expressions: tuple[Requirement, ...] = ()
    """One preferred node selector term (weight 100): nodes matching it are chosen first, others when none of them
    has room (spot capacity with an on-demand fallback, ``node_labels.for_capacity``)."""
    tolerations: tuple[dict[str, str], ...] = ()
    description: str = "CPU only"
    """Human-readable summary for Events and annotations."""
    claim: DRAClaim | None = None
    """The DRA claim each replica gets through a ResourceClaimTemplate (then ``resources`` is empty)."""

    @property
    def resource_name(self) -> str | None:
        """What one replica is counted against in the capacity view: its extended resource, or the key its DRA
        devices are counted under (``policy/dra.py``)."""
        if self.claim is not None:
            return self.claim.capacity_key
        return next(iter(self.resources), None)

    @property
    def resource_count(self) -> int:
        if self.claim is not None:
            return self.claim.count if self.claim.shares is None else self.claim.shares
        name = self.resource_name
        return int(self.resources[name]) if name is not None else 0

    @property
    def products(self) -> tuple[str, ...]:
        """Accepted ``nvidia.com/gpu.product`` values."""
        for expr in self.match_expressions:
            if expr["key"] == GPU_PRODUCT_LABEL and expr["operator"] == "In":
                return tuple(expr["values"])
        return ()

    def affinity(self) -> dict[str, Any] | None:
        """The Pod ``affinity`` (required node affinity, and the preferred term), or None without either."""
        if not self.match_expressions and not self.preferred_expressions:
            return None
        node_affinity: dict[str, Any] = {}
        if self.match_expressions:
            node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
                "nodeSelectorTerms": [{"matchExpressions": [dict(e) for e in self.match_expressions]}]
            }
        if self.preferred_expressions:
            node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
                {"weight": 100, "preference": {"matchExpressions": [dict(e) for e in self.preferred_expressions]}}
            ]
        return {"nodeAffinity": node_affinity}

    def node_matches(self, labels: Mapping[str, str]) -> bool:
        """True when a node with these labels satisfies the node affinity."""
        return all(requirement_matches(expr, labels) for expr in self.match_expressions)


CPU_ONLY: Final = GPUScheduling(mode=SchedulingMode.CPU)


def requirement_matches(requirement: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Evaluate one NodeSelectorRequirement like the scheduler does."""
    key = requirement["key"]
    operator = requirement["operator"]
    values: list[str] = list(requirement.get("values") or [])
    present = key in labels
    value = labels.get(key, "")
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            have, bound = int(value), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    raise ValueError(f"unknown node selector operator {operator!r}")


def _tolerations(resource: str) -> tuple[dict[str, str], ...]:
    # GPU node pools are usually tainted nvidia.com/gpu (GKE: nvidia.com/gpu=present:NoSchedule); the
    # ExtendedResourceToleration admission plugin's convention taints with the resource name itself.
    keys = [GPU_RESOURCE] if resource == GPU_RESOURCE else [GPU_RESOURCE, resource]
    return tuple({"key": key, "operator": "Exists"} for key in keys)


def _product_requirement(values: Iterable[str]) -> Requirement:
    return {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(values)}


def _prefer_mixed(strategies: frozenset[MigStrategy]) -> MigStrategy | None:
    if MigStrategy.MIXED in strategies:
        return MigStrategy.MIXED
    if MigStrategy.SINGLE in strategies:
        return MigStrategy.SINGLE
    return None


def _mig_strategy(products: tuple[str, ...], profile: str, facts: GPUNodeFacts, default: MigStrategy) -> MigStrategy:
    """Nodes offering this profile decide; else this GPU type's strategy label; else any GPU node's; else default.

    Mixed wins a tie: its resource name carries the profile, so the request alone is unambiguous.
    """
    offering: frozenset[MigStrategy] = frozenset().union(
        *(facts.profile_strategies.get((p, profile), frozenset()) for p in products)
    )
    labelled: frozenset[MigStrategy] = frozenset().union(
        *(facts.product_strategies.get(p, frozenset()) for p in products)
    )
    anywhere: frozenset[MigStrategy] = frozenset().union(*facts.product_strategies.values())
    for seen in (offering, labelled, anywhere):
        chosen = _prefer_mixed(seen)
        if chosen is not None:
            return chosen
    return default


def scheduling_for(
    spec: InferenceWorkloadSpec,
    facts: GPUNodeFacts,
    *,
    default_mig_strategy: MigStrategy = MigStrategy.MIXED,
) -> GPUScheduling:
    """GPU resources, node affinity and tolerations of one replica; ``CPU_ONLY`` when no GPU is needed.

    Raises ``ValueError`` for a combination the semantic validation rejects (MIG on a GPU without MIG, ...).
    """
    acc = spec.accelerator
    if not acc.needs_gpu:
        return CPU_ONLY
    products = product_values(acc.type)
    if not products:
        raise ValueError(f"no GPU product labels known for {acc.type.value}")
    if acc.sharing is GPUSharing.MIG and acc.type not in _MIG_CAPABLE:
        raise ValueError(f"{acc.type.value} does not support MIG")
    claim = claim_for(spec, facts.dra) if facts.dra is not None else None
    if claim is not None:
        # the claim's device class and selectors pick the GPU; the driver's nodes carry the usual GPU taint
        return GPUScheduling(
            mode=SchedulingMode.DRA,
            tolerations=_tolerations(GPU_RESOURCE),
            description=claim.description,
            claim=claim,
        )

    if acc.sharing is GPUSharing.EXCLUSIVE:
        return GPUScheduling(
            mode=SchedulingMode.EXCLUSIVE,
            resources={GPU_RESOURCE: str(acc.count)},
            match_expressions=(_product_requirement(products),),
            tolerations=_tolerations(GPU_RESOURCE),
            description=f"{acc.count} x {GPU_RESOURCE} ({acc.type.value}, exclusive)",
        )

    if acc.sharing is GPUSharing.MIG:
        profile = acc.mig_profile
        if profile is None:
            raise ValueError("sharing mig needs accelerator.migProfile")
        strategy = _mig_strategy(products, profile, facts, default_mig_strategy)
        if strategy is MigStrategy.MIXED:
            resource = mig_resource(profile)
            return GPUScheduling(
                mode=SchedulingMode.MIG_MIXED,
                resources={resource: "1"},
                match_expressions=(_product_requirement(products),),
                tolerations=_tolerations(resource),
                description=f"1 x {resource} ({acc.type.value}, MIG strategy mixed)",
            )
        return GPUScheduling(
            mode=SchedulingMode.MIG_SINGLE,
            resources={GPU_RESOURCE: "1"},
            match_expressions=(_product_requirement(f"{p}{_MIG_PRODUCT_INFIX}{profile}" for p in products),),
            tolerations=_tolerations(GPU_RESOURCE),
            description=f"1 x {GPU_RESOURCE} as MIG {profile} ({acc.type.value}, MIG strategy single)",
        )

    # Time-slicing: one slice of a GPU shared by at most time_slicing_replicas replicas.
    advertised: frozenset[str] = frozenset().union(
        *(facts.time_slicing_resources.get(p, frozenset()) for p in products)
    )
    resource = SHARED_GPU_RESOURCE if advertised == {SHARED_GPU_RESOURCE} else GPU_RESOURCE
    expressions: list[Requirement] = [
        _product_requirement(v for p in products for v in (p, f"{p}{SHARED_PRODUCT_SUFFIX}")),
        {"key": SHARING_STRATEGY_LABEL, "operator": "In", "values": [TIME_SLICING]},
    ]
    at_most = ""
    if acc.time_slicing_replicas is not None:
        # A GPU sliced more finely than the spec allows would give this model less than it was sized for.
        bound = str(acc.time_slicing_replicas + 1)
        expressions.append({"key": GPU_REPLICAS_LABEL, "operator": "Lt", "values": [bound]})
        at_most = f", shared by at most {acc.time_slicing_replicas}"
    return GPUScheduling(
        mode=SchedulingMode.TIME_SLICING,
        resources={resource: "1"},
        match_expressions=tuple(expressions),
        tolerations=_tolerations(resource),
        description=f"1 x {resource} ({acc.type.value}, time-sliced{at_most})",
    )
