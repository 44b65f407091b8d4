"""The CRD's CEL rules (``api/cel.py``): every rule is exercised by a held-out invalid spec that the real apiserver
refuses at ``kubectl apply``, with the rule's message on the field; the operator's own validation names the same
field (it stays for objects stored before a rule existed, which the last test stores by installing the CRD without
its rules first).
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from inference_placement.api.cel import CEL_RULES
from inference_placement.api.crd import render_crd
from inference_placement.api.validation import NAME_RULE_MESSAGE, name_problems, parse_spec
from tests.plugins.cluster import KubeCluster
from tests.plugins.operator import CRD_FILE, OperatorProcess, wait_for

ROLE = "arn:aws:iam::123456789012:role/model"
BASE: dict[str, Any] = {"model": {"image": "localhost/inference-placement/model-server:dev", "sizeMb": 100}}


@dataclass(frozen=True)
class Case:
    id: str
    edit: dict[str, Any]
    field: str
    """Path under ``spec`` as written in YAML."""
    message: str
    """The rule's message (exactly as in api/cel.py)."""


def _mig_message() -> str:
    return next(r["message"] for r in CEL_RULES["AcceleratorSpec"] if r["message"].startswith("not a MIG profile"))


CASES = [
    Case("sharing-without-gpu", {"accelerator": {"sharing": "time-slicing"}}, "accelerator.sharing",
         "mig and time-slicing sharing need a GPU type, not none"),
    Case("mig-on-a-gpu-without-mig", {"accelerator": {"type": "nvidia-l4", "sharing": "mig", "migProfile": "1g.10gb"}},
         "accelerator.sharing", "this GPU type does not support MIG"),
    Case("mig-without-profile", {"accelerator": {"type": "nvidia-a100-80gb", "sharing": "mig"}},
         "accelerator.migProfile", "required when sharing is mig"),
    Case("profile-without-mig", {"accelerator": {"type": "nvidia-a100-80gb", "migProfile": "1g.10gb"}},
         "accelerator.migProfile", "only valid with sharing: mig"),
    Case("mig-profile-the-gpu-lacks",
         {"accelerator": {"type": "nvidia-a100-40gb", "sharing": "mig", "migProfile": "7g.80gb"}},
         "accelerator.migProfile", _mig_message()),
    Case("time-slicing-replicas-without-time-slicing", {"accelerator": {"type": "nvidia-t4", "timeSlicingReplicas": 4}},
         "accelerator.timeSlicingReplicas", "only valid with sharing: time-slicing"),
    Case("shared-gpus", {"accelerator": {"type": "nvidia-t4", "sharing": "time-slicing", "count": 2}},
         "accelerator.count", "more than one GPU needs sharing: exclusive"),
    Case("gpu-count-without-gpu", {"accelerator": {"count": 2}}, "accelerator.count", "a GPU count needs a GPU type"),
    Case("alternative-mig-without-profile",
         {"accelerator": {"type": "nvidia-l4", "alternatives": [{"type": "nvidia-a100-80gb", "sharing": "mig"}]}},
         "accelerator.alternatives[0].migProfile", "required when sharing is mig"),
    Case("alternative-mig-profile-the-gpu-lacks",
         {"accelerator": {"type": "nvidia-l4",
                          "alternatives": [{"type": "nvidia-a100-40gb", "sharing": "mig", "migProfile": "1g.10gb"}]}},
         "accelerator.alternatives[0].migProfile", _mig_message()),
    Case("alternative-time-slicing-replicas-without-time-slicing",
         {"accelerator": {"type": "nvidia-l4", "alternatives": [{"type": "nvidia-t4", "timeSlicingReplicas": 4}]}},
         "accelerator.alternatives[0].timeSlicingReplicas", "only valid with sharing: time-slicing"),
    Case("cpu-alternative-to-a-gpu",
         {"accelerator": {"type": "nvidia-l4", "alternatives": [{"type": "none"}]}},
         "accelerator.alternatives", "every alternative needs a GPU when the first does, and none else"),
    Case("explicit-without-offload", {"placement": {"thresholds": {"mode": "explicit", "reclaimAboveRps": 3}}},
         "placement.thresholds.offloadBelowRps", "required in explicit mode"),
    Case("explicit-without-reclaim", {"placement": {"thresholds": {"mode": "explicit", "offloadBelowRps": 3}}},
         "placement.thresholds.reclaimAboveRps", "required in explicit mode"),
    Case("reclaim-below-offload",
         {"placement": {"thresholds": {"mode": "explicit", "offloadBelowRps": 5, "reclaimAboveRps": 1}}},
         "placement.thresholds.reclaimAboveRps", "must not be below offloadBelowRps"),
    Case("pin-outside-allowed-targets", {"placement": {"allowedTargets": ["cluster"], "pin": "cloudrun"}},
         "placement.pin", "is not in allowedTargets"),
    Case("min-replicas-above-max", {"scaling": {"minReplicas": 5, "maxReplicas": 2}}, "scaling.minReplicas",
         "exceeds maxReplicas"),
    Case("cloud-run-min-instances-above-max", {"cloudRun": {"minInstances": 9, "maxInstances": 3}},
         "cloudRun.minInstances", "exceeds cloudRun.maxInstances"),
    Case("cloud-run-region", {"cloudRun": {"region": "us_central1"}}, "cloudRun.region",
         "not a Google Cloud region name (such as us-central1)"),
    Case("lambda-region", {"lambda": {"region": "useast1"}}, "lambda.region",
         "not an AWS region name (such as us-east-1)"),
    Case("lambda-with-a-gpu",
         {"accelerator": {"type": "nvidia-t4"}, "placement": {"allowedTargets": ["cluster", "lambda"]},
          "lambda": {"roleArn": ROLE}},
         "placement.allowedTargets",
         "lambda has no GPU: remove lambda from allowedTargets or set accelerator.type: none"),
    Case("cloud-run-with-an-h100",
         {"accelerator": {"type": "nvidia-h100-80gb"}, "placement": {"allowedTargets": ["cloudrun"]},
          "cloudRun": {"project": "acme-ml-prod"}},
         "placement.allowedTargets",
         "Cloud Run offers exactly one whole GPU per instance, of type nvidia-l4 or nvidia-rtx-pro-6000"),
    Case("cloud-run-without-project", {"placement": {"allowedTargets": ["cluster", "cloudrun"]}}, "cloudRun.targetRef",
         "required when cloudrun is an allowed target (targetRef; inline project only where the operator allows it)"),
    Case("lambda-without-role", {"placement": {"allowedTargets": ["cluster", "lambda"]}}, "lambda.targetRef",
         "required when lambda is an allowed target (targetRef; inline roleArn only where the operator allows it)"),
    Case("single-tenant-with-only-serverless",
         {"compliance": {"singleTenant": True}, "placement": {"allowedTargets": ["lambda"]},
          "lambda": {"roleArn": ROLE}},
         "compliance.singleTenant", "pins the workload to the cluster, which is not an allowed target"),
    Case("single-tenant-pinned-elsewhere",
         {"compliance": {"singleTenant": True}, "placement": {"allowedTargets": ["cluster", "lambda"], "pin": "lambda"},
          "lambda": {"roleArn": ROLE}},
         "compliance.singleTenant", "pins the workload to the cluster, but placement.pin names another target"),
]  # fmt: skip


