"""GPUs through Dynamic Resource Allocation (``resource.k8s.io/v1``), as NVIDIA's DRA driver publishes them (pure).

The vocabulary is the driver's (``kubernetes-sigs/dra-driver-nvidia-gpu``, formerly ``NVIDIA/k8s-dra-driver-gpu``):

- driver ``gpu.nvidia.com``; DeviceClasses ``gpu.nvidia.com`` (``device.attributes['gpu.nvidia.com'].type ==
  'gpu'``: whole GPUs) and ``mig.nvidia.com`` (``type == 'mig'``: MIG devices, with attribute ``profile`` such as
  ``1g.10gb`` and ``parentUUID``);
- attribute ``productName``: the NVML name with its spaces (``NVIDIA H100 80GB HBM3``, ``Tesla T4``); GPU feature
  discovery's ``nvidia.com/gpu.product`` label is the same name with ``-`` for each space, so one product table
  (``gpu_scheduling.GPU_PRODUCTS``) serves both: the selector compares ``productName.replace(' ', '-')``;
- a GPU shared between Pods is one published with ``allowMultipleAllocations: true`` and a ``shares`` capacity of
  N (the driver's ``--consumable-shares=N``; Kubernetes' consumable capacity, beta and on by default since 1.36):
  each claim consumes one share, so at most N Pods share it; the claim's opaque ``GpuConfig`` (``apiVersion
  resource.nvidia.com/v1beta1``) sets ``sharing.strategy: TimeSlicing`` (or ``MPS``) for the driver to apply.

``claim_for`` turns a spec into the one device request of a replica's ResourceClaimTemplate; ``device_keys`` turns
one published device into the counted keys the capacity view (``policy/capacity.py``) reads like extended
resources, so the same per-node fit rule decides for both ways of requesting a GPU. The key a claim is counted
against (``DRAClaim.capacity_key``) is one ``device_keys`` gives every device that claim could be allocated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from inference_placement.api.spec import AcceleratorType, GPUSharing, InferenceWorkloadSpec

__all__ = [
    "CLAIM_NAME",
    "CONFIG_API_VERSION",
    "DRA_KEY_PREFIX",
    "DRIVER",
    "GPU_DEVICE_CLASS",
    "MAX_SHARES",
    "MIG_DEVICE_CLASS",
    "DRAClaim",
    "DRAClasses",
    "DeviceKeys",
    "GPURequest",
    "SharingStrategy",
    "claim_for",
    "claim_template_spec",
    "device_keys",
    "exclusive_key",
    "is_bound_key",
    "mig_key",
    "shares_key",
]

DRIVER: Final = "gpu.nvidia.com"
"""The driver name in ResourceSlices, the attribute domain, and the opaque config's driver."""
GPU_DEVICE_CLASS: Final = "gpu.nvidia.com"
MIG_DEVICE_CLASS: Final = "mig.nvidia.com"
CONFIG_API_VERSION: Final = "resource.nvidia.com/v1beta1"
CLAIM_NAME: Final = "gpu"
"""The name of the claim in the Pod template (``spec.resourceClaims[].name``) and of its one device request."""
DRA_KEY_PREFIX: Final = "dra.gpu.nvidia.com/"
"""Prefix of the capacity keys DRA devices are counted under (never a resource a Pod requests)."""
MAX_SHARES: Final = 64
"""The most replicas a spec may time-slice one GPU between (``timeSlicingReplicas`` <= 64)."""

GPURequest = Literal["auto", "extendedResources", "dra"]
"""How the cluster target requests GPUs: extended resources (device plugin), DRA claims, or DRA where the NVIDIA
DeviceClasses exist."""
SharingStrategy = Literal["TimeSlicing", "MPS", "none"]
"""``GpuConfig.sharing.strategy`` of a shared GPU's claim, or ``none``: no opaque config (the driver's own default;
it accepts ``TimeSlicing`` only with its ``TimeSlicingSettings`` feature gate, ``MPS`` only with ``MPSSupport``)."""

_ATTR: Final = f"device.attributes['{DRIVER}']"
_CAP: Final = f"device.capacity['{DRIVER}']"


@dataclass(frozen=True)
class DRAClasses:
    """The DeviceClasses GPUs are requested through, where DRA applies (None: that kind is not requested by DRA)."""

    gpu: str | None = GPU_DEVICE_CLASS
    """Whole and shared GPUs (``type == 'gpu'``)."""
    mig: str | None = MIG_DEVICE_CLASS
    """MIG devices (``type == 'mig'``)."""
    sharing_strategy: SharingStrategy = "none"
    """``GpuConfig.sharing.strategy`` set on a time-sliced share's claim (``none``: no config)."""


