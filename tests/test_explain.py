"""``inference-placement explain``: cost and feasibility per target, thresholds, decisions (status + price book)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import pytest
import yaml
from rich.console import Console

from inference_placement.api.spec import TargetName
from inference_placement.explain import Explanation, explain_workload, render
from inference_placement.policy.price_book import default_price_book, price_book_from_mapping
from tests.plugins.cluster import REPO_ROOT, KubeCluster, admit_examples_in

SAMPLED_AT = "2026-03-10T12:00:00Z"


def _workload(spec_changes: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO_ROOT / "examples" / "sentiment-bursty.yaml").read_text())
    doc["metadata"].update({"namespace": "ml", "generation": 4})
    for key, value in (spec_changes or {}).items():
        doc["spec"][key] = value
    doc["status"] = status if status is not None else _status()
    return doc


def _status(rps: float = 0.02, placement: str = "lambda") -> dict[str, Any]:
    return {
        "observedGeneration": 4,
        "placement": placement,
        "phase": "Serving",
        "endpoint": "http://sentiment-classifier.ml.svc:8080",
        "observed": {"rps": rps, "latencyP99Seconds": 0.21, "windowSeconds": 900, "sampledAt": SAMPLED_AT},
        "projectedMonthlyCostUsd": {"cluster": 70.08, "lambda": 3.1, "cloudrun": 4.2},
        "lastDecision": {
            "target": placement,
            "replicas": 0,
            "reason": "lambda (scale to zero); projected cluster $70.08/mo, lambda $3.10/mo",
            "decidedAt": "2026-03-10T11:00:00Z",
            "projectedMonthlyCostUsd": 3.1,
            "sloRisk": 0.001,
        },
        "lastMigration": {
            "source": "cluster",
            "target": placement,
            "outcome": "Succeeded",
            "finishedAt": "2026-03-10T11:05:00Z",
            "message": "traffic moved",
        },
        "targets": {"lambda": {"name": "ml--sentiment-classifier", "ready": True, "endpoint": "https://x.lambda-url"}},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "AllDependentsReady",
                "lastTransitionTime": "2026-03-10T11:05:00Z",
            }
        ],
    }


def _row(expl: Explanation, target: TargetName) -> Any:
    return next(r for r in expl.targets if r.target is target)


def test_low_traffic_cpu_workload_shows_costs_thresholds_and_keeps_serverless() -> None:
    expl = explain_workload(_workload(), default_price_book())
    assert expl.placement is TargetName.LAMBDA
    for target in TargetName:
        row = _row(expl, target)
        assert row.allowed and row.feasible, row
        assert row.projected_monthly_cost_usd is not None and row.projected_monthly_cost_usd > 0
    assert _row(expl, TargetName.LAMBDA).serving and _row(expl, TargetName.LAMBDA).resource is not None
    assert _row(expl, TargetName.CLUSTER).recorded_monthly_cost_usd == 70.08
    lam = _row(expl, TargetName.LAMBDA).projected_monthly_cost_usd
    cluster = _row(expl, TargetName.CLUSTER).projected_monthly_cost_usd
    assert lam is not None and cluster is not None and lam < cluster
    thresholds = {t.serverless: t for t in expl.thresholds}
    assert set(thresholds) == {TargetName.LAMBDA, TargetName.CLOUDRUN}
    for row in thresholds.values():
        assert 0 < row.offload_below_rps < row.reclaim_above_rps and row.how.startswith("auto: break-even")
    assert not expl.policy_would_migrate and expl.policy_target is TargetName.LAMBDA
    assert "$" in expl.policy_now
    assert expl.last_decision is not None and expl.last_migration is not None


def test_gpu_workload_explains_why_each_target_is_excluded() -> None:
    spec = {
        "accelerator": {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "1g.10gb"},
        "placement": {"allowedTargets": ["cluster"]},
    }
    expl = explain_workload(_workload(spec, _status(placement="cluster")), default_price_book())
    cluster = _row(expl, TargetName.CLUSTER)
    assert cluster.feasible and cluster.serving and cluster.projected_monthly_cost_usd is not None
    for target in (TargetName.LAMBDA, TargetName.CLOUDRUN):
        row = _row(expl, target)
        assert not row.allowed and not row.feasible and "allowedTargets" in row.why_not
        assert row.projected_monthly_cost_usd is None
    assert expl.thresholds == ()


def test_l4_workload_may_use_cloud_run_but_not_lambda() -> None:
    spec = {"accelerator": {"type": "nvidia-l4"}, "placement": {"allowedTargets": ["cluster", "cloudrun"]}}
    expl = explain_workload(_workload(spec, _status(placement="cluster")), default_price_book())
    assert _row(expl, TargetName.CLOUDRUN).feasible and _row(expl, TargetName.CLUSTER).feasible
    assert [t.serverless for t in expl.thresholds] == [TargetName.CLOUDRUN]


def test_explicit_thresholds_are_shown_as_declared() -> None:
    spec = {
        "placement": {
            "allowedTargets": ["cluster", "lambda"],
            "thresholds": {"mode": "explicit", "offloadBelowRps": 0.5, "reclaimAboveRps": 2.0},
        }
    }
    expl = explain_workload(_workload(spec), default_price_book())
    assert [(t.serverless, t.offload_below_rps, t.reclaim_above_rps, t.how) for t in expl.thresholds] == [
        (TargetName.LAMBDA, 0.5, 2.0, "explicit")
    ]


def test_costs_follow_the_price_book_given() -> None:
    book = default_price_book()
    raw = book.model_dump(by_alias=True)
    pricier = copy.deepcopy(raw)
    pricier["prices"]["cluster"]["cpu_vcpu_hour"] = raw["prices"]["cluster"]["cpu_vcpu_hour"] * 3
    base = _row(explain_workload(_workload(), book), TargetName.CLUSTER).projected_monthly_cost_usd
    more = _row(explain_workload(_workload(), price_book_from_mapping(pricier)), TargetName.CLUSTER)
    assert base is not None and more.projected_monthly_cost_usd is not None
    assert more.projected_monthly_cost_usd == pytest.approx(base * 3, rel=0.05)


def test_high_traffic_on_lambda_would_reclaim_into_the_cluster() -> None:
    expl = explain_workload(_workload(status=_status(rps=40.0)), default_price_book())
    assert expl.policy_target is TargetName.CLUSTER and expl.policy_would_migrate, expl.policy_now
    assert "reclaim" in expl.policy_now


def test_invalid_spec_lists_the_problems_and_decides_nothing() -> None:
    spec = {"accelerator": {"type": "nvidia-a100-80gb"}, "placement": {"allowedTargets": ["lambda"]}}
    expl = explain_workload(_workload(spec), default_price_book())
    assert expl.spec_problems and all(p.startswith("spec.") for p in expl.spec_problems)
    assert expl.targets == () and "invalid" in expl.policy_now


def test_no_recorded_traffic_uses_the_idle_prior() -> None:
    status = _status()
    del status["observed"]
    expl = explain_workload(_workload(status=status), default_price_book())
    assert any("idle prior" in note for note in expl.notes)
    assert _row(expl, TargetName.CLUSTER).projected_monthly_cost_usd is not None


def test_render_prints_every_section_and_json_round_trips() -> None:
    events = [
        {
            "type": "Normal",
            "reason": "Decision",
            "message": "lambda x0: cheaper",
            "lastTimestamp": "2026-03-10T11:00:00Z",
        }
    ]
    expl = explain_workload(_workload(), default_price_book(), events=events)
    console = Console(record=True, width=200)
    render(expl, console)
    text = console.export_text()
    for part in (
        "ml/sentiment-classifier",
        "Targets",
        "Thresholds",
        "Decisions",
        "Conditions",
        "policy now",
        "Decision",
    ):
        assert part in text, part
    data = json.loads(json.dumps(expl.to_dict()))
    assert data["placement"] == "lambda"
    assert {t["target"] for t in data["targets"]} == {"cluster", "cloudrun", "lambda"}
    assert data["events"][0]["reason"] == "Decision"


def test_render_fits_80_columns_and_cuts_nothing() -> None:
    """At 80 columns (a terminal's default, and what a pipe gets) every table wraps its cells: no line is wider and
    no value is cut off with an ellipsis."""
    expl = explain_workload(_workload(), default_price_book())
    console = Console(record=True, width=80)
    render(expl, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    assert "lambda (scale to zero); projected cluster $70.08/mo" in " ".join(text.split())  # wrapped, whole


# ----------------------------------------------------------------------------------------------- the command


def test_explain_is_a_registered_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "inference_placement.cli", "explain", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--namespace", "--kubeconfig", "--price-book", "--output"):
        assert flag in done.stdout


@pytest.mark.cluster
def test_explain_reads_the_workload_from_the_apiserver(kube_cluster: KubeCluster, namespace: str) -> None:
    from kubernetes import client, config

    kube_cluster.kubectl("apply", "-f", str(REPO_ROOT / "crds" / "inferenceworkloads.yaml"))
    kube_cluster.wait_crd_established("inferenceworkloads.placement.inference.dev", timeout=60)
    admit_examples_in(kube_cluster, namespace)  # the example names the docs' admin targets
    doc = _workload()
    status = doc.pop("status")
    doc["metadata"] = {"name": "sentiment-classifier", "namespace": namespace}
    kube_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=kube_cluster.kubeconfig))
    generation = api.get_namespaced_custom_object(
        "placement.inference.dev", "v1alpha1", namespace, "inferenceworkloads", "sentiment-classifier"
    )["metadata"]["generation"]
    status["observedGeneration"] = generation
    api.patch_namespaced_custom_object_status(
        "placement.inference.dev",
        "v1alpha1",
        namespace,
        "inferenceworkloads",
        "sentiment-classifier",
        {"status": status},
    )
    base = [sys.executable, "-m", "inference_placement.cli", "explain", "sentiment-classifier", "-n", namespace]
    base += ["--kubeconfig", kube_cluster.kubeconfig]
    as_json = subprocess.run([*base, "-o", "json"], capture_output=True, text=True, timeout=120, check=False)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["placement"] == "lambda" and data["observed"]["rps"] == 0.02
    assert {t["target"]: t["recorded_monthly_cost_usd"] for t in data["targets"]}["cluster"] == 70.08
    table = subprocess.run(base, capture_output=True, text=True, timeout=120, check=False)
    assert table.returncode == 0, table.stderr
    assert "Targets" in table.stdout and "policy now" in table.stdout
    missing = subprocess.run(
        [*base[:4], "does-not-exist", *base[5:]], capture_output=True, text=True, timeout=120, check=False
    )
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_explains_the_accelerator_choice_in_numbers() -> None:
    accelerator = {
        "type": "nvidia-l4",
        "alternatives": [{"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "1g.10gb"}],
    }
    status = _status(rps=5.0, placement="cluster")
    status["lastDecision"] |= {"target": "cluster", "replicas": 1, "accelerator": {"type": "nvidia-l4"}}
    obj = _workload(
        {
            "accelerator": accelerator,
            "model": {"image": "x", "sizeMb": 1300, "cpu": "2", "memory": "8Gi", "serviceSeconds": 0.025},
            "placement": {"allowedTargets": ["cluster"]},
        },
        status,
    )
    expl = explain_workload(obj, default_price_book())
    l4, mig = expl.accelerators
    assert (l4.accelerator, mig.accelerator) == ("nvidia-l4", "nvidia-a100-80gb MIG 1g.10gb")
    assert l4.recorded and not mig.recorded
    assert l4.projected_monthly_cost_usd is not None and mig.projected_monthly_cost_usd is not None
    # 9 % cheaper is inside the 20 % hysteresis band: the L4 in place stays, and explain says so
    assert l4.chosen and "within the 20% hysteresis band" in expl.accelerator_now
    assert f"${mig.projected_monthly_cost_usd:,.2f}/mo" in expl.accelerator_now
    console = Console(record=True, width=200)
    render(expl, console)
    text = console.export_text()
    assert "Cluster accelerators" in text and "nvidia-a100-80gb MIG 1g.10gb" in text
    assert json.loads(json.dumps(expl.to_dict()))["accelerators"][0]["recorded"] is True


def test_the_budget_verdict_accrues_the_spend_record_to_now() -> None:
    """Status keeps month-to-date as a record (spend up to ``accountedAt``, accruing at ``currentMonthlyCostUsd``),
    re-written only with a real change: explain accrues it to now, as the reconciler does, before judging the
    budget. Eight days at $90/month since a $20 record are ~$24 more: over a $30 budget, within it unaccrued."""

    def explained(accounted_at: str) -> Explanation:
        status = _status()
        status["currentMonthlyCostUsd"] = 90.0
        status["budget"] = {"monthToDateUsd": 20.0, "projectedMonthUsd": 22.0, "accountedAt": accounted_at}
        return explain_workload(_workload({"budget": {"monthlyUsd": 30}}, status), default_price_book())

    assert "within" in explained(SAMPLED_AT).budget_now
    assert "exceeded" in explained("2026-03-02T12:00:00Z").budget_now
