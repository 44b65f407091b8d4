"""The operator's configuration: the chart's PromQL file as shipped, and the typed ``--set`` settings (every key
lands in its typed field; an unknown key or a bad value is refused, naming it)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from inference_placement.controller.migration import MigrationTimings
from inference_placement.controller.runtime import build_router, load_promql_templates
from inference_placement.controller.settings import (
    OperatorSettings,
    SettingsError,
    build_settings,
    default_text,
    set_groups,
    set_keys,
)
from inference_placement.metrics.prometheus import PrometheusSource
from inference_placement.metrics.promql import PromQLTemplates

CHART_PROMQL = Path(__file__).resolve().parents[1] / "charts" / "inference-placement" / "files" / "promql.yaml"


def test_the_charts_promql_file_configures_the_source() -> None:
    templates, options = load_promql_templates(CHART_PROMQL)
    assert templates == PromQLTemplates()
    assert options == {"namespace_label": "namespace", "workload_label": "workload", "rate_window_seconds": 60}
    PrometheusSource("http://127.0.0.1:9", templates=templates, **options)  # accepted as constructor arguments


def test_the_history_of_the_idle_gap_plan_is_configured_in_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "promql.yaml"
    path.write_text("rateWindowSeconds: 6\nhistorySeconds: 600\nhistoryStepSeconds: 6\n")
    templates, options = load_promql_templates(path)
    assert options == {"rate_window_seconds": 6, "history_seconds": 600.0, "history_step_seconds": 6.0}
    source = PrometheusSource("http://127.0.0.1:9", templates=templates, step_seconds=2, range_seconds=60, **options)
    assert source.url == "http://127.0.0.1:9"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "promql.yaml"
    bad.write_text("requestRate: sum by ($by) (rate(x_total[$rate_window]))\nlatencyP95: x\n")
    with pytest.raises(ValueError, match="latencyP95"):
        load_promql_templates(bad)


# ----------------------------------------------------------------------------------------------- --set settings

# Every --set key: the text a user types, and where it lands in the typed settings with which value.
SET_TABLE: list[tuple[str, str, str, object]] = [
    ("router.mode", "files", "router.mode", "files"),
    ("router.url", "http://127.0.0.1:8080", "router.url", "http://127.0.0.1:8080"),
    ("router.xdsDir", "/tmp/xds", "router.xds_dir", Path("/tmp/xds")),
    ("router.adminUrl", "http://127.0.0.1:9901", "router.admin_url", "http://127.0.0.1:9901"),
    ("router.envoyBinary", "/usr/bin/envoy", "router.envoy_binary", "/usr/bin/envoy"),
    ("router.clusterDomain", "corp.local", "router.cluster_domain", "corp.local"),
    ("router.gcpMetadata", "127.0.0.1:9", "router.gcp_metadata", "127.0.0.1:9"),
    (
        "router.addressOverrides",
        "http://m.ns.svc:8080=http://127.0.0.1:9, https://x.a.run.app=http://127.0.0.1:10",
        "router.address_overrides",
        {"http://m.ns.svc:8080": "http://127.0.0.1:9", "https://x.a.run.app": "http://127.0.0.1:10"},
    ),
    ("router.lambdaEndpoint", "http://127.0.0.1:5000", "router.lambda_endpoint", "http://127.0.0.1:5000"),
    ("router.lambdaPassthrough", "true", "router.lambda_passthrough", True),
    ("router.lambdaUrlEndpoint", "http://127.0.0.1:5001", "router.lambda_url_endpoint", "http://127.0.0.1:5001"),
    ("router.namespace", "edge", "router.namespace", "edge"),
    ("router.image", "envoyproxy/envoy:v1.41.0", "router.image", "envoyproxy/envoy:v1.41.0"),
    ("router.replicas", "3", "router.replicas", 3),
    ("router.imagePullPolicy", "Never", "router.image_pull_policy", "Never"),
    ("router.serviceAccount", "router-sa", "router.service_account", "router-sa"),
    ("router.automountToken", "true", "router.automount_token", True),
    ("router.confirmTimeoutSeconds", "90", "router.confirm_timeout_seconds", 90.0),
    ("router.spillover", "true", "router.spillover", True),
    ("router.overflowPort", "9911", "router.overflow_port", 9911),
    ("router.activatorImage", "ghcr.io/acme/operator:1", "router.activator_image", "ghcr.io/acme/operator:1"),
    ("router.activatorPort", "9906", "router.activator_port", 9906),
    (
        "router.activatorMetricsUrl",
        "http://127.0.0.1:9904/metrics",
        "router.activator_metrics_url",
        "http://127.0.0.1:9904/metrics",
    ),
    ("router.podsByAddress", "false", "router.pods_by_address", False),
    ("router.wakePollSeconds", "0.25", "router.wake_poll_seconds", 0.25),
    ("router.wakeKeepSeconds", "20", "router.wake_keep_seconds", 20.0),
    ("router.cloudRunHostSuffixes", ".run.app,.a.dev", "router.cloud_run_host_suffixes", (".run.app", ".a.dev")),
    ("router.lambdaAccounts", "123456789012", "router.lambda_accounts", ("123456789012",)),
    ("router.lambdaRegions", "us-east-1,eu-west-1", "router.lambda_regions", ("us-east-1", "eu-west-1")),
    ("router.trustedOrigins", "http://127.0.0.1:9", "router.trusted_origins", ("http://127.0.0.1:9",)),
    ("router.latencyBucketsMs", "50,100,250,1000", "router.latency_buckets_ms", (50.0, 100.0, 250.0, 1000.0)),
    ("sweep.intervalSeconds", "30", "sweep.interval_seconds", 30.0),
    ("sweep.dryRun", "true", "sweep.dry_run", True),
    ("sweep.lambdaRegions", "us-east-1,eu-west-1", "sweep.lambda_regions", ("us-east-1", "eu-west-1")),
    ("sweep.cloudRunRegions", "europe-west4", "sweep.cloud_run_regions", ("europe-west4",)),
    ("tenancy.allowInlineCloudIdentity", "true", "tenancy.allow_inline_cloud_identity", True),
    ("cloudrun.enabled", "yes", "cloudrun.enabled", True),
    ("cloudrun.project", "acme", "cloudrun.project", "acme"),
    ("cloudrun.credentialsDir", "/var/run/gcp", "cloudrun.credentials_dir", Path("/var/run/gcp")),
    ("cloudrun.endpoint", "http://127.0.0.1:8090", "cloudrun.endpoint", "http://127.0.0.1:8090"),
    ("cloudrun.anonymous", "false", "cloudrun.anonymous", False),
    ("cloudrun.requestTimeoutSeconds", "2.5", "cloudrun.request_timeout_seconds", 2.5),
    ("lambda.enabled", "1", "lambda_.enabled", True),
    ("lambda.region", "eu-west-1", "lambda_.region", "eu-west-1"),
    ("lambda.credentialsDir", "/var/run/aws", "lambda_.credentials_dir", Path("/var/run/aws")),
    ("lambda.endpoint", "http://127.0.0.1:5000", "lambda_.endpoint", "http://127.0.0.1:5000"),
    ("lambda.readTimeoutSeconds", "4", "lambda_.read_timeout_seconds", 4.0),
    ("migration.shiftSteps", "5, 25,100", "migration.shift_steps_percent", (5, 25, 100)),
    ("migration.stepHoldSeconds", "0.5", "migration.step_hold_seconds", 0.5),
    ("migration.drainSeconds", "0", "migration.drain_seconds", 0.0),
    ("migration.provisionTimeoutSeconds", "1200", "migration.provision_timeout_seconds", 1200.0),
    ("migration.trafficMaxFailureShare", "0.01", "migration.traffic_max_failure_share", 0.01),
    ("migration.trafficMaxSlowShare", "0.5", "migration.traffic_max_slow_share", 0.5),
    ("migration.trafficMinRequests", "3", "migration.traffic_min_requests", 3),
    ("metrics.timeoutSeconds", "3", "metrics.timeout_seconds", 3.0),
    ("metrics.bearerTokenFile", "/var/run/token", "metrics.bearer_token_file", Path("/var/run/token")),
    ("metrics.basicAuthUsername", "ops", "metrics.basic_auth_username", "ops"),
    ("metrics.basicAuthPasswordFile", "/etc/pw", "metrics.basic_auth_password_file", Path("/etc/pw")),
    ("metrics.headers", "X-Scope-OrgID=a,X-B=b", "metrics.headers", {"X-Scope-OrgID": "a", "X-B": "b"}),
    ("metrics.caFile", "/etc/ca.pem", "metrics.ca_file", Path("/etc/ca.pem")),
    ("router.ownerConfigMap", "release-config", "router.owner_config_map", "release-config"),
    ("cluster.imagePullPolicy", "IfNotPresent", "cluster.image_pull_policy", "IfNotPresent"),
    ("cluster.dryRun", "on", "cluster.dry_run", True),
    ("cluster.gpuRequest", "dra", "cluster.gpu_request", "dra"),
    ("cluster.gpuNodeLabels", "karpenter-aws", "cluster.gpu_node_labels", "karpenter-aws"),
    ("cluster.spotNodeLabels", "eks", "cluster.spot_node_labels", "eks"),
    ("cluster.draGpuDeviceClass", "gpu.example.com", "cluster.dra_gpu_device_class", "gpu.example.com"),
    ("cluster.draMigDeviceClass", "mig.example.com", "cluster.dra_mig_device_class", "mig.example.com"),
    ("cluster.draSharingStrategy", "TimeSlicing", "cluster.dra_sharing_strategy", "TimeSlicing"),
]

# Keys that cannot stand alone (router.mode=files needs both of its directories).
COMPANIONS = {
    "router.mode": ["router.xdsDir=/tmp/xds", "router.adminUrl=http://127.0.0.1:9901"],
    "router.activatorPort": ["router.activatorMetricsUrl=http://127.0.0.1:9904/metrics"],
    "metrics.basicAuthUsername": ["metrics.basicAuthPasswordFile=/etc/pw"],
    "metrics.basicAuthPasswordFile": ["metrics.basicAuthUsername=ops"],
}


def _at(settings: OperatorSettings, path: str) -> object:
    value: object = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("key", "text", "path", "expected"), SET_TABLE, ids=[row[0] for row in SET_TABLE])
def test_each_set_key_lands_typed_in_its_field(key: str, text: str, path: str, expected: object) -> None:
    settings = build_settings([f"{key}={text}", *COMPANIONS.get(key, [])])
    assert _at(settings, path) == expected
    assert _at(OperatorSettings(), path) != expected, "the table must set a value other than the default"


def test_the_table_covers_every_key_the_settings_accept() -> None:
    known = {f"{group}.{key}" for group, model in set_groups().items() for key in set_keys(model)}
    assert {row[0] for row in SET_TABLE} == known
    assert set(set_groups()) == {"router", "cloudrun", "lambda", "migration", "metrics", "cluster", "sweep", "tenancy"}


def test_every_field_has_a_docstring_and_seconds_are_in_the_names() -> None:
    models: list[type[BaseModel]] = [OperatorSettings, *set_groups().values()]
    for model in models:
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no docstring"
            if "seconds" in info.description.lower().split("(")[0] and info.annotation in (float, int):
                assert name.endswith("_seconds"), f"{model.__name__}.{name}: a duration needs _seconds"


STATED_DEFAULT = re.compile(r"Default:?\s+(?:``([^`]*)``|(unset|none)\b|(\d+(?:\.\d+)?))")
DEFAULT_IN_WORDS = {"router.image"}  # the pinned Envoy image, named by its constant


def test_each_keys_docstring_states_its_default_truly() -> None:
    for group, model in set_groups().items():
        for key, (name, info) in set_keys(model).items():
            assert info.description is not None and "Default" in info.description, f"{group}.{key}"
            stated = STATED_DEFAULT.search(info.description)
            if f"{group}.{key}" in DEFAULT_IN_WORDS:
                assert stated is None
                continue
            assert stated is not None, f"{group}.{key}: no default stated"
            text = next(part for part in stated.groups() if part is not None)
            assert text == default_text(info), f"{group}.{key} ({name}): docstring says {text}"


def test_defaults_are_the_ones_the_components_had() -> None:
    settings = OperatorSettings()
    assert settings.migration.timings() == MigrationTimings()
    assert settings.router.mode == "off" and settings.router.replicas == 2
    assert settings.router.confirm_timeout_seconds == 180.0 and settings.router.cluster_domain == "cluster.local"
    assert settings.metrics.timeout_seconds == 10.0 and settings.lambda_.region == "us-east-1"
    assert not settings.cloudrun.active and not settings.lambda_.active and not settings.cluster.dry_run


def test_an_endpoint_alone_turns_a_cloud_target_on() -> None:
    settings = build_settings(["cloudrun.endpoint=http://127.0.0.1:1", "lambda.endpoint=http://127.0.0.1:2"])
    assert settings.cloudrun.active and settings.lambda_.active


def test_an_empty_value_means_the_default_and_the_last_value_wins() -> None:
    settings = build_settings(["router.replicas=5", "router.replicas=", "lambda.region=eu-west-1", "lambda.region=ap"])
    assert settings.router.replicas == 2 and settings.lambda_.region == "ap"


@pytest.mark.parametrize(
    ("item", "named"),
    [
        (
            "router.replica=3",
            r"router\.replica: unknown key 'replica' of router \(known: activatorImage, .*addressOverrides, .*"
            r"replicas, .*\); did you mean router\.replicas\?",
        ),
        ("router.xds_dir=/x", r"unknown key 'xds_dir' of router .*did you mean router\.xdsDir\?"),  # camelCase only
        ("migration.holdSeconds=3", r"migration\.holdSeconds: unknown key .*drainSeconds.*stepHoldSeconds"),
        (
            "cloudRun.enabled=true",
            r"cloudRun\.enabled: unknown group 'cloudRun' \(groups: cloudrun, cluster, "
            r"lambda, metrics, migration, router, sweep, tenancy\)",
        ),
        ("tsdb.path=/x", r"unknown group 'tsdb'"),
        ("mode=files", r"--set mode: unknown group 'mode'"),
        ("router", r"--set expects KEY=VALUE, got 'router'"),
    ],
)
def test_an_unknown_key_is_refused_by_name(item: str, named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        build_settings([item])


@pytest.mark.parametrize(
    ("item", "named"),
    [
        ("router.replicas=two", r"--set router\.replicas=two: .*valid integer.*; expected an integer >= 1"),
        ("router.replicas=0", r"--set router\.replicas=0: .*greater than or equal to 1"),
        ("router.mode=envoy", r"--set router\.mode=envoy: .*; expected one of `off`, `files`, `cluster`"),
        ("router.mode=files", r"--set router: router\.mode=files needs router\.xdsDir and router\.adminUrl"),
        ("router.url=ftp://x", r"--set router\.url=ftp://x: not an http\(s\) URL.*; expected an http\(s\) URL"),
        ("router.addressOverrides=http://a:1", r"router\.addressOverrides=http://a:1: expected PUBLISHED=URL"),
        ("router.lambdaPassthrough=maybe", r"router\.lambdaPassthrough=maybe: .*; expected true or false"),
        ("router.latencyBucketsMs=100,50", r"router\.latencyBucketsMs=100,50: .*"),
        ("router.confirmTimeoutSeconds=-1", r"router\.confirmTimeoutSeconds=-1: .*; expected a number > 0"),
        ("cluster.imagePullPolicy=Sometimes", r"cluster\.imagePullPolicy=Sometimes: .*`Always`, `IfNotPresent`"),
        ("migration.shiftSteps=50,10,100", r"migration\.shiftSteps=50,10,100: must rise strictly to 100"),
        ("migration.shiftSteps=10,50", r"migration\.shiftSteps=10,50: must rise strictly to 100"),
        ("migration.shiftSteps=ten,100", r"migration\.shiftSteps=ten,100: .*valid integer"),
        ("migration.stepHoldSeconds=soon", r"migration\.stepHoldSeconds=soon: .*; expected a number >= 0"),
        ("metrics.timeoutSeconds=0", r"metrics\.timeoutSeconds=0: .*; expected a number > 0"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key_and_what_it_expects(item: str, named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        build_settings([item])


def test_a_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(SettingsError, match=r"--tick-seconds=0: .*; expected a number > 0"):
        build_settings(tick_seconds=0)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--set", "router.replica=3"], "did you mean router.replicas"),
        (["--set", "lambda.readTimeoutSeconds=slow"], "lambda.readTimeoutSeconds=slow"),
        (["--set", "novalue"], "--set expects KEY=VALUE"),
    ],
)
def test_the_run_command_exits_with_a_usage_error_naming_the_key(args: list[str], named: str) -> None:
    from typer.testing import CliRunner

    from inference_placement.cli import app

    result = CliRunner().invoke(app, ["run", *args])
    assert result.exit_code == 2, result.output
    assert named in " ".join(result.output.replace("│", " ").split())


def test_the_router_is_built_from_its_typed_group(tmp_path: Path) -> None:
    from inference_placement.routing.xds_files import EnvoyXdsApplier

    assert build_router(OperatorSettings().router) is None
    settings = build_settings(
        [
            "router.mode=files",
            f"router.xdsDir={tmp_path}",
            "router.adminUrl=http://127.0.0.1:9901/",
            "router.clusterDomain=corp.local",
            "router.gcpMetadata=127.0.0.1:9",
            "router.addressOverrides=http://m.ns.svc:8080=http://127.0.0.1:9",
            "router.lambdaEndpoint=http://127.0.0.1:5000",
            "router.lambdaPassthrough=true",
        ]
    )
    router = build_router(settings.router)
    assert router is not None and isinstance(router.applier, EnvoyXdsApplier)
    assert router.applier.xds_dir == tmp_path and router.applier.admin_url == "http://127.0.0.1:9901"
    assert router.applier.settings.cluster_domain == "corp.local" == router.cluster_domain
    assert (router.applier.settings.gcp_metadata.host, router.applier.settings.gcp_metadata.port) == ("127.0.0.1", 9)
    assert router.endpoints.address_overrides == {"http://m.ns.svc:8080": "http://127.0.0.1:9"}
    assert router.endpoints.lambda_endpoint == "http://127.0.0.1:5000" and router.endpoints.lambda_payload_passthrough


async def test_the_cluster_router_runs_the_overflow_listener_and_the_activator_only_when_configured() -> None:
    """``router.spillover`` gives the in-cluster router's bootstrap its overflow listener (9905 by default, or
    ``router.overflowPort``); ``router.activatorImage`` adds the activator container (and Envoy's activator port),
    and nothing else changes: without it the Pod is Envoy alone."""
    from kubernetes_asyncio import client as k8s

    from inference_placement.controller.router_cluster import ClusterRouterApplier
    from inference_placement.routing.envoy import render_bootstrap

    async with k8s.ApiClient() as api:
        plain = build_router(build_settings(["router.mode=cluster"]).router, api)
        spill = build_router(build_settings(["router.mode=cluster", "router.spillover=true"]).router, api)
        both = build_router(
            build_settings(
                [
                    "router.mode=cluster",
                    "router.spillover=true",
                    "router.overflowPort=9911",
                    "router.activatorImage=ghcr.io/acme/operator:1",
                    "router.imagePullPolicy=Never",
                ]
            ).router,
            api,
        )
    appliers = [r.applier if r is not None else None for r in (plain, spill, both)]
    assert all(isinstance(a, ClusterRouterApplier) for a in appliers)
    plain_applier, spill_applier, both_applier = (a for a in appliers if isinstance(a, ClusterRouterApplier))

    def listeners(applier: ClusterRouterApplier) -> dict[str, int]:
        bootstrap = render_bootstrap(applier.settings)
        return {
            x["name"]: x["address"]["socket_address"]["port_value"] for x in bootstrap["static_resources"]["listeners"]
        }

    def containers(applier: ClusterRouterApplier) -> dict[str, dict[str, object]]:
        pod = applier.render_deployment()["spec"]["template"]["spec"]
        return {c["name"]: c for c in pod["containers"]}

    assert "overflow" not in listeners(plain_applier) and plain_applier.settings.overflow_port is None
    assert listeners(spill_applier)["overflow"] == 9905
    assert listeners(both_applier)["overflow"] == 9911
    assert list(containers(plain_applier)) == list(containers(spill_applier)) == ["envoy"]
    assert spill_applier.settings.activator_port is None
    pod = containers(both_applier)
    assert list(pod) == ["envoy", "activator"]
    assert pod["activator"]["image"] == "ghcr.io/acme/operator:1"
    assert "--listen-port=9906" in _strings(pod["activator"]["args"])
    assert both_applier.settings.activator_port == 9906
    assert {c["imagePullPolicy"] for c in pod.values()} == {"Never"}
    # an activator image with no port for Envoy to reach it is refused
    with pytest.raises(ValueError, match="activator_port"):
        ClusterRouterApplier(api, spill_applier.settings, namespace="x", image="envoy", activator_image="op:1")


def _strings(value: object) -> list[str]:
    assert isinstance(value, list)
    return [str(item) for item in value]


def test_every_set_key_the_repository_passes_is_known() -> None:
    """The demo, the benchmarks and the tests start the operator with ``"--set", "KEY=..."``: each key exists."""
    repo = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"""["']--set["'],\s*f?["']([^"'=]+)=""")
    known = {f"{group}.{key}" for group, model in set_groups().items() for key in set_keys(model)}
    found: dict[str, set[str]] = {}
    for source in [
        *(repo / "operator").rglob("*.py"),
        *(repo / "tests").rglob("*.py"),
        *(repo / "bench").rglob("*.py"),
    ]:
        if source == Path(__file__).resolve():  # this file names unknown keys on purpose
            continue
        for key in pattern.findall(source.read_text(encoding="utf-8")):
            found.setdefault(key, set()).add(str(source.relative_to(repo)))
    assert len(found) >= 10, found  # the pattern still finds the call sites
    unknown = {key: sorted(where) for key, where in found.items() if key not in known}
    assert not unknown, unknown


def test_the_cloud_targets_are_built_from_their_typed_groups(tmp_path: Path) -> None:
    from inference_placement.api.spec import TargetName
    from inference_placement.controller.runtime import _serverless_targets
    from inference_placement.targets.aws_lambda import LambdaTarget
    from inference_placement.targets.cloudrun import CloudRunTarget
    from inference_placement.targets.credentials import SecretRedactingFilter

    assert _serverless_targets(OperatorSettings().cloudrun, OperatorSettings().lambda_, SecretRedactingFilter()) == {}
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "aws_access_key_id").write_text("AKIAEXAMPLEEXAMPLE00")
    (aws / "aws_secret_access_key").write_text("a-secret-that-must-not-be-logged")
    (aws / "..data").write_text("the kubelet's bookkeeping")
    settings = build_settings(
        [
            "cloudrun.endpoint=http://127.0.0.1:8090",
            "cloudrun.project=acme",
            "cloudrun.requestTimeoutSeconds=2.5",
            "lambda.enabled=true",
            "lambda.region=eu-west-1",
            "lambda.readTimeoutSeconds=4",
            f"lambda.credentialsDir={aws}",
        ]
    )
    redactor = SecretRedactingFilter()
    targets = _serverless_targets(settings.cloudrun, settings.lambda_, redactor)
    cloudrun, lambda_ = targets[TargetName.CLOUDRUN], targets[TargetName.LAMBDA]
    assert isinstance(cloudrun, CloudRunTarget) and isinstance(lambda_, LambdaTarget)
    assert cloudrun.request_timeout_seconds == 2.5
    assert lambda_.default_region == "eu-west-1" and lambda_.endpoint_url is None
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key a-secret-that-must-not-be-logged", None, None)
    redactor.filter(record)
    assert "a-secret-that-must-not-be-logged" not in record.getMessage()
