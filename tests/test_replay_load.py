"""``LoadReplay`` on loopback against a real HTTP server: every request is sent at its time and recorded, and a
failed answer keeps its own words (body start, ``server``, ``x-served-by``), so a replay that fails says which hop
refused (the demo prints it with each failing step)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inference_placement.devtools.replay.load import LoadReplay, schedule_from_counts


class _Handler(BaseHTTPRequestHandler):
    """Answers 200 as ``model`` on ``/predict``; anything else 404 as Envoy's unknown-host route would."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/predict":
            body, status, headers = b'{"ok": true}', 200, {"x-served-by": "model"}
        else:
            body, status, headers = b"no inference workload is routed for this Host\n", 404, {"server": "envoy"}
        self.send_response_only(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_schedule_keeps_fractions_and_stays_in_each_step() -> None:
    times = schedule_from_counts([0.5, 0.5, 3.0], seconds_per_step=2.0)
    assert len(times) == 4  # the two halves add up to one request, sent in the second step
    assert 2.0 <= times[0] < 4.0 and all(4.0 <= t < 6.0 for t in times[1:])
    assert times == schedule_from_counts([0.5, 0.5, 3.0], seconds_per_step=2.0), "seeded: repeatable"


def test_a_served_replay_records_who_answered(server: int) -> None:
    replay = LoadReplay(server, "w.ns.svc", [0.0, 0.05, 0.1], connections=2).start()
    replay.join(timeout=10)
    summary = replay.summary()
    assert summary.requests == 3 and summary.failed == 0 and summary.served_by == {"model": 3}
    assert all(r.detail is None for r in replay.responses)


def test_a_failed_answer_says_what_refused_it(server: int) -> None:
    replay = LoadReplay(server, "w.ns.svc", [0.0, 0.05], path="/elsewhere", connections=1).start()
    replay.join(timeout=10)
    failures = replay.failures()
    assert [f.status for f in failures] == [404, 404]
    assert failures[0].detail == "'no inference workload is routed for this Host' (server: envoy, x-served-by: -)"
    assert replay.summary().errors == {"HTTP 404": 2}, "failures are counted by kind, not by their words"
