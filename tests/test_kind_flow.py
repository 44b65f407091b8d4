"""The kind flow a user with Docker follows (docs/quickstart-*.md, e2e/README.md): ``e2e/kind.sh install`` builds the
operator image from the Dockerfile, loads it into a kind node and ``helm install``s the chart; the operator's
Deployment rolls out and its Pods answer ``inference-placement version``.

It needs a Docker engine. Where none runs (this project's CI machines and every developer machine here: `docker`
is only a client, see e2e/README.md) the test is SKIPPED with that reason, in CI too: the same image and chart are
tested without Docker by tests/test_operator_image.py (buildah + the local node) and tests/test_chart.py. Where an
engine runs, a missing `kind` fails the test in CI (CI=true) and skips it elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
import uuid
from pathlib import Path

import pytest

from tests.plugins.cluster import REPO_ROOT

SCRIPT = REPO_ROOT / "e2e" / "kind.sh"
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def _docker_engine_problem() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on PATH"
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60, check=False)
    if info.returncode != 0:
        return "no Docker engine answers `docker info` (only the client is installed)"
    return None


@pytest.mark.slow
def test_kind_flow_builds_loads_and_helm_installs_the_operator(tmp_path: Path) -> None:
    problem = _docker_engine_problem()
    if problem is not None:
        pytest.skip(f"the kind flow needs a Docker engine: {problem}")
    if shutil.which("kind") is None:
        message = "a Docker engine runs but `kind` is not on PATH (go install sigs.k8s.io/kind@v0.33.0)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    cluster = f"ip-{uuid.uuid4().hex[:6]}"
    kubeconfig = f"{tmp_path}/kubeconfig"
    env = {**os.environ, "KIND_CLUSTER_NAME": cluster, "KIND_KUBECONFIG": kubeconfig}
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT), "install"], env=env, capture_output=True, text=True, timeout=1800, check=False
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        kubectl = shutil.which("kubectl")
        assert kubectl is not None
        version = subprocess.run(
            [kubectl, "--kubeconfig", kubeconfig, "-n", "placement-system", "exec", "deploy/inference-placement",
             "--", "inference-placement", "version"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert version.returncode == 0, version.stderr
        assert version.stdout.strip() == VERSION
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=300, check=False)
