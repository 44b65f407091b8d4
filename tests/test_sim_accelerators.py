"""Accelerator alternatives in the simulator, the optimum and the benchmark's scenario."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_placement.api.spec import (
    AcceleratorOption,
    AcceleratorSpec,
    AcceleratorType,
    GPUSharing,
    InferenceWorkloadSpec,
    ModelSpec,
    PlacementSpec,
    ScalingSpec,
    SLOSpec,
    TargetName,
)
from inference_placement.policy.economics import TargetEconomics
from inference_placement.policy.price_book import PriceBook, default_price_book
from inference_placement.sim.baselines import KedaHttpPolicy
from inference_placement.sim.optimum import optimum
from inference_placement.sim.policies import OursPolicy
from inference_placement.sim.registry import online_policies
from inference_placement.sim.scenario import load_scenario, profile_spec
from inference_placement.sim.simulator import (
    Control,
    Observation,
    SimWorkload,
    cluster_options,
    feasible_economics,
    simulate,
)
from inference_placement.sim.traces import MinuteTrace, requests_for
from tests.shared_files import shared_file

PB = default_price_book()
MIG_1G = AcceleratorOption(type=AcceleratorType.NVIDIA_A100_80GB, sharing=GPUSharing.MIG, mig_profile="1g.10gb")
L4 = AcceleratorOption(type=AcceleratorType.NVIDIA_L4)


def spec(*alternatives: AcceleratorOption, service: float = 0.025) -> InferenceWorkloadSpec:
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=1300, cpu="2", memory="8Gi", service_seconds=service),
        accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_L4, alternatives=list(alternatives)),
        slo=SLOSpec(objective_seconds=0.2, attainment=0.99),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER, TargetName.CLOUDRUN]),
        scaling=ScalingSpec(min_replicas=0, target_concurrency=8),
    )


def workload(s: InferenceWorkloadSpec, counts: list[int]) -> SimWorkload:
    trace = MinuteTrace(path="synthetic", names=("w",), counts=np.array([counts], dtype=np.int64))
    return SimWorkload(
        name="w",
        spec=s,
        requests=requests_for(trace, 0, service_seconds=s.model.service_seconds),
        start=datetime(2026, 1, 1, tzinfo=UTC),
    )


class _Switch:
    """One replica on the L4, then the same replica count on a MIG slice from step ``at``."""

    name = "switch"

    def __init__(self, at: int) -> None:
        self.at = at
        self.seen: list[AcceleratorOption | None] = []

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        self.seen = []

    def tick(self, obs: Observation) -> Sequence[Control]:
        self.seen.append(obs.accelerator)
        if obs.step == 0:
            return [Control(TargetName.CLUSTER, replicas=1)]
        if obs.step == self.at:
            return [Control(TargetName.CLUSTER, replicas=1, accelerator=MIG_1G)]
        return []


def test_a_change_of_accelerator_is_make_before_break_and_billed_on_both_meanwhile() -> None:
    w = workload(spec(MIG_1G), [30] * 20)
    policy = _Switch(at=10)
    result = simulate(w, policy, PB)
    assert result.misses == 0 and result.migrations == 1
    assert policy.seen[9] == L4 and policy.seen[-1] == MIG_1G  # it moved, and the next tick sees where it runs
    l4, mig = (o.econ for o in cluster_options(w.spec, PB))
    start = mig.cold_start_seconds
    drain = PB.migration.drain_seconds
    # 10 steps on the L4, the MIG replica from its start, the L4 until the new one is ready plus the drain
    expected = (600 + start + drain) * l4.instance_usd_per_second + (600) * mig.instance_usd_per_second
    assert result.cost_usd == pytest.approx(expected, rel=1e-6)


def test_ours_runs_on_the_cheapest_alternative_and_is_billed_at_its_price() -> None:
    counts = [20] * 40
    on_l4 = simulate(workload(spec(), counts), OursPolicy(), PB)
    with_mig = simulate(workload(spec(MIG_1G), counts), OursPolicy(), PB)
    assert on_l4.meets_slo and with_mig.meets_slo
    assert with_mig.cost_usd == pytest.approx(on_l4.cost_usd * (5.12 / 7) / 0.805, rel=1e-6)


def test_a_slower_accelerator_serves_slower_in_the_simulator() -> None:
    slow = MIG_1G.model_copy(update={"service_time_factor": 10.0})
    w = workload(spec(slow, service=0.025), [60] * 10)

    class _OnSlow(_Switch):
        def tick(self, obs: Observation) -> Sequence[Control]:
            return [Control(TargetName.CLUSTER, replicas=1, accelerator=slow)] if obs.step == 0 else []

    result = simulate(w, _OnSlow(0), PB)
    assert result.misses > 0  # 250 ms > the 200 ms objective: every request misses
    assert result.misses == result.requests


def test_the_scenario_lists_the_mig_slice_and_the_alternatives_in_its_order() -> None:
    scenario = load_scenario(shared_file("scenario/reference.yaml"))
    embedding = profile_spec(scenario.profiles["embedding-gpu"], scenario.price_book).accelerator.options()
    assert [o.describe() for o in embedding] == ["nvidia-l4", "nvidia-a100-80gb MIG 1g.10gb"]
    llm = profile_spec(scenario.profiles["llm-7b"], scenario.price_book).accelerator.options()
    assert [o.describe() for o in llm] == ["nvidia-l4", "nvidia-a100-80gb"]


def test_keda_http_holds_requests_through_a_cold_start_and_scales_to_zero_after_its_cooldown() -> None:
    counts = [40] + [0] * 20 + [40]
    result = simulate(workload(spec(), counts), KedaHttpPolicy(), PB)
    # the first burst is served warm (first placement), the second after a cold start: late, but served
    assert result.cold_starts > 0 and result.requests == sum(counts)
    # replicas: held through the 300 s cooldown after the burst, then none until the next request
    on = result.capacity_per_step
    assert on[3] >= 1 and on[10] == 0


traffic = st.lists(st.one_of(st.just(0), st.integers(0, 3), st.integers(20, 400)), min_size=20, max_size=50)
time_sliced = AcceleratorOption(
    type=AcceleratorType.NVIDIA_L4, sharing=GPUSharing.TIME_SLICING, time_slicing_replicas=2, service_time_factor=1.0
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=traffic,
    options=st.sampled_from(
        [(MIG_1G,), (time_sliced,), (MIG_1G.model_copy(update={"service_time_factor": 3.0}), time_sliced)]
    ),
)
def test_optimum_with_alternatives_is_no_dearer_than_any_policy_that_meets_the_slo(
    counts: list[int], options: tuple[AcceleratorOption, ...]
) -> None:
    w = workload(spec(*options), counts)
    economics = feasible_economics(w.spec, PB)
    best = optimum(w, economics, PB)
    for policy in online_policies():
        check = getattr(policy, "applicable", None)
        if check is not None and not check(economics):
            continue
        result = simulate(w, policy, PB, economics=economics)
        if result.meets_slo:
            assert best.meets_slo, f"{policy.name} meets the SLO but the optimum does not"
            assert best.cost_usd <= result.cost_usd * (1 + 1e-9) + 1e-12, (
                f"optimum ${best.cost_usd:.6f} > {policy.name} ${result.cost_usd:.6f}"
            )
