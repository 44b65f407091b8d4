"""The operator image: built from the repository's Dockerfile without a Docker engine (``e2e/operator-image.sh``:
buildah on a debootstrap base pinned by digest), loaded into the local node's containerd and started as Pods.

The build is cached by its inputs under ~/.cache/inference-placement/images (``make test`` builds it in a step of its
own first, so a cold build shows there and not inside this test's timeout)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.cluster import REPO_ROOT, KubeCluster

SCRIPT = REPO_ROOT / "e2e" / "operator-image.sh"
BUILD_TIMEOUT_SECONDS = 1500.0  # cold: debootstrap (~1 min) + pip install of the locked dependencies (~2-3 min)
NON_ROOT_UID = 65532
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


@dataclass(frozen=True)
class BuiltImage:
    name: str
    tar: Path
    config: dict[str, Any]
    """The image's config blob (docker-archive: the file manifest.json names)."""


def _image_config(tar_path: Path) -> dict[str, Any]:
    with tarfile.open(tar_path) as tar:
        manifest_member = tar.extractfile("manifest.json")
        assert manifest_member is not None
        manifest = json.load(manifest_member)
        config_member = tar.extractfile(manifest[0]["Config"])
        assert config_member is not None
        config: dict[str, Any] = json.load(config_member)
    return config


@pytest.fixture(scope="module")
def operator_image(kube_node: KubeCluster) -> BuiltImage:
    """Build (cached) and import the operator image into the node's containerd; CI fails without it, elsewhere skip."""
    try:
        result = subprocess.run(
            ["bash", str(SCRIPT), "load"],
            env={**os.environ, "INFERENCE_PLACEMENT_RUN": kube_node.run_dir},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_SECONDS,
            check=False,
            cwd=REPO_ROOT,
        )
    except subprocess.TimeoutExpired:
        result = subprocess.CompletedProcess([], 124, "", f"timed out after {BUILD_TIMEOUT_SECONDS:.0f}s")
    if result.returncode != 0:
        message = f"e2e/operator-image.sh load failed ({result.returncode}):\n" + "\n".join(
            result.stderr.splitlines()[-40:]
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    fields = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    tar = Path(fields["tar"])
    return BuiltImage(name=fields["image"], tar=tar, config=_image_config(tar))


@pytest.fixture
def namespace(kube_node: KubeCluster) -> Iterator[str]:
    name = f"image-{uuid.uuid4().hex[:8]}"
    kube_node.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube_node.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _container(name: str, image: str, command: list[str]) -> dict[str, Any]:
    # The chart's container securityContext (templates/deployment.yaml); runAsNonRoot without runAsUser makes the
    # kubelet refuse to start an image whose USER is root, so a root image fails here instead of passing.
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


@pytest.mark.node
@pytest.mark.slow
def test_the_image_starts_on_the_node_as_non_root_and_answers_version(
    kube_node: KubeCluster, operator_image: BuiltImage, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-image", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                _container("version", operator_image.name, ["inference-placement", "version"]),
                _container(
                    "whoami", operator_image.name, ["python", "-c", "import os; print(os.getuid(), os.getgid())"]
                ),
            ],
        },
    }
    kube_node.kubectl("apply", "-f", "-", input=json.dumps(pod))
    waited = kube_node.kubectl(
        "wait",
        "-n",
        namespace,
        "pod/operator-image",
        "--for=jsonpath={.status.phase}=Succeeded",
        "--timeout=180s",
        check=False,
        timeout=200,
    )
    status = kube_node.kubectl_json("get", "-n", namespace, "pod/operator-image")["status"]
    assert waited.returncode == 0, f"the Pod did not succeed: {json.dumps(status, indent=1)}"
    version = kube_node.kubectl("logs", "-n", namespace, "operator-image", "-c", "version").stdout.strip()
    assert version == VERSION
    whoami = kube_node.kubectl("logs", "-n", namespace, "operator-image", "-c", "whoami").stdout.split()
    assert whoami == [str(NON_ROOT_UID), str(NON_ROOT_UID)]


@pytest.mark.node
@pytest.mark.slow
def test_the_image_carries_oci_labels_a_non_root_user_and_a_digest_pinned_base(operator_image: BuiltImage) -> None:
    config = operator_image.config["config"]
    assert config["User"] == f"{NON_ROOT_UID}:{NON_ROOT_UID}"
    assert config["Entrypoint"] == ["inference-placement", "run"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.source"] == "https://github.com/inference-placement/inference-placement"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == VERSION
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    revision = labels["org.opencontainers.image.revision"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", revision), revision
    if head:
        assert revision.removesuffix("-dirty") == head
    assert re.search(r"@sha256:[0-9a-f]{64}$", labels["org.opencontainers.image.base.name"])


def test_the_dockerfile_pins_its_default_base_by_digest_and_labels_the_image() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M)
    assert base, "the Dockerfile names no default BASE_IMAGE"
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base.group(1)), base.group(1)
    for key in ("source", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in dockerfile
    assert re.search(r"^USER 65532:65532$", dockerfile, re.M)
