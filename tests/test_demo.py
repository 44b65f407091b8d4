"""The README's main command, end to end: ``inference-placement demo`` on this machine, judged by its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.cluster import REPO_ROOT, KubeCluster

pytestmark = pytest.mark.cluster


def test_the_demo_replays_a_real_trace_live_with_two_migrations_and_zero_failures(
    kube_node: KubeCluster, tmp_path: Path
) -> None:
    out = tmp_path / "demo.json"
    result = subprocess.run(
        [sys.executable, "-m", "inference_placement.cli", "demo", "--no-simulate", "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    summary = json.loads(out.read_text())
    # How long it took is a recorded figure, not an assertion (a loaded machine is slower; the subprocess timeout
    # above is the only bound).
    shown = ("requests", "failed", "p99_ms", "migrations", "cost_usd_by_target", "demo_seconds")
    print(json.dumps({k: summary[k] for k in shown}))
    assert summary["requests"] > 200
    assert summary["failed"] == 0, result.stdout[-6000:]
    moves = [(m["from"], m["to"]) for m in summary["migrations"]]
    assert len(moves) >= 2 and ("cluster", "cloudrun") in moves and ("cloudrun", "cluster") in moves, moves
    assert all(m["outcome"] == "Succeeded" and m["reason"] and m["seconds"] > 0 for m in summary["migrations"])
    assert set(summary["cost_usd_by_target"]) >= {"cluster", "cloudrun"}
    # it cleaned up after itself: nothing it started is left
    left = subprocess.run(["pgrep", "-f", "inference-placement-demo-"], capture_output=True, text=True, check=False)
    assert not left.stdout.strip(), left.stdout
