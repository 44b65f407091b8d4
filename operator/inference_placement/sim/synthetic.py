"""A synthetic high-volume benchmark row, generated (never stored in the repository): a per-request trace's shape
scaled up, as counts per step, with each request's fields drawn from that trace.

``python -m inference_placement.sim.synthetic --scenario ../shared/scenario/reference.yaml --traces ../shared/traces
--out /tmp/volumes`` writes ``/tmp/volumes/conv-x1000.csv`` (one workload: the conversation trace's requests per
minute x 1,000, tiled over a day: ~4.6 x 10^8 requests) and ``/tmp/volumes/scenario.yaml`` (the scenario with the
fleet profile and the row added), for ``inference-placement bench --scenario /tmp/volumes/scenario.yaml``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import yaml

from inference_placement.sim.traces import MinuteTrace, RequestTrace, load_trace, scaled_minute_trace

__all__ = [
    "DAY_STEPS",
    "FLEET_PROFILE",
    "HIGH_VOLUME_FACTOR",
    "HIGH_VOLUME_SOURCE",
    "fleet_profile",
    "high_volume_trace",
    "main",
    "write_high_volume_row",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--traces", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--factor", type=float, default=HIGH_VOLUME_FACTOR)
    parser.add_argument("--steps", type=int, default=DAY_STEPS)
    args = parser.parse_args(argv)
    print(write_high_volume_row(args.scenario, args.traces, args.out, factor=args.factor, steps=args.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
