"""``inference-placement bench-scale`` at CI size: the real command, apiserver, Prometheus and operator.

Two small fleets (20 and 40 GPU workloads, 2 s ticks) on a KWOK GPU fleet of 8 fake nodes, through the real cluster
target: Deployments whose Pods kube-scheduler binds to the fake nodes and kwok keeps Running. The JSON has the
documented shape, every workload has its Pod Running, the operator sends the same number of Prometheus queries per
tick whatever the fleet size, and at steady state it writes nothing. Two operator replicas (``--replicas 2``): one
leads and is measured, the standby keeps its cache of every workload and is measured too. (``--no-wait-history``:
the ~20 ticks that fill the day of history are not waited for here, so the steady ticks are those ticks; the full
runs wait.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.cluster import REPO_ROOT, KubeCluster
from tests.plugins.prometheus import PrometheusBinaries

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FIELDS = {"workloads", "rss_mb", "tick_cpu_seconds", "queries_per_tick", "writes_per_tick", "react_seconds"}


def test_bench_scale_smoke(
    kube_kwok: KubeCluster, crd_installed: KubeCluster, prometheus_binaries: PrometheusBinaries, tmp_path: Path
) -> None:
    out = tmp_path / "scale.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inference_placement.cli",
            "bench-scale",
            "--workloads",
            "20,40",
            "--kubeconfig",
            crd_installed.kubeconfig,
            "--tick-seconds",
            "2",
            "--steady-ticks",
            "2",
            "--future-seconds",
            "300",
            "--workdir",
            str(tmp_path / "work"),
            "--no-wait-cleanup",
            "--no-wait-history",
            "--kwok-nodes",
            "8",
            "--deployments-up-to",
            "40",
            "--replicas",
            "2",
            "--json",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"bench-scale failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    runs = json.loads(out.read_text())["runs"]
    assert [r["workloads"] for r in runs] == [20, 40]
    for run in runs:
        assert FIELDS <= set(run), f"missing {FIELDS - set(run)}"
        assert all(isinstance(run[f], int | float) for f in FIELDS)
        assert 0 < run["rss_mb"] < 1000
        assert 0 < run["tick_cpu_seconds"] < 30
        assert run["react_seconds"] > 0
        # what explains each steady tick, one figure per scrape that saw a tick end (a scrape may span two): a tick
        # reconciles at least the resync share
        assert 1 <= len(run["steady_reconciles"]) == len(run["steady_full_collections"]) <= run["steady_ticks"]
        assert all(count >= 1 for count in run["steady_reconciles"]), run["steady_reconciles"]
        # each tick's reconciles, by cause, add up to its count (within the few a scrape can see done between
        # reading the duration histogram and the cause counter: /metrics is served from its own thread)
        causes = run["steady_reconcile_causes"]
        assert len(causes) == len(run["steady_reconciles"])
        for by_cause, count in zip(causes, run["steady_reconciles"], strict=True):
            assert by_cause and abs(sum(by_cause.values()) - count) <= 2, (causes, run["steady_reconciles"])
        assert run["cluster_mode"] == "deployments" and run["kwok_nodes"] == 8
        assert run["pods_running"] == run["workloads"], "a workload's Pod is not Running on the KWOK fleet"
        assert run["history_seconds"] >= 86400
        # two operator processes, leader election: the figures above are the leader's; the standby only watches
        assert run["replicas"] == 2 and run["leader_transitions"] == 1, "a failover during the run"
        # idle: over a few 2 s ticks its CPU may round to 0 at /proc's 10 ms; under a core whatever the size
        assert 0 < run["standby_rss_mb"] < 1000 and 0 <= run["standby_cpu_seconds_per_minute"] < 60
        assert run["standby_workloads"] == run["workloads"], "the standby's cache is not warm"
    assert runs[0]["queries_per_tick"] == runs[1]["queries_per_tick"] > 0, "queries per tick grow with the fleet"
    assert [r["writes_per_tick"] for r in runs] == [0, 0], (
        f"apiserver writes at steady state: {[r['writes_by_kind'] for r in runs]}"
    )
    assert "ratio" in result.stdout and "40" in result.stdout, result.stdout
