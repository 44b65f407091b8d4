"""The demo's Lambda phase without a cluster (``devtools.demo.lambda_phase``): the workload it applies, the
execution environments it starts, and how the live phases' summaries fold into the demo's one. The phase itself runs
in ``tests/test_demo.py``."""

from __future__ import annotations

import json
from typing import Any

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName, ThresholdMode
from inference_placement.devtools.demo.lambda_phase import (
    UNPIN_PATCH,
    lambda_environments,
    lambda_workload,
    merge_live_phases,
    unpin_step,
)
from inference_placement.devtools.demo.live import DEMO_LAMBDA_TARGET, DEMO_SERVICE_SECONDS, LiveSettings


def test_the_lambda_workload_is_the_demo_workload_on_the_cluster_and_lambda_only_on_the_policys_own_thresholds() -> (
    None
):
    doc = lambda_workload("live-lambda", "ns", "model:dev", LiveSettings(), region="us-east-1")
    spec = InferenceWorkloadSpec.model_validate(doc["spec"])
    assert spec.placement.allowed_targets == [TargetName.CLUSTER, TargetName.LAMBDA]
    assert spec.placement.thresholds.mode is ThresholdMode.AUTO
    assert spec.model.service_seconds == DEMO_SERVICE_SECONDS and spec.scaling.min_replicas == 1
    # the account and role come from the admin's target, not the workload (docs/security.md)
    assert spec.lambda_ is not None and spec.lambda_.role_arn is None
    assert spec.lambda_.target_ref is not None and spec.lambda_.target_ref.name == DEMO_LAMBDA_TARGET
    assert "cloudRun" not in doc["spec"]
    # it starts pinned to the cluster; the demo's patch hands it to the policy
    assert spec.placement.pin is TargetName.CLUSTER
    [op] = json.loads(UNPIN_PATCH)
    *parents, leaf = op["path"].strip("/").split("/")
    node = doc
    for key in parents:
        node = node[key]
    assert op["op"] == "remove" and node.pop(leaf) == "cluster"
    assert InferenceWorkloadSpec.model_validate(doc["spec"]).placement.pin is None


def test_the_pin_is_removed_once_the_policys_rate_window_holds_only_the_replays_traffic() -> None:
    settings = LiveSettings()
    at = unpin_step(settings)
    assert at * settings.step_seconds >= settings.metrics_range_seconds + settings.rate_window_seconds
    assert at >= settings.hold_steps


def test_the_local_function_has_an_environment_for_each_request_in_flight_at_the_busiest_rate_and_one_more() -> None:
    assert lambda_environments(LiveSettings(max_rps=8.0)) == 5  # 8 rps x 0.5 s = 4 in flight
    assert lambda_environments(LiveSettings(max_rps=3.0)) == 3  # 1.5 in flight


def _phase(
    requests: int, failed: int, served: dict[str, int], moves: list[tuple[str, str]], p99: float, answer: float = 0.0
) -> Any:
    return {
        "requests": requests,
        "failed": failed,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "served_by": served,
        "served_by_client": served,
        "spilled_requests": 1,
        "first_answer_seconds": answer,
        "scale_to_zero": [{"seconds": 10.0, "woken_by_request": True, "wake_latency_ms": 300}],
        "migrations": [{"from": f, "to": t, "outcome": "Succeeded"} for f, t in moves],
        "cost_usd_by_target": {"cluster": 0.5},
        "trace_hours_by_target": {"cluster": 1.25},
        "trace": {"file": "t.csv", "row": requests},
    }


def test_the_phases_add_up_into_one_summary_and_each_keeps_its_own() -> None:
    cloudrun = _phase(100, 0, {"cluster": 60, "cloudrun": 40, "lambda": 0}, [("cloudrun", "cluster")], 900.0)
    on_lambda = _phase(50, 1, {"cluster": 20, "cloudrun": 0, "lambda": 29}, [("cluster", "lambda")], 1200.0, 2.5)
    merged = merge_live_phases({"cloudrun": cloudrun, "lambda": on_lambda})
    assert (merged["requests"], merged["failed"], merged["spilled_requests"]) == (150, 1, 2)
    assert merged["served_by"] == {"cluster": 80, "cloudrun": 40, "lambda": 29}
    assert merged["p99_ms"] == 1200.0 and merged["p50_ms"] == 600.0  # the slowest phase's
    assert merged["first_answer_seconds"] == 2.5  # the longest wait from Ready to a first answer
    moves = [(m["from"], m["to"], m["phase"]) for m in merged["migrations"]]
    assert moves == [("cloudrun", "cluster", "cloudrun"), ("cluster", "lambda", "lambda")]
    assert len(merged["scale_to_zero"]) == 2
    assert merged["cost_usd_by_target"] == {"cluster": 1.0} and merged["trace_hours_by_target"] == {"cluster": 2.5}
    assert merged["trace"] == cloudrun["trace"]
    assert merged["phases"] == {"cloudrun": cloudrun, "lambda": on_lambda}
    assert "phase" not in cloudrun["migrations"][0]  # the phases' own summaries are left as they were
