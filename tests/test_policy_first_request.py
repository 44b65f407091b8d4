"""Serverless cold starts measured at the router (``policy.first_request``): the first request after an idle gap
longer than the platform keeps an idle instance, less the target's warm latency; pings, short gaps, warm answers
and router restarts give no sample; the reconciler records a sample in ``status.coldStart`` and the policy and
``explain`` use it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import pytest

from inference_placement.api.spec import TargetName
from inference_placement.api.status import ColdStartStatus
from inference_placement.api.validation import parse_spec
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.explain import explain_workload
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.cold_start import assumed_cold_start, estimate_cold_start, measured_price_book
from inference_placement.policy.economics import economics_for
from inference_placement.policy.first_request import (
    FirstRequestSample,
    FirstRequestState,
    ServerlessReading,
    observe_first_request,
    wants_bins,
)
from inference_placement.routing.traffic_stats import (
    FIRST_REQUEST_COUNTERS_QUERY,
    first_request_bins_query,
    parse_serverless_bins,
    parse_serverless_counters,
    sum_serverless_bins,
    sum_serverless_readings,
)
from tests.test_one_decision_everywhere import RecordingTarget
from tests.test_scale_to_zero import NOW, PB, _body, _Events, _idle_window

LIFETIME = 600.0
Truth = tuple[float, ServerlessReading]
"""(read at, what the router holds then: its counters and its bins; the walk passes the bins only when asked)."""


def _reading(
    requests: float, bins: dict[tuple[float, float], float], pings: float = 0.0, in_flight: float = 0.0
) -> ServerlessReading:
    return ServerlessReading(requests, pings, in_flight, tuple((lo, w, c) for (lo, w), c in sorted(bins.items())))


def _walk(readings: list[Truth], lifetime: float = LIFETIME) -> tuple[list[float], list[FirstRequestSample]]:
    """As the fleet does: counters every read, the bins only when ``wants_bins`` asks (returns when it asked)."""
    state: FirstRequestState | None = None
    samples: list[FirstRequestSample] = []
    asked: list[float] = []
    for at, truth in readings:
        counters = replace(truth, bins=None)
        if wants_bins(state, counters, at, lifetime):
            asked.append(at)
            counters = truth
        state, sample = observe_first_request(state, counters, at, lifetime)
        if sample is not None:
            samples.append(sample)
    return asked, samples


WARM = _reading(10, {(20.0, 1.0): 10})


def _warm_then(after_gap: list[Truth]) -> list[Truth]:
    """10 warm requests at 20 ms by t=30, then quiet reads every 30 s until t=660 (a gap of 630 s > 600 s)."""
    quiet = [(float(t), WARM) for t in range(60, 661, 30)]
    return [(0.0, _reading(0, {})), (30.0, WARM), *quiet, *after_gap]


def test_the_first_request_after_an_idle_gap_longer_than_the_lifetime_is_a_cold_start() -> None:
    cold = _reading(11, {(20.0, 1.0): 10, (3400.0, 100.0): 1})
    warm = _reading(14, {(20.0, 1.0): 12, (3400.0, 100.0): 1, (21.0, 1.0): 1})
    asked, samples = _walk(_warm_then([(690.0, cold), (720.0, warm)]))
    assert len(samples) == 1
    sample = samples[0]
    assert sample.latency_seconds == pytest.approx(3.45)
    assert sample.warm_seconds == pytest.approx(0.0205)
    assert sample.cold_start_seconds == pytest.approx(3.4295)
    assert sample.idle_seconds >= LIFETIME
    # the bins are read only to take the baseline once idle for the lifetime, at the arrival and for the warm
    # latency after it: three reads out of 25
    assert asked == [630.0, 690.0, 720.0]


def test_the_sample_waits_for_the_request_to_be_recorded() -> None:
    """Envoy counts a request when it starts and records its latency at a stats flush after it completes: the
    counter may move a read before the histogram does."""
    started = _reading(11, {(20.0, 1.0): 10}, in_flight=1)
    done = _reading(11, {(20.0, 1.0): 10, (5100.0, 100.0): 1})
    later = _reading(12, {(20.0, 1.0): 11, (5100.0, 100.0): 1})
    _, samples = _walk(_warm_then([(690.0, started), (720.0, started), (750.0, done), (780.0, later)]))
    assert [round(s.latency_seconds, 3) for s in samples] == [5.15]


def test_a_burst_after_the_gap_measures_its_slowest_request() -> None:
    burst = _reading(14, {(20.0, 1.0): 10, (21.0, 1.0): 2, (2900.0, 100.0): 1, (2300.0, 100.0): 1})
    later = _reading(15, {(20.0, 1.0): 11, (21.0, 1.0): 2, (2900.0, 100.0): 1, (2300.0, 100.0): 1})
    _, samples = _walk(_warm_then([(690.0, burst), (720.0, later)]))
    assert [round(s.latency_seconds, 3) for s in samples] == [2.95]


def test_a_known_warm_latency_gives_the_sample_at_once_and_is_refreshed_after() -> None:
    first = _reading(11, {(20.0, 1.0): 10, (3400.0, 100.0): 1})
    first_warm = _reading(12, {(20.0, 1.0): 11, (3400.0, 100.0): 1})
    quiet = [(690.0 + 30 * i, first_warm) for i in range(2, 24)]
    second = _reading(13, {(20.0, 1.0): 11, (3400.0, 100.0): 1, (2600.0, 100.0): 1})
    asked, samples = _walk(_warm_then([(690.0, first), (720.0, first_warm), *quiet, (1380.0, second)]))
    assert [round(s.latency_seconds, 3) for s in samples] == [3.45, 2.65]
    assert samples[1].warm_seconds == pytest.approx(0.0205), "measured after the first cold start"
    assert 1380.0 in asked and len(asked) <= 6


def test_the_warm_latency_is_read_until_the_warm_requests_are_recorded() -> None:
    """The warm requests after a first cold one are counted at one read and recorded in the histogram only at a
    later one (Envoy's stats flush): the bins are read until they show up, though no request arrives meanwhile."""
    empty = _reading(0, {})
    cold = _reading(1, {(4000.0, 100.0): 1})
    counted = _reading(3, {(4000.0, 100.0): 1})
    recorded = _reading(3, {(4000.0, 100.0): 1, (30.0, 1.0): 2})
    readings = [(0.0, empty)] + [(float(t), empty) for t in range(30, 661, 30)]
    readings += [(690.0, cold), (720.0, counted), (722.0, counted), (724.0, recorded)]
    asked, samples = _walk(readings)
    assert [round(s.cold_start_seconds, 4) for s in samples] == [round(4.05 - 0.0305, 4)]
    assert asked[-3:] == [720.0, 722.0, 724.0]


@pytest.mark.parametrize(
    ("after_gap", "lifetime"),
    [
        pytest.param(
            [(690.0, _reading(11, {(20.0, 1.0): 10, (3400.0, 100.0): 1}, pings=3))],
            LIFETIME,
            id="pinged-in-the-same-read",
        ),
        pytest.param([(690.0, _reading(11, {(20.0, 1.0): 10, (3400.0, 100.0): 1}))], 900.0, id="gap-shorter"),
        pytest.param([(690.0, _reading(11, {(20.0, 1.0): 10, (25.0, 1.0): 1}))], LIFETIME, id="served-warm"),
        pytest.param(
            [(690.0, _reading(1, {(3400.0, 100.0): 1}))],  # counters went down: the router restarted
            LIFETIME,
            id="router-restarted",
        ),
        pytest.param(
            [(690.0 + 30 * i, _reading(11, {(20.0, 1.0): 10})) for i in range(25)],
            LIFETIME,
            id="never-recorded",
        ),
    ],
)
def test_no_sample_without_a_cold_start_to_measure(after_gap: list[Truth], lifetime: float) -> None:
    _, samples = _walk(_warm_then(after_gap), lifetime)
    assert samples == []


def test_pings_during_the_gap_keep_the_instance_warm_so_the_next_request_is_no_sample() -> None:
    """The keep-warm pinger's requests go through the target's warm cluster: not the workload's traffic, but
    activity of the target."""
    pinged = _reading(10, {(20.0, 1.0): 10}, pings=2)
    readings: list[Truth] = [(0.0, _reading(0, {})), (30.0, WARM)]
    readings += [(float(t), WARM) for t in range(60, 420, 30)]
    readings += [(420.0, pinged)] + [(float(t), pinged) for t in range(450, 900, 30)]
    readings += [(900.0, _reading(11, {(20.0, 1.0): 10, (3400.0, 100.0): 1}, pings=2))]
    _, samples = _walk(readings)
    assert samples == [], "480 s since the last ping < 600 s: the instance may be warm"


def test_a_ping_after_the_baseline_ends_the_gap() -> None:
    """Idle for the lifetime (baseline taken), then a ping starts an instance: the next request is warm."""
    pinged = _reading(10, {(20.0, 1.0): 10}, pings=1)
    cold_looking = _reading(11, {(20.0, 1.0): 10, (3400.0, 100.0): 1}, pings=1)
    _, samples = _walk(_warm_then([(690.0, pinged), (720.0, cold_looking)]))
    assert samples == []


def test_a_first_request_before_any_warm_one_waits_for_the_warm_latency() -> None:
    """Right after a start the operator knows no warm latency of the target: the cold request's latency waits for
    the first warm requests (never a guess)."""
    empty = _reading(0, {})
    cold = _reading(1, {(4000.0, 100.0): 1})
    later = _reading(3, {(4000.0, 100.0): 1, (30.0, 1.0): 2})
    readings = [(0.0, empty)] + [(float(t), empty) for t in range(30, 661, 30)] + [(690.0, cold), (720.0, later)]
    _, samples = _walk(readings)
    assert len(samples) == 1 and samples[0].warm_seconds == pytest.approx(0.0305)
    assert samples[0].cold_start_seconds == pytest.approx(4.05 - 0.0305)


# ----------------------------------------------------------------------------------------------- the router's payload


def _detailed(name: str, totals: list[tuple[float, float, int]]) -> dict[str, Any]:
    return {"name": name, "totals": [{"lower_bound": lo, "width": w, "count": c} for lo, w, c in totals]}


def test_the_routers_counters_and_detailed_histograms_become_readings() -> None:
    """The shapes Envoy 1.40 answers ``/stats?format=json`` with, and with ``histogram_buckets=detailed`` (read
    from the real binary in tests/test_first_request_live.py)."""
    counters = {
        "stats": [
            {"name": "cluster.ip|team|chat|lambda.upstream_rq_total", "value": 11},
            {"name": "cluster.ip|team|chat|lambda.upstream_rq_active", "value": 1},
            {"name": "cluster.warm|team|chat|lambda.upstream_rq_total", "value": 4},
            {"name": "cluster.warm|team|chat|lambda.upstream_rq_active", "value": 2},
            {"name": "cluster.ip|team|chat|cloudrun.upstream_rq_total", "value": 0},
            {"name": "cluster.ip|team|chat|cluster.upstream_rq_total", "value": 99},  # not serverless: ignored
            {"name": "cluster.warm|team|gone|lambda.upstream_rq_total", "value": 3},  # pings only: no target
        ]
    }
    readings = parse_serverless_counters(counters)
    assert readings == {
        ("team", "chat", TargetName.LAMBDA): ServerlessReading(11, 4, 3),
        ("team", "chat", TargetName.CLOUDRUN): ServerlessReading(0, 0, 0),
    }
    both = sum_serverless_readings([readings, readings])[("team", "chat", TargetName.LAMBDA)]
    assert both == ServerlessReading(22, 8, 6)
    assert "histogram" not in FIRST_REQUEST_COUNTERS_QUERY

    histograms = {
        "stats": [
            {
                "histograms": {
                    "supported_percentiles": [0, 50, 100],
                    "details": [
                        _detailed("cluster.ip|team|chat|lambda.upstream_rq_time", [(20, 1, 10), (3400, 100, 1)]),
                        _detailed("cluster.warm|team|chat|lambda.upstream_rq_time", [(19, 1, 4)]),
                        _detailed("cluster.ip|team|chat|cloudrun.upstream_rq_time", [(0, 0, 2)]),
                    ],
                }
            },
        ]
    }
    bins = parse_serverless_bins(histograms)
    assert bins == {
        ("team", "chat", TargetName.LAMBDA): ((20.0, 1.0, 10.0), (3400.0, 100.0, 1.0)),
        ("team", "chat", TargetName.CLOUDRUN): ((0.0, 0.0, 2.0),),
    }
    assert sum_serverless_bins([bins, bins])[("team", "chat", TargetName.LAMBDA)] == (
        (20.0, 1.0, 20.0),
        (3400.0, 100.0, 2.0),
    )
    query = first_request_bins_query([("team", "chat")])
    assert "histogram_buckets=detailed" in query and "team%5C%7Cchat" in query
    assert "%5B%5E%7C%5D%2B" in first_request_bins_query([("n", f"w{i}") for i in range(201)])  # [^|]+: all
    for garbage in ({"stats": "garbage"}, None, {"stats": [{"histograms": "x"}, 3]}):
        assert parse_serverless_counters(garbage) == {} and parse_serverless_bins(garbage) == {}


# ----------------------------------------------------------------------------------------------- into status


def test_a_measured_lambda_cold_start_is_recorded_in_status_and_used_by_the_policy() -> None:
    body = _body()
    spec = parse_spec(body["spec"])[0]
    assert spec is not None
    assumed = assumed_cold_start(spec, PB, TargetName.LAMBDA)
    assert assumed is not None
    writer = _Events(body)
    reconciler = Reconciler(
        cast(Any, writer), {TargetName.CLUSTER: cast(Any, RecordingTarget())}, actuators=Actuators()
    )
    sample = FirstRequestSample(latency_seconds=7.02, warm_seconds=0.02, idle_seconds=900.0)

    def reconcile(at: timedelta, first: dict[TargetName, FirstRequestSample] | None) -> None:
        inputs = TickInputs(
            now=NOW + at,
            price_book=PB,
            capacity=ClusterCapacity(),
            window=_idle_window(NOW + at),
            serverless_first_requests=first,
        )
        asyncio.run(reconciler.reconcile(body, inputs))

    reconcile(timedelta(0), None)
    assert "coldStart" not in body["status"]
    reconcile(timedelta(seconds=30), {TargetName.LAMBDA: sample})
    entry = body["status"]["coldStart"]["lambda"]
    assert entry["recentSeconds"] == [7.0] and entry["samples"] == 1 and entry["measuredSeconds"] == 7.0
    assert entry["assumedSeconds"] == pytest.approx(assumed, abs=1e-3)
    assert entry["estimateSeconds"] == pytest.approx(estimate_cold_start(assumed, [7.0]).seconds, abs=1e-3)
    assert "first request after an idle gap" in entry["source"]
    measured = next(m for r, m in writer.events if r == "ColdStartMeasured")
    assert measured.startswith("lambda cold start 7s measured") and "900s idle" in measured

    status = ColdStartStatus.model_validate(body["status"]["coldStart"])
    econ = economics_for(TargetName.LAMBDA, spec, measured_price_book(PB, spec, status))
    assert econ is not None and econ.cold_start_seconds == pytest.approx(entry["estimateSeconds"], abs=1e-3)
    rows = {row.target: row for row in explain_workload(body, PB, now=NOW + timedelta(seconds=60)).cold_starts}
    assert rows[TargetName.LAMBDA].measured_seconds == 7.0 and rows[TargetName.LAMBDA].samples == 1
    assert rows[TargetName.LAMBDA].assumed_seconds == pytest.approx(assumed, abs=1e-3)
