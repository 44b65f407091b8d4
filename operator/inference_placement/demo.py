"""``inference-placement demo``: the whole product on this machine, end to end, then cleaned up.

Brings up the real local Kubernetes (control plane + a node running Pods), the Lambda stand-in (moto's server)
and the Cloud Run stand-in, runs the operator, applies the examples, shows what it decided and why, replays a real
production trace through the same placement policy to show decisions and migrations over a day, and stops every
process it started. Runs from a source checkout (it uses ``e2e/`` and the stand-in in ``tests/``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

__all__ = ["register"]

NAMESPACE = "inference-demo"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIADEMO0000000000000",
    "AWS_SECRET_ACCESS_KEY": "demo-secret-not-a-real-key",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
LAMBDA_ROLE = "inference-placement-lambda"


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "e2e" / "local-cluster.sh").exists() and (parent / "examples").is_dir():
            return parent
    raise typer.BadParameter("the demo runs from a source checkout (e2e/local-cluster.sh not found)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Processes:
    """Every process the demo starts, stopped by PID at the end (in reverse order)."""

    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        handle = log.open("ab")
        proc = subprocess.Popen(
            args, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        self.started.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.started):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_http(url: str, timeout: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


class _Demo:
    def __init__(self, root: Path, work: Path, console: Any) -> None:
        self.root = root
        self.work = work
        self.console = console
        self.procs = _Processes()
        self.cluster: dict[str, Any] = {}
        self.we_started_cluster = False

    # ------------------------------------------------------------------ helpers

    def step(self, text: str) -> None:
        self.console.rule(f"[bold]{text}")

    def script(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.root / "e2e" / "local-cluster.sh"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [self.cluster["kubectl"], "--kubeconfig", self.cluster["kubeconfig"], *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    # ------------------------------------------------------------------ steps

    def cluster_up(self) -> None:
        self.step("1/6  local Kubernetes 1.20: etcd, apiserver, controller-manager, scheduler, kubelet + containerd")
        before = self.script("status", "--json", timeout=120)
        was_up = False
        with suppress(ValueError):
            was_up = bool(json.loads(before.stdout).get("up"))
        started = time.monotonic()
        result = self.script("up", "--with-node")
        if result.returncode != 0:
            self.console.print(result.stdout[-4000:], result.stderr[-2000:])
            raise RuntimeError("e2e/local-cluster.sh up --with-node failed")
        self.we_started_cluster = not was_up
        self.cluster = json.loads(self.script("status", "--json", timeout=120).stdout)
        self.console.print(
            f"cluster ready in {time.monotonic() - started:.0f}s: {self.cluster['api_url']}, "
            f"node {self.cluster['node_name']} ({'Ready' if self.cluster['node_enabled'] else 'not ready'})"
        )

    def stand_ins(self) -> dict[str, str]:
        self.step("2/6  cloud stand-ins on loopback: moto (Lambda) and a Cloud Run Admin API v2 stand-in")
        env = {**os.environ, **FAKE_AWS}
        moto_port = _free_port()
        self.procs.start(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            self.work / "moto.log",
            env,
        )
        moto_url = f"http://127.0.0.1:{moto_port}"
        _wait_http(f"{moto_url}/moto-api/", 60)
        import urllib.request

        import boto3

        request = urllib.request.Request(
            f"{moto_url}/moto-api/config",
            data=json.dumps({"lambda": {"use_docker": False}}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()
        iam = boto3.client(
            "iam",
            endpoint_url=moto_url,
            region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        )
        assume = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
        iam.create_role(RoleName=LAMBDA_ROLE, AssumeRolePolicyDocument=json.dumps(assume))
        run_port = _free_port()
        self.procs.start(
            "cloudrun-standin",
            [sys.executable, "-m", "tests.cloudrun_standin", "--port", str(run_port)],
            self.work / "cloudrun.log",
            {**os.environ, "PYTHONPATH": str(self.root)},
        )
        run_url = f"http://127.0.0.1:{run_port}"
        _wait_http(f"{run_url}/standin/services", 60)
        self.console.print(f"Lambda (moto) at {moto_url}; Cloud Run stand-in at {run_url}")
        return {"lambda": moto_url, "cloudrun": run_url}

    def operator(self, endpoints: dict[str, str]) -> None:
        self.step("3/6  CRD and the operator (inference-placement run)")
        self.kubectl("apply", "-f", str(self.root / "crds" / "inferenceworkloads.yaml"))
        self.kubectl("wait", "--for=condition=Established", "crd/inferenceworkloads.placement.inference.dev")
        self.kubectl("create", "namespace", NAMESPACE, check=False)
        env = {**os.environ, **FAKE_AWS}
        self.procs.start(
            "operator",
            [
                sys.executable,
                "-m",
                "inference_placement.cli",
                "run",
                "--kubeconfig",
                self.cluster["kubeconfig"],
                "--namespace",
                NAMESPACE,
                "--tick-seconds",
                "5",
                "--health-port",
                "0",
                "--metrics-port",
                "0",
                "--log-format",
                "plain",
                "--set",
                "cluster.imagePullPolicy=Never",
                "--set",
                f"lambda.endpoint={endpoints['lambda']}",
                "--set",
                f"cloudrun.endpoint={endpoints['cloudrun']}",
            ],
            self.work / "operator.log",
            env,
        )
        self.console.print(f"operator running (log: {self.work / 'operator.log'})")

    def examples(self) -> list[str]:
        self.step("4/6  the examples: a bursty CPU classifier, an LLM on a MIG slice, an L4 embedder, a pinned model")
        names = []
        for path in sorted((self.root / "examples").glob("*.yaml")):
            doc = yaml.safe_load(path.read_text())
            doc["metadata"]["namespace"] = NAMESPACE
            if doc["spec"].get("accelerator", {}).get("type", "none") == "none":
                # The node runs Pods for real: CPU-only models use the local model-server image.
                doc["spec"]["model"]["image"] = self.cluster["model_server_image"]
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
            names.append(doc["metadata"]["name"])
        return names

    def show(self, names: list[str], timeout: float = 120) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        items: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            items = json.loads(self.kubectl("get", "iw", "-n", NAMESPACE, "-o", "json"))["items"]
            settled = [i for i in items if i.get("status", {}).get("phase") in ("Serving", "Invalid", "Degraded")]
            waiting_capacity = [
                i
                for i in items
                if any(
                    c["type"] == "CapacityAvailable" and c["status"] == "False"
                    for c in i.get("status", {}).get("conditions", [])
                )
            ]
            if len(settled) + len([i for i in waiting_capacity if i not in settled]) >= len(names):
                break
            time.sleep(2)
        self.console.print(self.kubectl("get", "iw", "-n", NAMESPACE))
        return items


def _decisions_table(items: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="What the operator decided, and why", show_lines=True)
    table.add_column("workload")
    table.add_column("placement")
    table.add_column("cost per target (USD/month)")
    table.add_column("reason")
    for item in items:
        status = item.get("status", {})
        costs = status.get("projectedMonthlyCostUsd", {})
        cost_text = ", ".join(f"{k} ${v:,.2f}" for k, v in costs.items()) or "-"
        decision = status.get("lastDecision", {})
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        reason = decision.get("reason") or next(
            (
                c.get("message", "")
                for t, c in conditions.items()
                if t in ("InvalidSpec", "Placed") and c.get("message")
            ),
            "",
        )
        capacity = conditions.get("CapacityAvailable")
        if capacity is not None and capacity["status"] == "False":
            reason += f"\n[yellow]capacity: {capacity.get('message', '')}[/yellow]"
        table.add_row(item["metadata"]["name"], status.get("placement") or "-", cost_text, reason)
    return table


@contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="inference-placement-demo-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def demo(
    trace: Annotated[
        Optional[Path], typer.Option(help="Trace to replay (default: the shared Azure Functions trace).")
    ] = None,
    row: Annotated[
        Optional[int], typer.Option(help="Row of a per-minute trace (default: the most variable row).")
    ] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the summary as JSON.")] = None,
    keep: Annotated[bool, typer.Option(help="Leave the cluster and processes running.")] = False,
) -> None:
    """The whole product end to end on this machine (needs root, a Debian machine and a source checkout)."""
    from rich.console import Console

    from inference_placement.demo_replay import replay_trace

    console = Console(width=max(140, shutil.get_terminal_size((140, 40)).columns))
    root = _repo_root()
    started = time.monotonic()
    with _workdir(keep) as work:
        run = _Demo(root, work, console)
        summary: dict[str, Any] = {}
        try:
            run.cluster_up()
            endpoints = run.stand_ins()
            run.operator(endpoints)
            names = run.examples()
            items = run.show(names)
            console.print(_decisions_table(items))
            run.step("5/6  a real production trace replayed through the same placement policy")
            summary = replay_trace(root, trace, row, console)
            run.step("6/6  clean-up")
        finally:
            if not keep:
                run.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False) if run.cluster else None
                run.procs.stop_all()
                if run.we_started_cluster:
                    run.script("down", timeout=600)
        summary["demo_seconds"] = round(time.monotonic() - started, 1)
        console.print(f"demo finished in {summary['demo_seconds']:.0f}s")
        if json_out is not None:
            json_out.write_text(json.dumps(summary, indent=2), encoding="utf-8")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
