"""Synthetic benchmark rows, generated (never stored in the repository), for regimes the visible traces lack.

* ``high-volume`` (the default): a per-request trace's shape scaled up, as counts per step, with each request's
  fields drawn from that trace. ``python -m inference_placement.sim.synthetic --scenario
  ../shared/scenario/reference.yaml --traces ../shared/traces --out /tmp/volumes`` writes
  ``/tmp/volumes/conv-x1000.csv`` (one workload: the conversation trace's requests per minute x 1,000, tiled over a
  day: ~4.6 x 10^8 requests) and ``/tmp/volumes/scenario.yaml`` (the scenario with the fleet profile and the row
  added), for ``inference-placement bench --scenario /tmp/volumes/scenario.yaml``.
* ``long-service`` (``--row long-service --days 21``): a bursty image-generation service, the regime issue 17 names
  and no visible trace has: a GPU request of ~23 s, one request per replica, a 60 s objective, a diurnal base load
  with quiet nights and unannounced bursts of tens of requests. Its cold start fits the objective (a request that
  waits for a new replica can still meet it) while its bursts outrun any tick-paced reaction. Writes
  ``OUT/imagegen-bursty.csv`` (a per-request trace) and ``OUT/scenario.yaml`` (the scenario's price book and
  platforms with the ``image-gen`` profile and this row only). ``--burst-requests LOW HIGH`` and ``--burst-seconds
  LOW HIGH`` set the bursts' size and span (default 8-40 requests over 30-180 s); ``--burst-requests 4 12
  --burst-seconds 60 300`` is the milder variant, the regime of issue 17's report: the autoscaled cluster meets
  the SLO there (bench/README.md, "The long-service regime").
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import yaml

from inference_placement.sim.traces import MinuteTrace, RequestTrace, load_trace, scaled_minute_trace

__all__ = [
    "DAY_STEPS",
    "FLEET_PROFILE",
    "HIGH_VOLUME_FACTOR",
    "HIGH_VOLUME_SOURCE",
    "LONG_SERVICE_PROFILE",
    "BurstyDay",
    "bursty_arrivals",
    "fleet_profile",
    "high_volume_trace",
    "long_service_profile",
    "main",
    "write_high_volume_row",
    "write_long_service_row",
]

HIGH_VOLUME_SOURCE = "azure-llm-2023/conv.csv"
HIGH_VOLUME_FACTOR = 1000.0
FLEET_PROFILE = "llm-7b-fleet"
DAY_STEPS = 1440


def fleet_profile(base: dict[str, object]) -> dict[str, object]:
    """The ``llm-7b`` profile served as a fleet: continuous batching (64 sequences per replica) and room for the
    hundreds of replicas the row needs (the API's cap is 1,000); every other figure is the scenario's own."""
    profile = dict(base)
    profile["concurrency_per_replica"] = 64
    profile["max_replicas"] = 1000
    return profile


def high_volume_trace(traces_dir: Path, *, factor: float = HIGH_VOLUME_FACTOR, steps: int = DAY_STEPS) -> MinuteTrace:
    source = load_trace(traces_dir / HIGH_VOLUME_SOURCE)
    assert isinstance(source, RequestTrace), "the source of the high-volume row is a per-request trace"
    return scaled_minute_trace(source, factor, steps=steps, name=f"conv-x{factor:g}")


def write_high_volume_row(
    scenario_path: Path, traces_dir: Path, out_dir: Path, *, factor: float = HIGH_VOLUME_FACTOR, steps: int = DAY_STEPS
) -> Path:
    """Write the row's per-step trace and a copy of the scenario with the fleet profile and the row; returns the
    scenario's path. The row names its trace and its service sample by absolute paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trace = high_volume_trace(traces_dir, factor=factor, steps=steps)
    trace_path = (out_dir / f"{trace.names[0]}.csv").resolve()
    with trace_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", *(f"minute_{k + 1}" for k in range(trace.steps))])
        writer.writerow([trace.names[0], *trace.counts[0].tolist()])
    raw = yaml.safe_load(scenario_path.read_text(encoding="utf-8"))
    raw["profiles"][FLEET_PROFILE] = fleet_profile(raw["profiles"]["llm-7b"])
    raw["benchmark"].append(
        {
            "trace": str(trace_path),
            "profile": FLEET_PROFILE,
            "service_sample": str((traces_dir / HIGH_VOLUME_SOURCE).resolve()),
        }
    )
    out = out_dir / "scenario.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out


LONG_SERVICE_PROFILE = "image-gen"


def long_service_profile() -> dict[str, object]:
    """An image-generation model (SDXL-class: ~7 GB of fp16 weights) on an L4: ~23 s per image, one image per
    replica at a time, a 60 s p99 objective. The figures are the regime's (issue 17), not a fit."""
    return {
        "model_mb": 7000,
        "vcpu": 4,
        "memory_gib": 16,
        "gpu": {"type": "nvidia-l4"},
        "service_seconds": 23.0,
        "concurrency_per_replica": 1,
        "slo": {"latency_p99_seconds": 60.0, "attainment": 0.99},
    }


@dataclass(frozen=True)
class BurstyDay:
    """The shape of a bursty interactive service's day: a base load following the working day, quiet nights, and
    bursts (a batch submitted, a campaign, a shared link) at random times of the working day."""

    night_per_minute: float = 0.2
    """Base arrivals per minute outside the working day (and its floor within it)."""
    peak_per_minute: float = 2.0
    """Base arrivals per minute at the working day's peak (a half sine from ``day_start`` to ``day_end``)."""
    day_start_hour: float = 7.0
    day_end_hour: float = 21.0
    burst_every_minutes: float = 90.0
    """Mean time between bursts (Poisson), counted only inside ``burst_hours``."""
    burst_hours: tuple[float, float] = (8.0, 22.0)
    burst_requests: tuple[int, int] = (8, 40)
    """A burst's size, uniform in this range (both included)."""
    burst_seconds: tuple[float, float] = (30.0, 180.0)
    """A burst's span, uniform; its requests arrive uniformly within it."""

    def base_per_minute(self, hour: float) -> float:
        if not self.day_start_hour <= hour <= self.day_end_hour:
            return self.night_per_minute
        phase = (hour - self.day_start_hour) / (self.day_end_hour - self.day_start_hour)
        return self.night_per_minute + (self.peak_per_minute - self.night_per_minute) * math.sin(math.pi * phase)


def bursty_arrivals(days: float, seed: int, shape: BurstyDay = BurstyDay()) -> npt.NDArray[np.float64]:
    """Arrival times in seconds from midnight of the first day, sorted: the base load as a Poisson process whose
    rate follows ``shape`` (thinned from its peak rate), plus the bursts."""
    rng = np.random.default_rng(seed)
    horizon = days * 86400.0
    top = max(shape.peak_per_minute, shape.night_per_minute) / 60.0
    candidates = np.cumsum(rng.exponential(1.0 / top, size=int(horizon * top * 1.2) + 100))
    while candidates[-1] < horizon:
        more = np.cumsum(rng.exponential(1.0 / top, size=1000)) + candidates[-1]
        candidates = np.concatenate([candidates, more])
    candidates = candidates[candidates < horizon]
    hours = (candidates / 3600.0) % 24.0
    keep = rng.random(candidates.size) * top < np.array([shape.base_per_minute(h) / 60.0 for h in hours])
    parts = [candidates[keep]]
    lo_hour, hi_hour = shape.burst_hours
    burst_hours = hi_hour - lo_hour
    at = 0.0
    while True:
        # bursts arrive at a Poisson rate inside the burst hours: walk the working time, map it to the clock
        at += rng.exponential(shape.burst_every_minutes * 60.0)
        day, within = divmod(at, burst_hours * 3600.0)
        start = day * 86400.0 + lo_hour * 3600.0 + within
        if start >= horizon:
            break
        size = int(rng.integers(shape.burst_requests[0], shape.burst_requests[1] + 1))
        span = float(rng.uniform(*shape.burst_seconds))
        parts.append(start + rng.uniform(0.0, span, size))
    arrivals = np.sort(np.concatenate(parts))
    return arrivals[arrivals < horizon]


def write_long_service_row(
    scenario_path: Path, out_dir: Path, *, days: float = 21.0, seed: int = 1, shape: BurstyDay = BurstyDay()
) -> Path:
    """Write the bursty long-service trace (a ``TIMESTAMP`` per request from midnight of 2024-03-04 UTC; the
    benchmark's clock starts at the first request's minute, a few minutes after midnight) and a
    scenario with the source scenario's prices and platforms, the ``image-gen`` profile and this row only; returns
    the scenario's path (its row names the trace by an absolute path)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = datetime(2024, 3, 4, tzinfo=UTC)
    arrivals = bursty_arrivals(days, seed, shape)
    trace_path = (out_dir / "imagegen-bursty.csv").resolve()
    with trace_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["TIMESTAMP"])
        for at in arrivals.tolist():
            writer.writerow([(start + timedelta(seconds=at)).strftime("%Y-%m-%d %H:%M:%S.%f")])
    raw = yaml.safe_load(scenario_path.read_text(encoding="utf-8"))
    raw["profiles"] = {LONG_SERVICE_PROFILE: long_service_profile()}
    raw["benchmark"] = [{"trace": str(trace_path), "profile": LONG_SERVICE_PROFILE}]
    out = out_dir / "scenario.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--traces", type=Path, help="The scenario's traces (the high-volume row's source).")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--row", choices=("high-volume", "long-service"), default="high-volume")
    parser.add_argument("--factor", type=float, default=HIGH_VOLUME_FACTOR)
    parser.add_argument("--steps", type=int, default=DAY_STEPS)
    parser.add_argument("--days", type=float, default=21.0, help="long-service: days of traffic.")
    parser.add_argument("--seed", type=int, default=1, help="long-service: the generator's seed.")
    default_shape = BurstyDay()
    for flag, kind, default, what in (
        ("--burst-requests", int, default_shape.burst_requests, "a burst's size, uniformly LOW to HIGH requests"),
        ("--burst-seconds", float, default_shape.burst_seconds, "a burst's span, uniformly LOW to HIGH seconds"),
    ):
        parser.add_argument(
            flag, type=kind, nargs=2, metavar=("LOW", "HIGH"), default=default, help=f"long-service: {what}."
        )
    args = parser.parse_args(argv)
    if args.row == "long-service":
        sizes, spans = tuple(args.burst_requests), tuple(args.burst_seconds)
        if not 0 < sizes[0] <= sizes[1] or not 0 < spans[0] <= spans[1]:
            parser.error("--burst-requests and --burst-seconds take LOW <= HIGH, both above 0")
        shape = replace(default_shape, burst_requests=sizes, burst_seconds=spans)
        print(write_long_service_row(args.scenario, args.out, days=args.days, seed=args.seed, shape=shape))
        return 0
    if args.traces is None:
        parser.error("--traces is required for the high-volume row")
    print(write_high_volume_row(args.scenario, args.traces, args.out, factor=args.factor, steps=args.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