def exclusive_key(accelerator: AcceleratorType) -> str:
    """Capacity key of a whole, unshared GPU of this type: ``dra.gpu.nvidia.com/nvidia-h100-80gb``."""
    return f"{DRA_KEY_PREFIX}{accelerator.value}"


def mig_key(accelerator: AcceleratorType, profile: str) -> str:
    """Capacity key of a MIG device: ``dra.gpu.nvidia.com/nvidia-a100-80gb-mig-1g.10gb``."""
    return f"{DRA_KEY_PREFIX}{accelerator.value}-mig-{profile}"


def shares_key(accelerator: AcceleratorType, at_most: int | None = None) -> str:
    """Capacity key of the shares of shared GPUs of this type (``-shares``), or of those shared by at most
    ``at_most`` claims (``-shares-max8``)."""
    bound = "" if at_most is None else f"-max{at_most}"
    return f"{DRA_KEY_PREFIX}{accelerator.value}-shares{bound}"


def is_bound_key(key: str) -> bool:
    """True for the ``-shares-max<N>`` keys (the same shares counted once per bound; left out of summaries)."""
    return key.startswith(DRA_KEY_PREFIX) and "-shares-max" in key


@dataclass(frozen=True)
class DRAClaim:
    """The one device request of a replica's ResourceClaimTemplate."""

    device_class: str
    selectors: tuple[str, ...]
    """CEL expressions, all of which a device must satisfy (besides the class's own)."""
    count: int = 1
    shares: int | None = None
    """Shares of a shared GPU the claim consumes (``capacity.requests.shares``); None for an exclusive device."""
    config: Mapping[str, Any] | None = None
    """The opaque ``parameters`` for the driver (``GpuConfig``), or None."""
    capacity_key: str = ""
    """The key its devices are counted under in the capacity view (``device_keys``)."""
    description: str = ""


def _product_selector(accelerator: AcceleratorType) -> str:
    # local import: gpu_scheduling imports this module
    from inference_placement.policy.gpu_scheduling import product_values

    names = ", ".join(f"'{p}'" for p in product_values(accelerator))
    return f"{_ATTR}.productName.replace(' ', '-') in [{names}]"


def claim_for(spec: InferenceWorkloadSpec, classes: DRAClasses) -> DRAClaim | None:
    """The claim of one replica, or None when DRA does not apply to this accelerator (no GPU, or its class absent).

    Raises ``ValueError`` for what the semantic validation rejects (MIG without a profile)."""
    acc = spec.accelerator
    if not acc.needs_gpu:
        return None
    product = _product_selector(acc.type)
    if acc.sharing is GPUSharing.MIG:
        if classes.mig is None:
            return None
        profile = acc.mig_profile
        if profile is None:
            raise ValueError("sharing mig needs accelerator.migProfile")
        return DRAClaim(
            device_class=classes.mig,
            selectors=(product, f"{_ATTR}.profile == '{profile}'"),
            capacity_key=mig_key(acc.type, profile),
            description=f"DRA claim: 1 x {classes.mig} MIG {profile} ({acc.type.value})",
        )
    if classes.gpu is None:
        return None
    if acc.sharing is GPUSharing.EXCLUSIVE:
        # a GPU published for sharing would give this claim one share of it, not the GPU
        return DRAClaim(
            device_class=classes.gpu,
            selectors=(product, "!device.allowMultipleAllocations"),
            count=acc.count,
            capacity_key=exclusive_key(acc.type),
            description=f"DRA claim: {acc.count} x {classes.gpu} ({acc.type.value}, exclusive)",
        )
    shared = f"device.allowMultipleAllocations && 'shares' in {_CAP}"
    at_most = ""
    if acc.time_slicing_replicas is not None:
        # a GPU sliced more finely than the spec allows would give this model less than it was sized for
        shared += f" && {_CAP}.shares.compareTo(quantity('{acc.time_slicing_replicas}')) <= 0"
        at_most = f", shared by at most {acc.time_slicing_replicas}"
    strategy = classes.sharing_strategy
    parameters: dict[str, Any] | None = None
    if strategy != "none":
        # the driver validates it: TimeSlicing needs its TimeSlicingSettings gate, MPS its MPSSupport gate
        parameters = {"apiVersion": CONFIG_API_VERSION, "kind": "GpuConfig", "sharing": {"strategy": strategy}}
        if strategy == "TimeSlicing":
            parameters["sharing"]["timeSlicingConfig"] = {"interval": "Default"}
    how = "" if strategy == "none" else f", {strategy}"
    return DRAClaim(
        device_class=classes.gpu,
        selectors=(product, shared),
        shares=1,
        config=parameters,
        capacity_key=shares_key(acc.type, acc.time_slicing_replicas),
        description=f"DRA claim: 1 share of {classes.gpu} ({acc.type.value}{how}{at_most})",
    )


