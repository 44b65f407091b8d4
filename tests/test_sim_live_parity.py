"""Simulator-live parity: one real trace segment, replayed through the live stack and through the simulator, gets
the same decisions step by step.

The live side: the real apiserver and node (the workload's Deployment runs there), the real operator (subprocess,
namespace-scoped), a real Envoy as the stable endpoint with the operator's routes, a real Prometheus scraping the
router's own stats every ``SCRAPE_SECONDS`` (the operator's default PromQL templates read them), the Cloud Run
stand-in, and the segment replayed as HTTP requests through Envoy. The cluster's and Cloud Run's shares are answered
by ``e2e/model_server.py`` on loopback (Service IPs are not routable here), each taking ``SERVICE_SECONDS``.

The simulated side: ``sim.simulate`` with ``OursPolicy`` on the requests the replay really sent (when, and how long
each took to answer), with the same spec, the same (packaged) price book and the same ``Actuators`` (the operator's
defaults: no spillover, no scale to zero); ``ours`` sees what the operator's ``PrometheusSource`` with the operator's
settings measures (``PrometheusSource.observed_signals``: the window, its step, the rate window, the scrape interval
of the in-flight gauge), at the operator's step.

The segment: ``find_swing`` (the rule the live tests and the demo use) picks, from the whole
``azure-functions-2019`` sample, the day of hourly steps whose middle is lowest against both ends; each trace hour
is replayed in ``SECONDS_PER_SEGMENT_STEP`` wall seconds (a compression of 900x), with the segment's geometric
mid-level (between its own offload and reclaim levels) at ``MID_RPS``, this spec's cost break-even between the
cluster and Cloud Run (about 1.5 rps at one replica): the policy starts on Cloud Run (no traffic yet), reclaims the
cluster as the day's traffic comes, and sizes it up at the evening peak. The whole test takes about 2.5 minutes.

What is compared: each side's decision in force at each operator step (``STEP_SECONDS``): target, replicas,
instances kept warm by pings, and the spill target. Live, from ``status.lastDecision`` (whose ``decidedAt`` is the
tick that decided it: the window it read ended on that step) and ``status.spill``; simulated, from the simulator's
per-tick decisions turned into the ``DecisionRecord`` the reconciler writes; both through :func:`decided`.

Tolerances (the only ones), and why:
- one step of lag either way (``LAG_STEPS``), both ways round: the live rate at a step is Prometheus' ``rate()``
  over scrapes taken at a phase unrelated to the step grid, extrapolated to the window's edges, and the in-flight
  gauge is read at those scrapes while the simulator reads it on the step grid; a request near a step's edge can
  fall on either side, which moves a sustained threshold crossing by one step. A decision that one side makes and
  the other does not make within a step of it disagrees, however short;
- replicas and warm instances within one (``COUNT_TOLERANCE``), at the same lag: the live rates are read from a
  sampled counter (``rate()`` extrapolates between scrapes) against the simulator's exact counts, and the sizing
  rounds up what it reads, so a rate on the edge of a replica can round either way;
- none on the target or the spill target beyond the lag, and the sequence of targets must be the same.

What was a parity bug (fixed in the shared code, not tolerated here): the simulator showed ``ours`` each step's
exact request count and the exact in-flight peak, where the operator reads ``rate()`` over its rate window and an
in-flight gauge sampled at each scrape; on this segment at twice the rate the simulated ``ours`` held 2 replicas
for 30 steps where the live operator held 1 (an exact peak of 5 in flight against scraped readings of 2), and the
second replica's price turned the simulated decision back to Cloud Run for a step mid-migration
(``ObservedSignals.rate_window_seconds`` and ``in_flight_sample_seconds`` now describe what the operator reads).

Platform timings are not what is compared: the simulated platforms are given the stand-ins' behaviour measured in
the run (how long a live migration took from its decision to the switch; each request's answer time; no instance
start and no queue at the loopback model servers), so that both sides' ``current`` placement moves at the same
time and a request held up live (the router fetching its first Cloud Run token) is in flight as long in the
simulator. Nothing of that reaches the policy's prices.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.status import DecisionRecord
from inference_placement.api.timestamps import parse_time
from inference_placement.api.validation import parse_spec
from inference_placement.api.workload import WorkloadKey
from inference_placement.devtools.demo.live import LiveSettings, live_workload
from inference_placement.devtools.local_stack import start_model_server
from inference_placement.devtools.processes import Processes
from inference_placement.devtools.prometheus import prometheus_config
from inference_placement.devtools.replay.load import LoadReplay, schedule_from_counts
from inference_placement.devtools.replay.segment import SwingSegment, find_swing
from inference_placement.metrics.prometheus import PrometheusSource
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.decide import Decision, TrafficWindow
from inference_placement.policy.economics import TargetEconomics
from inference_placement.policy.observation import ObservedSignals
from inference_placement.policy.price_book import default_price_book
from inference_placement.sim.policies import OursPolicy, window_from_observation
from inference_placement.sim.simulator import Control, Observation, SimWorkload, feasible_economics, simulate
from inference_placement.sim.traces import Requests, load_trace
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cluster import REPO_ROOT, KubeCluster
from tests.plugins.envoy import FakeGcpMetadata, start_envoy
from tests.plugins.live import condition, operator_args
from tests.plugins.operator import OperatorProcess, wait_for
from tests.plugins.prometheus import PrometheusBinaries, scraping_prometheus

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.slow, pytest.mark.replay]

TRACE = REPO_ROOT.parent / "shared" / "traces" / "azure-functions-2019" / "100_inv.csv"
NAME = "parity"
SEGMENT_STEPS = 24
HOLD_STEPS = 4
TRACE_STEPS_PER_STEP = 60
"""One trace hour per segment step: the segment is a day of the trace, hour by hour."""
SECONDS_PER_SEGMENT_STEP = 4.0
MID_RPS = 1.5
"""The segment's geometric mid-level (between ``find_swing``'s offload and reclaim levels), replayed."""
SERVICE_SECONDS = 0.2
STEP_SECONDS = 2
"""The operator's tick and metrics step: one step of the comparison."""
RANGE_SECONDS = 60
RATE_WINDOW_SECONDS = 6
STALENESS_SECONDS = 15
SCRAPE_SECONDS = 1
LEAD_STEPS = 3
"""Steps of the comparison before the replay starts (placed, no traffic yet)."""
LAG_STEPS = 1
COUNT_TOLERANCE = 1
SUSTAIN_SECONDS = 8
UNBOUNDED_SLOTS = 1000