def _spec(case: Case) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    for key, value in case.edit.items():
        spec[key] = {**spec.get(key, {}), **value}
    return spec


def _doc(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def test_every_cel_rule_has_a_held_out_case() -> None:
    """Spec rules here; the root's name rule has its own cases (``NAME_CASES``)."""
    # the ServerlessTarget's own rules: tests/test_tenancy_cluster.py
    spec_rules = {
        node: rs for node, rs in CEL_RULES.items() if node not in ("InferenceWorkload", "ServerlessTargetSpec")
    }
    rules = {(node, r["fieldPath"], r["message"]) for node, rs in spec_rules.items() for r in rs}
    covered = {
        (node, path, message)
        for node, path, message in rules
        for case in CASES
        if case.message == message and f".{case.field}".endswith(path)
    }
    assert covered == rules, rules - covered
    for rule in (r for rs in spec_rules.values() for r in rs):
        assert rule["message"] and rule["fieldPath"].startswith("."), rule
    assert [r["message"] for r in CEL_RULES["InferenceWorkload"]] == [f"metadata.name {NAME_RULE_MESSAGE}"]


NAME_CASES = [
    pytest.param("llama-3.1", id="a-dot"),
    pytest.param("3llama", id="a-leading-digit"),
    pytest.param("llama-", id="a-trailing-dash"),
    pytest.param("l" * 64, id="64-characters"),
]


@pytest.mark.parametrize("name", NAME_CASES)
def test_the_operator_refuses_a_name_its_services_cannot_take(name: str) -> None:
    (problem,) = name_problems(name)
    assert str(problem).startswith(f"metadata.name: {name!r} must be a DNS-1035 label"), problem


@pytest.mark.parametrize("name", ["llama-3-1", "a", "l" * 63, "m2-embedder"])
def test_names_a_service_can_take_pass(name: str) -> None:
    assert name_problems(name) == []


@pytest.mark.cluster
@pytest.mark.parametrize("name", NAME_CASES)
def test_kubectl_apply_refuses_a_name_its_services_cannot_take(
    crd_installed: KubeCluster, namespace: str, name: str
) -> None:
    doc = _doc(name, namespace, copy.deepcopy(BASE))
    done = crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert done.returncode != 0, f"accepted: {name}"
    assert f"metadata.name {NAME_RULE_MESSAGE}" in done.stderr, done.stderr


def test_the_base_spec_is_valid() -> None:
    spec, problems = parse_spec(copy.deepcopy(BASE))
    assert spec is not None and problems == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_operator_names_the_same_field(case: Case) -> None:
    spec, problems = parse_spec(_spec(case))
    # a region that is not a region fails the models' own pattern (spec None); every other case is semantic
    assert (spec is None) == (case.id in {"cloud-run-region", "lambda-region"}), problems
    assert case.field in {p.field for p in problems}, problems


@pytest.mark.cluster
def test_the_base_spec_applies(crd_installed: KubeCluster, namespace: str) -> None:
    crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(_doc("valid", namespace, copy.deepcopy(BASE))))


