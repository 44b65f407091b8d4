"""The benchmark and the commands on a tiny scenario: one run, every policy, the JSON shape of the issue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from typer.testing import CliRunner

from inference_placement.cli import app
from inference_placement.sim.bench import run_bench
from inference_placement.sim.registry import POLICY_NAMES

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "operator" / "inference_placement" / "data" / "price-book.yaml"

PROFILES = {
    "tiny-cpu": {
        "model_mb": 300,
        "vcpu": 1,
        "memory_gib": 2,
        "gpu": "none",
        "service_seconds": 0.04,
        "concurrency_per_replica": 4,
        "slo": {"latency_p99_seconds": 0.3, "attainment": 0.99},
    },
    "tiny-llm": {
        "model_mb": 14000,
        "vcpu": 4,
        "memory_gib": 32,
        "gpu": {"type": "nvidia-l4"},
        "service_seconds_formula": "0.0002 * context_tokens + 0.020 * generated_tokens",
        "service_seconds": 2.5,
        "concurrency_per_replica": 16,
        "slo": {"time_to_first_token_p99_seconds": 2.0, "attainment": 0.99},
    },
}


@pytest.fixture()
def scenario(tmp_path: Path) -> tuple[Path, Path]:
    traces = tmp_path / "traces"
    traces.mkdir()
    minutes = 30
    header = "HashFunction,HashApp," + ",".join(f"minute_{i + 1}" for i in range(minutes))
    rows = [
        "busy,a," + ",".join("120" for _ in range(minutes)),
        "rare,b," + ",".join("1" if i == 17 else "0" for i in range(minutes)),
    ]
    (traces / "inv.csv").write_text("\n".join([header, *rows]) + "\n")
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(300):
        lines.append(f"2023-11-16 18:{17 + i // 60:02d}:{i % 60:02d}.5,{500 + 7 * i % 3000},{1 + i % 40}")
    (traces / "llm.csv").write_text("\n".join(lines) + "\n")
    data = yaml.safe_load(PACKAGED.read_text(encoding="utf-8"))
    data["profiles"] = PROFILES
    data["benchmark"] = [
        {"trace": "inv.csv", "profile": "tiny-cpu"},
        {"trace": "llm.csv", "profile": "tiny-llm"},
    ]
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, traces


def test_bench_runs_every_row_with_every_policy(scenario: tuple[Path, Path]) -> None:
    path, traces = scenario
    result = run_bench(path, traces, jobs=1)
    doc = result.to_json()
    rows = cast(list[dict[str, Any]], doc["rows"])
    assert [r["trace"] for r in rows] == ["inv.csv", "llm.csv"]
    cpu_row = rows[0]
    assert set(cpu_row["policies"]) == set(POLICY_NAMES)
    for name, entry in cpu_row["policies"].items():
        assert {"cost_usd", "attainment", "workloads_meeting_slo", "migrations", "ratio_to_optimum"} <= set(entry), name
    assert cpu_row["policies"]["optimum"]["ratio_to_optimum"] == pytest.approx(1.0)
    # a GPU model has no Lambda column to compare: reported as not applicable, never as a number
    llm_row = rows[1]
    assert llm_row["policies"]["lambda"]["cost_usd"] is None
    assert "infeasible" in llm_row["policies"]["lambda"]["not_applicable"]
    for row in result.rows:
        opt = row.policies["optimum"]
        for name, p in row.policies.items():
            if p.applicable and p.workloads_meeting_slo == 1.0:
                assert opt.cost_usd <= p.cost_usd * (1 + 1e-9), name


def test_bench_command_writes_the_json(scenario: tuple[Path, Path], tmp_path: Path) -> None:
    path, traces = scenario
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app, ["bench", "--scenario", str(path), "--traces", str(traces), "--json", str(out), "--jobs", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "summary" in result.output and "optimum" in result.output
    doc = json.loads(out.read_text())
    assert len(doc["rows"]) == 2
    # the scenario says nothing of the router: it runs the activator (bench/README.md says why)
    assert doc["router"] == {
        "activator": True,
        "wake_poll_seconds": 0.5,
        "wake_keep_seconds": 60.0,
        "fall_through": False,
        "spot_node_labels": "none",  # ours weighs spot only with the operator's spot labels
    }
    assert set(doc["rows"][0]["policies"]) == set(POLICY_NAMES)


def test_simulate_command_on_a_matrix_row_with_a_plot(scenario: tuple[Path, Path], tmp_path: Path) -> None:
    _, traces = scenario
    workload = ROOT / "examples" / "sentiment-bursty.yaml"
    import matplotlib  # a pinned dev dependency: its absence must fail, not skip

    assert matplotlib.__version__
    plot = tmp_path / "what-if.png"
    out = tmp_path / "what-if.json"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--workload",
            str(workload),
            "--trace",
            str(traces / "inv.csv"),
            "--row",
            "1",
            "--plot",
            str(plot),
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(out.read_text())
    assert {"ours", "optimum", "static-cluster"} <= set(doc["policies"])


def test_simulate_refuses_an_invalid_workload(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "spec:\n  model:\n    image: x\n    sizeMb: 10\n  placement:\n    allowedTargets: [lambda]\n"
        "  accelerator:\n    type: nvidia-l4\n"
    )
    trace = tmp_path / "t.csv"
    trace.write_text("id,minute_1\nx,1\n")
    result = CliRunner().invoke(app, ["simulate", "--workload", str(bad), "--trace", str(trace)])
    assert result.exit_code == 3  # an invalid input file (README, "Exit codes")
    assert "lambda has no GPU" in result.output
