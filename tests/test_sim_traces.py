"""Traces in either shape load without code changes; the scenario is data; workloads keep every request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference_placement.api.spec import TargetName
from inference_placement.policy.price_book import default_price_book
from inference_placement.sim.scenario import ScenarioError, load_scenario, parse_service_formula, profile_spec
from inference_placement.sim.traces import (
    MinuteTrace,
    Requests,
    RequestTrace,
    TraceError,
    load_trace,
    requests_for,
    snake_case,
)
from inference_placement.sim.workloads import profile_workloads
from tests.shared_files import shared_file


def test_per_step_matrix_every_row_is_a_workload(tmp_path: Path) -> None:
    path = tmp_path / "inv.csv"
    path.write_text("HashFunction,HashApp,minute_1,minute_2,minute_3\nf1,a1,0,3,1\nf2,a2,5,0,0\n")
    trace = load_trace(path)
    assert isinstance(trace, MinuteTrace)
    assert trace.workloads == 2 and trace.steps == 3
    reqs = requests_for(trace, 0, service_seconds=0.1)
    assert isinstance(reqs, Requests)
    assert reqs.count == 4
    assert np.all(np.diff(reqs.arrivals) >= 0)
    assert list(reqs.per_step()) == [0.0, 3.0, 1.0]
    # arrivals stay inside their minute and are reproducible
    again = requests_for(trace, 0, service_seconds=0.1)
    assert isinstance(again, Requests)
    assert np.array_equal(reqs.arrivals, again.arrivals)
    assert np.all((reqs.arrivals >= 60) & (reqs.arrivals < 180))


def test_per_request_trace_with_token_fields(tmp_path: Path) -> None:
    path = tmp_path / "llm.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,1000,10\n"
        "2023-11-16 18:17:01.0000000,2000,100\n"
        "2023-11-16 18:19:30.5,10,1\n"
    )
    trace = load_trace(path)
    assert isinstance(trace, RequestTrace)
    assert set(trace.fields) == {"context_tokens", "generated_tokens"}
    assert trace.arrivals_seconds[0] == pytest.approx(1.0)  # sorted, from the start of the first minute
    formula = parse_service_formula("0.0002 * context_tokens + 0.020 * generated_tokens")
    reqs = requests_for(trace, 0, service_seconds=2.5, formula=formula, first_token=True)
    assert reqs.service[0] == pytest.approx(0.0002 * 2000 + 0.02 * 100)
    # time to first token: the prompt plus one generated token
    assert reqs.latency_part[0] == pytest.approx(0.0002 * 2000 + 0.02)
    assert reqs.steps == 3


def test_per_request_trace_in_epoch_seconds(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("arrival_time\n1700000000.5\n1700000030.0\n")
    trace = load_trace(path)
    assert isinstance(trace, RequestTrace)
    assert list(trace.arrivals_seconds) == [0.0, 29.5]


def test_garbage_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("name,value\na,b\n")
    with pytest.raises(TraceError, match="neither"):
        load_trace(path)


@pytest.mark.parametrize(
    "text",
    ["0.0002 * context_tokens + 0.020 * generated_tokens", "context_tokens * 0.0002 + 0.5", "1.5"],
)
def test_service_formula_is_a_safe_linear_form(text: str) -> None:
    assert parse_service_formula(text).text == text


def test_service_formula_refuses_code() -> None:
    with pytest.raises(ScenarioError):
        parse_service_formula("__import__('os').system('true')")


def test_snake_case() -> None:
    assert snake_case("ContextTokens") == "context_tokens"
    assert snake_case("generated-tokens") == "generated_tokens"


def test_reference_scenario_and_visible_traces() -> None:
    scenario = load_scenario(shared_file("scenario/reference.yaml"))
    assert [r.profile for r in scenario.benchmark] == ["sentiment-cpu", "embedding-gpu", "llm-7b", "llm-7b"]
    sentiment = profile_spec(scenario.profiles["sentiment-cpu"], scenario.price_book)
    assert set(sentiment.placement.allowed_targets) == set(TargetName)
    embedding = profile_spec(scenario.profiles["embedding-gpu"], scenario.price_book)
    assert TargetName.LAMBDA not in embedding.placement.allowed_targets
    inv = load_trace(shared_file("traces/azure-functions-2019/100_inv.csv"))
    assert isinstance(inv, MinuteTrace) and inv.workloads == 100 and inv.steps == 1440
    assert int(inv.counts.sum()) == 621_128
    code = load_trace(shared_file("traces/azure-llm-2023/code.csv"))
    assert isinstance(code, RequestTrace) and code.arrivals_seconds.size == 8_819
    workloads = profile_workloads(code, scenario.profiles["llm-7b"], scenario.price_book)
    assert len(workloads) == 1 and workloads[0].requests.count == 8_819
    assert workloads[0].spec.slo.objective_seconds == 2.0


def test_default_price_book_runs_a_profile() -> None:
    pb = default_price_book()
    scenario = load_scenario(shared_file("scenario/reference.yaml"))
    spec = profile_spec(scenario.profiles["llm-7b"], pb)
    assert spec.accelerator.type.value == "nvidia-l4"
    assert spec.slo.objective_seconds == 2.0