# ----------------------------------------------------------------------------------------------- one code path


@dataclass(frozen=True)
class Decided:
    """A decision as both sides are compared: where, how many, how many kept warm by pings, where the overflow goes."""

    target: TargetName
    replicas: int
    keep_warm: int
    spill: TargetName | None

    def __str__(self) -> str:
        warm = f"+{self.keep_warm}p" if self.keep_warm else ""
        spill = f">{self.spill.value}" if self.spill is not None else ""
        return f"{self.target.value} x{self.replicas}{warm}{spill}"


def decided(record: DecisionRecord, spill: TargetName | None) -> Decided:
    """The compared fields of a recorded decision (live: ``status.lastDecision`` and ``status.spill``; simulated:
    :func:`record_of` of the simulator's ``Decision``)."""
    return Decided(record.target, record.replicas, record.keep_warm_instances or 0, spill)


def record_of(decision: Decision) -> DecisionRecord | None:
    """The ``DecisionRecord`` the reconciler writes for a decision (None: withheld, nothing recorded)."""
    if decision.target is None:
        return None
    return DecisionRecord(
        target=decision.target,
        replicas=decision.replicas,
        reason=decision.reason,
        decided_at="",
        keep_warm_instances=decision.keep_warm_instances or None,
    )


def in_force(changes: list[tuple[int, Decided]], steps: int) -> list[Decided | None]:
    """The decision in force at each step, from (step it was made at, decision) in order."""
    out: list[Decided | None] = []
    current: Decided | None = None
    i = 0
    for k in range(steps):
        while i < len(changes) and changes[i][0] <= k:
            current = changes[i][1]
            i += 1
        out.append(current)
    return out


