"""The chart's ServiceAccount and RBAC on the real local apiserver (RBAC on): allowed exactly what the operator needs,
refused the rest (Secrets in other namespaces above all), and the real operator does its job with only that token.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugins.cluster import REPO_ROOT, KubeCluster
from tests.plugins.operator import wait_for
from tests.test_chart import CHART, Manifest, by_kind, one, render_chart

pytestmark = pytest.mark.cluster

CPU_EXAMPLE = REPO_ROOT / "examples" / "sentiment-bursty.yaml"


@dataclass(frozen=True)
class Release:
    cluster: KubeCluster
    namespace: str
    service_account: str
    peering: str
    manifests: list[Manifest]
    lease: str
    """The leader-election Lease's name (in the release namespace)."""

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def can(self, verb: str, resource: str, *, namespace: str | None = None, subresource: str | None = None) -> bool:
        args = ["auth", "can-i", verb, resource, "--as", self.user]
        args += ["--all-namespaces"] if namespace is None else ["-n", namespace]
        if subresource:
            args += ["--subresource", subresource]
        done = self.cluster.kubectl(*args, check=False)
        answer = done.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl auth can-i {verb} {resource}: {done.stdout}{done.stderr}"
        return answer == "yes"


def _install(cluster: KubeCluster, namespace: str, release: str, values: list[str]) -> Iterator[Release]:
    """Apply the rendered chart for real (CRDs first), without running the operator pod; remove what is cluster-scoped
    afterwards (the namespace fixture removes the rest)."""
    cluster.kubectl("apply", "-f", str(CHART / "crds"))  # kopf's peering CRDs
    cluster.kubectl("apply", "-f", str(CHART / "files" / "crds"))  # the chart's own (also templates, below)
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev", "inferenceworkloads.placement.inference.dev"):
        cluster.wait_crd_established(name, timeout=60)
    # peering on (with one replica) so its RBAC is checked too; leader election is on by default
    chart_values = ["replicaCount=0", "peering.enabled=true", *values]
    manifests = render_chart(release=release, namespace=namespace, values=chart_values)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests, sort_keys=False))
    args = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    peering = next(a.split("=", 1)[1] for a in args if a.startswith("--peering="))
    lease = next(a.split("=", 1)[1] for a in args if a.startswith("--leader-election-id="))
    account = one(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    try:
        yield Release(cluster, namespace, account, peering, manifests, lease)
    finally:
        for manifest in manifests:
            # the CRDs (templates since crds.install) stay: every other test's objects live in them
            if "namespace" not in manifest["metadata"] and manifest["kind"] != "CustomResourceDefinition":
                cluster.kubectl("delete", manifest["kind"], manifest["metadata"]["name"], "--wait=false", check=False)


@pytest.fixture
def other_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"t-other-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", name)
    kube_cluster.kubectl("create", "secret", "generic", "foreign", "-n", name, "--from-literal=token=not-yours")
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def clusterwide(kube_cluster: KubeCluster, namespace: str) -> Iterator[Release]:
    for secret in ("aws-creds", "unrelated"):
        kube_cluster.kubectl(
            "create", "secret", "generic", secret, "-n", namespace, "--from-literal=aws_access_key_id=AKIAEXAMPLE"
        )
    values = ["lambda.enabled=true", "lambda.credentials.existingSecret=aws-creds"]
    yield from _install(kube_cluster, namespace, f"rbac-{namespace}", values)


@pytest.fixture
def watched_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A team's namespace the scoped operator watches (its release lives in another one)."""
    name = f"t-team-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", name)
    kube_cluster.kubectl("create", "secret", "generic", "team-secret", "-n", name, "--from-literal=token=not-yours")
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def scoped(kube_cluster: KubeCluster, namespace: str, watched_namespace: str) -> Iterator[Release]:
    """The chart with ``operator.watchNamespaces`` naming one team namespace, and the router on: the release (its
    Lease, peering, router) in ``namespace``, the workloads in ``watched_namespace``."""
    values = [
        f"operator.watchNamespaces={{{watched_namespace}}}",
        "router.enabled=true",
        "router.replicas=1",
        f"router.image={kube_cluster.router_image}",
        "operator.settings.router\\.imagePullPolicy=Never",
        "operator.settings.router\\.gcpMetadata=http://127.0.0.1:9",
        "operator.settings.cluster\\.imagePullPolicy=Never",
    ]
    yield from _install(kube_cluster, namespace, f"live-{namespace}", values)


