"""``kubectl iw``: the kubectl plugin. Its formatting and kubectl's context rules as unit tests; on the local
cluster (namespaced), run by kubectl itself: explain, simulate and status follow the kubeconfig's context and
namespace, read the price book of the operator the chart deploys, put the verdict first, and speak JSON and YAML."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from rich.console import Console

from inference_placement.commandline import ExitCode
from inference_placement.kubectl import (
    PRICE_BOOK_KEY,
    price_book_configmaps,
    resolve_context,
    status_rows,
    workload_status,
)
from tests.plugins.cluster import REPO_ROOT, KubeCluster, admit_examples_in
from tests.test_cli_errors import assert_user_error
from tests.test_explain import _status, _workload

PACKAGED = REPO_ROOT / "operator" / "inference_placement" / "data" / "price-book.yaml"


def _kubeconfig(path: Path, server: str, token: str, ca_file: str | None = None) -> Path:
    """Two contexts on one cluster: ``here`` (current, namespace ``team-a``) and ``there`` (no namespace)."""
    cluster: dict[str, Any] = {"server": server}
    if ca_file:
        cluster["certificate-authority"] = ca_file
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": "admin", "user": {"token": token}}],
                "contexts": [
                    {"name": "here", "context": {"cluster": "local", "user": "admin", "namespace": "team-a"}},
                    {"name": "there", "context": {"cluster": "local", "user": "admin"}},
                ],
                "current-context": "here",
            }
        )
    )
    return path


# ----------------------------------------------------------------------------------------------- unit


def test_the_namespace_and_context_follow_kubectls_rules(tmp_path: Path) -> None:
    config = str(_kubeconfig(tmp_path / "config", "https://127.0.0.1:9", "t"))
    assert resolve_context(config, None, None).namespace == "team-a"  # the current context's namespace
    assert resolve_context(config, None, "ml").namespace == "ml"  # -n wins
    there = resolve_context(config, "there", None)
    assert (there.context, there.namespace) == ("there", "default")  # a context without one: default
    with pytest.raises(typer.BadParameter, match=r"no context 'elsewhere'.*here, there"):
        resolve_context(config, "elsewhere", None)


def test_status_puts_the_verdict_first_and_fits_80_columns() -> None:
    obj = _workload(status=_status(rps=0.02, placement="lambda"))
    row = workload_status(obj)
    assert next(iter(row)) == "verdict"
    assert row["verdict"] == "serves on lambda, Ready=True"
    assert row["monthlyCostUsd"] == 3.1 and row["rps"] == 0.02
    moving = _workload(status={**_status(placement="cluster"), "migration": {"target": "cloudrun", "step": "Shift"}})
    moving["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "Migrating", "message": "traffic 10% on cloudrun"}
    ]
    assert workload_status(moving)["verdict"] == (
        "serves on cluster, Ready=False, migrating to cloudrun (Shift): traffic 10% on cloudrun"
    )
    assert workload_status({"metadata": {"name": "new", "namespace": "ml"}})["verdict"] == (
        "not placed yet, Ready=Unknown"
    )
    console = Console(record=True, width=80)
    console.print(status_rows([row, workload_status(moving)], all_namespaces=True))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    header = next(line for line in text.splitlines() if line.strip()).split()
    assert header[:3] == ["namespace", "name", "verdict"]
    assert "sentiment-classifier" in text  # a name is never folded


def test_the_price_book_configmap_is_read_from_the_charts_deployment() -> None:
    from tests.test_chart import one, render_chart

    default = one(render_chart(release="prod", namespace="ops"), "Deployment")
    assert price_book_configmaps(default) == ["prod-inference-placement-config"]
    own = one(render_chart(values=["priceBook.existingConfigMap=our-prices"]), "Deployment")
    assert price_book_configmaps(own) == ["our-prices"]
    labels = default["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "inference-placement"
    assert labels["app.kubernetes.io/component"] == "operator"  # what OPERATOR_SELECTOR finds


def test_the_krew_manifest_installs_kubectl_iw(tmp_path: Path) -> None:
    manifest = yaml.safe_load((REPO_ROOT / "deploy" / "krew" / "iw.yaml").read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin" and manifest["metadata"]["name"] == "iw"
    spec = manifest["spec"]
    assert spec["shortDescription"] and spec["version"].startswith("v")
    for platform in spec["platforms"]:
        assert platform["bin"] == "kubectl-iw"
        assert len(platform["sha256"]) == 64 and platform["uri"].startswith("https://")
    # the archive package.py builds is the one the manifest's sha256 names (same sources, same bytes)
    built = subprocess.run(
        [sys.executable, str(REPO_ROOT / "deploy" / "krew" / "package.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    path, digest = built.stdout.split()
    assert digest == spec["platforms"][0]["sha256"], "run deploy/krew/package.py OUT --update"
    with tarfile.open(path) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert set(members) == {"kubectl-iw", "LICENSE"} and members["kubectl-iw"].mode & stat.S_IXUSR
    assert {f["from"] for f in spec["platforms"][0]["files"]} == set(members)
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'kubectl-iw = "inference_placement.kubectl:main"' in pyproject


# ----------------------------------------------------------------------------------------------- the cluster


def _plugin_dir(tmp_path: Path) -> Path:
    """A PATH entry holding ``kubectl-iw`` as the console script installs it (here: this checkout's package)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "kubectl-iw"
    script.write_text(f"#!{sys.executable}\nfrom inference_placement.kubectl import main\nmain()\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


@pytest.fixture()
def deployed(crd_installed: KubeCluster, namespace: str, tmp_path: Path) -> dict[str, Any]:
    """In ``namespace``: the chart's operator ConfigMap and Deployment (0 replicas: only their objects matter
    here) with a price book whose cluster GPU prices are doubled, and a workload with a recorded status."""
    from kubernetes import client, config

    from tests.test_chart import by_kind, render_chart

    kube = crd_installed
    book = yaml.safe_load(PACKAGED.read_text())
    book["prices"]["cluster"]["cpu_vcpu_hour"] = 3 * float(book["prices"]["cluster"]["cpu_vcpu_hour"])
    release = f"iw-{uuid.uuid4().hex[:6]}"
    manifests = render_chart(
        release=release,
        namespace=namespace,
        values=["replicaCount=0"],
    )
    configmap = next(m for m in by_kind(manifests, "ConfigMap") if PRICE_BOOK_KEY in (m.get("data") or {}))
    configmap["data"][PRICE_BOOK_KEY] = yaml.safe_dump(book)
    deployment = by_kind(manifests, "Deployment")[0]
    for doc in (configmap, deployment):
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    admit_examples_in(kube, namespace)  # the example names the docs' admin targets
    doc = _workload()
    status = doc.pop("status")
    doc["metadata"] = {"name": "sentiment-classifier", "namespace": namespace}
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=kube.kubeconfig))
    status["observedGeneration"] = 1
    api.patch_namespaced_custom_object_status(
        "placement.inference.dev", "v1alpha1", namespace, "inferenceworkloads", "sentiment-classifier",
        {"status": status},
    )  # fmt: skip
    book_path = tmp_path / "operator-book.yaml"
    book_path.write_text(yaml.safe_dump(book))
    return {"configmap": f"{namespace}/{configmap['metadata']['name']}", "book": book_path}