def agrees(live: Decided | None, simulated: list[Decided | None]) -> bool:
    """``live`` agrees with one of the simulated decisions of the lag window."""
    for sim in simulated:
        if live is None or sim is None:
            if live is sim:
                return True
            continue
        if (
            live.target is sim.target
            and live.spill is sim.spill
            and abs(live.replicas - sim.replicas) <= COUNT_TOLERANCE
            and abs(live.keep_warm - sim.keep_warm) <= COUNT_TOLERANCE
        ):
            return True
    return False


def test_agreement_rule_allows_the_stated_tolerances_and_no_more() -> None:
    c, r = TargetName.CLUSTER, TargetName.CLOUDRUN
    two = Decided(c, 2, 0, None)
    assert agrees(two, [Decided(c, 3, 0, None)])
    assert agrees(two, [Decided(r, 0, 1, None), Decided(c, 1, 0, None)])  # one step late
    assert not agrees(two, [Decided(c, 4, 0, None)])
    assert not agrees(two, [Decided(r, 2, 0, None)])
    assert not agrees(two, [Decided(c, 2, 0, r)])
    assert not agrees(None, [two]) and agrees(None, [None, two])
    assert in_force([(1, two)], 3) == [None, two, two]


# ----------------------------------------------------------------------------------------------- the live side


@dataclass
class StatusRecorder:
    """``kubectl get --watch`` of the workload in a thread: every status the apiserver stores, with when it was seen
    (so no decision between two polls is missed). A watch that ends (the apiserver closes watches now and then) is
    started again; it begins with the object as it is, so only a change overwritten meanwhile could be missed, and
    ``restarts`` says how often that window opened."""

    cluster: KubeCluster
    namespace: str
    name: str
    log_path: Path
    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    restarts: int = -1
    _process: subprocess.Popen[str] | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> StatusRecorder:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        command = [self.cluster.kubectl_path, "--kubeconfig", self.cluster.kubeconfig]
        command += ["get", "iw", self.name, "-n", self.namespace, "--watch", "-o", "json"]
        with self.log_path.open("a") as log:
            while not self._stop.is_set():
                self.restarts += 1
                self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
                self._read(self._process)
                self._process.wait()
                self._stop.wait(0.2)

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        for line in process.stdout:
            buffer += line
            while buffer.strip():
                try:
                    item, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                buffer = buffer.lstrip()[end:]
                self.seen.append((time.time(), dict(item.get("status") or {})))

    def stop(self) -> None:
        self._stop.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def latest(self) -> dict[str, Any]:
        return self.seen[-1][1] if self.seen else {}


