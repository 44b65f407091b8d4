"""The operator's log lines: every line written while a workload is reconciled names it as structured fields
(``object.namespace`` / ``object.name`` in JSON, as on kopf's own per-object lines; a ``[namespace/name]`` prefix
in plain text), concurrent reconciles never mix them up, and ``run --log-level`` sets what is written."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from inference_placement.api.spec import TargetName
from inference_placement.api.workload import InferenceWorkload, WorkloadKey
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.log_context import workload_context, workload_fields
from inference_placement.controller.reconciler import Reconciler
from inference_placement.controller.runtime import configure_logging
from inference_placement.controller.telemetry import Telemetry
from inference_placement.devtools.scale.cluster import workload_body
from inference_placement.metrics.source import NoMetricsSource
from inference_placement.policy.price_book import default_price_book
from inference_placement.targets.base import DesiredTarget, TargetState
from inference_placement.targets.dry_run import DryRunTarget
from tests.plugins.memory_api import MemoryWriter

ROOT = Path(__file__).resolve().parents[1]
NS = "logs"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
target_log = logging.getLogger("inference_placement.targets.cluster")


class _Chatty:
    """The dry-run cluster target, logging as a real target does, with a pause so reconciles interleave."""

    name = TargetName.CLUSTER

    def __init__(self) -> None:
        self.inner = DryRunTarget()

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        target_log.info("ensuring the Deployment of %s", workload.metadata.name)
        await asyncio.sleep(0.01)  # the other workloads' reconciles run meanwhile
        target_log.warning("still ensuring %s", workload.metadata.name)
        return await self.inner.ensure(workload, desired)

    async def observe(self, workload: InferenceWorkload) -> TargetState | None:
        return None

    async def retire(self, workload: InferenceWorkload) -> bool:
        return True


@pytest.fixture()
def log_stream() -> Iterator[io.StringIO]:
    """Where the operator's log handler writes in the test (after ``configure_logging``, ``_capture`` points it
    here); the root logger's handlers and level are restored after."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield io.StringIO()
    root.handlers[:] = handlers
    root.setLevel(level)


def _capture(stream: io.StringIO) -> None:
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "_KopfStreamHandler":
            cast(logging.StreamHandler[Any], handler).setStream(stream)


def _fleet(names: list[str]) -> Fleet:
    writer = MemoryWriter()
    telemetry = Telemetry()
    reconciler = Reconciler(cast(Any, writer), {TargetName.CLUSTER: _Chatty()}, telemetry=telemetry)
    fleet = Fleet(
        reconciler=reconciler,
        metrics=NoMetricsSource(),
        price_book=default_price_book,
        clock=lambda: NOW,
        telemetry=telemetry,
    )
    for name in names:
        body = workload_body(NS, name)
        body["metadata"].update({"uid": f"uid-{name}", "generation": 1})
        fleet.observe("ADDED", writer.put(body))
    return fleet


def test_every_line_of_a_reconcile_names_its_workload_in_json(log_stream: io.StringIO) -> None:
    stream = log_stream
    configure_logging("json", log_level="info")
    _capture(stream)
    names = [f"w{i}" for i in range(6)]
    fleet = _fleet(names)
    asyncio.run(fleet._reconcile_keys({WorkloadKey(NS, n) for n in names}))
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    ensuring = [r for r in records if "ensuring" in r["message"]]
    assert len(ensuring) == 2 * len(names), records  # both lines of each workload's target, interleaved
    for record in ensuring:
        about = record["message"].split()[-1]
        assert record["object"] == {
            "apiVersion": "placement.inference.dev/v1alpha1",
            "kind": "InferenceWorkload",
            "namespace": NS,
            "name": about,
        }, record
    # the fields stay on the record's own object; the message is not rewritten in JSON
    assert all(not r["message"].startswith("[") for r in records)
    logging.getLogger("inference_placement.controller.fleet").warning("outside any reconcile")
    last = json.loads(stream.getvalue().splitlines()[-1])
    assert last["message"] == "outside any reconcile" and "object" not in last


def test_plain_lines_start_with_the_workload_and_explicit_fields_work_outside(
    log_stream: io.StringIO,
) -> None:
    stream = log_stream
    configure_logging("plain", log_level="warning")
    _capture(stream)
    log = logging.getLogger("inference_placement.controller.router_sync")
    with workload_context(WorkloadKey("team-a", "chat")):
        log.warning("route unchanged")
        log.info("below the level: not written")
    log.warning("warm-up pings failed", extra=workload_fields(WorkloadKey("team-b", "embed")))
    log.warning("no workload")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].endswith("[team-a/chat] route unchanged") and "WARNING" in lines[0]
    assert lines[1].endswith("[team-b/embed] warm-up pings failed")
    assert lines[2].endswith("] no workload") and "[team-" not in lines[2]


def _run_operator_until(
    *flags: str, seen: Callable[[list[dict[str, Any]]], bool], tmp_path: Path, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """``inference-placement run FLAGS`` against an apiserver that is not there, stopped (by its PID) once its JSON
    log lines satisfy ``seen`` (or after ``timeout``: a loaded machine starts the interpreter slowly); its log
    lines, those written before it stopped included."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "operator"))
    command = [sys.executable, "-m", "inference_placement.cli", "run", "--kubeconfig", str(kubeconfig)]
    process = subprocess.Popen(
        [*command, "--metrics-port", "0", "--health-port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[dict[str, Any]] = []
    done = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("{"):
                lines.append(json.loads(line))
                if seen(lines):
                    done.set()
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        done.wait(timeout)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        reader.join(timeout=30)
    return lines


def test_run_log_level_sets_what_is_written(tmp_path: Path) -> None:
    default = _run_operator_until(seen=lambda ls: any(x["severity"] == "info" for x in ls), tmp_path=tmp_path)
    severities = {line["severity"] for line in default}
    assert "info" in severities, default  # e.g. "... is a candidate for the lease"
    # the unreachable apiserver's warnings come after the start-up's info lines (which this level drops)
    quiet = _run_operator_until(
        "--log-level", "warning", seen=lambda ls: any(x["severity"] == "warn" for x in ls), tmp_path=tmp_path
    )
    severities = {line["severity"] for line in quiet}
    assert quiet and severities <= {"warn", "error", "fatal"}, quiet