@pytest.mark.cluster
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kubectl_apply_refuses_the_spec_naming_the_field(
    crd_installed: KubeCluster, namespace: str, case: Case
) -> None:
    doc = _doc(case.id, namespace, _spec(case))
    done = crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert done.returncode != 0, f"accepted: {case}"
    assert f"spec.{case.field}: Invalid value" in done.stderr, done.stderr
    assert case.message in done.stderr, done.stderr
    assert crd_installed.kubectl("get", "iw", case.id, "-n", namespace, check=False).returncode != 0


def _without_rules(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_rules(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [_without_rules(v) for v in node]
    return node


@pytest.mark.cluster
def test_an_object_stored_before_the_rules_existed_gets_invalid_spec(
    crd_installed: KubeCluster, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    case = next(c for c in CASES if c.id == "min-replicas-above-max")
    name = f"old-{uuid.uuid4().hex[:6]}"

    def apply(doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)

    try:
        crd_installed.kubectl("apply", "-f", "-", input=json.dumps(_without_rules(render_crd())))
        # the apiserver swaps a CRD's validators asynchronously: retry until the rule-less schema is in force
        wait_for(lambda: apply(_doc(name, namespace, _spec(case))).returncode == 0, timeout=30, what="stored")
    finally:
        crd_installed.kubectl("apply", "-f", str(CRD_FILE))
    operator_factory(namespace)

    def invalid_spec() -> dict[str, Any] | None:
        obj = crd_installed.kubectl_json("get", "iw", name, "-n", namespace)
        conditions = (obj.get("status") or {}).get("conditions", [])
        cond = next((c for c in conditions if c["type"] == "InvalidSpec"), None)
        return cond if cond and cond["status"] == "True" else None

    # the operator's status write passes although the stored spec breaks a rule (CRD validation ratcheting)
    cond = wait_for(invalid_spec, timeout=60, what="InvalidSpec on the object stored before the rules")
    assert f"spec.{case.field}" in cond["message"], cond
    # the rules are back in force for new writes of such a spec
    new = _doc(f"{name}-new", namespace, _spec(case))
    done = wait_for(lambda: (d := apply(new)).returncode != 0 and d, timeout=30, what="the rules back in force")
    assert case.message in done.stderr, done.stderr
