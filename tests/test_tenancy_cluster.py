"""Admin-defined cloud targets on the real apiserver, the real operator (without inline cloud identity, the chart's
default), moto's Lambda and the Cloud Run stand-in (issue 18, item 1):

* a workload in a namespace the ServerlessTarget does not allow gets ``InvalidSpec`` naming
  ``spec.cloudRun.targetRef`` / ``spec.lambda.targetRef`` and a Warning Event, and no cloud resource appears: the
  stand-in received no request at all, moto holds no function;
* so does one whose image is outside the target's allowed prefixes (naming ``spec.model.image``), and one that
  writes its own role without naming a target (``spec.lambda.targetRef``: inline identity is off);
* the workload the target allows is deployed with the admin's role, in the admin's region, and the target's status
  says Ready and counts it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import yaml

from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cloud import FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_SECRET_ACCESS_KEY, MotoAws
from tests.plugins.cluster import KubeCluster
from tests.plugins.operator import OperatorProcess, wait_for

pytestmark = pytest.mark.cluster

ALLOWED_IMAGES = ["registry.example.com/team-a/"]


def _functions(moto_aws: MotoAws) -> list[dict[str, Any]]:
    client = boto3.client(
        "lambda",
        region_name=moto_aws.region,
        endpoint_url=moto_aws.endpoint_url,
        aws_access_key_id=FAKE_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_AWS_SECRET_ACCESS_KEY,
    )
    functions: list[dict[str, Any]] = client.list_functions()["Functions"]
    return functions


def _workload(namespace: str, name: str, target: str, section: str, image: str) -> dict[str, Any]:
    allowed = "lambda" if section == "lambda" else "cloudrun"
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"image": image, "sizeMb": 100, "memory": "512Mi"},
            "placement": {"allowedTargets": [allowed], "pin": allowed},
            section: {"targetRef": {"name": target}},
        },
    }


def _get(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cluster.kubectl("get", "iw", name, "-n", namespace, "-o", "json").stdout)
    return result


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def _invalid(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        condition = _condition(_get(cluster, namespace, name), "InvalidSpec")
        return condition if condition is not None and condition["status"] == "True" else None

    found: dict[str, Any] = wait_for(seen, timeout=60, what=f"InvalidSpec on {name}")
    return found


def _warning_events(cluster: KubeCluster, namespace: str, name: str) -> list[str]:
    listed = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [
        e["message"]
        for e in listed
        if e["involvedObject"]["name"] == name and e["reason"] == "InvalidSpec" and e["type"] == "Warning"
    ]


def _events_of(cluster: KubeCluster, namespace: str, name: str) -> Callable[[], list[str]]:
    return lambda: _warning_events(cluster, namespace, name)


def test_workloads_outside_a_targets_policy_make_no_cloud_call_and_the_allowed_one_deploys_as_the_admin_says(
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    serverless_target_factory: Callable[[dict[str, Any]], str],
    moto_aws: MotoAws,
    cloudrun_standin: CloudRunStandin,
) -> None:
    account = moto_aws.role_arn.split(":")[4]
    lambda_for_us = serverless_target_factory(
        {
            "provider": "lambda",
            "account": account,
            "regions": [moto_aws.region],
            "roleArn": moto_aws.role_arn,
            "allowedImages": ALLOWED_IMAGES,
            "allowedNamespaces": {"names": [namespace]},
        }
    )
    lambda_for_others = serverless_target_factory(
        {
            "provider": "lambda",
            "account": account,
            "regions": [moto_aws.region],
            "roleArn": moto_aws.role_arn,
            "allowedImages": ALLOWED_IMAGES,
            "allowedNamespaces": {"names": ["team-elsewhere"], "selector": {"matchLabels": {"team": "elsewhere"}}},
        }
    )
    cloudrun_for_others = serverless_target_factory(
        {
            "provider": "cloudrun",
            "project": "team-elsewhere",
            "regions": ["us-central1"],
            "serviceAccount": "runner@team-elsewhere.iam.gserviceaccount.com",
            "allowedImages": ALLOWED_IMAGES,
            "allowedNamespaces": {"names": ["team-elsewhere"]},
        }
    )
    operator_factory(
        namespace,
        "--set", f"lambda.endpoint={moto_aws.endpoint_url}",
        "--set", f"cloudrun.endpoint={cloudrun_standin.url}",
        inline_cloud_identity=False,
    )  # fmt: skip
    image = "registry.example.com/team-a/m:1"
    refused = {
        "foreign-lambda": (
            _workload(namespace, "foreign-lambda", lambda_for_others, "lambda", image),
            "spec.lambda.targetRef",
        ),
        "foreign-run": (
            _workload(namespace, "foreign-run", cloudrun_for_others, "cloudRun", image),
            "spec.cloudRun.targetRef",
        ),
        "foreign-image": (
            _workload(namespace, "foreign-image", lambda_for_us, "lambda", "registry.example.com/team-ab/m:1"),
            "spec.model.image",
        ),
    }
    inline = _workload(namespace, "inline-role", lambda_for_us, "lambda", image)
    inline["spec"]["lambda"] = {"roleArn": moto_aws.role_arn, "region": moto_aws.region}
    refused["inline-role"] = (inline, "spec.lambda.targetRef")
    for doc, _ in refused.values():
        crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

    for name, (_, field) in refused.items():
        condition = _invalid(crd_installed, namespace, name)
        assert condition["message"].startswith(field), (name, condition)
        assert wait_for(_events_of(crd_installed, namespace, name), timeout=30, what=f"an InvalidSpec Event on {name}")
    assert _functions(moto_aws) == [], "no Lambda function for a refused workload"
    assert cloudrun_standin.requests == [], "not one request reached the Cloud Run stand-in"
    for name in refused:
        obj = _get(crd_installed, namespace, name)
        assert "placement.inference.dev/cloud-resources" not in obj["metadata"].get("finalizers", [])
        assert not (obj.get("status") or {}).get("targets"), name

    # the allowed workload: deployed with the admin's role, in the admin's region
    crd_installed.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(_workload(namespace, "allowed", lambda_for_us, "lambda", image))
    )
    placed = wait_for(
        lambda: (o := _get(crd_installed, namespace, "allowed")).get("status", {}).get("placement") == "lambda" and o,
        timeout=120,
        what="the allowed workload placed on lambda",
    )
    assert placed["status"]["targets"]["lambda"]["ready"] is True
    functions = _functions(moto_aws)
    assert [f["Role"] for f in functions] == [moto_aws.role_arn]
    assert cloudrun_standin.requests == []

    def target_status() -> dict[str, Any] | None:
        obj = json.loads(crd_installed.kubectl("get", "slt", lambda_for_us, "-o", "json").stdout)
        status: dict[str, Any] = obj.get("status") or {}
        return status if status.get("workloads") == 1 else None

    status = wait_for(target_status, timeout=60, what="the target's status counting the workload")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", status

    crd_installed.kubectl("delete", "iw", "allowed", "-n", namespace, "--timeout=90s")
    assert _functions(moto_aws) == [], "the finalizer retired the function (with the target's identity)"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {"provider": "lambda", "account": "123456789012", "regions": ["us-east-1"], "allowedImages": ["r.io/"]},
            "a lambda target needs account and roleArn",
            id="lambda-without-role",
        ),
        pytest.param(
            {"provider": "cloudrun", "project": "team-a-prod", "regions": ["us-central1"], "allowedImages": ["r.io/"]},
            "a cloudrun target needs project and serviceAccount",
            id="cloudrun-without-service-account",
        ),
        pytest.param(
            {
                "provider": "lambda",
                "account": "123456789012",
                "roleArn": "arn:aws:iam::999999999999:role/x",
                "regions": ["us-east-1"],
                "allowedImages": ["r.io/"],
            },
            "roleArn must be a role in account",
            id="role-of-another-account",
        ),
    ],
)
def test_the_apiserver_refuses_a_target_no_workload_could_use(
    crd_installed: KubeCluster, spec: dict[str, Any], message: str
) -> None:
    doc = {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "ServerlessTarget",
        "metadata": {"name": "refused-target"},
        "spec": spec,
    }
    result = crd_installed.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