def _kubectl_iw(kube: KubeCluster, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl iw ARGS`` run by kubectl (which finds the plugin on PATH), with the kubeconfig in ``tmp_path``."""
    env = dict(os.environ)
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    env["PYTHONPATH"] = str(REPO_ROOT / "operator")
    env["KUBECONFIG"] = str(tmp_path / "kubeconfig")
    env["COLUMNS"] = "80"
    return subprocess.run(
        [kube.kubectl_path, "iw", *args], capture_output=True, text=True, timeout=180, check=False, env=env
    )


@pytest.mark.cluster
def test_kubectl_iw_on_the_local_cluster(
    crd_installed: KubeCluster, namespace: str, deployed: dict[str, Any], tmp_path: Path
) -> None:
    kube = crd_installed
    config = _kubeconfig(tmp_path / "kubeconfig", kube.api_url, kube.admin_token, kube.ca_file)
    _plugin_dir(tmp_path)
    # the current context's namespace is another one: -n and --context choose, as with kubectl
    explain = _kubectl_iw(kube, tmp_path, "explain", "sentiment-classifier", "-n", namespace, "-o", "json",
                          "--operator-namespace", namespace)  # fmt: skip
    assert explain.returncode == 0, explain.stderr
    data = json.loads(explain.stdout)
    assert next(iter(data)) == "verdict" and data["verdict"].startswith("verdict: ")
    assert f"price book: ConfigMap {deployed['configmap']}" in " ".join(data["notes"])
    # the costs are the operator's price book's: the same as explain with that book given as a file
    reference = subprocess.run(
        [sys.executable, "-m", "inference_placement.cli", "explain", "sentiment-classifier", "-n", namespace,
         "--kubeconfig", str(config), "--price-book", str(deployed["book"]), "-o", "json"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "operator")},
    )  # fmt: skip
    assert reference.returncode == 0, reference.stderr
    expected = json.loads(reference.stdout)
    assert data["targets"] == expected["targets"] and data["verdict"] == expected["verdict"]
    with_packaged = subprocess.run(
        [sys.executable, "-m", "inference_placement.cli", "explain", "sentiment-classifier", "-n", namespace,
         "--kubeconfig", str(config), "-o", "json"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "operator")},
    )  # fmt: skip
    assert with_packaged.returncode == 0, with_packaged.stderr

    def cluster_cost(doc: dict[str, Any]) -> float:
        return float(next(t for t in doc["targets"] if t["target"] == "cluster")["projected_monthly_cost_usd"])

    assert cluster_cost(data) > 2 * cluster_cost(json.loads(with_packaged.stdout))  # the operator's book: 3x vCPU

    # a context whose namespace is the workload's: no -n needed; YAML; the table puts the verdict first
    config.write_text(config.read_text().replace("namespace: team-a", f"namespace: {namespace}"))
    as_yaml = _kubectl_iw(kube, tmp_path, "explain", "sentiment-classifier", "-o", "yaml",
                          "--operator-namespace", namespace)  # fmt: skip
    assert as_yaml.returncode == 0, as_yaml.stderr
    assert yaml.safe_load(as_yaml.stdout)["verdict"] == data["verdict"]
    table = _kubectl_iw(kube, tmp_path, "explain", "sentiment-classifier", "--operator-namespace", namespace)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].startswith("verdict: ")
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    # --context there (no namespace: default) misses the workload, in one line
    elsewhere = _kubectl_iw(kube, tmp_path, "explain", "sentiment-classifier", "--context", "there")
    assert_user_error(elsewhere, ExitCode.FAILED, "InferenceWorkload default/sentiment-classifier: not found")

    status = _kubectl_iw(kube, tmp_path, "status", "-o", "json")
    assert status.returncode == 0, status.stderr
    items = json.loads(status.stdout)["items"]
    assert [(i["name"], i["verdict"]) for i in items] == [("sentiment-classifier", "serves on lambda, Ready=True")]
    one_table = _kubectl_iw(kube, tmp_path, "status", "sentiment-classifier")
    assert one_table.returncode == 0, one_table.stderr
    assert one_table.stdout.splitlines()[0] == f"verdict: {namespace}/sentiment-classifier serves on lambda, Ready=True"
    listing = _kubectl_iw(kube, tmp_path, "status", "-A")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if f" {namespace} " in line)
    assert row.split()[:4] == [namespace, "sentiment-classifier", "serves", "on"], row  # names whole, verdict next
    everywhere = json.loads(_kubectl_iw(kube, tmp_path, "status", "-A", "-o", "json").stdout)["items"]
    ours = [i for i in everywhere if i["namespace"] == namespace]
    assert [i["verdict"] for i in ours] == ["serves on lambda, Ready=True"]

    trace = tmp_path / "trace.csv"
    header = "HashFunction,HashApp," + ",".join(f"minute_{i + 1}" for i in range(60))
    trace.write_text(header + "\nf,a," + ",".join("30" for _ in range(60)) + "\n")
    simulate = _kubectl_iw(kube, tmp_path, "simulate", "sentiment-classifier", "--trace", str(trace),
                           "--no-optimum", "-o", "json", "--operator-namespace", namespace)  # fmt: skip
    assert simulate.returncode == 0, simulate.stderr
    what_if = json.loads(simulate.stdout)
    assert next(iter(what_if)) == "verdict" and what_if["verdict"].startswith("verdict: ours costs")
    assert what_if["workload"] == f"{namespace}/sentiment-classifier" and what_if["requests"] == 30 * 60
    assert what_if["price_book"].startswith(f"ConfigMap {deployed['configmap']}")
    assert {"ours", "static-cluster"} <= set(what_if["policies"])

    # a second operator reading another price book: which one is meant must be said
    from tests.test_chart import by_kind, render_chart

    other = by_kind(
        render_chart(
            release=f"iw2-{uuid.uuid4().hex[:6]}",
            namespace=namespace,
            values=["replicaCount=0", "priceBook.existingConfigMap=other-prices"],
        ),
        "Deployment",
    )[0]
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(other))
    ambiguous = _kubectl_iw(kube, tmp_path, "explain", "sentiment-classifier", "--operator-namespace", namespace)
    assert_user_error(ambiguous, ExitCode.USAGE, "several operators with their own price books", "other-prices")
