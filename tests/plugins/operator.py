"""Fixtures that run the real operator (``inference-placement run``) against the local cluster, as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from inference_placement.devtools.processes import free_port
from tests.plugins.cluster import REPO_ROOT, KubeCluster
from tests.plugins.secret_scan import record_operator_run

__all__ = [
    "OperatorProcess",
    "crd_installed",
    "namespace",
    "operator_factory",
    "serverless_target_factory",
    "wait_for",
]

CRD_FILE = REPO_ROOT / "crds" / "inferenceworkloads.yaml"
TARGET_CRD_FILE = REPO_ROOT / "crds" / "serverlesstargets.yaml"
INLINE_CLOUD_IDENTITY = ("--set", "tenancy.allowInlineCloudIdentity=true")
"""What ``operator_factory`` passes unless a test asks for ``inline_cloud_identity=False``: the tests written before
ServerlessTargets deploy with inline cloud fields (the deprecated path the setting keeps working); the tenancy tests
run the operator as the chart does by default, without it."""


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.5, what: str = "") -> Any:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}; last value: {last!r}")


@dataclass
class OperatorProcess:
    """One operator process; ``kill()`` sends SIGKILL (no graceful cleanup), ``start()`` starts a fresh one."""

    cluster: KubeCluster
    namespace: str
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    """Port of the operator's /metrics on loopback (0 = off)."""
    identity: str = field(default_factory=lambda: f"op-{uuid.uuid4().hex[:8]}")
    """Its name in the leader-election Lease, kept across ``kill()`` and ``start()``: like a container restarted in
    the same Pod, a restarted process takes its Lease back at once (a second ``OperatorProcess`` is a rival)."""

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = self.log_path.open("ab")
        args = [
            sys.executable,
            "-m",
            "inference_placement.cli",
            "run",
            "--kubeconfig",
            self.cluster.kubeconfig,
            "--namespace",
            self.namespace,
            "--tick-seconds",
            "2",
            "--health-port",
            "0",
            "--metrics-port",
            str(self.metrics_port),
            "--log-format",
            "plain",
            "--leader-election-identity",
            self.identity,
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but runs nothing (a partition from the apiserver, a long GC)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def crd_installed(kube_cluster: KubeCluster) -> KubeCluster:
    for path, name in (
        (CRD_FILE, "inferenceworkloads.placement.inference.dev"),
        (TARGET_CRD_FILE, "serverlesstargets.placement.inference.dev"),
    ):
        kube_cluster.kubectl("apply", "-f", str(path))
        kube_cluster.wait_crd_established(name)
    return kube_cluster


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    # Workloads with a cloud finalizer need the operator to let go; tests clean up their own before this. One a
    # failed test left behind would hold the namespace in Terminating forever once its operator is gone (the
    # stand-ins it owned resources in are gone too): release it.
    listed = kube_cluster.kubectl("get", "iw", "-n", name, "-o", "name", check=False)
    for ref in listed.stdout.split():
        kube_cluster.kubectl(
            "patch", ref, "-n", name, "--type", "merge", "-p", '{"metadata":{"finalizers":[]}}', check=False
        )
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator_factory(
    crd_installed: KubeCluster, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def make(namespace: str, *extra_args: str, inline_cloud_identity: bool = True) -> OperatorProcess:
        log_path = tmp_path / f"operator-{len(started)}.log"
        args = [*(INLINE_CLOUD_IDENTITY if inline_cloud_identity else ()), *extra_args]
        op = OperatorProcess(crd_installed, namespace, log_path, args, metrics_port=free_port())
        op.start()
        started.append(op)
        return op

    yield make
    for op in started:
        record_operator_run(op, request.node.nodeid)  # its log, /metrics, Events and statuses: scanned for secrets
        op.stop()
    if os.environ.get("INFERENCE_PLACEMENT_SHOW_OPERATOR_LOGS") == "1":
        for op in started:
            print(op.logs())


@pytest.fixture
def serverless_target_factory(crd_installed: KubeCluster) -> Iterator[Callable[[dict[str, Any]], str]]:
    """Creates cluster-scoped ServerlessTargets under unique names (the cluster is shared) and deletes them after the
    test; returns the name."""
    created: list[str] = []

    def make(spec: dict[str, Any]) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        doc = {
            "apiVersion": "placement.inference.dev/v1alpha1",
            "kind": "ServerlessTarget",
            "metadata": {"name": name},
            "spec": spec,
        }
        crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        created.append(name)
        return name

    yield make
    for name in created:
        crd_installed.kubectl("delete", "serverlesstarget", name, "--ignore-not-found", "--wait=false", check=False)


def load_example(path: Path, namespace: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    doc["metadata"]["namespace"] = namespace
    return doc
