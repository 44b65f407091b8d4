"""The generated long-service row (``sim/synthetic.py``, ``--row long-service``): a bursty image-generation
service, the regime issue 17 names and the visible traces lack. Its premises are checked here, on the row the
generator writes: the shape (quiet nights, bursts in the working day), the scenario it writes, and what makes the
regime hard: every request could meet the objective through a cold start (Cloud Run, which starts an instance per
waiting request, misses none), yet bursts outrun a reaction paced by ticks (the autoscaled cluster misses)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from inference_placement.sim.bench import run_workload
from inference_placement.sim.policies import OursPolicy
from inference_placement.sim.scenario import load_scenario
from inference_placement.sim.simulator import feasible_economics, simulate
from inference_placement.sim.synthetic import (
    LONG_SERVICE_PROFILE,
    BurstyDay,
    bursty_arrivals,
    write_long_service_row,
)
from inference_placement.sim.synthetic import main as synthetic_main
from inference_placement.sim.traces import RequestTrace, load_trace
from inference_placement.sim.workloads import profile_workloads
from tests.shared_files import shared_file


def _per_minute(arrivals: np.ndarray, days: int) -> np.ndarray:
    return np.bincount((arrivals // 60).astype(np.int64), minlength=days * 1440)[: days * 1440]


def test_the_same_seed_gives_the_same_row_and_another_seed_another() -> None:
    a = bursty_arrivals(2, seed=7)
    assert np.array_equal(a, bursty_arrivals(2, seed=7))
    b = bursty_arrivals(2, seed=8)
    assert a.size != b.size or not np.array_equal(a, b)
    assert bool((np.diff(a) >= 0).all()) and a[0] >= 0 and a[-1] < 2 * 86400


def test_nights_are_quiet_and_the_working_day_has_bursts() -> None:
    days = 7
    shape = BurstyDay()
    counts = _per_minute(bursty_arrivals(days, seed=1, shape=shape), days).reshape(days, 1440)
    night = counts[:, : 6 * 60].mean()
    noon = counts[:, 12 * 60 : 16 * 60].mean()
    # the base rates: 0.2 per minute at night, ~2 at noon (plus the bursts by day)
    assert night == pytest.approx(shape.night_per_minute, rel=0.25)
    assert noon > 6 * night
    # bursts: minutes far above the base's Poisson range, only inside the burst hours
    burst_minutes = np.argwhere(counts >= 8)
    assert len({int(d) for d, _ in burst_minutes}) == days, "a burst on every day"
    hours = burst_minutes[:, 1] / 60.0
    assert bool(((hours >= shape.burst_hours[0]) & (hours < shape.burst_hours[1] + 0.1)).all())


def test_the_written_row_is_the_regime_cloud_run_meets_every_request_and_the_hpa_misses(tmp_path: Path) -> None:
    path = write_long_service_row(shared_file("scenario/reference.yaml"), tmp_path, days=1, seed=1)
    scenario = load_scenario(path)
    (row,) = scenario.benchmark
    assert row.profile == LONG_SERVICE_PROFILE
    profile = scenario.profiles[LONG_SERVICE_PROFILE]
    trace = load_trace(Path(row.trace))
    assert isinstance(trace, RequestTrace) and trace.workloads == 1
    (workload,) = profile_workloads(trace, profile, scenario.price_book)
    outcomes = {
        o.policy: o
        for o in run_workload(workload, scenario, only=("cloudrun", "cluster-autoscaled"), warmup_seconds=300.0)
    }
    cloudrun, hpa = outcomes["cloudrun"], outcomes["cluster-autoscaled"]
    assert cloudrun.applicable and hpa.applicable
    assert cloudrun.requests > 1000
    # a Cloud Run start (5 s + 7 GB at 400 MB/s) plus the 23 s image is within the 60 s objective: none misses
    assert cloudrun.misses == 0
    # the HPA reacts a scrape and a decision late to bursts of tens of one-at-a-time requests: they miss
    assert hpa.misses / hpa.requests > 1.0 - profile.slo.attainment


def test_the_default_tolerable_cold_start_lets_ours_sleep_where_the_objective_leaves_room(tmp_path: Path) -> None:
    """An image that waits a 20 s replica start and takes 23 s still meets a 60 s objective, so a workload that
    sets no ``tolerableColdStartSeconds`` tolerates that start (the default is the objective when longer than
    10 s): ``ours`` scales the cluster to zero in the night's gaps, the router's activator holding each request
    through the start, and misses no more for about the same cost. With the old flat 10 s default the policy takes
    every start as a miss and the activator would give up on a held request before its replica is ready: it never
    sleeps. (Measured on this 1-day row: $64.20 and 66 misses against $62.18 and 71, 79 cold starts against 44;
    before a lone request among idle steps read as the window's level, $64.52 and 66 misses against $64.08 and 71;
    before the measured service law (``forecast.service_scv``) $73.57 and 62 misses against $75.87 and 66;
    before the queueing terms let a request queue behind a busy replica within the slack, $77.99 and 50 misses
    against $94.40 and 54, 20 of the night's 360 minutes at zero against none.)"""
    path = write_long_service_row(shared_file("scenario/reference.yaml"), tmp_path, days=1, seed=1)
    scenario = load_scenario(path)
    (row,) = scenario.benchmark
    (workload,) = profile_workloads(load_trace(Path(row.trace)), scenario.profiles[row.profile], scenario.price_book)
    assert workload.spec.slo.tolerable_cold_start_seconds is None
    assert workload.spec.slo.tolerable_cold_start() == 60.0
    flat = dataclasses.replace(
        workload,
        spec=workload.spec.model_copy(
            update={"slo": workload.spec.slo.model_copy(update={"tolerable_cold_start_seconds": 10.0})}
        ),
    )
    results = {}
    for name, w in (("default", workload), ("flat 10 s", flat)):
        policy = OursPolicy(actuators=scenario.router.actuators(), wake=scenario.router.wake())
        results[name] = simulate(
            w,
            policy,
            scenario.price_book,
            economics=feasible_economics(w.spec, scenario.price_book),
            warmup_seconds=300.0,
        )
    default, flat_result = results["default"], results["flat 10 s"]
    night = slice(0, 6 * 60)
    assert int((default.capacity_per_step[night] == 0).sum()) >= 10, "asleep in the night's gaps"
    assert int((flat_result.capacity_per_step == 0).sum()) == 0
    assert default.cost_usd <= flat_result.cost_usd * 1.05
    assert default.misses <= flat_result.misses


MILD = BurstyDay(burst_requests=(4, 12), burst_seconds=(60.0, 300.0))
"""The milder bursts (``--burst-requests 4 12 --burst-seconds 60 300``): the regime of issue 17's report."""


def test_the_milder_variant_is_the_reported_regime_the_hpa_cloud_run_and_ours_meet_the_slo(tmp_path: Path) -> None:
    """Issue 17 reports `ours` at 1.8x the autoscaled cluster *at the same SLO*: there the HPA meets it. With
    bursts of 4-12 requests over 1-5 minutes it does (its in-flight target reacts every 15 s, and one image queued
    behind another still meets 60 s), as does Cloud Run; the sharper default bursts are the harder row."""
    path = write_long_service_row(shared_file("scenario/reference.yaml"), tmp_path, days=1, seed=1, shape=MILD)
    scenario = load_scenario(path)
    (row,) = scenario.benchmark
    (workload,) = profile_workloads(load_trace(Path(row.trace)), scenario.profiles[row.profile], scenario.price_book)
    outcomes = {
        o.policy: o
        for o in run_workload(workload, scenario, only=("ours", "cloudrun", "cluster-autoscaled"), warmup_seconds=300.0)
    }
    for name in ("ours", "cloudrun", "cluster-autoscaled"):
        assert outcomes[name].requests > 1000
        assert outcomes[name].meets_slo, (name, outcomes[name].misses, outcomes[name].requests)
    # the HPA is the cheaper baseline, the one `ours` has to beat there (it does not yet: bench/README.md); `ours`
    # stays below Cloud Run (measured: $53.44, Cloud Run $59.63, the HPA $33.17)
    assert outcomes["cluster-autoscaled"].cost_usd < outcomes["cloudrun"].cost_usd
    assert outcomes["ours"].cost_usd < outcomes["cloudrun"].cost_usd


def test_the_generator_takes_the_burst_shape_from_the_command_line(tmp_path: Path) -> None:
    argv = ["--row", "long-service", "--scenario", str(shared_file("scenario/reference.yaml")), "--days", "1"]
    assert (
        synthetic_main(
            [*argv, "--out", str(tmp_path / "mild"), "--burst-requests", "4", "12", "--burst-seconds", "60", "300"]
        )
        == 0
    )
    assert synthetic_main([*argv, "--out", str(tmp_path / "sharp")]) == 0
    mild = np.loadtxt(tmp_path / "mild" / "imagegen-bursty.csv", dtype=str, skiprows=1, delimiter=",").size
    sharp = np.loadtxt(tmp_path / "sharp" / "imagegen-bursty.csv", dtype=str, skiprows=1, delimiter=",").size
    assert mild < sharp, "smaller bursts, fewer requests on the same base"
    with pytest.raises(SystemExit):
        synthetic_main([*argv, "--out", str(tmp_path / "bad"), "--burst-requests", "12", "4"])
