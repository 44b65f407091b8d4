"""The demo's Lambda phase: a second live workload, allowed on the cluster and AWS Lambda only, on the policy's own
thresholds (``mode: auto``), replaying a segment of the same trace that takes it cluster -> Lambda -> cluster. It
starts on the cluster the way a team's model does before the operator decides for it: pinned there
(``spec.placement.pin``), the pin removed once the operator's rate window holds the replay's own traffic
(``unpin_step``).

Its Lambda share is served through the Lambda data path as AWS runs it (docs/lambda.md): Envoy signs each request
for the Function URL moto published; the Function URL front end's stand-in (``devtools.function_url``) checks the
signature and invokes AWS's Runtime Interface Emulator, which runs AWS's Lambda Web Adapter, which calls the model
server (``e2e/model_server.py``, answering ``x-served-by: lambda``). The segment is chosen by what ``policy.decide``
does at each rate for this workload (``live.policy_classifier`` with Lambda as the serverless target), the round trip
found by ``replay.segment.find_round_trip``; the replay, the printing and the summary are the live phase's own
(``live.run_live_replay``). ``merge_live_phases`` folds the phases into the demo's one summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.devtools.demo.live import (
    DEMO_LAMBDA_TARGET,
    DEMO_SERVICE_SECONDS,
    LiveSettings,
    classifier,
    demo_workload,
    policy_classifier,
)
from inference_placement.devtools.replay.load import schedule_from_counts
from inference_placement.devtools.replay.segment import (
    ROUND_TRIP,
    DemoSegment,
    FloatArray,
    RateClasses,
    RateClassifier,
    find_round_trip,
)
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.economics import workload_economics
from inference_placement.sim.traces import Trace

__all__ = [
    "COMPRESSIONS",
    "LAMBDA_IMAGE_URI",
    "LAMBDA_STEPS",
    "choose_round_trip",
    "lambda_environments",
    "lambda_image_prefix",
    "lambda_workload",
    "merge_live_phases",
    "UNPIN_PATCH",
    "unpin_step",
    "replayed_rates",
]

LAMBDA_STEPS = 32
"""Replay steps of the Lambda phase: a round trip's two moves need the rate window filled before the first, a move
and its cooldown between them, and the last move's settling (``find_round_trip``), and room to find one."""

LAMBDA_IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/model-server:demo"
"""The function's image as the Lambda target deploys it (moto's account; moto does not pull it: the local
execution environments run ``e2e/model_server.py`` behind the adapter, as that image would)."""


def lambda_image_prefix(region: str) -> str:
    """The registry path the Lambda phase's target admits (``LAMBDA_IMAGE_URI``'s, in ``region``)."""
    uri = LAMBDA_IMAGE_URI.replace("us-east-1", region)
    return uri[: uri.index("/") + 1]


def lambda_workload(name: str, namespace: str, image: str, settings: LiveSettings, *, region: str) -> dict[str, Any]:
    """The demo's live workload (``live.demo_workload``: the policy's own thresholds, the same model server and SLO,
    allowed to spill) allowed on the cluster and Lambda only, the function's memory the model's, keeping one replica
    while on the cluster: at low traffic its choice is then the cluster's replica or Lambda (the first phase shows
    the cluster at zero replicas, where the router's fall-through to serverless answers while a replica starts).
    Pinned to the cluster until the replay step ``unpin_step`` (``UNPIN_PATCH``)."""
    doc = demo_workload(name, namespace, image, settings)
    spec = doc["spec"]
    spec.pop("cloudRun", None)
    spec["scaling"]["minReplicas"] = 1
    spec["placement"]["allowedTargets"] = [TargetName.CLUSTER.value, TargetName.LAMBDA.value]
    spec["placement"]["pin"] = TargetName.CLUSTER.value
    spec["lambda"] = {  # the admin's target gives the account, region and role (``live.demo_serverless_targets``)
        "targetRef": {"name": DEMO_LAMBDA_TARGET},
        "imageUri": LAMBDA_IMAGE_URI.replace("us-east-1", region),
        "timeoutSeconds": 30,
    }
    return doc


