"""The operator with the cloud targets: a finalizer only while cloud resources exist, and none left after delete."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import yaml

from tests.plugins.cloud import FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_SECRET_ACCESS_KEY, MotoAws
from tests.plugins.cluster import REPO_ROOT, KubeCluster
from tests.plugins.operator import OperatorProcess, load_example, wait_for

pytestmark = pytest.mark.cluster

FINALIZER = "placement.inference.dev/cloud-resources"


def _lambda_functions(moto_aws: MotoAws) -> list[dict[str, Any]]:
    client = boto3.client(
        "lambda",
        region_name=moto_aws.region,
        endpoint_url=moto_aws.endpoint_url,
        aws_access_key_id=FAKE_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_AWS_SECRET_ACCESS_KEY,
    )
    functions: list[dict[str, Any]] = client.list_functions()["Functions"]
    return functions


def _get(cluster: KubeCluster, ns: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "iw", name, "-n", ns, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_lambda_workload_gets_a_finalizer_and_deleting_it_leaves_no_function(
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    serverless_target_factory: Callable[[dict[str, Any]], str],
    moto_aws: MotoAws,
) -> None:
    # moto_server has put fake credentials and AWS_EC2_METADATA_DISABLED in this process's environment,
    # which the operator subprocess inherits. The example names its admin's ServerlessTarget: the test's stands in
    # for it (moto's account, role and region; the example's ECR registry), inline cloud identity off.
    account = moto_aws.role_arn.split(":")[4]
    target = serverless_target_factory(
        {
            "provider": "lambda",
            "account": account,
            "regions": [moto_aws.region],
            "roleArn": moto_aws.role_arn,
            "allowedImages": [f"{account}.dkr.ecr.us-east-1.amazonaws.com/"],
            "allowedNamespaces": {"names": [namespace]},
        }
    )
    operator_factory(namespace, "--set", f"lambda.endpoint={moto_aws.endpoint_url}", inline_cloud_identity=False)

    doc = load_example(REPO_ROOT / "examples" / "sentiment-bursty.yaml", namespace)
    doc["metadata"]["name"] = "to-lambda"
    doc["spec"]["placement"] = {"allowedTargets": ["lambda"]}
    doc["spec"]["lambda"]["targetRef"] = {"name": target}
    doc["spec"]["lambda"].pop("region")  # the target's
    crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

    obj = wait_for(
        lambda: (o := _get(crd_installed, namespace, "to-lambda")) and o.get("status", {}).get("placement") and o,
        timeout=120,
        what="placement on lambda",
    )
    assert obj["status"]["placement"] == "lambda"
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert obj["status"]["targets"]["lambda"]["ready"] is True
    functions = _lambda_functions(moto_aws)
    assert len(functions) == 1

    crd_installed.kubectl("delete", "iw", "to-lambda", "-n", namespace, "--timeout=90s")
    assert _get(crd_installed, namespace, "to-lambda") is None
    assert _lambda_functions(moto_aws) == [], "the finalizer must delete the function before the CR goes"
