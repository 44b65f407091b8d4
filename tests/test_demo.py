"""The README's main command, end to end: ``inference-placement demo`` on this machine, judged by its JSON: the live
phase on the cluster and Cloud Run, then the Lambda phase (cluster -> Lambda -> cluster, Lambda's share answered
through Envoy, AWS's Runtime Interface Emulator and Web Adapter by the model server)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.cluster import REPO_ROOT, KubeCluster

pytestmark = [pytest.mark.cluster, pytest.mark.replay]

_FAILED_STEP = re.compile(r"\b[1-9]\d* failed\b")
_FAILURE = re.compile(r"failed request at|failed request\(s\) sent")


def _failures(stdout: str, before: int = 6, limit: int = 5000) -> str:
    """Where requests failed, from the whole output (the tail alone holds only the last phase), short enough that a
    CI log that keeps only the end of a long message still shows it: each failing step line with the Events just
    before it (the first ones), then the failed requests' own lines (what answered them, and the summary) last."""
    lines = stdout.splitlines()
    shown: list[str] = []
    taken = -1
    for i, line in enumerate(lines):
        if _FAILED_STEP.search(line) and not _FAILURE.search(line):
            start = max(taken + 1, i - before)
            if start > taken + 1:
                shown.append("[...]")
            shown.extend(lines[start : i + 1])
            taken = i
    last = [line for line in lines if _FAILURE.search(line)]
    steps = "\n".join(shown)
    tail = "\n".join(last)
    return (steps[: max(0, limit - len(tail))] + "\n" + tail) if (shown or last) else stdout[-limit:]


def test_the_demo_replays_a_real_trace_live_on_the_policys_own_thresholds_with_zero_failures(
    kube_node: KubeCluster, tmp_path: Path
) -> None:
    out = tmp_path / "demo.json"
    result = subprocess.run(
        [sys.executable, "-m", "inference_placement.cli", "demo", "--no-simulate", "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "160"},  # one line per step and Event, so the failures can be found in it
    )
    assert result.returncode == 0, (
        f"exit {result.returncode}, summary written: {out.exists()}\n" + result.stdout[-6000:] + result.stderr[-3000:]
    )
    summary = json.loads(out.read_text())
    # How long it took is a recorded figure, not an assertion (a loaded machine is slower; the subprocess timeout
    # above is the only bound).
    shown = (
        "requests",
        "failed",
        "first_answer_seconds",
        "p99_ms",
        "thresholds",
        "metrics",
        "served_by",
        "spilled_requests",
        "scale_to_zero",
        "migrations",
        "cost_usd_by_target",
        "trace",
        "demo_seconds",
    )
    print(json.dumps({k: summary[k] for k in shown}))
    assert summary["requests"] > 100
    assert summary["failed"] == 0, _failures(result.stdout)
    # the policy's own thresholds, traffic measured at the router
    assert summary["thresholds"] == "auto" and summary["metrics"] == "router"
    # the segment was chosen for what the policy does at its rates; what it holds, the replay must show
    trace = summary["trace"]
    features = trace["features"]
    assert set(features) == {"swing", "burst", "idle"} and set(trace["lacks"]) <= set(features), trace
    assert not set(trace["lacks"]) & {f for f, at in features.items() if at is not None}, trace
    # the router's per-target counts account for what the clients saw answered (each request counted once)
    served = summary["served_by"]
    assert set(served) == {"cluster", "cloudrun", "lambda"}
    assert sum(served.values()) == summary["requests"] - summary["failed"], (served, summary["served_by_client"])
    # placed first on Cloud Run (no traffic yet), moved to the cluster by the traffic; every move completed
    moves = [(m["from"], m["to"]) for m in summary["migrations"]]
    assert ("cloudrun", "cluster") in moves, moves
    assert all(m["outcome"] == "Succeeded" and m["reason"] and m["seconds"] > 0 for m in summary["migrations"])
    assert set(summary["cost_usd_by_target"]) >= {"cluster", "cloudrun"}
    # A swing's return off the cluster is reported (``migrations``), not required: on the shipped day its low level
    # is measured within about 15 % of the offload threshold (3-5 requests per replayed step against 0.7 rps), so on
    # a loaded machine the scrape timing decides whether the window's sustained peak falls below it before the
    # segment ends (seen both ways in CI rehearsals). The issue asks for at least one migration, asserted above.
    # a burst served by spillover: the router sent some of the cluster's share to the overflow target
    on_cloudrun = summary["phases"]["cloudrun"]
    assert 0 <= on_cloudrun["spilled_requests"] <= on_cloudrun["served_by"]["cloudrun"], on_cloudrun
    if features["burst"] is not None:
        assert on_cloudrun["spilled_requests"] > 0, on_cloudrun
    # an idle gap at zero replicas, woken by a request, with its wake latency measured
    gaps = summary["scale_to_zero"]
    assert all(set(g) == {"seconds", "woken_by_request", "wake_latency_ms"} for g in gaps), gaps
    if features["idle"] is not None:
        woken = [g for g in gaps if g["woken_by_request"]]
        assert woken and all(g["seconds"] > 0 and g["wake_latency_ms"] is not None for g in woken), gaps
    # the Lambda phase: it starts on the cluster (pinned there until the policy's window holds the replay's traffic)
    # and makes each move of the round trip the segment holds at the policy's rates (off the cluster to Lambda, back),
    # in that order, each completed, with no failed request; the model server behind the adapter answered (its
    # x-served-by) and the router counted what Lambda served. The demo's own day holds the whole round trip.
    on_lambda = summary["phases"]["lambda"]
    assert on_lambda["failed"] == 0, on_lambda
    assert served["lambda"] > 0 and on_lambda["served_by"]["lambda"] > 0, served
    assert on_lambda["served_by_client"].get("lambda", 0) > 0, on_lambda["served_by_client"]
    round_trip = on_lambda["trace"]["features"]
    assert set(round_trip) == {"off_cluster", "back_to_cluster"}, round_trip
    assert all(at is not None for at in round_trip.values()), on_lambda["trace"]
    lambda_moves = [(m["from"], m["to"]) for m in summary["migrations"] if m["phase"] == "lambda"]
    assert lambda_moves[:2] == [("cluster", "lambda"), ("lambda", "cluster")], (lambda_moves, round_trip)
    # it cleaned up after itself: nothing it started is left
    left = subprocess.run(["pgrep", "-f", "inference-placement-demo-"], capture_output=True, text=True, check=False)
    assert not left.stdout.strip(), left.stdout