def live_changes(seen: list[tuple[float, dict[str, Any]]], origin: float) -> list[tuple[int, Decided]]:
    """Each distinct recorded decision with the step of the tick that made it (``decidedAt``, whole seconds of the
    tick's clock: the window it read ended at that step's start)."""
    changes: list[tuple[int, Decided]] = []
    for _, status in seen:
        raw = status.get("lastDecision")
        if not raw:
            continue
        record = DecisionRecord.model_validate(raw)
        at = parse_time(record.decided_at)
        assert at is not None
        spill = (status.get("spill") or {}).get("target")
        entry = (int((at.timestamp() - origin) // STEP_SECONDS), decided(record, TargetName(spill) if spill else None))
        if not changes or changes[-1] != entry:
            changes.append(entry)
    return changes


def switch_seconds(seen: list[tuple[float, dict[str, Any]]]) -> dict[TargetName, float]:
    """Per target, the median time a live migration to it took from the decision to the switch (the placement
    changing): what the simulated platforms are given as the migration's lead."""
    took: dict[TargetName, list[float]] = {}
    placement: str | None = None
    for when, status in seen:
        now_placed = status.get("placement")
        if placement is not None and now_placed and now_placed != placement:
            record = DecisionRecord.model_validate(status["lastDecision"])
            at = parse_time(record.decided_at)
            assert at is not None
            took.setdefault(TargetName(now_placed), []).append(max(0.0, when - at.timestamp()))
        if now_placed:
            placement = now_placed
    return {target: statistics.median(values) for target, values in took.items()}


# ----------------------------------------------------------------------------------------------- the segment


def choose_segment() -> SwingSegment:
    if not TRACE.exists():
        pytest.fail(f"{TRACE} missing: the shared traces are part of the workplace", pytrace=False)
    return find_swing(
        load_trace(TRACE),
        steps=SEGMENT_STEPS,
        smooth_steps=2,
        hold_steps=HOLD_STEPS,
        trace_steps_per_step=TRACE_STEPS_PER_STEP,
    )


def replay_scale(segment: SwingSegment) -> float:
    """Factor on the segment's counts: its geometric mid-level replays at ``MID_RPS``."""
    mid_count = float(np.sqrt(max(segment.offload_below, 1.0) * max(segment.reclaim_above, 1.0)))
    return MID_RPS * SECONDS_PER_SEGMENT_STEP / mid_count


def workload(namespace: str, image: str) -> dict[str, Any]:
    """The demo's CPU classifier with the policy's own thresholds (``auto``) and room to scale.

    ``targetConcurrency`` 4: the segment swings across the cost break-even of one replica, and that is what is
    compared; at 2, the replica count sat on a second knife edge where one more request in one scrape of the
    in-flight gauge (a sampled reading, a request a few ms slower on a loaded machine) sized a second replica,
    doubled the cluster's price and kept the live side on Cloud Run while the simulated one moved (seen in CI)."""
    doc = live_workload(NAME, namespace, image, 0.0, 0.0, LiveSettings(sustain_seconds=SUSTAIN_SECONDS))
    spec = doc["spec"]
    spec["model"]["serviceSeconds"] = SERVICE_SECONDS
    spec["slo"]["latencyP99Seconds"] = 1.0
    spec["placement"]["thresholds"] = {"mode": "auto"}
    spec["scaling"] = {"minReplicas": 1, "maxReplicas": 4, "targetConcurrency": 4}
    spec["cloudRun"]["project"] = "live-test"
    return doc


# ----------------------------------------------------------------------------------------------- the simulated side


def standin_economics(
    spec: InferenceWorkloadSpec, leads: Mapping[TargetName, float]
) -> dict[TargetName, TargetEconomics]:
    """The platforms as the stand-ins behave: a migration's lead as measured live, no instance start and no queue
    (the loopback model servers are up all along and serve every request at once). The policy still prices with the
    price book (``decide`` reads it, not this)."""
    econ = feasible_economics(spec, default_price_book())
    return {
        target: replace(
            e,
            cold_start_seconds=0.0,
            provision_seconds=leads.get(target, e.provision_seconds),
            concurrency=UNBOUNDED_SLOTS,
        )
        for target, e in econ.items()
    }


class RecordingPolicy(OursPolicy):
    """``ours``, keeping each tick's window (what it was shown)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.windows: list[TrafficWindow | None] = []

    def tick(self, obs: Observation) -> Sequence[Control]:
        self.windows.append(window_from_observation(obs, self.signals, self.window_seconds))
        return super().tick(obs)


def operator_source(url: str) -> PrometheusSource:
    """The metrics source the operator builds from its command line here (``operator_args`` below)."""
    return PrometheusSource(
        url,
        range_seconds=RANGE_SECONDS,
        step_seconds=STEP_SECONDS,
        rate_window_seconds=RATE_WINDOW_SECONDS,
        max_staleness_seconds=STALENESS_SECONDS,
    )


async def fetch_windows(
    source: PrometheusSource, key: WorkloadKey, origin: float, steps: int
) -> list[TrafficWindow | None]:
    """The windows ``source`` gives at each step, read again after the run (late scrapes included)."""
    out: list[TrafficWindow | None] = []
    for k in range(steps):
        snapshot = await source.fetch([key], datetime.fromtimestamp(origin + k * STEP_SECONDS + 0.5, UTC), {key: 1.0})
        out.append(snapshot.windows.get(key))
    return out


def simulated_changes(
    spec: InferenceWorkloadSpec,
    sent: list[tuple[float, float]],
    steps: int,
    signals: ObservedSignals,
    leads: Mapping[TargetName, float],
    start: datetime,
) -> tuple[list[tuple[int, Decided]], list[TrafficWindow | None]]:
    """The simulated decisions (step, decision) where they change, and the window ``ours`` was shown each step."""
    ordered = sorted(sent)
    arrivals = np.asarray([at for at, _ in ordered], dtype=np.float64) + LEAD_STEPS * STEP_SECONDS
    service = np.asarray([took for _, took in ordered], dtype=np.float64)
    requests = Requests(arrivals, service, service, steps, float(STEP_SECONDS))
    policy = RecordingPolicy(signals=signals, actuators=Actuators())
    policy.keep_decisions = True
    simulate(
        SimWorkload(NAME, spec, requests, start),
        policy,
        default_price_book(),
        economics=standin_economics(spec, leads),
    )
    changes: list[tuple[int, Decided]] = []
    for k, decision in enumerate(policy.decisions):
        record = record_of(decision)
        if record is None:
            continue
        entry = (k, decided(record, decision.spill.target if decision.spill is not None else None))
        if not changes or changes[-1][1] != entry[1]:
            changes.append(entry)
    return changes, policy.windows


# ----------------------------------------------------------------------------------------------- the test


def steps_of_run() -> int:
    return LEAD_STEPS + int(SEGMENT_STEPS * SECONDS_PER_SEGMENT_STEP // STEP_SECONDS)


@dataclass
class LiveRun:
    origin: float
    """Wall-clock POSIX seconds of step 0 (a multiple of the step: the operator's windows end on its grid)."""
    seen: list[tuple[float, dict[str, Any]]]
    sent: list[tuple[float, float]]
    """Each request: when it was sent, seconds after the replay started (``LEAD_STEPS`` steps after ``origin``), and
    how long its answer took (the simulated request takes as long: a request held up live, e.g. while the router
    opened its first connections, is in flight as long in the simulator, as the router's in-flight gauge counts it;
    Envoy's ``x-envoy-upstream-service-time`` leaves that wait out and, tried, left the simulator short of the
    gauge's peak at the traffic's start)."""
    windows: list[TrafficWindow | None]
    """The windows the operator's source gives at each step, read again after the run."""
    signals: ObservedSignals
    seconds: float
    watch_restarts: int


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


def run_live(
    doc: dict[str, Any],
    schedule: list[float],
    *,
    cluster: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    prometheus_binaries: PrometheusBinaries,
    envoy_binary: str,
    fake_gcp_metadata: FakeGcpMetadata,
    cloudrun_standin: CloudRunStandin,
    processes: Processes,
    tmp_path: Path,
) -> LiveRun:
    """Everything up, the workload placed, the replay through Envoy from ``LEAD_STEPS`` steps after a step boundary;
    every status the apiserver stored meanwhile."""
    began = time.monotonic()
    cluster_model = start_model_server(processes, REPO_ROOT, tmp_path, "cluster-model", service_seconds=SERVICE_SECONDS)
    cloudrun_standin.service_url = start_model_server(
        processes, REPO_ROOT, tmp_path, "cloudrun-model", service_seconds=SERVICE_SECONDS
    )
    cloudrun_standin.reconcile_seconds = 0.2
    envoy = start_envoy(envoy_binary, tmp_path / "envoy", fake_gcp_metadata.address, stats_listener=True)
    config = prometheus_config([], router=[envoy.stats_target], scrape_seconds=SCRAPE_SECONDS)
    recorder = StatusRecorder(cluster, namespace, NAME, tmp_path / "watch.log")
    replay = LoadReplay(envoy.listen_port, f"{NAME}.{namespace}.svc", schedule, connections=16)
    try:
        with scraping_prometheus(prometheus_binaries, yaml.safe_dump(config), tmp_path / "prometheus") as prometheus:
            promql = tmp_path / "promql.yaml"
            promql.write_text(yaml.safe_dump({"rateWindowSeconds": RATE_WINDOW_SECONDS}))
            published = f"http://{NAME}-model.{namespace}.svc:8080"
            operator = operator_factory(
                namespace,
                *operator_args(
                    prometheus_url=prometheus.url,
                    promql_path=promql,
                    cloudrun_url=cloudrun_standin.url,
                    envoy_router=envoy,
                    envoy_binary=envoy_binary,
                    address_overrides={published: cluster_model},
                    hold_seconds=1.0,
                    drain_seconds=1.0,
                    range_seconds=RANGE_SECONDS,
                    step_seconds=STEP_SECONDS,
                    staleness_seconds=STALENESS_SECONDS,
                    trusted_origins=(cloudrun_standin.service_url,),
                ),
            )
            cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
            recorder.start()  # after the apply: a watch needs the object

            def placed() -> bool:
                status = recorder.latest()
                ready = condition(status, "Ready")
                return bool(status.get("placement")) and not status.get("migration") and bool(ready)

            try:
                wait_for(placed, timeout=180, interval=0.2, what=f"{NAME} placed")
            except AssertionError as err:
                status = json.dumps(recorder.latest(), indent=1)
                raise AssertionError(f"{err}\nstatus: {status}\noperator log:\n{operator.logs()[-4000:]}") from None
            origin = float((int(time.time()) // STEP_SECONDS + 1) * STEP_SECONDS)
            time.sleep(max(0.0, origin + LEAD_STEPS * STEP_SECONDS - time.time()))
            replay.start()
            replay.join(timeout=SEGMENT_STEPS * SECONDS_PER_SEGMENT_STEP + 30)
            replay.stop()
            time.sleep(STEP_SECONDS)  # the last step's tick
            source = operator_source(prometheus.url)
            windows = asyncio.run(fetch_windows(source, WorkloadKey(namespace, NAME), origin, steps_of_run()))
    finally:
        replay.stop()
        recorder.stop()
        envoy.stop()
        cluster.kubectl("delete", "iw", NAME, "-n", namespace, "--wait=false", check=False)
    summary = replay.summary()
    assert not replay.failures(), f"{summary.failed} of {summary.requests} requests failed: {summary.errors}"
    return LiveRun(
        origin=origin,
        seen=recorder.seen,
        sent=[(r.sent_at, r.latency_seconds) for r in replay.responses],
        windows=windows,
        # what that operator's source measures, the router scraped every SCRAPE_SECONDS: what ``ours`` is shown
        signals=source.observed_signals(scrape_interval_seconds=SCRAPE_SECONDS),
        seconds=time.monotonic() - began,
        watch_restarts=recorder.restarts,
    )


def compare(live: list[Decided | None], simulated: list[Decided | None]) -> tuple[list[str], list[int]]:
    """(a row per step, the steps that disagree). A step agrees when each side's decision is matched by one of the
    other side's within ``LAG_STEPS`` (so a decision seen by one side only, even for one step, disagrees)."""
    rows: list[str] = []
    disagree: list[int] = []
    for k in range(1, len(live)):
        lo, hi = max(0, k - LAG_STEPS), k + LAG_STEPS + 1
        ok = agrees(live[k], simulated[lo:hi]) and agrees(simulated[k], live[lo:hi])
        mark = "=" if live[k] == simulated[k] else ("~" if ok else "X")
        rows.append(f"{k:4d}  {live[k]!s:<24} {simulated[k]!s:<24} {mark}")
        if not ok:
            disagree.append(k)
    return rows, disagree


def test_a_real_trace_segment_gets_the_same_decisions_live_and_simulated(
    kube_node: KubeCluster,
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    prometheus_binaries: PrometheusBinaries,
    envoy_binary: str,
    fake_gcp_metadata: FakeGcpMetadata,
    cloudrun_standin: CloudRunStandin,
    processes: Processes,
    tmp_path: Path,
) -> None:
    segment = choose_segment()
    schedule = schedule_from_counts(
        segment.counts, seconds_per_step=SECONDS_PER_SEGMENT_STEP, scale=replay_scale(segment)
    )
    doc = workload(namespace, kube_node.model_server_image)
    run = run_live(
        doc,
        schedule,
        cluster=kube_node,
        namespace=namespace,
        operator_factory=operator_factory,
        prometheus_binaries=prometheus_binaries,
        envoy_binary=envoy_binary,
        fake_gcp_metadata=fake_gcp_metadata,
        cloudrun_standin=cloudrun_standin,
        processes=processes,
        tmp_path=tmp_path,
    )
    steps = steps_of_run()
    spec, problems = parse_spec(doc["spec"])
    assert spec is not None, problems
    leads = switch_seconds(run.seen)
    live = live_changes(run.seen, run.origin)
    simulated, sim_windows = simulated_changes(
        spec, run.sent, steps, run.signals, leads, datetime.fromtimestamp(run.origin, UTC)
    )
    live_steps, sim_steps = in_force(live, steps), in_force(simulated, steps)
    rows, disagree = compare(live_steps, sim_steps)
    exact = sum(live_steps[k] == sim_steps[k] for k in range(1, steps))
    shown_leads = {t.value: round(s, 1) for t, s in leads.items()}
    print(
        f"\n{Path(segment.source).name} row {segment.row}, trace hours {segment.start_step // 60}-"
        f"{segment.start_step // 60 + SEGMENT_STEPS}, {len(run.sent)} requests replayed; live part "
        f"{run.seconds:.0f} s; status watch restarted {run.watch_restarts}x; migration leads {shown_leads}\n"
        f"step  live                     simulated                (= same, ~ within tolerance, X disagree)\n"
        + "\n".join(rows)
        + f"\nsame at {exact} of {steps - 1} steps, within tolerance at {steps - 1 - len(disagree)}"
    )
    (tmp_path / "statuses.json").write_text(json.dumps([{"seen": t - run.origin, **st} for t, st in run.seen]))
    for k in disagree[:3]:  # what each side was shown there (the live window read again after the run)
        print(f"step {k}:\n  live      {_brief(run.windows[k])}\n  simulated {_brief(sim_windows[k])}")
    # the segment makes the policy move: something to agree on (on a machine loaded far beyond its cores the model
    # servers answer slower, the cluster needs more replicas at the same rate, and the policy may stay on Cloud Run)
    answered = statistics.mean(took for _, took in run.sent)
    assert len({d.target for _, d in simulated}) >= 2, (
        f"the policy did not move (mean answer time {answered:.3f} s against {SERVICE_SECONDS} s): {simulated}"
    )
    assert [d.target for _, d in _targets(live)] == [d.target for _, d in _targets(simulated)], (live, simulated)
    assert not disagree, f"steps {disagree} disagree beyond the stated tolerances"


def _targets(changes: list[tuple[int, Decided]]) -> list[tuple[int, Decided]]:
    """The changes of target only."""
    out: list[tuple[int, Decided]] = []
    for k, d in changes:
        if not out or out[-1][1].target is not d.target:
            out.append((k, d))
    return out


def _brief(window: TrafficWindow | None) -> str:
    """The newest points of a window's per-step signals and its latest readings."""
    if window is None:
        return "no window"

    def tail(values: Sequence[float] | None) -> str:
        return "-" if values is None else " ".join(f"{v:.2f}" for v in values[-6:])

    return (
        f"rps [{tail(window.rps)}] peaks [{tail(window.peak_in_flight)}] misses [{tail(window.slo_misses)}] "
        f"p99 {window.observed_p99_seconds} service {window.service_seconds} miss share {window.slo_miss_share}"
    )
