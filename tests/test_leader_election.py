"""High availability on the real apiserver: Lease-based leader election, fencing, conditional status writes, and two
real operator processes failing over in the middle of Cloud Run <-> Lambda migrations.

Control plane only (no node): the workload is allowed on Cloud Run and Lambda only, served by the Cloud Run stand-in
and moto's Lambda API, and routed by a real Envoy (files mode) that carries traffic all along. A real Prometheus is
backfilled with flat traffic so decisions are not withheld; the migrations are caused by moving ``placement.pin``.

Lease timings are short here (6 s / 4 s / 1 s instead of 15 s / 10 s / 2 s): each takeover costs a lease duration.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client.rest import ApiException

from inference_placement.api.spec import TargetName
from inference_placement.api.status import InferenceWorkloadStatus, MigrationStep
from inference_placement.controller.kube import KubeWriter, make_api_client
from inference_placement.controller.leader import LeaseElector, LeaseTimings, NotLeaderError
from inference_placement.controller.migration import start_migration
from inference_placement.devtools.lambda_runtime import LambdaRuntime
from inference_placement.devtools.processes import Processes, free_port
from inference_placement.devtools.replay.load import LoadReplay
from inference_placement.routing.model import UpstreamAddress
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cloud import FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_SECRET_ACCESS_KEY, TEST_REGION_AWS, MotoServer
from tests.plugins.cluster import KubeCluster
from tests.plugins.envoy import HttpUpstreams, start_envoy
from tests.plugins.faults import FaultProxy, api_connection
from tests.plugins.http_load import answers
from tests.plugins.lambda_runtime import start_local_function
from tests.plugins.live import (
    RATE_WINDOW_SECONDS,
    event_order,
    operator_args,
    render_openmetrics,
    traffic_lines,
    workload_doc,
)
from tests.plugins.operator import INLINE_CLOUD_IDENTITY, OperatorProcess, wait_for
from tests.plugins.prometheus import PrometheusBinaries, running_prometheus
from tests.plugins.secret_scan import record_operator_run

pytestmark = pytest.mark.cluster

LEASE_SECONDS, RENEW_DEADLINE_SECONDS, RETRY_SECONDS = 6.0, 4.0, 1.0
TICK_SECONDS = 2.0
"""``OperatorProcess`` runs with ``--tick-seconds 2``."""
HOLD_SECONDS = 1.0
DRAIN_SECONDS = 3.0
"""Longer than the traffic steps' hold: Draining is the one step a replica started after the previous kill could
otherwise miss (it follows Shifting@100 at once)."""
LOAD_SLACK_SECONDS = 5.0
"""What a loaded 2-core machine adds to a takeover (process scheduling, Python's event loop)."""
NAME = "ha"
LEASE_NAME = "inference-placement"
WALK = ["MigrationStarted", "TrafficShifted", "TrafficShifted", "TrafficShifted", "Draining", "RetiringSource"]


# ----------------------------------------------------------------------------------------------- in-process


def test_one_elector_leads_the_other_waits_and_takes_over_only_after_the_lease_expired(
    crd_installed: KubeCluster, namespace: str
) -> None:
    timings = LeaseTimings(3.0, 2.0, 0.5)

    async def scenario() -> tuple[float, bool, bool]:
        api_a, api_b = await make_api_client(crd_installed.kubeconfig), await make_api_client(crd_installed.kubeconfig)
        try:
            a = LeaseElector(api_a, namespace=namespace, name="lease", identity="a", timings=timings)
            b = LeaseElector(api_b, namespace=namespace, name="lease", identity="b", timings=timings)
            await a.acquire()
            a.fence()  # the leader may act
            holding = asyncio.create_task(a.hold())
            with pytest.raises(TimeoutError):  # a renews: b cannot take it
                await asyncio.wait_for(b.acquire(), timeout=2 * timings.lease_duration_seconds)
            with pytest.raises(NotLeaderError):
                b.fence()
            holding.cancel()  # a stops renewing (as if partitioned): it must stop acting before b can start
            stopped = time.monotonic()
            taking = asyncio.create_task(b.acquire())
            await asyncio.sleep(timings.renew_deadline_seconds + 0.1)
            a_fenced = not a.leading
            b_early = taking.done()
            await asyncio.wait_for(taking, timeout=2 * timings.lease_duration_seconds)
            return time.monotonic() - stopped, a_fenced, b_early
        finally:
            await api_a.close()
            await api_b.close()

    took, a_fenced, b_early = asyncio.run(scenario())
    assert a_fenced, "a still believed it leads after its renew deadline"
    assert not b_early, "b took the lease before a's renew deadline passed"
    assert timings.renew_deadline_seconds < took < timings.lease_duration_seconds + 2 * timings.retry_period_seconds + 2
    lease = crd_installed.kubectl_json("get", "lease", "lease", "-n", namespace)
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1


def test_a_status_write_from_a_stale_copy_is_refused(crd_installed: KubeCluster, namespace: str) -> None:
    doc = workload_doc(namespace, "unused", 1.0, 2.0, "p", name="stale", allowed_targets=("cloudrun",))
    crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

    async def scenario() -> tuple[str, int]:
        api = await make_api_client(crd_installed.kubeconfig)
        try:
            writer = KubeWriter(api)
            read = await writer.read(namespace, "stale")
            assert read is not None
            seen = read["metadata"]["resourceVersion"]
            # the replica that read `seen` moves the migration first
            migration = start_migration(TargetName.CLOUDRUN, TargetName.LAMBDA, "test", datetime.now(UTC))
            shifting = migration.model_copy(update={"step": MigrationStep.SHIFTING, "traffic_percent": 10})
            step = InferenceWorkloadStatus(migration=shifting).to_wire()
            await writer.patch_status(namespace, "stale", step, resource_version=seen)
            # a second writer with the same (now stale) copy would undo it: refused
            with pytest.raises(ApiException) as refused:
                await writer.patch_status(namespace, "stale", {"migration": None}, resource_version=seen)
            now = await writer.read(namespace, "stale")
            assert now is not None
            return str(now["status"]["migration"]["trafficPercent"]), refused.value.status
        finally:
            await api.close()

    percent, status = asyncio.run(scenario())
    assert (percent, status) == ("10", 409)


# ----------------------------------------------------------------------------------------------- two processes


@dataclass
class Ha:
    cluster: KubeCluster
    namespace: str
    operators: list[OperatorProcess]
    standin: CloudRunStandin
    lambda_proxy: FaultProxy
    replay: LoadReplay
    directory: Path
    role_arn: str
    kills: list[tuple[str, float, float]] = field(default_factory=list)
    started_at: dict[str, int] = field(default_factory=dict)
    """Each identity's log length when it was started (its log is appended to across restarts)."""
    """(step, seconds until the Lease changed hands, seconds until the step moved on) per SIGKILL."""

    def _get(self, path: str) -> dict[str, Any]:
        """One GET straight to the apiserver (kubectl takes ~0.3 s a call on a loaded machine: steps are ~2 s)."""
        conn = api_connection(self.cluster, timeout=5)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.cluster.admin_token}"})
            response = conn.getresponse()
            body = response.read()
            if response.status == 404:
                return {}
            if response.status != 200:
                raise OSError(f"GET {path}: HTTP {response.status}")
            return dict(json.loads(body))
        finally:
            conn.close()

    def status(self) -> dict[str, Any]:
        found = self._get(
            f"/apis/placement.inference.dev/v1alpha1/namespaces/{self.namespace}/inferenceworkloads/{NAME}"
        )
        return dict(found.get("status") or {})

    def holder(self) -> str | None:
        lease = self._get(f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{LEASE_NAME}")
        return str((lease.get("spec") or {}).get("holderIdentity") or "") or None

    def leader(self) -> OperatorProcess:
        holder = wait_for(self.holder, timeout=30, interval=0.2, what="a Lease holder")
        return next(op for op in self.operators if op.identity == holder)

    def step(self) -> str | None:
        """The migration's step (``Shifting@PERCENT``), None when none runs; a failed read is read again."""
        for _ in range(50):
            try:
                status = self.status()
            except (OSError, ValueError):
                time.sleep(0.1)
                continue
            return _step(status)
        raise AssertionError("the apiserver did not answer 50 reads in a row")

    def start(self, op: OperatorProcess) -> None:
        self.started_at[op.identity] = len(op.logs())
        op.start()

    def warm_standby(self, leader: OperatorProcess) -> bool:
        """Another replica runs and campaigns (a standby that started after the leader died would first watch the
        Lease for a whole lease duration: it cannot know how old the last renew is)."""
        return any(
            op is not leader and op.alive() and "STANDBY" in op.logs()[self.started_at.get(op.identity, 0) :]
            for op in self.operators
        )

    def pin(self, target: str) -> None:
        patch = json.dumps({"spec": {"placement": {"pin": target}}})
        self.cluster.kubectl("patch", "iw", NAME, "-n", self.namespace, "--type", "merge", "-p", patch)

    def wait_placed(self, target: str, timeout: float) -> dict[str, Any]:
        def placed() -> dict[str, Any] | None:
            status = self.status()
            return status if status.get("placement") == target and not status.get("migration") else None

        found: dict[str, Any] = wait_for(placed, timeout=timeout, interval=0.2, what=f"{NAME} placed on {target}")
        return found

    def events(self) -> list[dict[str, Any]]:
        items = self.cluster.kubectl_json(
            "get", "events", "-n", self.namespace, "--field-selector", f"involvedObject.name={NAME}"
        )["items"]
        return sorted(items, key=event_order)

    def cloud_creates(self) -> tuple[int, int]:
        """(Cloud Run services created, Lambda functions created), as the stand-ins answered them."""
        cloudrun = sum(
            1 for r in self.standin.requests if r.method == "POST" and r.path.endswith("/services") and r.status < 300
        )
        functions = sum(
            1
            for method, path, status in self.lambda_proxy.answered
            if method == "POST" and re.fullmatch(r"/2015-03-31/functions/?", path) and status < 300
        )
        return cloudrun, functions


def _step(status: dict[str, Any]) -> str | None:
    migration = status.get("migration")
    if not migration:
        return None
    step = str(migration.get("step"))
    return f"{step}@{migration.get('trafficPercent')}" if step == "Shifting" else step


def _metric(op: OperatorProcess, name: str) -> float:
    """The sum of a metric's samples on the operator's /metrics (all label sets)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$")
    return sum(float(m.group(2)) for line in text.splitlines() if (m := pattern.match(line)))


@pytest.fixture(scope="module")
def ha(
    crd_installed: KubeCluster,
    prometheus_binaries: PrometheusBinaries,
    envoy_binary: str,
    cloudrun_standin_server: CloudRunStandin,
    moto_server: MotoServer,
    lambda_runtime: LambdaRuntime,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Ha]:
    import boto3

    directory = tmp_path_factory.mktemp("ha")
    namespace = f"ha-{uuid.uuid4().hex[:8]}"
    cluster = crd_installed
    cluster.kubectl("create", "namespace", namespace)
    standin = cloudrun_standin_server
    standin.reset()
    saved = (standin.reconcile_seconds, standin.service_url)
    with ExitStack() as exits:
        exits.callback(cluster.kubectl, "delete", "namespace", namespace, "--wait=false", check=False)
        exits.callback(standin.reset)
        exits.callback(setattr, standin, "reconcile_seconds", saved[0])
        exits.callback(setattr, standin, "service_url", saved[1])
        upstreams = HttpUpstreams()
        exits.callback(upstreams.stop_all)
        standin.service_url = upstreams.start("cloudrun-model").url
        standin.reconcile_seconds = 0.5
        # Lambda's data plane as AWS runs it: the Function URL front end's stand-in, the emulator, the adapter
        procs = Processes()
        exits.callback(procs.stop_all)
        function = start_local_function(procs, lambda_runtime, directory, "lambda-model", region=TEST_REGION_AWS)
        moto_server.post("/moto-api/reset")
        moto_server.post("/moto-api/config", {"lambda": {"use_docker": False}})
        iam = boto3.client(
            "iam",
            region_name=TEST_REGION_AWS,
            endpoint_url=moto_server.url,
            aws_access_key_id=FAKE_AWS_ACCESS_KEY_ID,
            aws_secret_access_key=FAKE_AWS_SECRET_ACCESS_KEY,
        )
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
        role_arn = iam.create_role(RoleName="ha-model", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        lambda_proxy = FaultProxy(f"{moto_server.host}:{moto_server.port}", "lambda")
        exits.callback(lambda_proxy.stop)
        envoy = start_envoy(envoy_binary, directory, UpstreamAddress("127.0.0.1", standin.port))
        exits.callback(envoy.stop)
        now = time.time()
        metrics = render_openmetrics([traffic_lines(namespace, NAME, [1.0], now, 60, step_seconds=900.0)])
        prometheus = exits.enter_context(running_prometheus(prometheus_binaries, metrics, directory / "prometheus"))
        promql = directory / "promql.yaml"
        promql.write_text(yaml.safe_dump({"rateWindowSeconds": RATE_WINDOW_SECONDS}))
        args = operator_args(
            prometheus_url=prometheus.url,
            promql_path=promql,
            cloudrun_url=standin.url,
            envoy_router=envoy,
            envoy_binary=envoy_binary,
            address_overrides={},
            hold_seconds=HOLD_SECONDS,
            drain_seconds=DRAIN_SECONDS,
            range_seconds=10,
            step_seconds=2,
            staleness_seconds=30,
            trusted_origins=(standin.service_url,),  # the stand-in publishes its loopback model server
            extra=(
                "--set",
                f"lambda.endpoint={lambda_proxy.url}",
                "--set",
                f"lambda.region={TEST_REGION_AWS}",
                "--set",
                f"router.lambdaUrlEndpoint={function.url}",
                "--lease-duration-seconds",
                str(LEASE_SECONDS),
                "--renew-deadline-seconds",
                str(RENEW_DEADLINE_SECONDS),
                "--retry-period-seconds",
                str(RETRY_SECONDS),
            ),
        )
        operators = [
            OperatorProcess(
                cluster,
                namespace,
                directory / f"operator-{i}.log",
                [*INLINE_CLOUD_IDENTITY, *args],  # its workload deploys through the inline fields
                metrics_port=free_port(),
            )
            for i in range(3)
        ]
        for op in operators:
            exits.callback(op.stop)
            exits.callback(record_operator_run, op, "tests/test_leader_election.py")
        schedule = [i / 4.0 for i in range(4 * 600)]
        replay = LoadReplay(envoy.listen_port, f"{NAME}.{namespace}.svc", schedule, connections=2, max_seconds=600)
        exits.callback(replay.stop)
        yield Ha(cluster, namespace, operators, standin, lambda_proxy, replay, directory, role_arn)


STEPS = {"AwaitingHealthy", "Shifting@10", "Shifting@50", "Shifting@100", "Draining", "Retiring"}
"""Every step a Cloud Run <-> Lambda migration persists (Provisioning and the first ensure share one reconcile)."""


def _kill_the_leader_at_every_step(ha: Ha, deadline: float) -> None:
    """SIGKILL the Lease holder once at each step this migration reaches that no kill has hit yet, whenever a warm
    standby is there to take over, and start a replacement (a new Pod: a new identity, a rival for the Lease like
    the surviving standby). Record how long each takeover took."""
    wait_for(lambda: ha.step() is not None, timeout=60, interval=0.1, what="the migration to start")
    while time.monotonic() < deadline:
        step = ha.step()
        if step is None:
            return
        killed = {k for k, _, _ in ha.kills}
        leader = ha.leader()
        if step in killed or not ha.warm_standby(leader):
            time.sleep(0.1)
            continue
        dead = leader.identity
        leader.kill()
        at = time.monotonic()
        leader.identity = f"op-{uuid.uuid4().hex[:8]}"  # its replacement
        ha.start(leader)

        def taken_over(old: str = dead) -> str | None:
            holder = ha.holder()
            return holder if holder is not None and holder != old else None

        def moved_on(before: str = step) -> bool:
            return ha.step() != before

        wait_for(taken_over, timeout=LEASE_SECONDS * 3, interval=0.1, what="another replica to lead")
        took = time.monotonic() - at
        wait_for(moved_on, timeout=60, interval=0.1, what=f"{step} moving on")
        ha.kills.append((step, took, time.monotonic() - at))
    raise AssertionError(f"migration still running after the deadline; killed at {ha.kills}")


def test_two_replicas_only_the_leader_acts_and_a_sigkilled_leader_is_finished_by_the_standby_at_every_step(
    ha: Ha,
) -> None:
    first, second = ha.operators[:2]
    ha.start(first)
    wait_for(lambda: ha.holder() == first.identity, timeout=60, interval=0.2, what="the first replica to lead")
    ha.start(second)
    doc = workload_doc(ha.namespace, "unused", 0.5, 2.0, "live-test", name=NAME, allowed_targets=("cloudrun", "lambda"))
    doc["spec"]["placement"]["pin"] = "cloudrun"
    doc["spec"]["lambda"] = {
        "region": TEST_REGION_AWS,
        "roleArn": ha.role_arn,
        "imageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/model:1",
        "memoryMb": 512,
        "timeoutSeconds": 30,
    }
    ha.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    ha.wait_placed("cloudrun", timeout=90)
    # placed means routed: the first placement ends only once the router serves it (the CI rehearsal's first request
    # was a 503 when the placement was recorded before the router had its route)
    assert answers(ha.replay.port, ha.replay.host_header, ha.replay.path) == 200
    wait_for(lambda: ha.warm_standby(first), timeout=60, what="the second replica to campaign")

    # only one acts: the standby has written nothing, every Event names the leader
    assert _metric(second, "inference_placement_apiserver_writes_total") == 0
    assert _metric(second, "inference_placement_leader") == 0
    assert _metric(first, "inference_placement_leader") == 1
    assert {e.get("reportingInstance") for e in ha.events()} == {first.identity}

    # a third replica: a warm standby is there for the next kill while the last killed one's replacement starts
    ha.start(ha.operators[2])
    ha.replay.start()
    time.sleep(2)
    started = time.monotonic()
    moves = {"lambda": 0, "cloudrun": 1}  # migrations onto each target (the first placement made one service)
    for target in ["lambda", "cloudrun", "lambda", "cloudrun"]:  # until every step had its kill (2 when idle)
        if STEPS <= {k for k, _, _ in ha.kills}:
            break
        ha.pin(target)
        _kill_the_leader_at_every_step(ha, deadline=time.monotonic() + 240)
        final = ha.wait_placed(target, timeout=60)
        moves[target] += 1
    elapsed = time.monotonic() - started
    time.sleep(2)
    ha.replay.stop()

    summary = ha.replay.summary()
    print(f"\nkills (step, s to a new Lease holder, s until the step moved on): {ha.kills}")
    print(
        f"{sum(moves.values()) - 1} migrations in {elapsed:.0f} s; {summary.requests} requests, "
        f"{summary.failed} failed, served by {summary.served_by}"
    )
    assert not ha.replay.failures(), ha.replay.failures()[:5]
    assert summary.served_by.get("cloudrun-model", 0) > 0 and summary.served_by.get("lambda-model", 0) > 0
    assert {k for k, _, _ in ha.kills} == STEPS, ha.kills
    for step, took, moved in ha.kills:
        # the standby takes the Lease within a lease duration (+ its retry period), then acts within a tick (the
        # step's own hold and the router's confirmation come on top)
        assert took <= LEASE_SECONDS + RETRY_SECONDS + LOAD_SLACK_SECONDS, (step, took)
        assert moved <= LEASE_SECONDS + TICK_SECONDS + DRAIN_SECONDS + 2 * LOAD_SLACK_SECONDS, (step, moved)

    # nothing done twice: one Cloud Run service per placement there, one function per move to Lambda; no leak
    assert ha.cloud_creates() == (moves["cloudrun"], moves["lambda"])
    on_cloudrun = final["placement"] == "cloudrun"
    assert len(ha.standin.services()) == (1 if on_cloudrun else 0)
    assert len(boto3_functions(ha)) == (0 if on_cloudrun else 1)
    assert final["lastMigration"]["outcome"] == "Succeeded"
    # each migration's Events: its walk in order, no step twice. A kill between a status write and its Event loses
    # that Event (never repeats it), so a migration is told by its route ("cloudrun -> lambda: ..."), which the
    # migrations alternate, not by its MigrationStarted
    events = ha.events()
    shown = [(e["reason"], e["firstTimestamp"], e.get("reportingInstance"), e["message"][:60]) for e in events]
    walks: list[tuple[str, list[str], list[str]]] = []  # (route, reasons, TrafficShifted messages)
    for event in events:
        if event["reason"] not in {*WALK, "MigrationSucceeded"}:
            continue
        route = " ".join(event["message"].split()[:3]).rstrip(":")
        if not walks or walks[-1][0] != route:
            walks.append((route, [], []))
        walks[-1][1].append(event["reason"])
        if event["reason"] == "TrafficShifted":
            walks[-1][2].append(event["message"])
    assert len(walks) == sum(moves.values()) - 1, shown
    for _, reasons, shifts in walks:
        it = iter([*WALK, "MigrationSucceeded"])
        assert all(any(r == w for w in it) for r in reasons), shown  # in order, nothing twice
        assert len(shifts) == len(set(shifts)), shown  # no traffic step twice
        assert len(reasons) >= len(WALK) - 2, shown  # a kill loses an Event now and then, not a migration's walk


def boto3_functions(ha: Ha) -> list[str]:
    import boto3

    host, _, port = ha.lambda_proxy.upstream.rpartition(":")
    client = boto3.client(
        "lambda",
        region_name=TEST_REGION_AWS,
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id=FAKE_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_AWS_SECRET_ACCESS_KEY,
    )
    return [f["FunctionName"] for f in client.list_functions()["Functions"]]


def _micro(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_a_paused_leader_stops_acting_before_the_standby_takes_over(ha: Ha) -> None:
    for op in ha.operators:
        if not op.alive():
            ha.start(op)
    source = ha.status()["placement"]
    target = "lambda" if source == "cloudrun" else "cloudrun"
    creates = ha.cloud_creates()
    wait_for(lambda: ha.warm_standby(ha.leader()), timeout=60, what="a standby campaigning")
    ha.pin(target)
    wait_for(lambda: ha.step() == "Shifting@50", timeout=60, interval=0.1, what="Shifting@50")
    paused = ha.leader()
    paused.pause()
    paused_wall = time.time()
    try:
        time.sleep(0.5)  # a renew already on the wire lands
        renewed = _micro(
            ha._get(f"/apis/coordination.k8s.io/v1/namespaces/{ha.namespace}/leases/{LEASE_NAME}")["spec"]["renewTime"]
        )
        other = wait_for(
            lambda: (h := ha.holder()) != paused.identity and h,
            timeout=LEASE_SECONDS * 4,
            interval=0.1,
            what="the standby to take the Lease",
        )
        lease = ha._get(f"/apis/coordination.k8s.io/v1/namespaces/{ha.namespace}/leases/{LEASE_NAME}")
        acquired = _micro(lease["spec"]["acquireTime"])
        ha.wait_placed(target, timeout=90)  # the new leader finishes while the old one is still paused
    finally:
        paused.resume()
    resumed_wall = time.time()
    time.sleep(TICK_SECONDS + 2 * RETRY_SECONDS + 1)  # time for the old leader to do whatever it would do
    last_write = _metric(paused, "inference_placement_last_write_timestamp_seconds")
    print(
        f"\nLease taken by {other} {acquired - renewed:.1f} s after the paused leader's last renew (its renew "
        f"deadline: {RENEW_DEADLINE_SECONDS:.0f} s); its last write {paused_wall - last_write:.1f} s before the pause"
    )
    # the old leader stopped acting (renew deadline after its last renew was sent, which is before renewTime)
    # before the new one started
    assert acquired - renewed >= RENEW_DEADLINE_SECONDS, (acquired, renewed)
    # the old leader, resumed after losing the Lease, wrote nothing: not a status, not an Event
    assert last_write < paused_wall + 0.5, (datetime.fromtimestamp(last_write), datetime.fromtimestamp(paused_wall))
    late = [
        e
        for e in ha.events()
        if e.get("reportingInstance") == paused.identity and _micro(e["firstTimestamp"]) >= int(resumed_wall)
    ]
    assert late == []
    assert _metric(paused, "inference_placement_leader") == 0
    assert "stops acting" in paused.logs()
    # one cloud resource for the one move, whoever made it
    assert ha.cloud_creates() == (creates[0] + (target == "cloudrun"), creates[1] + (target == "lambda"))
