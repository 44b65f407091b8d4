"""What the cluster can offer, as the policy sees it (pure data; filled by ``targets/capacity.py`` from Nodes)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ClusterCapacity", "ResourceCapacity"]


@dataclass(frozen=True)
class ResourceCapacity:
    """One extended resource on one GPU product, summed over the nodes that offer it."""

    resource: str
    """Resource name as the device plugin advertises it, e.g. ``nvidia.com/gpu``, ``nvidia.com/mig-1g.10gb``."""
    product: str
    """``nvidia.com/gpu.product`` label of the nodes, e.g. ``NVIDIA-A100-SXM4-80GB``."""
    allocatable: float
    """Sum of ``status.allocatable`` over the matching nodes."""
    requested: float
    """Sum of the requests of Pods bound to those nodes (not terminated)."""
    nodes: int
    """How many nodes offer it."""

    @property
    def free(self) -> float:
        return max(0.0, self.allocatable - self.requested)


@dataclass(frozen=True)
class ClusterCapacity:
    """Everything the cluster offers; ``known=False`` when it has not been read yet (no decision may rely on it)."""

    resources: tuple[ResourceCapacity, ...] = field(default_factory=tuple)
    cpu_free_cores: float = 0.0
    memory_free_mib: float = 0.0
    known: bool = False