def _token_kubeconfig(release: Release, path: Path) -> Path:
    """A kubeconfig holding a real token of the chart's ServiceAccount (TokenRequest API)."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    done = release.cluster.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{release.namespace}/serviceaccounts/{release.service_account}/token",
        "-f",
        "-",
        input=json.dumps(request),
    )
    token = json.loads(done.stdout)["status"]["token"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": release.cluster.api_url, "certificate-authority": release.cluster.ca_file},
            }
        ],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {"name": "operator", "context": {"cluster": "local", "user": "operator", "namespace": release.namespace}}
        ],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _as_operator(release: Release, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [release.cluster.kubectl_path, "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ----------------------------------------------------------------------------------------------- cluster-wide


def test_service_account_is_allowed_what_the_operator_uses(clusterwide: Release, other_namespace: str) -> None:
    r, ns = clusterwide, other_namespace
    allowed = [
        ("list", "inferenceworkloads.placement.inference.dev", None, None),
        ("watch", "inferenceworkloads.placement.inference.dev", None, None),
        ("patch", "inferenceworkloads.placement.inference.dev", ns, None),
        ("patch", "inferenceworkloads.placement.inference.dev", ns, "status"),
        ("get", "inferenceworkloads.placement.inference.dev", ns, "status"),
        ("create", "events", ns, None),
        ("create", "deployments.apps", ns, None),
        ("patch", "deployments.apps", ns, None),
        ("delete", "deployments.apps", ns, None),
        ("watch", "deployments.apps", None, None),
        ("create", "services", ns, None),
        ("delete", "services", ns, None),
        ("list", "nodes", None, None),
        ("watch", "pods", None, None),
        ("watch", "endpointslices.discovery.k8s.io", None, None),
        ("list", "endpointslices.discovery.k8s.io", None, None),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", None, None),
        ("watch", "resourceslices.resource.k8s.io", None, None),
        ("list", "resourceclaims.resource.k8s.io", None, None),
        ("watch", "deviceclasses.resource.k8s.io", None, None),
        ("create", "resourceclaimtemplates.resource.k8s.io", ns, None),
        ("delete", "resourceclaimtemplates.resource.k8s.io", ns, None),
        ("list", "horizontalpodautoscalers.autoscaling", ns, None),
        ("list", "scaledobjects.keda.sh", ns, None),
        ("watch", "clusterkopfpeerings.kopf.dev", None, None),
        ("patch", f"clusterkopfpeerings.kopf.dev/{r.peering}", None, None),
        ("get", "secrets/aws-creds", r.namespace, None),
        ("create", "leases.coordination.k8s.io", r.namespace, None),
        ("get", f"leases.coordination.k8s.io/{r.lease}", r.namespace, None),
        ("patch", f"leases.coordination.k8s.io/{r.lease}", r.namespace, None),
        # the admin-defined cloud targets: read, and only their status written
        ("list", "serverlesstargets.placement.inference.dev", None, None),
        ("watch", "serverlesstargets.placement.inference.dev", None, None),
        ("patch", "serverlesstargets.placement.inference.dev", None, "status"),
        ("list", "namespaces", None, None),
    ]
    refused = [
        ("create", "serverlesstargets.placement.inference.dev", None, None),
        ("patch", "serverlesstargets.placement.inference.dev", None, None),
        ("delete", "serverlesstargets.placement.inference.dev", None, None),
        ("get", "secrets/foreign", ns, None),
        ("get", "secrets", ns, None),
        ("list", "secrets", None, None),
        ("get", "secrets", "kube-system", None),
        # ConfigMaps: only the router's, in the release namespace (and only with router.enabled)
        ("create", "configmaps", ns, None),
        ("get", "configmaps", ns, None),
        ("get", "configmaps", "kube-system", None),
        ("create", "configmaps", r.namespace, None),
        ("get", "secrets/unrelated", r.namespace, None),
        ("list", "secrets", r.namespace, None),
        ("watch", "secrets", r.namespace, None),
        ("create", "inferenceworkloads.placement.inference.dev", ns, None),
        ("update", "inferenceworkloads.placement.inference.dev", ns, None),
        ("delete", "inferenceworkloads.placement.inference.dev", ns, None),
        ("update", "deployments.apps", ns, None),
        ("create", "pods", ns, None),
        ("create", "endpointslices.discovery.k8s.io", ns, None),
        ("delete", "endpointslices.discovery.k8s.io", ns, None),
        ("delete", "pods", ns, None),
        ("patch", "nodes", None, None),
        ("create", "resourceclaims.resource.k8s.io", ns, None),
        ("create", "resourceslices.resource.k8s.io", None, None),
        ("create", "deviceclasses.resource.k8s.io", None, None),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", None, None),
        ("patch", "clusterkopfpeerings.kopf.dev/someone-else", None, None),
        ("create", "clusterroles.rbac.authorization.k8s.io", None, None),
        ("create", "rolebindings.rbac.authorization.k8s.io", r.namespace, None),
        ("create", "serviceaccounts/token", r.namespace, None),
        ("patch", "leases.coordination.k8s.io/someone-else", r.namespace, None),
        ("delete", f"leases.coordination.k8s.io/{r.lease}", r.namespace, None),
        ("create", "leases.coordination.k8s.io", ns, None),
    ]
    wrong_allowed = [a for a in allowed if not r.can(a[0], a[1], namespace=a[2], subresource=a[3])]
    wrong_refused = [a for a in refused if r.can(a[0], a[1], namespace=a[2], subresource=a[3])]
    assert not wrong_allowed, f"refused but needed: {wrong_allowed}"
    assert not wrong_refused, f"allowed but never needed: {wrong_refused}"


def test_real_token_is_refused_secrets_in_another_namespace(
    clusterwide: Release, other_namespace: str, tmp_path: Path
) -> None:
    kubeconfig = _token_kubeconfig(clusterwide, tmp_path / "operator.kubeconfig")
    foreign = _as_operator(clusterwide, kubeconfig, "get", "secret", "foreign", "-n", other_namespace)
    assert foreign.returncode != 0 and "forbidden" in foreign.stderr.lower(), foreign.stderr
    listing = _as_operator(clusterwide, kubeconfig, "get", "secrets", "-n", clusterwide.namespace)
    assert listing.returncode != 0 and "forbidden" in listing.stderr.lower(), listing.stderr
    own = _as_operator(clusterwide, kubeconfig, "get", "secret", "aws-creds", "-n", clusterwide.namespace, "-o", "name")
    assert own.returncode == 0, own.stderr
    workloads = _as_operator(clusterwide, kubeconfig, "get", "inferenceworkloads", "--all-namespaces")
    assert workloads.returncode == 0, workloads.stderr


# ----------------------------------------------------------------------------------------------- the operator itself


def _cpu_workload(cluster: KubeCluster, namespace: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CPU_EXAMPLE.read_text())
    doc["metadata"]["namespace"] = namespace
    doc["metadata"]["name"] = "rbac-cpu"
    doc["spec"]["placement"] = {"allowedTargets": ["cluster"]}
    doc["spec"].pop("accelerator", None)
    doc["spec"]["model"]["image"] = cluster.model_server_image or doc["spec"]["model"]["image"]
    doc["spec"]["model"]["cpu"] = "100m"
    doc["spec"]["model"]["memory"] = "64Mi"
    return doc


def test_scoped_rbac_is_refused_everything_outside_the_watched_and_release_namespaces(
    scoped: Release, watched_namespace: str, other_namespace: str
) -> None:
    r, team, other = scoped, watched_namespace, other_namespace
    iw = "inferenceworkloads.placement.inference.dev"
    allowed = [
        ("list", iw, team, None),
        ("watch", iw, team, None),
        ("patch", iw, team, None),
        ("patch", iw, team, "status"),
        ("create", "events", team, None),
        ("create", "deployments.apps", team, None),
        ("delete", "deployments.apps", team, None),
        ("create", "services", team, None),
        ("list", "endpointslices.discovery.k8s.io", team, None),
        # the router, in the release namespace only
        ("get", "configmaps/inference-router", r.namespace, None),
        ("patch", "configmaps", r.namespace, None),
        ("create", "deployments.apps", r.namespace, None),
        ("create", "services", r.namespace, None),
        ("list", "pods", r.namespace, None),
        ("get", "pods", r.namespace, "proxy"),
        # cluster-wide reads for free capacity and kopf
        ("list", "nodes", None, None),
        ("watch", "pods", None, None),
        ("list", "namespaces", None, None),
        ("create", "leases.coordination.k8s.io", r.namespace, None),
        # the admin-defined cloud targets are cluster-scoped: read cluster-wide even when scoped
        ("list", "serverlesstargets.placement.inference.dev", None, None),
        ("watch", "serverlesstargets.placement.inference.dev", None, None),
    ]
    refused = [
        # no cluster-wide writes, and nothing in a namespace it does not watch
        ("list", iw, None, None),
        ("patch", iw, other, None),
        ("patch", iw, other, "status"),
        ("create", "events", other, None),
        ("create", "deployments.apps", other, None),
        ("create", "services", other, None),
        ("watch", "endpointslices.discovery.k8s.io", other, None),
        ("list", "endpointslices.discovery.k8s.io", None, None),
        ("create", "deployments.apps", None, None),
        # kube-system
        ("get", "secrets", "kube-system", None),
        ("list", "secrets", "kube-system", None),
        ("get", "configmaps", "kube-system", None),
        ("patch", "deployments.apps", "kube-system", None),
        ("create", "services", "kube-system", None),
        ("delete", "pods", "kube-system", None),
        # Secrets anywhere, ConfigMaps outside the router's namespace
        ("get", "secrets/team-secret", team, None),
        ("get", "secrets/foreign", other, None),
        ("list", "secrets", None, None),
        ("get", "configmaps", team, None),
        ("create", "configmaps", team, None),
        ("delete", "configmaps", r.namespace, None),
        ("create", "pods", team, None),
        ("create", "rolebindings.rbac.authorization.k8s.io", team, None),
    ]
    wrong_allowed = [a for a in allowed if not r.can(a[0], a[1], namespace=a[2], subresource=a[3])]
    wrong_refused = [a for a in refused if r.can(a[0], a[1], namespace=a[2], subresource=a[3])]
    assert not wrong_allowed, f"refused but needed: {wrong_allowed}"
    assert not wrong_refused, f"allowed but never needed: {wrong_refused}"


def _found(cluster: KubeCluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    done = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(done.stdout)) if done.returncode == 0 else None


def _chart_run_args(release: Release, kubeconfig: Path) -> list[str]:
    """``inference-placement run`` with the args the chart's Deployment passes (namespaces, Lease, peering, router,
    settings), less the in-Pod file paths and ports."""
    args = one(release.manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    dropped = ("--price-book=", "--promql-templates=", "--health-port=", "--metrics-port=", "--log-format=")
    kept = [a for a in args if not a.startswith(dropped)]
    return [
        *("-m", "inference_placement.cli", "run", "--kubeconfig", str(kubeconfig)),
        *kept,
        *("--tick-seconds", "2", "--health-port", "0", "--metrics-port", "0", "--log-format", "plain"),
    ]


def test_operator_with_only_the_charts_scoped_rbac_places_a_workload_and_runs_the_router(
    scoped: Release, watched_namespace: str, tmp_path: Path
) -> None:
    """The real operator, with a real token of the chart's ServiceAccount and the chart's own args (one watched
    namespace, the router on): it places a workload in the team namespace, runs the router in the release namespace
    as the router's own ServiceAccount without a token, and no request of it is refused."""
    r, team = scoped, watched_namespace
    assert {m["metadata"]["namespace"] for m in by_kind(r.manifests, "Role")} == {r.namespace, team}
    assert {
        rule_resource
        for m in by_kind(r.manifests, "ClusterRole")
        for rule in m["rules"]
        for rule_resource in rule["resources"]
    } == {
        "nodes",
        "pods",
        "deviceclasses",
        "resourceslices",
        "resourceclaims",
        "customresourcedefinitions",
        "namespaces",
        "serverlesstargets",
        "serverlesstargets/status",
    }
    kubeconfig = _token_kubeconfig(r, tmp_path / "operator.kubeconfig")
    log_path = tmp_path / "operator.log"
    args = [sys.executable, *_chart_run_args(r, kubeconfig)]
    assert f"--namespace={team}" in args and "--set=router.mode=cluster" in args
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT)
    try:
        doc = _cpu_workload(r.cluster, team)
        r.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

        def placed() -> dict[str, Any] | None:
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            obj = r.cluster.kubectl_json("get", "iw", "rbac-cpu", "-n", team)
            status = obj.get("status") or {}
            target = (status.get("migration") or {}).get("target") or status.get("placement")
            return obj if target == "cluster" else None

        obj = wait_for(placed, timeout=120, what="the operator to place the workload on the cluster")
        uid = obj["metadata"]["uid"]

        def deployment() -> dict[str, Any] | None:
            found = r.cluster.kubectl("get", "deployments", "-n", team, "-o", "json", check=False)
            items = json.loads(found.stdout).get("items", []) if found.returncode == 0 else []
            owned = [d for d in items if any(o.get("uid") == uid for o in d["metadata"].get("ownerReferences", []))]
            return owned[0] if owned else None

        owned = wait_for(deployment, timeout=60, what="a Deployment owned by the workload")
        assert owned["spec"]["template"]["spec"]["containers"][0]["image"] == doc["spec"]["model"]["image"]
        peering = r.cluster.kubectl_json("get", "kopfpeerings.kopf.dev", r.peering, "-n", team)
        assert peering.get("status"), "the operator recorded itself in its peering object"
        lease = r.cluster.kubectl_json("get", "lease", r.lease, "-n", r.namespace)
        assert lease["spec"]["holderIdentity"], "the operator holds its Lease"
        # the router: its ConfigMap, Deployment and Service in the release namespace, run as its own account
        # with no token; the workload's stable endpoint in the team namespace
        router = wait_for(
            lambda: _found(r.cluster, "deployment", "inference-router", r.namespace),
            timeout=60,
            what="the router Deployment in the release namespace",
        )
        pod_spec = router["spec"]["template"]["spec"]
        assert pod_spec["serviceAccountName"] == f"{r.service_account}-router"
        assert pod_spec["automountServiceAccountToken"] is False
        for kind in ("configmap", "service"):
            r.cluster.kubectl("get", kind, "inference-router", "-n", r.namespace)
        endpoint = wait_for(
            lambda: _found(r.cluster, "service", "rbac-cpu", team),
            timeout=90,
            what="the stable endpoint Service in the team namespace",
        )
        assert endpoint["spec"]["type"] == "ExternalName"
        if r.cluster.node_enabled:  # Pods really run: the workload ends up serving

            def ready() -> bool:
                obj = r.cluster.kubectl_json("get", "iw", "rbac-cpu", "-n", team)
                conditions = (obj.get("status") or {}).get("conditions") or []
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

            wait_for(ready, timeout=180, interval=2, what="Ready=True with only the chart's RBAC")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        r.cluster.kubectl("delete", "iw", "rbac-cpu", "-n", team, "--wait=false", check=False)
    logs = log_path.read_text(errors="replace")
    # the message after the line's timestamp: "17:22:59,403" is a time, not an HTTP status
    messages = [re.sub(r"^\[[^\]]*\]", "", line) for line in logs.splitlines()]
    refused = [line for line in messages if re.search(r"\b403\b", line) or "forbidden" in line.lower()]
    assert not refused, "\n".join(refused[:20])