UNPIN_PATCH = '[{"op": "remove", "path": "/spec/placement/pin"}]'
"""The JSON patch that hands the Lambda phase's workload to the policy (``kubectl patch --type=json``)."""


def unpin_step(settings: LiveSettings) -> int:
    """The replay step the pin is removed at: once the window of rates the policy decides on (each rate averaged
    over the operator's rate window) holds only the replay's traffic, and not before a level could have held long
    enough for the operator to act on it."""
    return max(settings.hold_steps, settings.smooth_steps + settings.forecast_steps)


def lambda_environments(settings: LiveSettings) -> int:
    """Execution environments of the local function: the requests in flight at the busiest replayed rate (Little's
    law: ``max_rps`` x the service time), and one more, as Lambda would scale out to (the Function URL stand-in
    holds a request while every environment is busy, where Lambda would start another)."""
    return math.ceil(settings.max_rps * DEMO_SERVICE_SECONDS) + 1


def choose_round_trip(
    trace: Trace,
    spec: InferenceWorkloadSpec,
    settings: LiveSettings,
    actuators: Actuators,
    *,
    trace_step_seconds: float,
) -> DemoSegment:
    """The segment of ``trace`` (``settings.steps`` steps) and its replay scale holding the most of a round trip
    cluster -> Lambda -> cluster, by what the policy does for ``spec`` at each rate as the operator measures it
    replayed (``replayed_rates``). A step is
    ``trace_step_seconds`` of the trace (the first phase's compression) or, when that holds fewer of the moves,
    up to four times as long (by half octaves, the least that holds the most, while the trace has enough of them): a
    round trip spans more of a day than one swing does."""
    spec = spec.model_copy(update={"placement": spec.placement.model_copy(update={"pin": None})})  # the policy's
    classes = policy_classifier(
        spec, settings, actuators, serverless=TargetName.LAMBDA, measured=replayed_rates(settings)
    )
    grid = _with_no_traffic(classifier(classes, settings), _at_no_traffic(spec, settings, actuators))
    economics = workload_economics(spec, settings.price_book())
    cold_start = max(economics[t].cold_start_seconds for t in (TargetName.CLUSTER, TargetName.LAMBDA))
    best: DemoSegment | None = None
    has = dict.fromkeys(ROUND_TRIP, False)
    for k in range(COMPRESSIONS):
        step = trace_step_seconds * 2.0 ** (k / 2)
        try:
            segment = find_round_trip(
                trace, grid, settings.search_timings(cold_start), step_seconds=step, free_from=unpin_step(settings)
            )
        except ValueError:  # too few steps of this length in the trace (longer ones have fewer)
            if best is None:
                raise
            break
        has = {f: has[f] or segment.trace_has[f] for f in ROUND_TRIP}
        if best is None or _moves(segment) > _moves(best):
            best = segment
        if _moves(best) == len(ROUND_TRIP):
            break
    assert best is not None
    return replace(best, trace_has=has)  # what the trace lacks: at every compression tried


def _at_no_traffic(spec: InferenceWorkloadSpec, settings: LiveSettings, actuators: Actuators) -> RateClasses:
    """What the policy does with no request at all (one flag each), asked as at every other rate."""
    ticks = max(2, round(settings.metrics_range_seconds / settings.tick_seconds))
    classes = policy_classifier(
        spec, settings, actuators, serverless=TargetName.LAMBDA, measured=lambda _: [(0.0,) * ticks]
    )
    return RateClasses(classes.below_offload[:1], classes.above_reclaim[:1], classes.burst[:1])


def _with_no_traffic(classify: RateClassifier, at_zero: RateClasses) -> RateClassifier:
    """``classify``, with no request at all classed as the policy does it (``live.classifier`` leaves it unclassed:
    a workload that may scale to zero does so there; this one keeps a replica on the cluster, and offloads)."""

    def classify_all(rates: FloatArray) -> RateClasses:
        classes, zero = classify(rates), rates <= 0
        return RateClasses(
            classes.below_offload | (zero & at_zero.below_offload[0]),
            classes.above_reclaim | (zero & at_zero.above_reclaim[0]),
            classes.burst | (zero & at_zero.burst[0]),
        )

    return classify_all


