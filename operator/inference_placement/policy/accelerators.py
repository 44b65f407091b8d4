"""Which acceptable accelerator the cluster's replicas run on (pure).

``spec.accelerator`` lists the acceptable accelerators in order of preference (its own fields, then
``alternatives``). For each, the cluster is assessed as if the spec named only that one: the price book's price of
its share (whole GPUs, a MIG slice at g/7, a time-sliced GPU at 1/N), whether the model's weights fit its memory,
whether ``max(1, minReplicas)`` replicas fit the nodes' free capacity (``capacity.replica_fit``: MIG slices and
shared GPUs free per node), and the warm capacity that keeps the SLO risk in budget at its service time. The
cheapest one in SLO budget wins (ties: the earlier); a placed workload keeps its accelerator unless another is
cheaper by more than the hysteresis band, or its own no longer fits or meets the SLO.

Service time on an accelerator is ``model.serviceSeconds x serviceTimeFactor x contention``. Contention applies to
time-slicing only (MIG slices and whole GPUs are isolated): the device plugin's time-slicing interleaves the
tenants' CUDA contexts on the GPU, each getting the whole GPU in turn, which with short slices is a processor-
sharing server (Kleinrock, "Time-shared systems: a theoretical treatment", JACM 14(2), 1967): a job of size ``x``
sharing the processor with other load keeping it busy a share ``rho`` of the time takes ``x / (1 - rho)`` on
average. ``rho`` is what the node's other tenants use (``NodeCapacity.gpu_busy_share``: the GPU's utilisation as
DCGM reports it, ``DCGM_FI_DEV_GPU_UTIL / 100``, the highest over the nodes the replica may land on). Time-slicing
gives each of ``N`` tenants at least ``1/N`` of the time (round robin), so the slowdown never exceeds ``N``; when
the tenants' use is not measured the policy takes that bound (every other tenant always busy).

A time-sliced GPU isolates no memory: the share of memory a replica may count on is the GPU's memory divided by
the replicas sharing it (every tenant holding as much as this one); a MIG slice has its profile's memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from inference_placement.api.spec import (
    AcceleratorOption,
    AcceleratorSpec,
    AcceleratorType,
    GPUSharing,
    InferenceWorkloadSpec,
    TargetName,
)
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.cost_model import Projection, plan_target
from inference_placement.policy.economics import TargetEconomics, economics_for
from inference_placement.policy.feasibility import assess_feasibility
from inference_placement.policy.forecast import TrafficForecast
from inference_placement.policy.gpu_scheduling import scheduling_for
from inference_placement.policy.price_book import PriceBook
from inference_placement.policy.slo_risk import SloTerms

__all__ = [
    "GPU_MEMORY_GB",
    "AcceleratorChoice",
    "AcceleratorRow",
    "choose_accelerator",
    "contention_factor",
    "Shape",
    "memory_share_gb",
    "shape_of",
    "spec_on",
    "speed_factor",
]

GPU_MEMORY_GB: Final[Mapping[AcceleratorType, float]] = {
    AcceleratorType.NVIDIA_T4: 16.0,
    AcceleratorType.NVIDIA_L4: 24.0,
    AcceleratorType.NVIDIA_A10G: 24.0,
    AcceleratorType.NVIDIA_A100_40GB: 40.0,
    AcceleratorType.NVIDIA_A100_80GB: 80.0,
    AcceleratorType.NVIDIA_H100_80GB: 80.0,
    AcceleratorType.NVIDIA_RTX_PRO_6000: 96.0,
}
"""Memory of one GPU of each type, GB (NVIDIA's data sheets)."""

_MIG_MEMORY: Final = re.compile(r"^[1-7]g\.([0-9]+)gb$")


def spec_on(spec: InferenceWorkloadSpec, option: AcceleratorOption) -> InferenceWorkloadSpec:
    """The spec as if ``option`` were its only accelerator (how a replica on it is priced, fitted, rendered)."""
    return spec.model_copy(update={"accelerator": AcceleratorSpec.only(option)})


def memory_share_gb(option: AcceleratorOption) -> float | None:
    """GPU memory one replica may count on: whole GPUs, the MIG profile's, or a time-sliced GPU's 1/N."""
    if not option.needs_gpu:
        return None
    if option.sharing is GPUSharing.MIG:
        match = _MIG_MEMORY.match(option.mig_profile or "")
        return float(match.group(1)) if match else None
    memory = GPU_MEMORY_GB.get(option.type)
    if memory is None:
        return None
    if option.sharing is GPUSharing.TIME_SLICING:
        return memory / float(option.time_slicing_replicas or 1)
    return memory * option.count


def contention_factor(spec: InferenceWorkloadSpec, option: AcceleratorOption, capacity: ClusterCapacity) -> float:
    """Mean slowdown from the other tenants of a time-sliced GPU: ``min(N, 1 / (1 - rho))`` (module docstring); 1
    for an isolated accelerator; ``N`` while the tenants' use is unknown."""
    if option.sharing is not GPUSharing.TIME_SLICING:
        return 1.0
    bound = float(option.time_slicing_replicas or 1)
    if not capacity.known:
        return bound
    try:
        scheduling = scheduling_for(spec_on(spec, option), capacity.gpu_facts)
    except ValueError:
        return bound
    busy: list[float] = []
    for node in capacity.nodes:
        if not node.schedulable or not scheduling.node_matches(node.labels):
            continue
        if node.gpu_busy_share is None:
            return bound  # one node the replica may land on is not measured: take the bound
        busy.append(node.gpu_busy_share)
    if not busy:
        return bound
    rho = min(max(busy), 1.0)
    return bound if rho >= 1.0 - 1.0 / bound else 1.0 / (1.0 - rho)


def speed_factor(spec: InferenceWorkloadSpec, option: AcceleratorOption, capacity: ClusterCapacity) -> float:
    """Service time on ``option`` relative to ``model.serviceSeconds``: its factor times the contention."""
    return option.service_time_factor * contention_factor(spec, option, capacity)


@dataclass(frozen=True)
class AcceleratorRow:
    """One acceptable accelerator as the policy assessed it."""

    index: int
    """Position in the spec's list (0 = the accelerator's own fields)."""
    option: AcceleratorOption
    monthly_usd: float | None
    """Projected monthly cost of the cluster on it (None = excluded)."""
    slo_risk: float | None
    speed: float
    """Service time relative to ``model.serviceSeconds`` (factor x contention)."""
    note: str
    """Why it is excluded, or the numbers behind its cost."""
    econ: TargetEconomics | None = None
    plan: Projection | None = None
    forecast: TrafficForecast | None = None
    """The forecast at its service time (the plan's)."""

    def describe(self) -> str:
        name = self.option.describe()
        if self.monthly_usd is None:
            return f"{name}: {self.note}"
        risk = f", SLO risk {self.slo_risk:.2%}" if self.slo_risk is not None else ""
        speed = f", service x{self.speed:.3g}" if self.speed != 1.0 else ""
        return f"{name} ${self.monthly_usd:,.2f}/mo{risk}{speed}"


@dataclass(frozen=True)
class AcceleratorChoice:
    """The accelerator the cluster's replicas run on, and every alternative's numbers."""

    index: int | None
    """Position of the chosen one in the spec's list; None when none can run the cluster's replicas."""
    rows: tuple[AcceleratorRow, ...]
    note: str
    """Why this one, in numbers (or why none)."""

    @property
    def chosen(self) -> AcceleratorRow | None:
        return self.rows[self.index] if self.index is not None else None

    @property
    def option(self) -> AcceleratorOption | None:
        chosen = self.chosen
        return chosen.option if chosen is not None else None


def _forecast_on(forecast: TrafficForecast, ratio: float) -> TrafficForecast:
    if ratio == 1.0:
        return forecast
    warm = forecast.warm_latency_seconds
    peaks = forecast.peak_in_flight
    per_step = forecast.service_per_step
    return replace(
        forecast,
        service_seconds=forecast.service_seconds * ratio,
        service_per_step=np.asarray(per_step * ratio, dtype=np.float64) if per_step is not None else None,
        warm_latency_seconds=warm * ratio if warm is not None else None,
        peak_in_flight=np.asarray(peaks * ratio, dtype=np.float64) if peaks is not None else None,
    )


Shape = tuple[float, int, float, float, int, int]
"""What a cluster plan depends on besides the price: (service ratio, concurrency, cold start, lead, floor, cap)."""


def shape_of(econ: TargetEconomics, ratio: float) -> Shape:
    return (
        ratio,
        econ.concurrency,
        econ.cold_start_seconds,
        econ.provision_seconds,
        econ.floor_instances,
        econ.max_instances,
    )


def _scaled(plan: Projection, factor: float) -> Projection:
    """The same plan at another replica price: a cluster's cost is replica time (and start time) at its rate, so
    the cheapest warm capacity in budget is the same and every cost scales by the price ratio."""
    return replace(plan, cost=plan.cost * factor) if factor != 1.0 else plan


def _row(
    index: int,
    option: AcceleratorOption,
    spec: InferenceWorkloadSpec,
    price_book: PriceBook,
    capacity: ClusterCapacity,
    forecast: TrafficForecast,
    reference_speed: float,
    slo: SloTerms,
    staying: bool,
    plans: dict[Shape, tuple[Projection, float]],
) -> AcceleratorRow:
    speed = speed_factor(spec, option, capacity)
    on = spec_on(spec, option)
    memory = memory_share_gb(option)
    model_gb = spec.model.size_mb / 1000.0
    if memory is not None and model_gb > memory + 1e-9:
        note = f"model {model_gb:g} GB > {memory:g} GB of GPU memory per replica"
        return AcceleratorRow(index, option, None, None, speed, note)
    feasibility = assess_feasibility(on, price_book, capacity, TargetName.CLUSTER if staying else None)
    problem = feasibility.infeasible.get(TargetName.CLUSTER)
    if problem is not None:
        return AcceleratorRow(index, option, None, None, speed, problem)
    econ = economics_for(TargetName.CLUSTER, on, price_book, node_provision=feasibility.cluster_needs_node)
    if econ is None:
        return AcceleratorRow(index, option, None, None, speed, "the price book has no price for it")
    ratio = speed / reference_speed
    on_forecast = _forecast_on(forecast, ratio)
    if on_forecast.warm_latency > slo.objective_seconds >= forecast.warm_latency:
        # the slowdown alone puts a request that meets the objective where it was measured over it
        note = (
            f"warm latency {on_forecast.warm_latency * 1000:.0f} ms at service x{speed:.3g} > objective "
            f"{slo.objective_seconds * 1000:.0f} ms"
        )
        return AcceleratorRow(index, option, None, None, speed, note)
    shape = shape_of(econ, ratio)
    known = plans.get(shape)
    if known is not None and known[1] > 0:
        plan = _scaled(known[0], econ.instance_usd_per_second / known[1])
    else:
        plan = plan_target(econ, on_forecast, slo)
        plans[shape] = (plan, econ.instance_usd_per_second)
    return AcceleratorRow(index, option, plan.monthly_usd(), plan.miss_share(), speed, "", econ, plan, on_forecast)


def choose_accelerator(
    spec: InferenceWorkloadSpec,
    price_book: PriceBook,
    capacity: ClusterCapacity,
    forecast: TrafficForecast,
    slo: SloTerms,
    *,
    current: AcceleratorOption | None,
    on_cluster: bool,
    observed_on: AcceleratorOption | None,
    known_plans: dict[Shape, tuple[Projection, float]] | None = None,
) -> AcceleratorChoice:
    """The cheapest acceptable accelerator whose SLO risk stays in budget and that fits (``index`` None when none
    fits or has a price).

    ``current``: the accelerator the replicas run on now (kept unless another is cheaper by more than the
    hysteresis band; None = not placed yet). ``on_cluster``: the workload is on the cluster now (its own replicas
    hold their accelerator's resources, so capacity gates only a change). ``observed_on``: the accelerator the
    forecast's service time was measured on (None: the spec's ``model.serviceSeconds``, factor 1).
    ``known_plans``: plans already made on this forecast and SLO, by ``shape_of`` (reused at another price).
    """
    plans = dict(known_plans or {})
    options = spec.accelerator.options()
    current_key = current.key() if current is not None else None
    reference = speed_factor(spec, observed_on, capacity) if observed_on is not None else 1.0
    rows = tuple(
        _row(i, o, spec, price_book, capacity, forecast, reference, slo, on_cluster and o.key() == current_key, plans)
        for i, o in enumerate(options)
    )
    priced = [r for r in rows if r.monthly_usd is not None and math.isfinite(r.monthly_usd)]
    if not priced:
        return AcceleratorChoice(None, rows, "no acceptable accelerator: " + "; ".join(r.describe() for r in rows))
    safe = [r for r in priced if (r.slo_risk or 0.0) <= slo.risk_budget + 1e-12]
    pool = safe or [min(priced, key=lambda r: (r.slo_risk or 0.0, r.index))]
    best = min(pool, key=lambda r: (r.monthly_usd or 0.0, r.index))
    note = f"accelerator {best.option.describe()}: cheapest in SLO budget"
    held = next((r for r in pool if current_key is not None and r.option.key() == current_key), None)
    if held is not None and held is not best:
        h = spec.placement.thresholds.hysteresis_fraction
        assert held.monthly_usd is not None and best.monthly_usd is not None
        if best.monthly_usd >= held.monthly_usd * (1.0 - h):
            note = (
                f"accelerator {held.option.describe()} kept: {best.option.describe()} is within the {h:.0%} "
                "hysteresis band"
            )
            best = held
        else:
            note = f"accelerator {held.option.describe()} -> {best.option.describe()}: cheaper by more than {h:.0%}"
    elif not safe:
        note = f"accelerator {best.option.describe()}: none in SLO budget, the lowest risk"
    others = "; ".join(r.describe() for r in rows if r is not best)
    note = f"{note} ({best.describe()}" + (f"; vs {others})" if others else ")")
    return AcceleratorChoice(best.index, rows, note)
