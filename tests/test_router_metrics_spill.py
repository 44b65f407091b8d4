"""A spilling workload measured right: the real Envoy renders a spilling route (pods: ``e2e/model_server.py`` with a
queue cap of 2, 0.3 s per prediction; overflow: a second ``model_server.py`` standing in for Cloud Run, 1.2 s per
prediction), the real Prometheus scrapes the router's stats port every second, and the real ``PrometheusSource``
reads it with the default templates.

The load: a burst of 6 concurrent requests every second, so about 4 of each 6 are refused by the pods (429) and
spilled by the composite cluster's retry. What the client saw, and what the source must report:
  - the request rate is the rate of requests sent (each counted once), not the attempts: the pods cluster counts
    every first attempt and the Cloud Run cluster every spilled retry, so a naive sum over targets reads about
    10 rps where 6 were sent;
  - the SLO-miss share (objective 0.5 s) is the spilled share: the pods' 0.3 s answers meet it, the overflow's
    1.2 s ones do not; read from the composite cluster's histogram (the client's view), not from the targets';
  - the peak in flight is the targets' (the composite cluster's gauge stays 0): the overflow target always has a
    burst's spilled requests in flight (1.2 s each, one burst a second), so every scrape sees at least 4;
  - per target, the Cloud Run cluster counts exactly the spilled requests.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from inference_placement.api.spec import TargetName
from inference_placement.api.workload import WorkloadKey
from inference_placement.devtools.processes import stop_process
from inference_placement.devtools.prometheus import prometheus_config
from inference_placement.metrics.prometheus import PrometheusSource
from inference_placement.metrics.promql import PromQLTemplates, Signal, render_queries
from inference_placement.routing.model import Backend, CloudRunUpstream, Overflow, PodsUpstream, Route, UpstreamAddress
from tests.plugins.envoy import EnvoyRouter, FakeGcpMetadata, start_envoy
from tests.plugins.prometheus import PrometheusBinaries, PrometheusServer, scraping_prometheus

pytestmark = pytest.mark.slow  # real Envoy, Prometheus and two model servers; about 45 s

NS, NAME = "team", "spiller"
KEY = WorkloadKey(NS, NAME)
HOST = f"{NAME}.{NS}.svc"
CLOUDRUN_HOST = "ip-team-spiller-abc123-uc.a.run.app"
MODEL_SERVER = Path(__file__).resolve().parent.parent / "e2e" / "model_server.py"
CAP, BURST, PERIOD = 2, 6, 1.0
POD_SECONDS, OVERFLOW_SECONDS, OBJECTIVE = 0.3, 1.2, 0.5
LOAD_SECONDS = 24.0
RATE_WINDOW = 10.0


class _ModelServer:
    def __init__(self, served_by: str, **env: str) -> None:
        environment = {**os.environ, "PORT": "0", "HOST": "127.0.0.1", "SERVED_BY": served_by, **env}
        self.process = subprocess.Popen(
            [sys.executable, str(MODEL_SERVER)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # one JSON line with the port once it listens
        if not line:
            self.stop()
            raise AssertionError(f"model server {served_by} did not start")
        self.address = UpstreamAddress("127.0.0.1", int(json.loads(line)["port"]))

    def stop(self) -> None:
        stop_process(self.process, 15)


@pytest.fixture
def router(envoy_binary: str, tmp_path: Path, fake_gcp_metadata: FakeGcpMetadata) -> Iterator[EnvoyRouter]:
    envoy = start_envoy(
        envoy_binary, tmp_path / "envoy", fake_gcp_metadata.address, stats_listener=True, overflow_listener=True
    )
    try:
        yield envoy
    finally:
        envoy.stop()


@pytest.fixture
def servers() -> Iterator[tuple[_ModelServer, _ModelServer]]:
    pods = _ModelServer("cluster", MAX_IN_FLIGHT=str(CAP), SERVICE_SECONDS=str(POD_SECONDS))
    try:
        overflow = _ModelServer("cloudrun", SERVICE_SECONDS=str(OVERFLOW_SECONDS))
    except BaseException:
        pods.stop()
        raise
    try:
        yield pods, overflow
    finally:
        overflow.stop()
        pods.stop()


def _post(port: int) -> str:
    """One prediction through Envoy: who served it (``x-served-by``), or the status/error when it failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/predict", body=b'{"instances": [1]}', headers={"Host": HOST})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            return f"status {response.status}"
        return response.getheader("x-served-by") or "?"
    except (OSError, http.client.HTTPException) as err:
        return type(err).__name__
    finally:
        conn.close()


