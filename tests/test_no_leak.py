"""No leaked cloud resource (issue 18, item 7), on the real apiserver, the real operator and moto's Lambda:

* the operator is SIGKILLed between the cloud create and the status write, the workload is then deleted with its
  finalizer removed by hand: the sweep finds the function tagged as ours whose workload is gone (dry run: only
  reported, and counted), then retires it;
* a region edit: the function is made in the new region first, and the one in the old region is retired once the
  status records the new one (the router, which routes by that record, no longer uses it); the delete leaves
  nothing in either region.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import yaml

from inference_placement.api.names import lambda_function_name
from tests.plugins.cloud import FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_SECRET_ACCESS_KEY, MotoAws
from tests.plugins.cluster import KubeCluster
from tests.plugins.faults import FaultProxy, ProxyFault
from tests.plugins.operator import OperatorProcess, wait_for

pytestmark = pytest.mark.cluster

FINALIZER = "placement.inference.dev/cloud-resources"
OTHER_REGION = "eu-west-1"


def _functions(moto_aws: MotoAws, region: str, name: str) -> list[str]:
    client = boto3.client(
        "lambda",
        region_name=region,
        endpoint_url=moto_aws.endpoint_url,
        aws_access_key_id=FAKE_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_AWS_SECRET_ACCESS_KEY,
    )
    return [f["FunctionName"] for f in client.list_functions()["Functions"] if f["FunctionName"] == name]


def _doc(namespace: str, name: str, moto_aws: MotoAws, region: str) -> dict[str, Any]:
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"image": "registry.example.com/m:1", "sizeMb": 100, "memory": "512Mi"},
            "placement": {"allowedTargets": ["lambda"], "pin": "lambda"},
            "lambda": {"region": region, "roleArn": moto_aws.role_arn},
        },
    }


def _get(cluster: KubeCluster, namespace: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "iw", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _orphans(op: OperatorProcess, action: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:  # not listening yet
        return 0.0
    prefix = f'inference_placement_orphans_total{{action="{action}",target="lambda"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def _operator(factory: Callable[..., OperatorProcess], namespace: str, moto_aws: MotoAws, *extra: str) -> Any:
    return factory(
        namespace,
        "--set", f"lambda.endpoint={moto_aws.endpoint_url}",
        "--set", f"sweep.lambdaRegions={moto_aws.region},{OTHER_REGION}",
        *extra,
    )  # fmt: skip


def test_a_function_created_just_before_a_sigkill_is_swept_once_its_workload_is_gone(
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    moto_aws: MotoAws,
) -> None:
    name = "killed"
    function = lambda_function_name(namespace, name)
    # The operator reaches moto through a proxy that stalls the first call after the create (publishing the version
    # the alias will point at): the operator is held between the cloud create and the status write, whatever the
    # machine's load, and is killed there.
    proxy = FaultProxy(moto_aws.endpoint_url.removeprefix("http://"), "moto")
    stall = proxy.inject(
        ProxyFault("stall", count=1, seconds=120.0, path_contains="/versions", methods=frozenset({"POST"}))
    )
    try:
        op = operator_factory(
            namespace,
            "--set", f"lambda.endpoint={proxy.url}",
            "--set", f"sweep.lambdaRegions={moto_aws.region},{OTHER_REGION}",
        )  # fmt: skip
        crd_installed.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump(_doc(namespace, name, moto_aws, moto_aws.region))
        )
        wait_for(lambda: stall.count == 0, timeout=90, interval=0.05, what="the operator held after the create")
        assert _functions(moto_aws, moto_aws.region, function), "held after the create, so the function exists"
        op.kill()
    finally:
        proxy.stop()
    obj = _get(crd_installed, namespace, name)
    assert obj is not None and FINALIZER in obj["metadata"]["finalizers"]
    recorded = ((obj.get("status") or {}).get("targets") or {}).get("lambda") or {}
    assert not recorded.get("ready"), "the kill came after the status write: the test proves less than it says"
    # the workload goes while no operator runs, its finalizer removed by hand: no record of the function survives
    crd_installed.kubectl("patch", "iw", name, "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":[]}}')
    crd_installed.kubectl("delete", "iw", name, "-n", namespace, "--ignore-not-found")
    assert _functions(moto_aws, moto_aws.region, function), "leaked, as the sweep must find it"

    dry = _operator(
        operator_factory, namespace, moto_aws, "--set", "sweep.intervalSeconds=1", "--set", "sweep.dryRun=true"
    )
    # it leads once the killed operator's Lease expires (15 s), then sweeps every second
    wait_for(lambda: _orphans(dry, "dry-run") >= 1, timeout=60, what="the dry-run sweep to report the orphan")
    assert f"would retire lambda {function} in {moto_aws.region}" in dry.logs()
    assert _functions(moto_aws, moto_aws.region, function), "a dry run deletes nothing"
    dry.stop()

    sweeper = _operator(operator_factory, namespace, moto_aws, "--set", "sweep.intervalSeconds=1")
    wait_for(lambda: not _functions(moto_aws, moto_aws.region, function), timeout=60, what="the sweep to retire it")
    assert _orphans(sweeper, "retired") >= 1
    assert f"retired lambda {function} in {moto_aws.region}" in sweeper.logs()


def test_a_region_edit_moves_the_function_and_the_delete_leaves_nothing_in_either_region(
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    moto_aws: MotoAws,
) -> None:
    name = "moved"
    function = lambda_function_name(namespace, name)
    _operator(operator_factory, namespace, moto_aws, "--set", "sweep.intervalSeconds=2")
    crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(_doc(namespace, name, moto_aws, moto_aws.region)))

    def recorded_in(region: str) -> bool:
        obj = _get(crd_installed, namespace, name) or {}
        entry = ((obj.get("status") or {}).get("targets") or {}).get("lambda") or {}
        return bool(entry.get("ready")) and f":lambda:{region}:" in str(entry.get("name"))

    wait_for(lambda: recorded_in(moto_aws.region), timeout=90, what="placed in the first region")
    crd_installed.kubectl(
        "patch",
        "iw",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"lambda": {"region": OTHER_REGION}}}),
    )
    seen: list[tuple[str, bool]] = []

    def moved() -> bool:
        obj = _get(crd_installed, namespace, name) or {}
        entry = ((obj.get("status") or {}).get("targets") or {}).get("lambda") or {}
        seen.append((str(entry.get("name")), bool(entry.get("ready"))))
        return recorded_in(OTHER_REGION)

    wait_for(moved, timeout=90, interval=0.1, what="the function made and recorded in the new region")
    # make before break: the record (what the router routes by) never names a function that is not ready
    assert all(ready for _, ready in seen), seen
    assert any(f":lambda:{moto_aws.region}:" in recorded for recorded, _ in seen), "the old one served meanwhile"
    wait_for(
        lambda: not _functions(moto_aws, moto_aws.region, function),
        timeout=30,
        what="the old region's function retired",
    )
    crd_installed.kubectl("delete", "iw", name, "-n", namespace, "--timeout=90s")
    assert not _functions(moto_aws, moto_aws.region, function)
    assert not _functions(moto_aws, OTHER_REGION, function)
