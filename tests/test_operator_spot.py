"""The operator process with ``--set cluster.spotNodeLabels`` (issue 17, item 6): the setting reaches the policy
(the provider's pre-emption facts) and the cluster target (the provider's spot labels), end to end on the local
cluster's apiserver. The replicas stay Pending (no GPU node here): what is checked is what the operator decided,
recorded and rendered."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.plugins.cluster import KubeCluster
from tests.plugins.operator import OperatorProcess, wait_for

pytestmark = pytest.mark.cluster


def _json(cluster: KubeCluster, *args: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _declares_capacity_type(cluster: KubeCluster) -> bool:
    crd = _json(cluster, "crd", "inferenceworkloads.placement.inference.dev") or {}
    for version in crd.get("spec", {}).get("versions", []):
        status = version.get("schema", {}).get("openAPIV3Schema", {}).get("properties", {}).get("status", {})
        last = status.get("properties", {}).get("lastDecision", {}).get("properties", {})
        if "capacityType" in last:
            return True
    return False


def test_an_operator_with_karpenter_spot_labels_runs_a_spot_workload_on_spot_and_says_why(
    crd_installed: KubeCluster, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    operator_factory(namespace, "--set", "cluster.spotNodeLabels=karpenter")
    doc = {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": "llm-spot", "namespace": namespace},
        "spec": {
            "model": {"image": "registry.local/model:1", "sizeMb": 1300, "cpu": "4", "memory": "16Gi"},
            "accelerator": {"type": "nvidia-l4"},
            "placement": {"allowedTargets": ["cluster"]},
            # a node autoscaler provides the GPU node: the cluster is feasible without one free now
            "cluster": {"spot": True, "nodeAutoscaler": True},
        },
    }
    crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

    def decided() -> dict[str, Any] | None:
        obj = _json(crd_installed, "iw", "llm-spot", "-n", namespace)
        last = (obj or {}).get("status", {}).get("lastDecision") or {}
        return last if "spot" in last.get("reason", "") else None

    last = wait_for(decided, timeout=180, what="a decision about spot in status.lastDecision.reason")
    assert "spot: within the SLO budget and cheaper" in last["reason"], last
    assert "(aws: 0.22/node-month, 120s notice)" in last["reason"]  # Karpenter on AWS: AWS's facts

    def rendered() -> dict[str, Any] | None:
        return _json(crd_installed, "deployment", "llm-spot-model", "-n", namespace)

    deployment = wait_for(rendered, timeout=60, what="the model Deployment")
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    (preferred,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["preference"]["matchExpressions"] == [
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}
    ]
    if _declares_capacity_type(crd_installed):
        recorded = wait_for(
            lambda: (
                ((_json(crd_installed, "iw", "llm-spot", "-n", namespace) or {}).get("status", {}))
                .get("lastDecision", {})
                .get("capacityType")
            ),
            timeout=60,
            what="status.lastDecision.capacityType",
        )
        assert recorded == "spot"
    else:
        # the CRD is shared: another run's fixture may have re-applied an older one, and the apiserver prunes the
        # field; in CI the CRD is this checkout's, so a CRD without it is a failure
        reason = "the cluster's InferenceWorkload CRD does not declare status.lastDecision.capacityType"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(f"{reason} (re-applied by another run)")