class _Bursts:
    """``BURST`` concurrent requests every ``PERIOD`` seconds for ``LOAD_SECONDS`` (a thread per request, so a slow
    answer never delays the next burst)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outcomes: Counter[str] = Counter()
        self.sent = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._runner = threading.Thread(target=self._run, daemon=True)

    def _one(self) -> None:
        outcome = _post(self.port)
        with self._lock:
            self.outcomes[outcome] += 1

    def _run(self) -> None:
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < LOAD_SECONDS:
            for _ in range(BURST):
                thread = threading.Thread(target=self._one, daemon=True)
                thread.start()
                self._threads.append(thread)
                self.sent += 1
            tick += 1
            time.sleep(max(0.0, start + tick * PERIOD - time.monotonic()))

    def start(self) -> _Bursts:
        self._runner.start()
        return self

    def join(self) -> None:
        self._runner.join(LOAD_SECONDS + 30)
        for thread in self._threads:
            thread.join(60)
        assert not self._runner.is_alive() and not any(t.is_alive() for t in self._threads)


def _query(prometheus: PrometheusServer, promql: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{urlencode({'query': promql})}", timeout=10) as r:
        result: list[dict[str, Any]] = json.load(r)["data"]["result"]
    return result


def _value(prometheus: PrometheusServer, promql: str) -> float:
    result = _query(prometheus, promql)
    assert len(result) == 1, (promql, result)
    return float(result[0]["value"][1])


def _wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


async def test_a_spilling_workload_is_measured_as_the_client_saw_it(
    router: EnvoyRouter,
    servers: tuple[_ModelServer, _ModelServer],
    prometheus_binaries: PrometheusBinaries,
    tmp_path: Path,
) -> None:
    pods, overflow = servers
    cloudrun = CloudRunUpstream(host=CLOUDRUN_HOST, audience=f"https://{CLOUDRUN_HOST}", address=overflow.address)
    route = Route(
        NS,
        NAME,
        (Backend(TargetName.CLUSTER, PodsUpstream((pods.address,)), 100),),
        overflow=Overflow(TargetName.CLOUDRUN, cloudrun),
    )
    await router.applier().apply([route])
    config = yaml.safe_dump(prometheus_config([], router=[router.stats_target], scrape_seconds=1))
    with scraping_prometheus(prometheus_binaries, config, tmp_path / "prom") as prom:
        source = PrometheusSource(
            prom.url,
            step_seconds=2,
            range_seconds=30,
            rate_window_seconds=RATE_WINDOW,
            slo_miss_window_seconds=60,
            max_staleness_seconds=10,
        )
        load = _Bursts(router.listen_port).start()
        await asyncio.sleep(LOAD_SECONDS - 3)  # > rate window + Envoy's 5 s histogram flush + scrapes, load still on
        during = await source.fetch([KEY], datetime.now(UTC), {KEY: OBJECTIVE})
        await asyncio.to_thread(load.join)
        # every counter final and scraped: Envoy's stats flush (5 s) and a scrape after it
        await asyncio.sleep(7)
        after = await source.fetch([KEY], datetime.now(UTC), {KEY: OBJECTIVE})

        served = Counter(load.outcomes)
        spilled = served["cloudrun"]
        sent = load.sent
        window = during.windows.get(KEY)
        print(
            f"\nsent {sent}, served {dict(served)}; during: rps {window.rps[-3:] if window else None} p99 "
            f"{window.observed_p99_seconds if window else None} miss {window.slo_miss_share if window else None} "
            f"in-flight {during.in_flight.get(KEY)} errors {during.error_rate.get(KEY)} "
            f"problem {during.problem_for(KEY)}"
        )
        # the load did what the test needs: nothing failed, and a large share spilled
        assert sum(served.values()) == sent and set(served) <= {"cluster", "cloudrun"}, served
        assert spilled >= sent // 3, served

        # exact, from the final counters: the default template's arithmetic counts each request once
        rendered = render_queries(PromQLTemplates(selector=f'workload="{NAME}"'), rate_window_seconds=RATE_WINDOW)
        counted_once = rendered[Signal.REQUEST_RATE].replace("rate(", "max_over_time(").replace("[10s]", "[5s]")
        assert _value(prom, counted_once) == sent
        by_target = {
            item["metric"]["target"]: float(item["value"][1])
            for item in _query(prom, f'sum by (target) (envoy_cluster_upstream_rq_total{{workload="{NAME}"}})')
        }
        print(f"attempts by target {by_target}")
        # the spilled requests under the overflow target; every first attempt under the pods
        assert by_target["cloudrun"] == spilled
        assert by_target["cluster"] == sent
        retries = _value(prom, f'sum(envoy_cluster_upstream_rq_retry{{workload="{NAME}",target="composite"}})')
        assert retries == spilled
        per_target_rate = {
            item["metric"]["target"]
            for item in _query(
                prom, f'sum by (target) (rate(envoy_cluster_upstream_rq_total{{workload="{NAME}"}}[30s])) > 0'
            )
        }
        assert per_target_rate == {"cluster", "cloudrun"}

        # the source, while the load ran: the rate sent (BURST per PERIOD), not the attempts (~10 rps)
        assert during.problem is None and window is not None
        # rate(): 1 s scrapes in a 10 s window see 9 or 10 whole bursts, extrapolated to the window: +-10%,
        # +-5% more for a burst whose requests straddle a scrape; the attempts would read +60% or more
        assert window.rps[-1] == pytest.approx(BURST / PERIOD, rel=0.15)
        assert 1 + spilled / sent > 1.5  # what a double count would add: outside the tolerance above
        # the SLO-miss share is the spilled share (the client's view: the composite's histogram)
        assert window.slo_miss_share is not None
        assert window.slo_miss_share == pytest.approx(spilled / sent, abs=0.1)
        # p99: the overflow's 1.2 s answers (plus the refused first attempt) lie in the 1000..1500 ms bucket (or
        # the next one on a loaded machine)
        assert window.observed_p99_seconds is not None and 1.0 < window.observed_p99_seconds <= 2.0
        assert during.error_rate[KEY] == 0.0  # a refusal the overflow then served is no error
        # in flight: the pods' and the overflow target's peaks (never the composite's gauge, which stays 0)
        assert BURST - CAP <= during.in_flight[KEY] <= 2 * BURST + CAP

        # after the load: the miss share over the whole run, from the final histogram
        final = after.windows[KEY]
        assert final.slo_miss_share == pytest.approx(spilled / sent, abs=0.05)
