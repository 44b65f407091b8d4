"""Status is not routing input (issue 18, item 2): the router sends a workload's traffic only to the workload's own
resources, checked against the names the operator creates them under, the provider's host suffixes and the allowed
AWS accounts and regions. A status patched to the cloud metadata server, the router's admin port, another team's
Service or a foreign function ARN is refused, and the route the router serves stays what it was.

The same checks on the real apiserver and a real Envoy: ``test_a_patched_status_never_reaches_envoys_config``.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from inference_placement.api.names import cloud_run_service_id, lambda_function_name
from inference_placement.api.spec import TargetName
from inference_placement.api.status import InferenceWorkloadStatus, TargetResourceStatus, TargetsStatus
from inference_placement.api.workload import WorkloadKey
from inference_placement.controller.router_sync import RouterSync
from inference_placement.routing.model import (
    CloudRunUpstream,
    EndpointsConfig,
    LambdaUpstream,
    Route,
    RouteError,
    ServiceUpstream,
    UpstreamTrust,
    route_for,
)
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cluster import KubeCluster
from tests.plugins.envoy import EnvoyRouter, HttpUpstreams
from tests.plugins.operator import OperatorProcess, wait_for

C, R, L = TargetName.CLUSTER, TargetName.CLOUDRUN, TargetName.LAMBDA
NS, NAME = "team-a", "embedder"
ACCOUNT = "123456789012"
FOREIGN = "999999999999"
FUNCTION = lambda_function_name(NS, NAME)
OWN_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{FUNCTION}:live"
OWN_URL = "https://4f3e2d1c0b.lambda-url.us-east-1.on.aws/"
OWN_CLOUDRUN = f"https://{cloud_run_service_id(NS, NAME)}-123456789012.us-central1.run.app"
OWN_SERVICE = f"http://{NAME}-model.{NS}.svc:8080"
TRUST = UpstreamTrust(lambda_accounts=frozenset({ACCOUNT}), lambda_regions=frozenset({"us-east-1"}))
CONFIG = EndpointsConfig(trust=TRUST)


def _status(target: TargetName, *, endpoint: str | None = None, name: str | None = None) -> InferenceWorkloadStatus:
    entry = TargetResourceStatus(name=name, endpoint=endpoint, ready=True)
    targets = TargetsStatus(**{"lambda_" if target is L else target.value: entry})
    return InferenceWorkloadStatus(placement=target, targets=targets)


def test_the_workloads_own_resources_are_routed() -> None:
    assert isinstance(
        route_for(NS, NAME, _status(C, endpoint=OWN_SERVICE), CONFIG).backends[0].upstream, ServiceUpstream
    )
    fqdn = f"http://{NAME}-model.{NS}.svc.cluster.local:8080"
    assert isinstance(route_for(NS, NAME, _status(C, endpoint=fqdn), CONFIG).backends[0].upstream, ServiceUpstream)
    cloudrun = route_for(NS, NAME, _status(R, endpoint=OWN_CLOUDRUN), CONFIG).backends[0].upstream
    assert isinstance(cloudrun, CloudRunUpstream) and cloudrun.address.tls
    lam = route_for(NS, NAME, _status(L, name=OWN_ARN, endpoint=OWN_URL), CONFIG).backends[0].upstream
    assert isinstance(lam, LambdaUpstream) and lam.region == "us-east-1" and lam.address.tls
    assert lam.url_host == OWN_URL.removeprefix("https://").rstrip("/")


@pytest.mark.parametrize(
    ("target", "endpoint", "name", "why"),
    [
        pytest.param(C, "http://169.254.169.254:80", None, "IP address", id="cluster-metadata-ip"),
        pytest.param(C, "http://127.0.0.1:9901", None, "IP address", id="cluster-router-admin-port"),
        pytest.param(C, "http://metadata.google.internal:80", None, "model Service", id="cluster-metadata-name"),
        pytest.param(C, f"http://{NAME}-model.team-b.svc:8080", None, "model Service", id="cluster-other-namespace"),
        pytest.param(C, f"http://other-model.{NS}.svc:8080", None, "model Service", id="cluster-other-workload"),
        pytest.param(R, "https://169.254.169.254", None, "IP address", id="cloudrun-metadata-ip"),
        pytest.param(R, "http://127.0.0.1:9901", None, "IP address", id="cloudrun-router-admin-port"),
        pytest.param(R, f"http://{cloud_run_service_id(NS, NAME)}-1.us-central1.run.app", None, "https",
                     id="cloudrun-plain-http"),
        pytest.param(R, f"https://{cloud_run_service_id(NS, NAME)}-1.evil.example", None, "Cloud Run service",
                     id="cloudrun-foreign-suffix"),
        pytest.param(R, f"https://{cloud_run_service_id('team-b', NAME)}-1.us-central1.run.app", None,
                     "Cloud Run service", id="cloudrun-other-teams-service"),
        pytest.param(L, None, OWN_ARN.replace(ACCOUNT, FOREIGN), "not an allowed account", id="lambda-foreign-account"),
        pytest.param(L, None, OWN_ARN.replace("us-east-1", "eu-west-1"), "not an allowed region",
                     id="lambda-foreign-region"),
        pytest.param(L, None, OWN_ARN.replace(FUNCTION, lambda_function_name("team-b", NAME)),
                     "not this workload's function", id="lambda-other-teams-function"),
        pytest.param(L, None, "arn:aws:iam::123456789012:role/admin", "not a Lambda function ARN", id="lambda-not-arn"),
        pytest.param(L, "http://169.254.169.254", OWN_ARN, "not a Function URL", id="lambda-url-metadata-ip"),
        pytest.param(L, "https://4f3e2d1c0b.lambda-url.eu-west-1.on.aws/", OWN_ARN, "not a Function URL in us-east-1",
                     id="lambda-url-other-region"),
        pytest.param(L, "https://4f3e2d1c0b.lambda-url.us-east-1.on.aws.evil.example/", OWN_ARN, "not a Function URL",
                     id="lambda-url-foreign-suffix"),
    ],
)  # fmt: skip
def test_an_upstream_that_is_not_the_workloads_own_is_refused(
    target: TargetName, endpoint: str | None, name: str | None, why: str
) -> None:
    with pytest.raises(RouteError, match=re.escape(why)):
        route_for(NS, NAME, _status(target, endpoint=endpoint, name=name), CONFIG)


def test_a_refused_upstream_is_refused_at_weight_zero_too() -> None:
    """A migration at 0 % has its target's cluster in the router already: a bad one must not get there either."""
    status = _status(C, endpoint=OWN_SERVICE)
    bad = TargetResourceStatus(name=None, endpoint="http://169.254.169.254", ready=True)
    status = status.model_copy(update={"targets": status.targets.model_copy(update={"cloudrun": bad})})  # type: ignore[union-attr]
    from inference_placement.api.status import MigrationStatus, MigrationStep

    migration = MigrationStatus(
        source=C, target=R, step=MigrationStep.SHIFTING, traffic_percent=0, started_at="t", step_started_at="t"
    )
    with pytest.raises(RouteError, match="IP address"):
        route_for(NS, NAME, status.model_copy(update={"migration": migration}), CONFIG)


