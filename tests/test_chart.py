"""The Helm chart: lint, template, schema, least-privilege RBAC, its copies of generated files, the dashboard, and a
server-side dry-run apply of the rendered manifests against the real local apiserver.

helm comes from PATH, ``$INFERENCE_PLACEMENT_HELM``, or ``e2e/helm.sh`` (the PyPI wheel named in DOMAIN.md, cached).
When it cannot be had these tests fail under ``CI=true`` and skip elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any, cast

import click
import pytest
import yaml

from inference_placement.api.crd import render_crd_yaml
from inference_placement.api.spec import InferenceWorkloadSpec
from inference_placement.controller.settings import build_settings
from inference_placement.controller.telemetry import Telemetry
from inference_placement.metrics.promql import ROUTER_JOB, PromQLTemplates
from inference_placement.policy.price_book import default_price_book, load_price_book
from inference_placement.routing.envoy import STATS_PATH, EnvoySettings, parse_latency_buckets, render_bootstrap
from inference_placement.routing.manifests import (
    render_configmap,
    render_router_deployment,
    render_router_service,
)
from tests.plugins.cluster import KUBERNETES_VERSION, REPO_ROOT, KubeCluster

CHART = REPO_ROOT / "charts" / "inference-placement"
HELM_SCRIPT = REPO_ROOT / "e2e" / "helm.sh"
Manifest = dict[str, Any]

# Values that switch on every optional part of the chart (namespaced RBAC, credentials, workload identity, ...).
FULL_VALUES = [
    "operator.watchNamespaces={team-a,team-b}",
    "operator.prometheusUrl=http://prometheus.monitoring:9090",
    "operator.settings.cluster\\.imagePullPolicy=IfNotPresent",
    "cloudRun.enabled=true",
    "cloudRun.project=acme-ml-prod",
    "cloudRun.credentials.existingSecret=gcp-key",
    "lambda.enabled=true",
    "lambda.region=eu-west-1",
    "lambda.credentials.existingSecret=aws-key",
    "lambda.workloadIdentity.roleArn=arn:aws:iam::123456789012:role/inference-placement",
    "cloudRun.workloadIdentity.gcpServiceAccount=placement@acme-ml-prod.iam.gserviceaccount.com",
    "serviceMonitor.enabled=true",
    "grafanaDashboard.enabled=true",
]


# ----------------------------------------------------------------------------------------------- helm


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@cache
def _find_helm() -> tuple[str | None, str]:
    explicit = os.environ.get("INFERENCE_PLACEMENT_HELM")
    if explicit:
        return explicit, ""
    on_path = shutil.which("helm")
    if on_path:
        return on_path, ""
    try:
        done = subprocess.run(
            ["bash", str(HELM_SCRIPT), "--path"], capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        return None, "e2e/helm.sh timed out"
    path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not path or not Path(path).is_file():
        return None, f"e2e/helm.sh could not fetch helm: {done.stderr.strip()[-2000:]}"
    return path, ""


def helm_binary() -> str:
    """Path of helm; fails in CI and skips elsewhere when it cannot be had."""
    path, problem = _find_helm()
    if path is None:
        _unavailable(f"helm unavailable: {problem}")
    assert path is not None
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if args and args[0] in ("template", "lint") and "--kube-version" not in args:
        # offline, helm assumes its own client-go's version (v1.35 for helm 4.1), below the chart's kubeVersion floor
        args = (*args, "--kube-version", KUBERNETES_VERSION)
    done = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def render_chart(
    release: str = "ip",
    namespace: str = "inference-placement",
    values: Sequence[str] = (),
    *,
    include_crds: bool = False,
) -> list[Manifest]:
    """``helm template`` parsed into manifests (None documents dropped)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for value in values:
        args += ["--set", value]
    if include_crds:
        args.append("--include-crds")
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def by_kind(manifests: Sequence[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: Sequence[Manifest], kind: str) -> Manifest:
    found = by_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(manifests: Sequence[Manifest]) -> dict[str, Any]:
    deployment = one(manifests, "Deployment")
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


# ----------------------------------------------------------------------------------------------- lint and template


@pytest.mark.parametrize("values", [pytest.param([], id="defaults"), pytest.param(FULL_VALUES, id="everything-on")])
def test_helm_lint_is_clean(values: list[str]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for value in values:
        args += ["--set", value]
    done = helm(*args, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


def test_template_renders_a_hardened_operator_deployment() -> None:
    manifests = render_chart()
    assert _workload_crd(manifests)["kind"] == "CustomResourceDefinition"
    kinds = sorted(m["kind"] for m in manifests if m["kind"] != "CustomResourceDefinition")
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "NetworkPolicy",
        ]
    )
    deployment = one(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    main = container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert main["resources"]["requests"]["cpu"] and main["resources"]["requests"]["memory"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"health": 8081, "metrics": 9090}
    args = main["args"]
    assert "--price-book=/etc/inference-placement/price-book.yaml" in args
    assert "--health-port=8081" in args and "--metrics-port=9090" in args
    assert not any(a.startswith("--peering") for a in args), "kopf peering pauses equal replicas: off by default"
    # two replicas, one acting: the Lease (in the release namespace, named after the release), its RBAC, a PDB and
    # the replicas spread over nodes
    fullname = deployment["metadata"]["name"]
    assert f"--leader-election-id={fullname}" in args and "--leader-election-namespace=inference-placement" in args
    assert "--lease-duration-seconds=15" in args and "--renew-deadline-seconds=10" in args
    assert "--retry-period-seconds=2" in args
    lease_rules = one(manifests, "Role")["rules"]
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]} in lease_rules
    named = {"resourceNames": [fullname], "verbs": ["get", "patch"]}
    assert any(named.items() <= rule.items() for rule in lease_rules), lease_rules
    pdb = one(manifests, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"] == deployment["spec"]["selector"]
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not any(a.startswith("--namespace") for a in args), "cluster-wide by default"
    env = {e["name"]: e for e in main["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # kopf's peer identity
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # the Lease identity
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert "/tmp" in mounts and mounts["/etc/inference-placement"]["readOnly"] is True
    assert all("subPath" not in m for m in main["volumeMounts"]), "subPath mounts never see ConfigMap updates"
    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == one(manifests, "ServiceAccount")["metadata"]["name"]


# Every value that makes the chart pass `--set` options, including settings given through `operator.settings`.
ROUTER_AND_SETTINGS = [
    *FULL_VALUES,
    "router.enabled=true",
    "operator.settings.migration\\.shiftSteps=25\\,100",
    "operator.settings.migration\\.stepHoldSeconds=5",
    "operator.settings.router\\.confirmTimeoutSeconds=90",
    "operator.settings.cluster\\.dryRun=true",
]


def _run_settings(values: Sequence[str]) -> tuple[list[str], Any]:
    """The Deployment's args, and the settings ``inference-placement run`` builds from the image's ENTRYPOINT plus
    those args (a usage error raises ``typer.BadParameter``: the operator exits with it, code 2)."""
    import typer.main

    from inference_placement.cli import app
    from inference_placement.controller.cli import settings_from_flags

    entrypoint_line = next(
        line for line in (REPO_ROOT / "Dockerfile").read_text().splitlines() if line.startswith("ENTRYPOINT")
    )
    entrypoint = json.loads(entrypoint_line.removeprefix("ENTRYPOINT").strip())
    assert entrypoint[:2] == ["inference-placement", "run"]
    args = container(render_chart(values=values))["args"]
    command = cast(click.Group, typer.main.get_command(app))
    run = command.commands["run"]
    context = run.make_context("run", [*entrypoint[2:], *args])
    assert context.params["price_book"] is not None and context.params["tick_seconds"] == 30
    assert context.params["log_level"] == "info"  # operator.logLevel, a choice of --log-level
    logging_flags = ("log_format", "log_level", "verbose")
    flags = {name: value for name, value in context.params.items() if name not in logging_flags}
    return args, settings_from_flags(**flags)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([], id="defaults"),
        pytest.param(FULL_VALUES, id="everything-on"),
        pytest.param(ROUTER_AND_SETTINGS, id="router-and-settings"),
    ],
)
def test_image_entrypoint_plus_chart_args_parse_as_the_run_command(values: list[str]) -> None:
    """The Dockerfile's ENTRYPOINT with the Deployment's args is a valid ``inference-placement run`` invocation, and
    every ``--set`` key the chart passes is one the operator's typed settings accept."""
    args, settings = _run_settings(values)
    assert settings.tick_seconds == 30
    passed = [arg.removeprefix("--set=") for arg in args if arg.startswith("--set=")]
    if values:
        assert passed, "the chart passes --set options with these values"
    for item in passed:  # each one also parses on its own (not only as part of the whole)
        build_settings([item])


def test_chart_set_options_arrive_typed() -> None:
    _, settings = _run_settings(ROUTER_AND_SETTINGS)
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.cloudrun.enabled and settings.cloudrun.project == "acme-ml-prod"
    assert settings.cloudrun.credentials_dir == Path("/var/run/secrets/inference-placement/cloudrun")
    assert settings.lambda_.enabled and settings.lambda_.region == "eu-west-1"
    assert settings.lambda_.credentials_dir == Path("/var/run/secrets/inference-placement/lambda")
    assert settings.cluster.image_pull_policy == "IfNotPresent" and settings.cluster.dry_run is True
    assert settings.router.mode == "cluster" and settings.router.namespace == "inference-placement"
    assert settings.router.replicas >= 1 and settings.router.confirm_timeout_seconds == 90.0
    assert settings.migration.shift_steps_percent == (25, 100) and settings.migration.step_hold_seconds == 5.0


PROMETHEUS_AUTH = [
    "operator.prometheusUrl=https://mimir.example/prometheus",
    "operator.prometheusAuth.existingSecret=prometheus-credentials",
    "operator.prometheusAuth.headers.X-Scope-OrgID=tenant-a",
    "operator.prometheusAuth.caConfigMap=prometheus-ca",
]


@pytest.mark.parametrize(
    ("values", "bearer"),
    [
        pytest.param([*PROMETHEUS_AUTH, "operator.prometheusAuth.bearerTokenKey=token"], True, id="bearer"),
        pytest.param([*PROMETHEUS_AUTH, "operator.prometheusAuth.basicAuth.username=ops"], False, id="basic"),
    ],
)
def test_prometheus_auth_values_arrive_as_settings_on_mounted_files(values: list[str], bearer: bool) -> None:
    """The credential Secret and the CA ConfigMap are mounted read-only (the kubelet updates them in place and the
    operator re-reads them per query), and the settings point at the mounted files."""
    args, settings = _run_settings(values)
    deployment = one(render_chart(values=values), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["prometheus-credentials"]["secret"]["secretName"] == "prometheus-credentials"
    assert volumes["prometheus-ca"]["configMap"]["name"] == "prometheus-ca"
    assert all(mounts[name]["readOnly"] for name in ("prometheus-credentials", "prometheus-ca"))
    secret_dir = Path(mounts["prometheus-credentials"]["mountPath"])
    metrics = settings.metrics
    assert metrics.headers == {"X-Scope-OrgID": "tenant-a"}
    assert metrics.ca_file == Path(mounts["prometheus-ca"]["mountPath"]) / "ca.crt"
    if bearer:
        assert metrics.bearer_token_file == secret_dir / "token" and metrics.basic_auth_username is None
    else:
        assert metrics.basic_auth_username == "ops" and metrics.basic_auth_password_file == secret_dir / "password"
    assert not any("tenant-a" in a and "Authorization" in a for a in args)
    # the Secret is mounted by the kubelet: the operator's RBAC gains no Secret access for it
    assert not any(
        "prometheus-credentials" in rule.get("resourceNames", [])
        for role in by_kind(render_chart(values=values), "Role")
        for rule in role["rules"]
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(["operator.prometheusAuth.bearerTokenKey=token"], "existingSecret is required", id="no-secret"),
        pytest.param(
            [
                *PROMETHEUS_AUTH,
                "operator.prometheusAuth.bearerTokenKey=t",
                "operator.prometheusAuth.basicAuth.username=u",
            ],
            "not both",
            id="bearer-and-basic",
        ),
        pytest.param(["operator.prometheusAuth.headers.X-Scope-OrgID=a\\,b"], "schema", id="comma-in-header"),
        pytest.param(["operator.prometheusAuth.headers.Bad\\ Name=a"], "schema", id="header-name"),
    ],
)
def test_inconsistent_prometheus_auth_values_fail_the_render(values: list[str], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        render_chart(values=values)


def test_a_mistyped_operator_setting_stops_the_operator_at_start_up() -> None:
    """``operator.settings`` is a free-form map in the chart; the operator refuses a key it does not know."""
    import typer

    with pytest.raises(typer.BadParameter, match=r"router\.replica\b.*did you mean router\.replicas"):
        _run_settings([*FULL_VALUES, "operator.settings.router\\.replica=3"])


def test_everything_on_wires_credentials_identity_and_namespaces() -> None:
    manifests = render_chart(values=FULL_VALUES)
    args = container(manifests)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--prometheus-url=http://prometheus.monitoring:9090" in args
    assert "--set=cloudrun.credentialsDir=/var/run/secrets/inference-placement/cloudrun" in args
    assert "--set=lambda.credentialsDir=/var/run/secrets/inference-placement/lambda" in args
    assert "--set=lambda.region=eu-west-1" in args and "--set=cloudrun.project=acme-ml-prod" in args
    assert "--set=cluster.imagePullPolicy=IfNotPresent" in args
    volumes = {v["name"]: v for v in one(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["lambda-credentials"]["secret"]["secretName"] == "aws-key"
    assert volumes["cloudrun-credentials"]["secret"]["secretName"] == "gcp-key"
    annotations = one(manifests, "ServiceAccount")["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].endswith(":role/inference-placement")
    assert annotations["iam.gke.io/gcp-service-account"].startswith("placement@")
    assert not by_kind(manifests, "KopfPeering") and not by_kind(manifests, "ClusterKopfPeering")  # off by default
    # the Lease stays in the release namespace whatever is watched
    assert "--leader-election-namespace=inference-placement" in args
    lease_role = next(r for r in by_kind(manifests, "Role") if r["metadata"]["name"].endswith("-leader-election"))
    assert lease_role["metadata"]["namespace"] == "inference-placement"


def test_kopf_peering_per_watched_namespace_with_one_replica() -> None:
    manifests = render_chart(values=[*FULL_VALUES, "peering.enabled=true", "replicaCount=1"])
    peerings = by_kind(manifests, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert not by_kind(manifests, "ClusterKopfPeering")
    monitor = one(manifests, "ServiceMonitor")
    assert all(e["honorLabels"] is True for e in monitor["spec"]["endpoints"]), "the workloads' namespace label"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    dashboard = next(m for m in by_kind(manifests, "ConfigMap") if "inference-placement.json" in m.get("data", {}))
    assert json.loads(dashboard["data"]["inference-placement.json"])["uid"] == "inference-placement"


def test_price_book_configmap_is_the_packaged_book_and_an_override_replaces_it() -> None:
    config = one(render_chart(), "ConfigMap")
    assert load_price_book(config["data"]["price-book.yaml"]) == default_price_book()
    custom = (REPO_ROOT / "operator" / "inference_placement" / "data" / "price-book.yaml").read_text()
    custom = custom.replace("cpu_vcpu_hour: 0.048", "cpu_vcpu_hour: 0.05")
    overridden = one(render_chart(values=[f"priceBook.content={_escape(custom)}"]), "ConfigMap")
    assert load_price_book(overridden["data"]["price-book.yaml"]).prices.cluster.cpu_vcpu_hour == 0.05


def _escape(text: str) -> str:
    """A value for ``helm --set`` (commas and backslashes are special there)."""
    return text.replace("\\", "\\\\").replace(",", "\\,")


def test_router_pod_monitor_scrapes_only_the_stats_port_as_the_default_templates_expect() -> None:
    assert not by_kind(render_chart(values=["router.enabled=true"]), "PodMonitor")
    manifests = render_chart(
        values=["router.enabled=true", "router.podMonitor.enabled=true", "router.latencyBucketsMs={100,250,500}"]
    )
    monitor = one(manifests, "PodMonitor")
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"], endpoint["honorLabels"]) == ("stats", STATS_PATH, True)
    assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": ROUTER_JOB}]
    assert f'job="{ROUTER_JOB}"' in (PromQLTemplates().router_up or "")
    # it selects the router Pods the operator renders, by their stats port's name
    pod = render_router_deployment()["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert "stats" in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    args = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--set=router.latencyBucketsMs=100,250,500" in args
    assert parse_latency_buckets("100,250,500") == (100.0, 250.0, 500.0)
    with pytest.raises(ValueError, match="latency"):
        parse_latency_buckets("100,fast")


def test_spillover_and_the_activator_are_chart_values_passed_to_the_operator() -> None:
    """``router.spillover``, ``router.overflowPort`` and ``router.activator.enabled`` arrive as the operator's typed
    settings (the activator image is the operator's own); off by default, nothing is passed."""
    defaults, plain = _run_settings(["router.enabled=true"])
    assert not [arg for arg in defaults if "spillover" in arg or "overflowPort" in arg or "activator" in arg]
    assert not plain.router.spillover and plain.router.overflow_port is None and plain.router.activator_image is None
    values = [
        "router.enabled=true",
        "router.spillover=true",
        "router.overflowPort=9911",
        "router.activator.enabled=true",
        "image.repository=ghcr.io/acme/inference-placement",
        "image.tag=1.2.3",
    ]
    args, settings = _run_settings(values)
    assert {"--set=router.spillover=true", "--set=router.overflowPort=9911"} <= set(args)
    assert settings.router.spillover and settings.router.overflow_port == 9911
    assert settings.router.activator_image == "ghcr.io/acme/inference-placement:1.2.3"
    operator_image = one(render_chart(values=values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert operator_image["image"] == settings.router.activator_image


def test_router_pod_monitor_scrapes_the_activator_when_it_runs() -> None:
    monitor = one(render_chart(values=["router.enabled=true", "router.podMonitor.enabled=true"]), "PodMonitor")
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["stats"]
    values = ["router.enabled=true", "router.podMonitor.enabled=true", "router.activator.enabled=true"]
    monitor = one(render_chart(values=values), "PodMonitor")
    stats, activator = monitor["spec"]["podMetricsEndpoints"]
    assert stats["port"] == "stats"
    assert (activator["port"], activator["path"], activator["honorLabels"]) == ("activator", "/metrics", True)
    # its own job: a failing activator scrape is not a failing router (router_up checks job inference-router)
    assert activator["relabelings"] == [{"targetLabel": "job", "replacement": "inference-router-activator"}]
    assert activator["relabelings"][0]["replacement"] != ROUTER_JOB
    # the port the operator renders on the activator container, in the Pods the monitor selects
    pod = render_router_deployment(
        dataclasses.replace(EnvoySettings(), activator_port=9906), activator_image="operator:1"
    )["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"] for c in pod["spec"]["containers"] if c["name"] == "activator" for p in c["ports"]}
    assert ports == {"activator"}


# ----------------------------------------------------------------------------------------------- the router's exposure


def _router_pod_from_chart(values: Sequence[str]) -> tuple[dict[str, Any], Any]:
    """The router Pod template as the operator renders it from the settings the chart passes (``_run_settings``)."""
    _, settings = _run_settings(values)
    envoy = EnvoySettings(activator_port=9906) if settings.router.activator_image else EnvoySettings()
    deployment = render_router_deployment(
        envoy,
        activator_image=settings.router.activator_image,
        service_account=settings.router.service_account,
        automount_service_account_token=settings.router.automount_token,
    )
    return deployment["spec"]["template"], settings


def test_router_runs_as_its_own_service_account_with_no_token_and_no_role() -> None:
    manifests = render_chart(values=["router.enabled=true"])
    operator_account = one(manifests, "Deployment")["spec"]["template"]["spec"]
    accounts = {m["metadata"]["name"]: m for m in by_kind(manifests, "ServiceAccount")}
    router_account = accounts.pop("ip-inference-placement-router")
    assert list(accounts) == [operator_account["serviceAccountName"]], "the operator keeps its own identity"
    assert router_account["automountServiceAccountToken"] is False
    bound = {
        s["name"]
        for kind in ("RoleBinding", "ClusterRoleBinding")
        for b in by_kind(manifests, kind)
        for s in b["subjects"]
    }
    assert router_account["metadata"]["name"] not in bound, "the router never calls the Kubernetes API"
    pod, _ = _router_pod_from_chart(["router.enabled=true"])
    assert pod["spec"]["serviceAccountName"] == "ip-inference-placement-router"
    assert pod["spec"]["automountServiceAccountToken"] is False
    # a provider that needs the token, and the router's workload identity
    values = [
        "router.enabled=true",
        "router.serviceAccount.automountToken=true",
        "router.serviceAccount.annotations.iam\\.gke\\.io/gcp-service-account=router@acme.iam.gserviceaccount.com",
    ]
    account = next(
        m for m in by_kind(render_chart(values=values), "ServiceAccount") if m["metadata"]["name"].endswith("-router")
    )
    assert account["automountServiceAccountToken"] is True
    assert account["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "router@acme.iam.gserviceaccount.com"
    }
    pod, _ = _router_pod_from_chart(values)
    assert pod["spec"]["automountServiceAccountToken"] is True
    # an existing account, or none of the chart's (the namespace's default: still no token)
    pod, settings = _router_pod_from_chart(["router.enabled=true", "router.serviceAccount.create=false"])
    assert settings.router.service_account is None and "serviceAccountName" not in pod["spec"]
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_router_pod_exposes_only_the_workload_listener_probes_and_stats_with_admin_on_loopback() -> None:
    for activator in (False, True):
        values = ["router.enabled=true", *(["router.activator.enabled=true"] if activator else [])]
        pod, _ = _router_pod_from_chart(values)
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
        assert ports == {"http", "health", "stats", *(["activator"] if activator else [])}
        for c in pod["spec"]["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    envoy = EnvoySettings(activator_port=9906, overflow_port=9905)
    bootstrap = render_bootstrap(envoy)
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    exposed = {
        listener["name"]: listener
        for listener in bootstrap["static_resources"]["listeners"]
        if listener["address"]["socket_address"]["address"] not in ("127.0.0.1", "::1")
    }
    assert set(exposed) == {"inference", "health", "stats"}, "overflow and activator hops stay on loopback"
    for name, paths in (("health", ["/ready", "/stats"]), ("stats", [STATS_PATH])):
        hcm = exposed[name]["filter_chains"][0]["filters"][0]["typed_config"]
        (host,) = hcm["route_config"]["virtual_hosts"]
        to_admin = [r["match"]["path"] for r in host["routes"] if "route" in r]
        assert to_admin == paths, f"{name} proxies exactly {paths} to the admin"
        assert host["routes"][-1] == {
            "match": {"prefix": "/"},
            "direct_response": {"status": 404, "body": {"inline_string": "not found\n"}},
        }
    with pytest.raises(ValueError, match="loopback"):
        render_router_deployment(dataclasses.replace(envoy, admin_address="0.0.0.0"))


def _selects(policy: Manifest, labels: dict[str, str]) -> bool:
    return bool(policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items())


def test_network_policies_admit_only_the_ports_the_pods_declare() -> None:
    assert not by_kind(render_chart(values=["router.enabled=true", "networkPolicy.enabled=false"]), "NetworkPolicy")
    (operator_only,) = by_kind(render_chart(), "NetworkPolicy")  # no router: no router policy
    clients = "networkPolicy.routerClients[0].namespaceSelector.matchLabels.inference-clients=allowed"
    monitoring = "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring"
    control_plane = "networkPolicy.healthFrom[0].ipBlock.cidr=10.0.0.0/28"
    values = ["router.enabled=true", "router.activator.enabled=true", clients, monitoring, control_plane]
    manifests = render_chart(values=values)
    operator_pod = one(manifests, "Deployment")["spec"]["template"]
    router_pod, _ = _router_pod_from_chart(values)
    policies = by_kind(manifests, "NetworkPolicy")
    assert len(policies) == 2
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        pod = router_pod if _selects(policy, router_pod["metadata"]["labels"]) else operator_pod
        assert _selects(policy, pod["metadata"]["labels"]), policy["metadata"]["name"]
        assert not _selects(policy, (operator_pod if pod is router_pod else router_pod)["metadata"]["labels"])
        declared = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
        admitted = {p["port"]: rule.get("from") for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert set(admitted) == declared, policy["metadata"]["name"]
        metrics_port = "stats" if pod is router_pod else "metrics"
        assert admitted[metrics_port] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
        assert admitted["health"] == [{"ipBlock": {"cidr": "10.0.0.0/28"}}]
        if pod is router_pod:
            assert admitted["http"] == [{"namespaceSelector": {"matchLabels": {"inference-clients": "allowed"}}}]
            # scraped, and read by the operator through the apiserver's Pod proxy: both peers
            assert admitted["activator"] == admitted["stats"] + admitted["health"]
    # without peers: the same ports, from any source
    assert [rule.get("from") for rule in operator_only["spec"]["ingress"]] == [None, None]
    assert [p["port"] for rule in operator_only["spec"]["ingress"] for p in rule["ports"]] == ["health", "metrics"]


def test_router_pod_monitor_needs_the_router() -> None:
    with pytest.raises(AssertionError, match=r"router\.podMonitor\.enabled needs router\.enabled"):
        render_chart(values=["router.podMonitor.enabled=true"])


def test_promql_configmap_holds_the_operators_default_templates() -> None:
    config = one(render_chart(), "ConfigMap")
    doc = yaml.safe_load(config["data"]["promql.yaml"])
    fields = {f.name: doc.pop(f.name) for f in dataclasses.fields(PromQLTemplates)}
    assert PromQLTemplates(**fields) == PromQLTemplates()
    assert doc == {"namespace_label": "namespace", "workload_label": "workload", "rate_window_seconds": 60}


def test_chart_copies_of_generated_files_are_up_to_date() -> None:
    assert (CHART / "files" / "crds" / "inferenceworkloads.yaml").read_text() == render_crd_yaml(), (
        "run: make crd (inference-placement crd -o charts/inference-placement/files/crds/inferenceworkloads.yaml)"
    )
    assert (CHART / "files" / "crds" / "serverlesstargets.yaml").read_text() == render_crd_yaml("ServerlessTarget"), (
        "run: make crd (the ServerlessTarget CRD into charts/inference-placement/files/crds/serverlesstargets.yaml)"
    )
    packaged = REPO_ROOT / "operator" / "inference_placement" / "data" / "price-book.yaml"
    assert (CHART / "files" / "price-book.yaml").read_text() == packaged.read_text(), (
        "copy operator/inference_placement/data/price-book.yaml to charts/inference-placement/files/"
    )


def _workload_crd(manifests: Sequence[Manifest]) -> Manifest:
    """The InferenceWorkload CRD among the chart's (files/crds/ may hold others)."""
    (crd,) = [
        m
        for m in by_kind(manifests, "CustomResourceDefinition")
        if m["metadata"]["name"] == "inferenceworkloads.placement.inference.dev"
    ]
    return crd


def _without_release_metadata(crd: Manifest) -> Manifest:
    meta = {k: v for k, v in crd["metadata"].items() if k not in ("labels", "annotations")}
    return {**crd, "metadata": meta}


def test_the_templated_crd_is_the_generated_one_kept_on_uninstall() -> None:
    """The chart installs and upgrades the CRD as a template (crds/ would be installed once and never upgraded); what
    it renders is exactly the schema generated from the models, plus the release's labels and the keep policy."""
    manifests = render_chart()
    crd = _workload_crd(manifests)
    generated = yaml.safe_load(render_crd_yaml())
    assert _without_release_metadata(crd) == _without_release_metadata(generated)
    assert generated["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == "ip"
    assert not (CHART / "crds" / "inferenceworkloads.yaml").exists(), "in crds/ Helm would never upgrade it"

    unkept = _workload_crd(render_chart(values=["crds.keep=false", "crds.annotations.team=ml"]))
    assert unkept["metadata"]["annotations"] == {"team": "ml"}
    assert not by_kind(render_chart(values=["crds.install=false"]), "CustomResourceDefinition")


def test_status_conditions_follow_metav1_condition() -> None:
    """Reasons and types by metav1.Condition's patterns, not enums a newer operator's reason would break; the list
    keyed by type; lastTransitionTime a date-time."""
    crd = _workload_crd(render_chart())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert {"type", "status", "reason", "lastTransitionTime"} <= set(item["required"])
    fields = item["properties"]
    assert "enum" not in fields["type"] and "enum" not in fields["reason"]
    assert fields["status"]["enum"] == ["True", "False", "Unknown"]
    assert fields["lastTransitionTime"]["format"] == "date-time"
    assert fields["observedGeneration"]["type"] == "integer"
    reason = re.compile(fields["reason"]["pattern"])
    type_ = re.compile(fields["type"]["pattern"])
    for good in ("AllDependentsReady", "ColdStartRisk", "A_Newer_Reason", "Reason:With,Parts"):
        assert reason.match(good), good
    for bad in ("", "lower space", "Trailing,", "9Digit"):
        assert not reason.match(bad), bad
    for good in ("Ready", "ColdStart", "example.com/Custom"):
        assert type_.match(good), good
    assert not type_.match("not a type")


def test_config_checksum_rolls_the_operator_on_a_promql_or_settings_change() -> None:
    def checksum(*values: str) -> str:
        deployment = one(render_chart(values=values), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    base = checksum()
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum() == base, "deterministic: an unchanged upgrade never rolls the pods"
    assert checksum("promql.content=requestRate: up") != base
    assert checksum("operator.settings.migration\\.stepHoldSeconds=5") != base
    assert checksum("operator.tickSeconds=15") != base
    # the price book is hot-reloaded from the mounted ConfigMap: no restart for a price change
    assert checksum("priceBook.content=x: 1") == base
    pod_annotations = one(render_chart(values=["podAnnotations.team=ml"]), "Deployment")["spec"]["template"]
    assert pod_annotations["metadata"]["annotations"]["team"] == "ml"


def test_chart_metadata_for_artifact_hub() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["home"].startswith("https://") and chart["sources"] and chart["maintainers"]
    annotations = chart["annotations"]
    assert annotations["artifacthub.io/license"] == "Apache-2.0"
    assert annotations["artifacthub.io/operator"] == "true"
    generated = yaml.safe_load(render_crd_yaml())
    entries = yaml.safe_load(annotations["artifacthub.io/crds"])
    targets = yaml.safe_load(render_crd_yaml("ServerlessTarget"))
    for kind, crd in (("InferenceWorkload", generated), ("ServerlessTarget", targets)):
        (entry,) = [e for e in entries if e["kind"] == kind]
        assert entry["name"] == crd["metadata"]["name"] and entry["kind"] == crd["spec"]["names"]["kind"]
        assert entry["version"] in [v["name"] for v in crd["spec"]["versions"]]
    assert len(entries) == 2
    images = {i["name"]: i["image"] for i in yaml.safe_load(annotations["artifacthub.io/images"])}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert images["inference-placement"] == f"{values['image']['repository']}:{chart['appVersion']}"
    assert images["envoy"] == values["router"]["image"]
    for example in yaml.safe_load(annotations["artifacthub.io/crdsExamples"]):
        assert example["apiVersion"] == f"{generated['spec']['group']}/{entry['version']}"
        InferenceWorkloadSpec.model_validate(example["spec"])  # a valid spec, as the models read it


def test_template_with_crds_includes_workload_and_peering_crds() -> None:
    crds = {m["metadata"]["name"] for m in by_kind(render_chart(include_crds=True), "CustomResourceDefinition")}
    assert {
        "inferenceworkloads.placement.inference.dev",
        "serverlesstargets.placement.inference.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    } <= crds
    # every CRD the chart templates is one generated from the models (files/crds/), each only once
    templated = [m["metadata"]["name"] for m in by_kind(render_chart(), "CustomResourceDefinition")]
    assert len(templated) == len(set(templated)) == len(list((CHART / "files" / "crds").glob("*.yaml")))


# ----------------------------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("value", "field"),
    [
        pytest.param(["replicaCount=2", "peering.enabled=true"], "replicaCount", id="peering-pauses-two-replicas"),
        pytest.param(["replicaCount=2", "leaderElection.enabled=false"], "replicaCount", id="two-replicas-unelected"),
        pytest.param("leaderElection.leaseDurationSeconds=0", "leaseDurationSeconds", id="zero-lease"),
        pytest.param("podAntiAffinity=sometimes", "podAntiAffinity", id="anti-affinity-mode"),
        pytest.param("replicaCount=-1", "replicaCount", id="negative-replicas"),
        pytest.param("image.pullPolicy=Sometimes", "pullPolicy", id="pull-policy"),
        pytest.param("image.digest=latest", "digest", id="digest-not-sha256"),
        pytest.param("operator.logFormat=xml", "logFormat", id="log-format"),
        pytest.param("operator.tickSeconds=0", "tickSeconds", id="zero-tick"),
        pytest.param("operator.watchNamespaces={Team_A}", "watchNamespaces", id="namespace-not-dns-label"),
        pytest.param("operator.prometheusUrl=prometheus:9090", "prometheusUrl", id="url-without-scheme"),
        pytest.param("securityContext.readOnlyRootFilesystem=false", "readOnlyRootFilesystem", id="writable-root"),
        pytest.param("podSecurityContext.runAsNonRoot=false", "runAsNonRoot", id="root"),
        pytest.param("lambda.workloadIdentity.roleArn=admin", "roleArn", id="role-arn"),
        pytest.param("cloudRun.workloadIdentity.gcpServiceAccount=me@gmail.com", "gcpServiceAccount", id="gsa"),
        pytest.param("serviceMonitor.interval=often", "interval", id="interval"),
        pytest.param("replicas=1", "replicas", id="unknown-top-level-key"),
        pytest.param("peering.enabled=maybe", "enabled", id="non-boolean"),
    ],
)
def test_values_schema_rejects_bad_values(value: str | list[str], field: str) -> None:
    sets = [value] if isinstance(value, str) else value
    done = helm("template", "ip", str(CHART), *(arg for v in sets for arg in ("--set", v)), check=False)
    assert done.returncode != 0, f"--set {value} was accepted"
    assert "schema" in done.stderr.lower() and field in done.stderr, done.stderr


def test_values_schema_is_valid_json_schema_and_covers_every_default_key() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])
    assert schema["additionalProperties"] is False


# ----------------------------------------------------------------------------------------------- RBAC (static)


def _rules(manifests: Sequence[Manifest], kind: str) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    for role in by_kind(manifests, kind):
        for rule in role.get("rules", []):
            yield role, rule


@pytest.mark.parametrize("values", [pytest.param([], id="cluster-wide"), pytest.param(FULL_VALUES, id="namespaced")])
@pytest.mark.parametrize("router", [pytest.param(False, id="no-router"), pytest.param(True, id="router")])
def test_rbac_has_no_wildcards_and_never_writes_spec_or_reads_foreign_secrets(values: list[str], router: bool) -> None:
    manifests = render_chart(
        namespace="placement-system", values=[*values, *(["router.enabled=true"] if router else [])]
    )
    configmap_roles = [
        (role["kind"], role["metadata"])
        for kind in ("ClusterRole", "Role")
        for role, rule in _rules(manifests, kind)
        if "configmaps" in rule["resources"]
    ]
    # ConfigMaps: the router's one, in the release namespace only, and only with the router
    assert configmap_roles == ([("Role", {**configmap_roles[0][1], "namespace": "placement-system"})] if router else [])
    if router:
        assert configmap_roles[0][1]["name"].endswith("-router")
    for kind in ("ClusterRole", "Role"):
        for role, rule in _rules(manifests, kind):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
            assert not {"escalate", "bind", "impersonate", "deletecollection", "update"} & set(rule["verbs"]), rule
            if "inferenceworkloads" in rule["resources"]:
                assert set(rule["verbs"]) == {"get", "list", "watch", "patch"}, "no create/update/delete of workloads"
            if "secrets" in rule["resources"]:
                assert kind == "Role" and role["metadata"]["namespace"] == "placement-system", role
                assert rule["verbs"] == ["get"] and rule["resourceNames"], rule
    cluster_resources = {r for _, rule in _rules(manifests, "ClusterRole") for r in rule["resources"]}
    assert "secrets" not in cluster_resources
    for _, rule in _rules(manifests, "ClusterRole"):
        if "namespaces" in rule["resources"]:
            assert rule["verbs"] == ["list", "watch"], rule
    if values:  # namespaced: workload objects only through Roles in the watched namespaces
        assert cluster_resources == {
            "nodes",
            "pods",
            "customresourcedefinitions",
            "namespaces",
            "serverlesstargets",
            "serverlesstargets/status",
            "deviceclasses",
            "resourceslices",
            "resourceclaims",
        }
        roles = {
            r["metadata"]["namespace"]
            for r in by_kind(manifests, "Role")
            if not r["metadata"]["name"].endswith(("-credentials", "-leader-election", "-router"))
        }
        assert roles == {"team-a", "team-b"}
        secrets_role = next(r for r in by_kind(manifests, "Role") if r["metadata"]["name"].endswith("-credentials"))
        assert sorted(secrets_role["rules"][0]["resourceNames"]) == ["aws-key", "gcp-key"]
    else:
        names = [
            r["metadata"]["name"] for r in by_kind(manifests, "Role") if not r["metadata"]["name"].endswith("-router")
        ]
        assert names == ["ip-inference-placement-leader-election"], (
            "no Secret access without credential Secrets; the Lease only"
        )


# ----------------------------------------------------------------------------------------------- dashboard


_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}


def _operator_metric_names() -> set[str]:
    telemetry = Telemetry()
    names: set[str] = set()
    for family in telemetry.families():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def _metric_names_in(expr: str) -> set[str]:
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\$\w+", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("(") or word in _PROMQL_WORDS:
            continue  # a function or a keyword
        names.add(word)
    return names


def _dashboard() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((CHART / "dashboards" / "inference-placement.json").read_text()))


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query, the template variables' included."""
    exprs = [(panel["title"], t["expr"]) for panel in dashboard["panels"] for t in panel.get("targets", [])]
    exprs += [
        (f"${v['name']}", v["query"]["query"])
        for v in dashboard["templating"]["list"]
        if isinstance(v.get("query"), dict)
    ]
    return exprs


def test_dashboard_uses_only_the_operators_metric_names() -> None:
    known = _operator_metric_names()
    used: set[str] = set()
    for _, expr in _dashboard_exprs(_dashboard()):
        names = _metric_names_in(expr.replace("label_values(", "label_values_fn("))
        names -= {"namespace", "job"}  # label_values(metric, label)
        unknown = names - known
        assert not unknown, f"{expr!r} uses metrics the operator does not export: {unknown}"
        used |= names
    # Every family of the operator's own is on the dashboard (histograms through any of their series).
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in known if n.startswith("inference_placement_")}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert families <= shown, families - shown


_PER_WORKLOAD = {
    "inference_placement_workload_placement",
    "inference_placement_workload_condition",
    "inference_placement_current_monthly_cost_usd",
    "inference_placement_projected_monthly_cost_usd",
    "inference_placement_budget_burn_ratio",
}


def test_every_dashboard_query_filters_by_job_and_per_workload_series_by_namespace() -> None:
    """At 10,000 workloads a dashboard is only usable filtered: every selector carries ``job=~"$job"``, and every
    selector of a per-workload family ``namespace=~"$namespace"`` too; no panel draws one line per workload (they
    aggregate, or ask an instant top-k)."""
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "namespace", "topk"} <= set(variables)
    assert variables["job"]["includeAll"] and variables["namespace"]["multi"]
    known = _operator_metric_names()
    selector = re.compile(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b(\{[^}]*\})?")
    for title, expr in _dashboard_exprs(dashboard):
        for match in selector.finditer(expr):
            name, matchers = match.group(1), match.group(2) or ""
            if name not in known:
                continue
            if title == "$job":
                continue  # the variable that lists the jobs
            assert 'job=~"$job"' in matchers, f"{title}: {name} without the job filter in {expr!r}"
            if name.removesuffix("_total") in _PER_WORKLOAD or name in _PER_WORKLOAD:
                assert 'namespace=~"$namespace"' in matchers or title == "$namespace", (
                    f"{title}: {name} without the namespace filter in {expr!r}"
                )
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names = _metric_names_in(target["expr"]) & _PER_WORKLOAD
            if not names:
                continue
            aggregated = re.match(r"\s*(count|sum|topk|max|min|avg)\b", target["expr"]) is not None
            assert aggregated and (panel["type"] != "table" or target.get("instant")), (
                f"{panel['title']}: a per-workload query must aggregate or be an instant top-k: {target['expr']!r}"
            )
    spend = {p["title"]: p for p in dashboard["panels"]}
    assert "Workloads by placement" in spend and "Monthly spend by placement" in spend
    assert any(
        t["expr"].startswith("topk($topk, inference_placement_current_monthly_cost_usd")
        for t in spend["Top $topk workloads by monthly cost"]["targets"]
    )


def test_dashboard_queries_parse_on_a_real_prometheus(prometheus_binaries: Any, tmp_path: Path) -> None:
    """Every query, with its variables substituted as Grafana does, is valid PromQL to a real Prometheus."""
    from tests.plugins.prometheus import scraping_prometheus

    substitutions = {"$__rate_interval": "1m", "$topk": "10", "$job": ".+", "$namespace": ".*"}
    with scraping_prometheus(prometheus_binaries, "global: {}\n", tmp_path) as server:
        for title, expr in _dashboard_exprs(_dashboard()):
            if expr.startswith("label_values("):
                expr = expr.removeprefix("label_values(").rsplit(",", 1)[0]
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            query = urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(f"{server.url}/api/v1/query?{query}", timeout=10) as answer:
                    assert json.load(answer)["status"] == "success"
            except urllib.error.HTTPError as err:
                raise AssertionError(f"{title}: {expr!r}: {err.read().decode()}") from None


# ----------------------------------------------------------------------------------------------- real apiserver


def _apply_crds_for_real(cluster: KubeCluster) -> None:
    cluster.kubectl("apply", "-f", str(CHART / "crds"))
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        cluster.wait_crd_established(name, timeout=60)


def dry_run_apply(cluster: KubeCluster, manifests: Sequence[Manifest]) -> str:
    documents = yaml.safe_dump_all(list(manifests), sort_keys=False)
    done = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=documents, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.cluster
@pytest.mark.parametrize(
    "values",
    [
        pytest.param([], id="cluster-wide"),
        pytest.param([v for v in FULL_VALUES if not v.startswith("serviceMonitor")], id="namespaced-everything-on"),
        pytest.param(
            [
                *[v for v in PROMETHEUS_AUTH if "prometheusUrl" not in v],
                "operator.prometheusUrl=https://mimir.example/prometheus",
                "operator.prometheusAuth.basicAuth.username=ops",
                "router.enabled=true",
                "crds.keep=false",
            ],
            id="prometheus-auth-and-router",
        ),
    ],
)
def test_rendered_chart_applies_with_server_side_dry_run(
    kube_cluster: KubeCluster, namespace: str, values: list[str]
) -> None:
    _apply_crds_for_real(kube_cluster)
    values = [v.replace("{team-a,team-b}", f"{{{namespace}}}") for v in values]
    manifests = render_chart(release=f"dry-{namespace}", namespace=namespace, values=values, include_crds=True)
    assert manifests[0]["kind"] == "CustomResourceDefinition", "helm puts crds/ first"
    assert "inferenceworkloads.placement.inference.dev" in {
        m["metadata"]["name"] for m in by_kind(manifests, "CustomResourceDefinition")
    }, "the templated CRD is in the dry run too: the apiserver accepts the generated schema as an update"
    output = dry_run_apply(kube_cluster, manifests)
    for manifest in manifests:
        assert manifest["metadata"]["name"] in output, manifest["kind"]
    assert "(server dry run)" in output


@pytest.mark.cluster
def test_helm_install_server_dry_run_and_the_crd_handover(kube_cluster: KubeCluster, namespace: str) -> None:
    """``helm install --dry-run=server`` against the real apiserver: with ``crds.install=false`` (the CRD applied
    outside Helm, as on this shared cluster) the release installs; with the templated CRD, Helm refuses to adopt
    a CRD it does not own, the case docs/operations.md "Upgrades" tells how to hand over."""
    env = {**os.environ, "KUBECONFIG": kube_cluster.kubeconfig}

    def install(*values: str) -> subprocess.CompletedProcess[str]:
        args = [helm_binary(), "install", f"dry-{namespace}", str(CHART), "-n", namespace, "--dry-run=server"]
        for value in values:
            args += ["--set", value]
        return subprocess.run(args, capture_output=True, text=True, timeout=180, check=False, env=env)

    done = install("crds.install=false", "router.enabled=true")
    assert done.returncode == 0, done.stderr
    assert "crds.install=false: apply the InferenceWorkload CRD yourself" in done.stdout
    crd = kube_cluster.kubectl_json("get", "crd", "inferenceworkloads.placement.inference.dev")
    if (crd["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "Helm":
        return  # some release owns the shared CRD already: no handover to show here
    refused = install()
    assert refused.returncode != 0
    assert "inferenceworkloads.placement.inference.dev" in refused.stderr and "ownership" in refused.stderr
    guide = (REPO_ROOT / "docs" / "operations.md").read_text()
    assert "meta.helm.sh/release-name=RELEASE" in guide and "app.kubernetes.io/managed-by=Helm" in guide


@pytest.mark.cluster
def test_router_objects_and_network_policies_apply_with_server_side_dry_run(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    """The hardened router as it would run: the chart's router ServiceAccount and NetworkPolicies (with peers), and
    the Deployment, Service and ConfigMap the operator renders from the settings the chart passes, accepted by the
    real apiserver (server-side dry run: admission and schema, nothing persisted)."""
    values = [
        "router.enabled=true",
        "router.activator.enabled=true",
        "networkPolicy.routerClients[0].namespaceSelector.matchLabels.inference-clients=allowed",
        "networkPolicy.routerClients[1].podSelector.matchLabels.app=caller",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
        "networkPolicy.healthFrom[0].ipBlock.cidr=10.0.0.0/28",
    ]
    chart = render_chart(release=f"net-{namespace}", namespace=namespace, values=values)
    _, settings = _run_settings(values)
    envoy = EnvoySettings(activator_port=9906)
    router = [
        render_configmap([], envoy, namespace=namespace),
        render_router_service(envoy, namespace=namespace),
        render_router_deployment(
            envoy,
            namespace=namespace,
            activator_image=settings.router.activator_image,
            service_account=f"net-{namespace}-inference-placement-router",
            automount_service_account_token=settings.router.automount_token,
        ),
    ]
    wanted = [m for m in chart if m["kind"] in ("NetworkPolicy", "ServiceAccount")]
    assert sorted(m["kind"] for m in wanted) == ["NetworkPolicy", "NetworkPolicy", "ServiceAccount", "ServiceAccount"]
    output = dry_run_apply(kube_cluster, [*wanted, *router])
    for manifest in [*wanted, *router]:
        assert f"{manifest['metadata']['name']} created (server dry run)" in output, (manifest["kind"], output)


def test_chart_kube_version_floor_is_the_release_ci_runs() -> None:
    """The documented floor is the oldest Kubernetes CI tests on: the local cluster's pinned release."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    major, minor, _ = KUBERNETES_VERSION.split(".")
    assert chart["kubeVersion"] == f">={major}.{minor}.0-0"
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"Supported Kubernetes: {major}.{minor}" in readme
    assert f"`kubeVersion` says `>={major}.{minor}.0-0`" in readme
    done = helm("template", "ip", str(CHART), "--kube-version", f"{major}.{int(minor) - 1}.0", check=False)
    assert done.returncode != 0 and "kubeVersion" in done.stderr, done.stderr


def test_router_prometheus_rule_needs_the_router_and_is_off_by_default() -> None:
    assert not by_kind(render_chart(values=["router.enabled=true"]), "PrometheusRule")
    with pytest.raises(AssertionError, match=r"router\.prometheusRule\.enabled needs router\.enabled"):
        render_chart(values=["router.prometheusRule.enabled=true"])
    rule = one(render_chart(values=["router.enabled=true", "router.prometheusRule.enabled=true"]), "PrometheusRule")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {"InferenceRouterTokenFetchFailing", "InferenceRouterCloudRunRefusing"}
    assert all(r["for"] == "2m" for r in alerts.values())
    # what they fire on is tested against a real Envoy's series with promtool: tests/test_router_alerts.py


def test_inline_cloud_identity_is_off_unless_the_admin_turns_it_on() -> None:
    flag = "--set=tenancy.allowInlineCloudIdentity=true"
    assert flag not in container(render_chart())["args"]
    assert flag in container(render_chart(values=["tenancy.allowInlineCloudIdentity=true"]))["args"]


@pytest.mark.parametrize("values", [pytest.param([], id="cluster-wide"), pytest.param(FULL_VALUES, id="namespaced")])
def test_the_operator_reads_serverless_targets_and_writes_only_their_status(values: list[str]) -> None:
    rules = [rule for _, rule in _rules(render_chart(values=values), "ClusterRole")]
    targets = [r for r in rules if "serverlesstargets" in r["resources"]]
    status = [r for r in rules if "serverlesstargets/status" in r["resources"]]
    assert [sorted(r["verbs"]) for r in targets] == [["get", "list", "watch"]]
    assert [r["verbs"] for r in status] == [["patch"]]
