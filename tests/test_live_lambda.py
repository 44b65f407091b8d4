"""The live loop to Lambda and back, with the Lambda data path as AWS runs it (docs/lambda.md).

The real operator (subprocess) on the shared local cluster, a real Prometheus backfilled with the real trace swing of
``tests/plugins/live.py``, a real Envoy serving the operator's routes, and that trace replayed through the stable
endpoint. The workload may use the cluster and Lambda only: traffic falls, it migrates cluster -> Lambda; traffic
rises, it comes back. The Lambda control plane is moto's server (the operator creates the function, its alias and
its Function URL with ``AuthType AWS_IAM``, then deletes them); the data plane is AWS's own runtime pieces: Envoy
signs each request for the Function URL moto published, the Function URL front end's stand-in checks the signature
and invokes the Runtime Interface Emulator, which runs the Lambda Web Adapter, which calls the model server.
Zero failed requests, and both targets served some.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from inference_placement.devtools.lambda_runtime import LambdaRuntime
from inference_placement.devtools.processes import Processes
from inference_placement.devtools.replay.load import LoadReplay, schedule_from_counts
from inference_placement.devtools.replay.segment import SwingSegment
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cloud import (
    FAKE_AWS_ACCESS_KEY_ID,
    FAKE_AWS_SECRET_ACCESS_KEY,
    TEST_REGION_AWS,
    MotoServer,
)
from tests.plugins.cluster import KubeCluster
from tests.plugins.envoy import EnvoyRouter, HttpUpstreams
from tests.plugins.lambda_runtime import start_local_function
from tests.plugins.live import (
    NAME,
    PEAK_RPS,
    RATE_WINDOW_SECONDS,
    STEP_SECONDS,
    Watcher,
    openmetrics,
    operator_args,
    replay_rates,
    wait_placed,
    workload_doc,
)
from tests.plugins.operator import OperatorProcess
from tests.plugins.prometheus import PrometheusServer

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _role(moto: MotoServer) -> str:
    import json

    import boto3

    moto.post("/moto-api/config", {"lambda": {"use_docker": False}})
    iam = boto3.client(
        "iam",
        region_name=TEST_REGION_AWS,
        endpoint_url=moto.url,
        aws_access_key_id=FAKE_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_AWS_SECRET_ACCESS_KEY,
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    name = f"live-lambda-{time.time_ns()}"
    arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    return arn


@pytest.fixture
def lambda_stack(
    kube_node: KubeCluster,
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    prometheus_factory: Callable[[str], PrometheusServer],
    envoy_router: EnvoyRouter,
    envoy_binary: str,
    http_upstreams: HttpUpstreams,
    cloudrun_standin: CloudRunStandin,
    moto_server: MotoServer,
    lambda_runtime: LambdaRuntime,
    segment: SwingSegment,
    tmp_path: Path,
) -> Iterator[dict[str, Any]]:
    rates, offload, reclaim = replay_rates(segment)
    procs = Processes()
    try:
        # the function's data plane: the model server behind the adapter in two execution environments, and the
        # Function URL front end accepting exactly the credentials Envoy signs with
        function = start_local_function(procs, lambda_runtime, tmp_path, "lambda-model", region=TEST_REGION_AWS)
        cluster_model = http_upstreams.start("cluster-model")
        start = time.time() + 15.0
        prometheus = prometheus_factory(openmetrics(namespace, rates, start, history_seconds=120))
        promql = tmp_path / "promql.yaml"
        promql.write_text(yaml.safe_dump({"rateWindowSeconds": RATE_WINDOW_SECONDS}))
        operator = operator_factory(
            namespace,
            *operator_args(
                prometheus_url=prometheus.url,
                promql_path=promql,
                cloudrun_url=cloudrun_standin.url,
                envoy_router=envoy_router,
                envoy_binary=envoy_binary,
                address_overrides={f"http://{NAME}-model.{namespace}.svc:8080": cluster_model.url},
                extra=(
                    "--set",
                    f"lambda.endpoint={moto_server.url}",
                    "--set",
                    f"lambda.region={TEST_REGION_AWS}",
                    "--set",
                    f"router.lambdaUrlEndpoint={function.url}",
                    "--set",
                    f"router.lambdaRegions={TEST_REGION_AWS}",
                ),
            ),
        )
        image = kube_node.model_server_image
        doc = workload_doc(namespace, image, offload, reclaim, "live-test", allowed_targets=("cluster", "lambda"))
        doc["spec"]["lambda"] = {
            "region": TEST_REGION_AWS,
            "roleArn": _role(moto_server),
            "imageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/model:1",
            "memoryMb": 512,
            "timeoutSeconds": 30,
        }
        kube_node.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        watcher = Watcher(kube_node, namespace, envoy_router.xds_dir / "rds.json").start()
        schedule = schedule_from_counts(
            segment.counts, seconds_per_step=STEP_SECONDS, scale=segment.scale_to(PEAK_RPS, STEP_SECONDS)
        )
        replay = LoadReplay(envoy_router.listen_port, f"{NAME}.{namespace}.svc", schedule, connections=4)
        try:
            yield {
                "cluster": kube_node,
                "namespace": namespace,
                "operator": operator,
                "envoy": envoy_router,
                "watcher": watcher,
                "replay": replay,
                "start": start,
                "rates": rates,
                "moto": moto_server,
                "work": tmp_path,
            }
        finally:
            replay.stop()
            watcher.stop()
            kube_node.kubectl("delete", "iw", NAME, "-n", namespace, "--wait=false", check=False)
    finally:
        procs.stop_all()


def test_a_real_trace_swing_migrates_cluster_to_lambda_and_back_with_no_failed_request(
    lambda_stack: dict[str, Any],
) -> None:
    stack = lambda_stack
    watcher: Watcher = stack["watcher"]
    replay: LoadReplay = stack["replay"]
    wait_placed(watcher, "cluster", timeout=60)
    time.sleep(max(0.0, stack["start"] - time.time()))
    replay.start()

    on_lambda = wait_placed(watcher, "lambda", timeout=240)
    url = on_lambda["targets"]["lambda"]["endpoint"]
    assert ".lambda-url.us-east-1.on.aws" in url, url  # what moto published, as AWS would: the router signs for it
    final = wait_placed(watcher, "cluster", timeout=240)
    replay.join(timeout=max(0.0, stack["start"] + len(stack["rates"]) * STEP_SECONDS + 30 - time.time()))
    replay.stop()

    summary = replay.summary()
    failures = replay.failures()
    print(
        f"\nreplayed {summary.requests} requests, {summary.failed} failed, p99 {summary.p99_ms} ms, "
        f"served by {summary.served_by}"
    )
    assert not failures, f"{len(failures)} failed requests, first: {failures[:5]}"
    assert summary.served_by.get("cluster-model", 0) > 0 and summary.served_by.get("lambda-model", 0) > 0
    assert final["lastMigration"]["outcome"] == "Succeeded"
    assert (final["lastMigration"]["source"], final["lastMigration"]["target"]) == ("lambda", "cluster")
    weights = [(o.weights.get("cluster", 0), o.weights.get("lambda", 0)) for o in watcher.seen if o.weights]
    assert (0, 100) in weights and weights[-1] == (100, 0), weights
