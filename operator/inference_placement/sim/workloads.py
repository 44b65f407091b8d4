"""Turn a trace plus a profile (or a user's CR) into the workloads the simulator runs."""

from __future__ import annotations

from datetime import datetime

from inference_placement.api.spec import InferenceWorkloadSpec, LatencyMeasure
from inference_placement.policy.price_book import PriceBook
from inference_placement.sim.scenario import Profile, parse_service_formula, profile_spec
from inference_placement.sim.simulator import SimWorkload
from inference_placement.sim.traces import MinuteTrace, RequestTrace, Trace, requests_for

__all__ = ["profile_workloads", "spec_workloads"]


def profile_workloads(
    trace: Trace, profile: Profile, price_book: PriceBook, *, seed: int = 0, sample: RequestTrace | None = None
) -> list[SimWorkload]:
    """Every row of a per-step trace (or the one workload of a per-request trace) as this profile; a per-step row
    draws its requests' fields from ``sample`` when given."""
    return spec_workloads(
        trace,
        profile_spec(profile, price_book),
        formula_text=profile.service_seconds_formula,
        seed=seed,
        sample=sample,
    )


def spec_workloads(
    trace: Trace,
    spec: InferenceWorkloadSpec,
    *,
    formula_text: str | None = None,
    first_token: bool = False,
    seed: int = 0,
    rows: list[int] | None = None,
    start: datetime | None = None,
    sample: RequestTrace | None = None,
) -> list[SimWorkload]:
    """``first_token``: the objective bounds the first token (also when the spec says so; the spec then says it)."""
    if first_token and spec.slo.latency_measure is not LatencyMeasure.FIRST_TOKEN:
        spec = spec.model_copy(
            update={"slo": spec.slo.model_copy(update={"latency_measure": LatencyMeasure.FIRST_TOKEN})}
        )
    first_token = spec.slo.latency_measure is LatencyMeasure.FIRST_TOKEN
    formula = parse_service_formula(formula_text) if formula_text else None
    out: list[SimWorkload] = []
    indices = rows if rows is not None else list(range(trace.workloads))
    for row in indices:
        requests = requests_for(
            trace,
            row,
            service_seconds=spec.model.service_seconds,
            formula=formula,
            first_token=first_token,
            seed=seed,
            sample=sample,
        )
        name = trace.names[row] if isinstance(trace, MinuteTrace) else trace.path.rsplit("/", 1)[-1]
        out.append(
            SimWorkload(
                name=f"{row}:{name}" if isinstance(trace, MinuteTrace) else name,
                spec=spec,
                requests=requests,
                start=start or trace.start,
            )
        )
    return out