COMPRESSIONS = 5
"""Trace steps ``choose_round_trip`` tries: the first phase's, then longer by half octaves up to four times."""


def _moves(segment: DemoSegment) -> int:
    return sum(1 for f in ROUND_TRIP if segment.features.get(f) is not None)


def _add(into: dict[str, Any], key: str, more: dict[str, Any]) -> None:
    for k, v in (more.get(key) or {}).items():
        into[key][k] = into[key].get(k, 0) + v


def merge_live_phases(phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The demo's live summary over its phases (each ``live.run_live_replay``'s): requests, failures, requests
    served per target and spilled, failures by kind (``errors``), cost and trace hours per target added up; the
    stretches at zero and the migrations listed in phase order (each migration naming its phase); the longest wait
    from Ready to a first answer (``first_answer_seconds``, ``live.wait_answered``); p50 and p99 the
    slowest phase's (percentiles of different replays do not add); ``trace`` the first phase's segment. Each phase's
    own summary under ``phases``."""
    first = next(iter(phases.values()))
    merged: dict[str, Any] = {
        **first,
        "requests": 0,
        "failed": 0,
        "p50_ms": 0.0,
        "p99_ms": 0.0,
        "served_by": {},
        "served_by_client": {},
        "errors": {},
        "spilled_requests": 0,
        "first_answer_seconds": 0.0,
        "scale_to_zero": [],
        "migrations": [],
        "cost_usd_by_target": {},
        "trace_hours_by_target": {},
    }
    for phase, summary in phases.items():
        merged["requests"] += summary["requests"]
        merged["failed"] += summary["failed"]
        merged["spilled_requests"] += summary["spilled_requests"]
        merged["p50_ms"] = max(merged["p50_ms"], summary["p50_ms"])
        merged["p99_ms"] = max(merged["p99_ms"], summary["p99_ms"])
        for key in ("served_by", "served_by_client", "errors", "cost_usd_by_target", "trace_hours_by_target"):
            _add(merged, key, summary)
        merged["scale_to_zero"] += summary["scale_to_zero"]
        merged["first_answer_seconds"] = max(merged.get("first_answer_seconds", 0.0), summary["first_answer_seconds"])
        merged["migrations"] += [{**m, "phase": phase} for m in summary["migrations"]]
    for key in ("cost_usd_by_target", "trace_hours_by_target"):
        merged[key] = {k: round(v, 4 if key.startswith("cost") else 2) for k, v in merged[key].items()}
    merged["phases"] = phases
    return merged


def replayed_rates(settings: LiveSettings, samples: int = 3) -> Callable[[float], list[tuple[float, ...]]]:
    """rate -> ``samples`` series of the rates the operator measures while the replay sends that steady rate: the
    replay's own schedule (``schedule_from_counts``: a step's requests at uniform random times within it, seeds
    0..samples-1), counted over the operator's rate window at each tick, ``metrics_range_seconds`` long. A low rate
    is measured in whole requests per window, so its peaks reach well above it (the policy decides on the window's
    sustained peak): classed by these, a segment's levels are the ones the operator acts on."""
    ticks = max(2, round(settings.metrics_range_seconds / settings.tick_seconds))
    window = settings.rate_window_seconds
    span = ticks * settings.tick_seconds + window
    steps = math.ceil(span / settings.step_seconds)

    def measured(rate: float) -> list[tuple[float, ...]]:
        series = []
        for seed in range(samples):
            counts = [rate * settings.step_seconds] * steps
            sent = np.array(schedule_from_counts(counts, seconds_per_step=settings.step_seconds, seed=seed))
            ends = window + settings.tick_seconds * np.arange(1, ticks + 1)
            seen = np.searchsorted(sent, ends) - np.searchsorted(sent, ends - window)
            series.append(tuple(float(n) / window for n in seen))
        return series

    return measured