def test_a_function_outside_every_admins_lambda_target_is_not_routed() -> None:
    """With no inline cloud identity, every function a workload can have is in an admin's ServerlessTarget's account
    and region; the router checks a status's ARN against those (the router's own settings left open)."""
    from inference_placement.api.serverless_target import ServerlessTarget, ServerlessTargetSpec
    from inference_placement.controller.tenancy import TenancyCache

    tenancy = TenancyCache(None)
    spec = ServerlessTargetSpec.model_validate(
        {
            "provider": "lambda",
            "account": ACCOUNT,
            "regions": ["us-east-1"],
            "roleArn": f"arn:aws:iam::{ACCOUNT}:role/runtime",
            "allowedImages": [f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/"],
            "allowedNamespaces": {"names": [NS]},
        }
    )
    tenancy.load([ServerlessTarget(name="team-lambda", generation=1, spec=spec)])
    scope = tenancy.lambda_scope()
    assert scope == frozenset({(ACCOUNT, "us-east-1")})
    config = EndpointsConfig(trust=UpstreamTrust(lambda_scope=scope))
    assert isinstance(route_for(NS, NAME, _status(L, name=OWN_ARN, endpoint=OWN_URL), config).backends[0].upstream,
                      LambdaUpstream)  # fmt: skip
    for forged, why in (
        (OWN_ARN.replace(ACCOUNT, FOREIGN), FOREIGN),
        (OWN_ARN.replace("us-east-1", "eu-west-1"), "eu"),
    ):
        with pytest.raises(RouteError, match="no admin's ServerlessTarget allows"):
            route_for(NS, NAME, _status(L, name=forged, endpoint=OWN_URL), config)
        assert why in forged
    # where workloads may still bring their own identity (migrating), or the targets were never read, no such scope
    assert TenancyCache(None, allow_inline_cloud_identity=True).lambda_scope() is None
    unread = TenancyCache(None)
    unread._problem = "not read yet"
    assert unread.lambda_scope() is None


def test_an_admin_trusted_origin_is_routed_as_it_is() -> None:
    config = EndpointsConfig(trust=UpstreamTrust(trusted_origins=frozenset({"http://127.0.0.1:18080"})))
    route = route_for(NS, NAME, _status(R, endpoint="http://127.0.0.1:18080"), config)
    assert isinstance(route.backends[0].upstream, CloudRunUpstream)
    with pytest.raises(RouteError):
        route_for(NS, NAME, _status(R, endpoint="http://127.0.0.1:18081"), config)


class _Recorder:
    def __init__(self) -> None:
        self.applied: list[list[Route]] = []

    async def apply(self, routes: Any) -> None:
        self.applied.append(list(routes))


async def test_the_router_keeps_the_last_good_route_when_status_is_patched() -> None:
    recorder = _Recorder()
    sync = RouterSync(recorder, CONFIG)
    key = WorkloadKey(NS, NAME)

    def body(version: int, status: InferenceWorkloadStatus) -> dict[str, Any]:
        meta = {"name": NAME, "namespace": NS, "uid": "u1", "resourceVersion": str(version)}
        return {"metadata": meta, "status": status.to_wire()}

    sync.observe(key, body(1, _status(L, name=OWN_ARN)))
    assert await sync.sync()
    good = recorder.applied[-1]
    for version, patched in enumerate(
        [
            _status(L, name=OWN_ARN.replace(ACCOUNT, FOREIGN)),
            _status(C, endpoint="http://169.254.169.254"),
            _status(R, endpoint="http://127.0.0.1:9901"),
        ],
        start=2,
    ):
        sync.observe(key, body(version, patched))
        assert await sync.sync()
        assert recorder.applied[-1] == good
    assert len(recorder.applied) == 1, "nothing was re-applied: the router's config did not change"


# ---------------------------------------------------------------------------------------------- real components


def _files(router: EnvoyRouter) -> str:
    return "".join(p.read_text() for p in sorted(router.xds_dir.glob("*.json")))


def _config_dump(router: EnvoyRouter) -> str:
    with urllib.request.urlopen(f"{router.admin_url}/config_dump", timeout=5) as response:
        text: str = response.read().decode()
    return text


def _workload(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"image": "registry.example.com/m:1", "sizeMb": 300, "serviceSeconds": 0.02},
            "placement": {"allowedTargets": ["cloudrun"]},
            "cloudRun": {"project": "trust", "region": "us-central1", "maxInstances": 2},
        },
    }


