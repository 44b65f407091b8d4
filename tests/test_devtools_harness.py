"""The developer tools' process harness against real processes: a scraping Prometheus (the demo's) and stopping by PID.

The backfilled mode is exercised by every test that uses ``tests.plugins.prometheus`` (it starts servers through the
same ``start_prometheus``)."""

from __future__ import annotations

import json
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from inference_placement.devtools.processes import Processes, free_port, wait_http
from inference_placement.devtools.prometheus import start_prometheus
from tests.plugins.operator import wait_for
from tests.plugins.prometheus import PrometheusBinaries


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"# TYPE model_requests_total counter\nmodel_requests_total 7\n"
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def exporter() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _query(url: str, promql: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=5) as r:
        result: list[dict[str, object]] = json.load(r)["data"]["result"]
        return result


def test_the_demos_prometheus_scrapes_its_targets_with_their_labels(
    prometheus_binaries: PrometheusBinaries, exporter: str, tmp_path: Path
) -> None:
    labels = {"namespace": "inference-demo", "workload": "live-classifier"}
    server = start_prometheus(
        prometheus_binaries.prometheus, tmp_path / "prometheus", scrape_targets=[(exporter, labels)], scrape_seconds=1
    )
    try:
        found = wait_for(
            lambda: _query(server.url, "model_requests_total"), timeout=30, interval=0.5, what="a scraped sample"
        )
        metric = found[0]["metric"]
        assert isinstance(metric, dict)
        assert {k: metric[k] for k in labels} == labels
        assert metric["job"] == "model-servers" and metric["instance"] == exporter
    finally:
        server.stop()
    assert server.process.poll() is not None


def test_processes_stop_every_child_by_its_pid_even_one_that_ignores_sigterm(tmp_path: Path) -> None:
    procs = Processes()
    port = free_port()
    server = procs.start(
        "http", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], tmp_path / "http.log"
    )
    wait_http(f"http://127.0.0.1:{port}/", 30, ok_only=True, process=server)
    ignore_sigterm = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True)"
    stubborn = procs.start("stubborn", [sys.executable, "-c", f"{ignore_sigterm}; time.sleep(600)"], tmp_path / "s.log")
    wait_for(lambda: "ready" in (tmp_path / "s.log").read_text(), timeout=30, interval=0.1, what="SIGTERM ignored")
    procs.stop_all(timeout_seconds=2)
    assert server.poll() is not None
    assert stubborn.poll() is not None and stubborn.returncode == -9


def test_waiting_for_a_process_that_exits_fails_at_once(tmp_path: Path) -> None:
    procs = Processes()
    gone = procs.start("gone", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "gone.log")
    with pytest.raises(RuntimeError, match=r"exited \(3\)"):
        wait_http(f"http://127.0.0.1:{free_port()}/", 60, process=gone)