def claim_template_spec(claim: DRAClaim) -> dict[str, Any]:
    """``spec`` of the ResourceClaimTemplate (its ``spec.spec`` is the claim each Pod gets)."""
    exactly: dict[str, Any] = {
        "deviceClassName": claim.device_class,
        "selectors": [{"cel": {"expression": s}} for s in claim.selectors],
        "allocationMode": "ExactCount",
        "count": claim.count,
    }
    if claim.shares is not None:
        exactly["capacity"] = {"requests": {"shares": str(claim.shares)}}
    devices: dict[str, Any] = {"requests": [{"name": CLAIM_NAME, "exactly": exactly}]}
    if claim.config is not None:
        devices["config"] = [{"requests": [CLAIM_NAME], "opaque": {"driver": DRIVER, "parameters": dict(claim.config)}}]
    return {"spec": {"devices": devices}}


# ------------------------------------------------------------------------------------------- published devices


@dataclass(frozen=True)
class _Device:
    kind: str
    accelerator: AcceleratorType | None
    profile: str | None
    multi: bool
    shares: int | None


def _attribute(attributes: Mapping[str, Any], name: str) -> Any:
    """An attribute's value: ``attributes[name]`` or ``attributes['gpu.nvidia.com/name']``, any value field."""
    value = attributes.get(name)
    if value is None:
        value = attributes.get(f"{DRIVER}/{name}")
    if not isinstance(value, Mapping):
        return None
    for kind in ("string", "int", "bool", "version"):
        if kind in value:
            return value[kind]
    return None


def _whole_number(quantity: Any) -> int | None:
    try:
        return int(str(quantity))
    except ValueError:
        return None


def _describe(device: Mapping[str, Any]) -> _Device:
    from inference_placement.policy.gpu_scheduling import accelerator_for_product

    attributes = device.get("attributes") or {}
    product = _attribute(attributes, "productName")
    accelerator = accelerator_for_product(str(product).replace(" ", "-")) if product else None
    capacity = device.get("capacity") or {}
    shares = capacity.get("shares") or capacity.get(f"{DRIVER}/shares")
    return _Device(
        kind=str(_attribute(attributes, "type") or ""),
        accelerator=accelerator,
        profile=_attribute(attributes, "profile"),
        multi=bool(device.get("allowMultipleAllocations")),
        shares=_whole_number(shares.get("value")) if isinstance(shares, Mapping) else None,
    )


@dataclass(frozen=True)
class DeviceKeys:
    """What one published device counts for: capacity key -> amount (1 per device, N per shared GPU)."""

    keys: Mapping[str, float] = field(default_factory=dict)
    shared: bool = False
    """Counted in shares: each allocation consumes its ``consumedCapacity.shares`` (1 by default)."""


def device_keys(device: Mapping[str, Any]) -> DeviceKeys:
    """The capacity keys one ResourceSlice device (JSON) counts for; empty for devices no claim of ours selects."""
    d = _describe(device)
    if d.accelerator is None:
        return DeviceKeys()
    if d.kind == "mig" and d.profile and not d.multi:
        return DeviceKeys({mig_key(d.accelerator, str(d.profile)): 1.0})
    if d.kind != "gpu":
        return DeviceKeys()
    if not d.multi:
        return DeviceKeys({exclusive_key(d.accelerator): 1.0})
    if d.shares is None or d.shares <= 0:
        return DeviceKeys()
    amount = float(d.shares)
    keys = {shares_key(d.accelerator): amount}
    # one key per bound a spec may set (timeSlicingReplicas 2..64): the shares of every GPU sliced at most that finely
    keys.update({shares_key(d.accelerator, bound): amount for bound in range(max(2, d.shares), MAX_SHARES + 1)})
    return DeviceKeys(keys, shared=True)
