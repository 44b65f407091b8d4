"""The real operator (subprocess, on the shared local cluster) measures a Cloud Run cold start at the real router and
records it in ``status.coldStart.cloudrun``: the workload is placed on Cloud Run (the Admin API stand-in), the
router is a real Envoy serving the operator's routes (file-based xDS), and the service's data plane is Cloud Run's
serving front end stand-in (``tests/cloudrun_standin/instances.py``: no instance until a request, the container
started and held until its startup probe passes, reclaimed when idle). The operator's price book states a short
idle lifetime (the stand-in reclaims sooner), so the test waits seconds, not Cloud Run's 15 minutes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cloudrun_standin import CloudRunStandin
from tests.cloudrun_standin.instances import CloudRunInstances
from tests.plugins.cluster import REPO_ROOT, KubeCluster
from tests.plugins.envoy import EnvoyRouter
from tests.plugins.operator import OperatorProcess, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "coldrun"
LOAD_SECONDS = 2.5
LIFETIME_SECONDS = 8.0
FLUSH_SECONDS = 5.5


def _workload(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"image": "registry.example.com/m:1", "sizeMb": 300, "serviceSeconds": 0.02},
            # an objective the cold start does not miss: no keep-warm pings, the service scales to zero
            "slo": {"latencyP99Seconds": 20, "attainment": 0.99, "tolerableColdStartSeconds": 30},
            "placement": {"allowedTargets": ["cloudrun"]},
            "cloudRun": {"project": "cold", "region": "us-central1", "concurrency": 4, "maxInstances": 1},
        },
    }


def _status(cluster: KubeCluster, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "iw", NAME, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}


def _price_book(tmp_path: Path) -> Path:
    book = yaml.safe_load((REPO_ROOT / "operator" / "inference_placement" / "data" / "price-book.yaml").read_text())
    book["platforms"]["cloudrun"]["keep_alive_idle_seconds"] = LIFETIME_SECONDS
    path = tmp_path / "price-book.yaml"
    path.write_text(yaml.safe_dump(book))
    return path


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[CloudRunInstances]:
    front = CloudRunInstances(
        REPO_ROOT / "e2e" / "model_server.py", tmp_path, startup_seconds=LOAD_SECONDS, idle_seconds=LIFETIME_SECONDS - 1
    )
    try:
        yield front
    finally:
        front.stop()


def _post(envoy: EnvoyRouter, host: str) -> tuple[int, float]:
    started = time.monotonic()
    code, _, _ = envoy.request(host, "/predict", method="POST")
    return code, time.monotonic() - started


def test_the_operator_records_a_cloud_run_cold_start_it_measured_at_the_router(
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    envoy_router: EnvoyRouter,
    cloudrun_standin: CloudRunStandin,
    instances: CloudRunInstances,
    tmp_path: Path,
) -> None:
    cloudrun_standin.service_url = instances.url
    operator_factory(
        namespace,
        "--price-book", str(_price_book(tmp_path)),
        "--set", f"cloudrun.endpoint={cloudrun_standin.url}",
        "--set", "cloudrun.project=cold",
        "--set", "router.mode=files",
        "--set", f"router.xdsDir={envoy_router.xds_dir}",
        "--set", f"router.adminUrl={envoy_router.admin_url}",
        "--set", f"router.url={envoy_router.listen_url}",
        "--set", f"router.trustedOrigins={instances.url}",
    )  # fmt: skip
    crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(_workload(namespace)))
    host = f"{NAME}.{namespace}.svc"
    wait_for(
        lambda: (
            (s := _status(crd_installed, namespace)).get("placement") == "cloudrun"
            and (s.get("targets") or {}).get("cloudrun", {}).get("ready")
        ),
        timeout=60,
        what="placed on cloudrun",
    )
    assert not _status(crd_installed, namespace)["lastDecision"].get("keepWarmInstances"), "no pings planned"
    counter = f"cluster.ip|{namespace}|{NAME}|cloudrun.upstream_rq_total"
    wait_for(lambda: envoy_router.stats().get(counter) is not None, timeout=30, what="the router's cloudrun cluster")
    assert instances.starts == 0, "nothing has started an instance yet"

    # idle longer than the book's lifetime (the operator ticks every 2 s): the next request needs a new instance
    time.sleep(LIFETIME_SECONDS + 4)
    code, cold_seconds = _post(envoy_router, host)
    assert code == 200 and cold_seconds >= LOAD_SECONDS and instances.starts == 1, (code, cold_seconds)
    time.sleep(FLUSH_SECONDS)
    warm = [_post(envoy_router, host) for _ in range(3)]
    assert all(code == 200 and seconds < 1.0 for code, seconds in warm), warm

    entry = wait_for(
        # the entry exists from the placement's measured lead (``provision``) on; the cold start adds its sample
        lambda: (
            (e := (_status(crd_installed, namespace).get("coldStart") or {}).get("cloudrun") or {}).get("samples") and e
        ),
        timeout=40,
        what="a measured Cloud Run cold start in status",
    )
    assert entry["samples"] == 1 and "first request after an idle gap" in entry["source"], entry
    assert LOAD_SECONDS * 0.9 <= entry["measuredSeconds"] <= cold_seconds + 0.1, (entry, cold_seconds)
    assert entry["assumedSeconds"] > 0 and entry["estimateSeconds"] > entry["assumedSeconds"] * 0.5
    events = crd_installed.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=ColdStartMeasured", "-o", "json"
    )
    messages = [e["message"] for e in json.loads(events.stdout)["items"]]
    assert any(m.startswith("cloudrun cold start") for m in messages), messages
    crd_installed.kubectl("delete", "iw", NAME, "-n", namespace, "--timeout=60s")