@pytest.mark.cluster
def test_a_patched_status_never_reaches_envoys_config(
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    envoy_router: EnvoyRouter,
    http_upstreams: HttpUpstreams,
    cloudrun_standin: CloudRunStandin,
) -> None:
    service = http_upstreams.start("cloudrun-model")
    cloudrun_standin.service_url = service.url
    admin_port = envoy_router.admin_url.rsplit(":", 1)[1]
    operator = operator_factory(
        namespace,
        "--set", f"cloudrun.endpoint={cloudrun_standin.url}",
        "--set", "cloudrun.project=trust",
        "--set", "router.mode=files",
        "--set", f"router.xdsDir={envoy_router.xds_dir}",
        "--set", f"router.adminUrl={envoy_router.admin_url}",
        "--set", f"router.trustedOrigins={service.url}",
        "--set", f"router.lambdaAccounts={ACCOUNT}",
    )  # fmt: skip
    crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(_workload(namespace)))

    def status() -> dict[str, Any]:
        out = crd_installed.kubectl("get", "iw", NAME, "-n", namespace, "-o", "json", check=False)
        return dict(json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}

    wait_for(lambda: status().get("placement") == "cloudrun", timeout=60, what="placed on cloud run")
    wait_for(lambda: envoy_router.request(f"{NAME}.{namespace}.svc")[0] == 200, timeout=30, what="routed")
    before = _files(envoy_router)
    foreign_arn = f"arn:aws:lambda:us-east-1:{FOREIGN}:function:{lambda_function_name(namespace, NAME)}:live"
    patches = [
        {"targets": {"cloudrun": {"endpoint": "http://169.254.169.254:80"}}},
        {"targets": {"cloudrun": {"endpoint": f"http://127.0.0.1:{admin_port}"}}},
        {"placement": "lambda", "targets": {"lambda": {"name": foreign_arn, "ready": True}}},
    ]
    forbidden = ("169.254.169.254", f"127.0.0.1:{admin_port}", f'"port_value": {admin_port}', FOREIGN)
    for patch in patches:
        seen = operator.logs().count("untrusted upstream")
        crd_installed.kubectl(
            "patch", "iw", NAME, "-n", namespace, "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": patch}),
        )  # fmt: skip
        wait_for(
            lambda seen=seen: operator.logs().count("untrusted upstream") > seen,  # type: ignore[misc]
            timeout=30,
            what="the operator saw the patched status and refused it",
        )
        deadline = time.monotonic() + 4  # a few more fleet passes: nothing may reach the router meanwhile
        while time.monotonic() < deadline:
            files, dump = _files(envoy_router), _config_dump(envoy_router)
            for value in forbidden:
                assert value not in files and value not in dump, f"{value} reached the router after {patch}"
            time.sleep(0.5)
        assert _files(envoy_router) == before, "the router's routes changed"
        assert envoy_router.request(f"{NAME}.{namespace}.svc")[0] == 200
    crd_installed.kubectl("delete", "iw", NAME, "-n", namespace, "--timeout=60s")
