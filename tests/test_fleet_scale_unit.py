"""The fleet loop's per-workload memory and per-tick work, without an apiserver: what ``Fleet`` keeps of each
object, how often a spec is parsed, and which workloads a full tick reconciles (resync bound, deadlines)."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.rest import ApiException

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.validation import parse_spec
from inference_placement.api.workload import WorkloadKey
from inference_placement.controller import fleet as fleet_module
from inference_placement.controller import reconciler as reconciler_module
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.kube import KubeWriter
from inference_placement.controller.reconciler import Reconciler, ReconcileResult, TickInputs
from inference_placement.controller.tenancy import TenancyCache
from inference_placement.devtools.scale.cluster import workload_body
from inference_placement.metrics.source import MetricsSnapshot
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import TrafficWindow
from inference_placement.policy.price_book import default_price_book
from inference_placement.targets.dry_run import DryRunTarget

NS = "unit"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
START = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


def _body(name: str, *, generation: int = 1, rv: int = 1, uid: str | None = None) -> dict[str, Any]:
    body = workload_body(NS, name)
    body["metadata"].update(
        {
            "uid": uid or f"uid-{name}",
            "generation": generation,
            "resourceVersion": str(rv),
            "annotations": {LAST_APPLIED: '{"big": "copy of the object"}', "team": "search"},
            "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}],
        }
    )
    body["status"] = {"placement": "cluster", "observedGeneration": generation}
    return body


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class StubReconciler:
    """Records what the fleet hands over; a status write is simulated by ``write_next``."""

    max_metrics_staleness_seconds = 180.0
    actuators = Actuators()
    pinger = None
    tenancy = TenancyCache(None)
    writer = None

    def __init__(self) -> None:
        self.calls: list[tuple[WorkloadKey, datetime]] = []
        self.parsed: list[Any] = []
        self.revisit_at: dict[str, datetime] = {}
        self.write_next: set[str] = set()

    async def reconcile(
        self, raw: Mapping[str, Any], inputs: TickInputs, *, parsed_spec: Any = None
    ) -> ReconcileResult:
        meta = raw["metadata"]
        self.calls.append((WorkloadKey(meta["namespace"], meta["name"]), inputs.now))
        self.parsed.append(parsed_spec)
        revisit = self.revisit_at.get(meta["name"])  # like the reconciler: only a deadline still ahead
        result = ReconcileResult(revisit_at=revisit if revisit is not None and revisit > inputs.now else None)
        if meta["name"] in self.write_next:
            self.write_next.discard(meta["name"])
            written = copy.deepcopy(dict(raw))
            written["metadata"]["resourceVersion"] = str(int(meta["resourceVersion"]) + 1000)
            written["metadata"]["managedFields"] = [{"manager": "inference-placement", "subresource": "status"}]
            result.body = written
        return result


class WindowMetrics:
    """The same traffic every tick, the last sample at ``end`` (None: at the fetch's now)."""

    def __init__(self) -> None:
        self.end: datetime | None = None
        self.objective_seconds: Any = None

    async def fetch(self, keys: Any, now: datetime, objective_seconds: Any = None) -> MetricsSnapshot:
        self.objective_seconds = objective_seconds
        end = self.end or now
        window = TrafficWindow(step_seconds=30.0, rps=(1.0,) * 60, observed_p99_seconds=0.2, end=end)
        return MetricsSnapshot(windows=dict.fromkeys(keys, window), queries=4)


def _fleet(
    clock: Clock, stub: StubReconciler | None = None, metrics: Any = None, **kwargs: Any
) -> tuple[Fleet, StubReconciler]:
    stub = stub or StubReconciler()
    book = default_price_book()
    fleet = Fleet(
        reconciler=cast(Reconciler, stub),
        metrics=metrics or WindowMetrics(),
        price_book=lambda: book,
        clock=clock,
        tick_seconds=30.0,
        **kwargs,
    )
    return fleet, stub


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _stored(body: dict[str, Any]) -> dict[str, Any]:
    """The body the fleet hands the reconciler for this object."""
    fleet, _ = _fleet(Clock())
    fleet.observe("ADDED", body)
    meta = body["metadata"]
    return fleet._workloads[WorkloadKey(meta["namespace"], meta["name"])].body


# ---------------------------------------------------------------------- what is stored


def test_stored_body_keeps_metadata_spec_status_only_without_managed_fields_or_last_applied() -> None:
    fleet, _ = _fleet(Clock())
    event = _body("a")
    pristine = copy.deepcopy(event)
    fleet.observe("ADDED", event)
    stored = fleet._workloads[WorkloadKey(NS, "a")].body
    assert set(stored) == {"metadata", "spec", "status"}
    assert "managedFields" not in stored["metadata"]
    assert stored["metadata"]["annotations"] == {"team": "search"}
    assert stored["metadata"]["labels"] == event["metadata"]["labels"]
    for key in ("name", "namespace", "uid", "generation", "resourceVersion"):
        assert stored["metadata"][key] == event["metadata"][key]
    assert event == pristine, "the event's body must not be edited"
    # the spec is not copied: the decoded event's own (nothing mutates it); the status is kept as compact JSON
    # (a quarter of its decoded size) and decoded afresh for each reconcile
    assert stored["spec"] is event["spec"]
    assert stored["status"] == event["status"] and stored["status"] is not event["status"]
    entry = fleet._workloads[WorkloadKey(NS, "a")]
    assert isinstance(entry.status, str) and json.loads(entry.status) == event["status"]
    stored["status"]["phase"] = "edited by a caller"
    assert entry.body["status"] == event["status"], "what a caller does to a body does not stick"


def test_an_unchanged_generation_keeps_the_stored_spec_object() -> None:
    fleet, _ = _fleet(Clock())
    first = _body("a", rv=1)
    fleet.observe("ADDED", first)
    second = _body("a", rv=2)  # e.g. the watch event of a status write: a new decoded copy of the same spec
    fleet.observe("MODIFIED", second)
    entry = fleet._workloads[WorkloadKey(NS, "a")]
    assert entry.resource_version == "2"
    assert entry.body["spec"] is first["spec"]
    assert entry.body["status"] == second["status"]
    edited = _body("a", rv=3, generation=2)
    edited["spec"]["scaling"]["maxReplicas"] = 4
    fleet.observe("MODIFIED", edited)
    assert fleet._workloads[WorkloadKey(NS, "a")].body["spec"]["scaling"]["maxReplicas"] == 4


def test_the_reconciler_reads_only_what_the_fleet_keeps() -> None:
    """A real reconcile of a trimmed body: metadata.managedFields and the last-applied annotation are not read."""

    class Writer:
        def __init__(self) -> None:
            self.patches: list[dict[str, Any]] = []

        async def patch_status(
            self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
        ) -> dict[str, Any]:
            self.patches.append(patch)
            return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "9"}, "status": patch}

        async def post_event(self, **_: Any) -> None:
            return None

    writer = Writer()
    reconciler = Reconciler(cast(Any, writer), {TargetName.CLUSTER: DryRunTarget()})
    trimmed = _stored(_body("a"))
    inputs = TickInputs(now=START, price_book=default_price_book(), capacity=ClusterCapacity())
    result = _run(reconciler.reconcile(trimmed, inputs))
    assert result.wrote_status and writer.patches


# ---------------------------------------------------------------------- spec parsed once per change


def test_spec_parsed_once_per_distinct_spec_not_per_tick_or_write(monkeypatch: pytest.MonkeyPatch) -> None:
    parses: list[Any] = []

    def counting(raw: Any) -> Any:
        parses.append(raw)
        return parse_spec(raw)

    monkeypatch.setattr(fleet_module, "parse_spec", counting)
    clock = Clock()
    fleet, stub = _fleet(clock, skip_unchanged=False)  # every tick reconciles every workload
    names = [f"w{i}" for i in range(20)]
    for name in names:
        fleet.observe("ADDED", _body(name))

    async def ticks(count: int) -> None:
        for _ in range(count):
            clock.now += timedelta(seconds=30)
            stub.write_next.update(names)  # every reconcile "writes status": a new body per workload per tick
            await fleet.tick()

    _run(ticks(3))
    assert len(stub.calls) == 60
    assert len(parses) == 1, "20 workloads with the same spec: one parse over 3 ticks and 60 status writes"
    assert all(p is not None and p[0] is not None for p in stub.parsed), "the reconcile gets the parsed spec"
    specs = {id(e.body["spec"]) for e in fleet._workloads.values()}
    assert len(specs) == 1, "identical specs are kept once"

    edited = _body("w3", generation=2, rv=50_000)
    edited["spec"]["scaling"]["maxReplicas"] = 3
    fleet.observe("MODIFIED", edited)
    _run(ticks(2))
    assert len(parses) == 2, "a new generation with a new spec: parsed once more"
    spec = fleet._workloads[WorkloadKey(NS, "w3")].parsed
    assert spec is not None and isinstance(spec[0], InferenceWorkloadSpec)
    assert spec[0].scaling.max_replicas == 3


def test_reconcile_uses_the_parsed_spec_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    class Writer:
        async def patch_status(
            self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
        ) -> dict[str, Any]:
            return {"metadata": {"name": name, "namespace": namespace}, "status": patch}

        async def post_event(self, **_: Any) -> None:
            return None

    body = _stored(_body("a"))
    parsed = parse_spec(body["spec"])

    def forbidden(raw: Any) -> Any:
        raise AssertionError("parse_spec called although the parsed spec was given")

    monkeypatch.setattr(reconciler_module, "parse_spec", forbidden)
    reconciler = Reconciler(cast(Any, Writer()), {TargetName.CLUSTER: DryRunTarget()})
    inputs = TickInputs(now=START, price_book=default_price_book(), capacity=ClusterCapacity())
    result = _run(reconciler.reconcile(body, inputs, parsed_spec=parsed))
    assert result.wrote_status


def test_capacity_verdict_gets_the_parsed_spec_of_valid_workloads_only() -> None:
    seen: list[tuple[WorkloadKey, InferenceWorkloadSpec]] = []

    def verdict(key: WorkloadKey, spec: InferenceWorkloadSpec) -> tuple[bool, str]:
        seen.append((key, spec))
        return True, "room"

    clock = Clock()
    fleet, _ = _fleet(clock, capacity_verdict=verdict)
    fleet.observe("ADDED", _body("good"))
    broken = _body("broken")
    broken["spec"]["placement"]["pin"] = "lambda"  # not in allowedTargets: a semantic problem
    fleet.observe("ADDED", broken)
    _run(fleet.tick())
    assert [k.name for k, _ in seen] == ["good"]
    assert isinstance(seen[0][1], InferenceWorkloadSpec)


def test_the_metrics_fetch_gets_each_parsed_workloads_latency_objective() -> None:
    """The source counts each workload's requests slower than its own SLO; a spec that does not parse has none."""
    clock = Clock()
    fleet, _ = _fleet(clock)
    tight = _body("tight")
    tight["spec"]["slo"] = {"latencyP99Seconds": 0.25}
    fleet.observe("ADDED", tight)
    fleet.observe("ADDED", _body("default"))
    garbage = _body("garbage")
    garbage["spec"]["slo"] = {"latencyP99Seconds": "fast"}
    fleet.observe("ADDED", garbage)
    _run(fleet.tick())
    metrics = cast(WindowMetrics, fleet.metrics)
    default = parse_spec(_body("default")["spec"])[0]
    assert default is not None
    assert metrics.objective_seconds == {
        WorkloadKey(NS, "tight"): 0.25,
        WorkloadKey(NS, "default"): default.slo.objective_seconds,
    }


# ---------------------------------------------------------------------- which workloads a tick reconciles


def _reconcile_gaps(stub: StubReconciler, names: list[str], ticks: int) -> dict[str, int]:
    """Per workload, the longest run of consecutive full ticks (of ``ticks``) without a reconcile of it."""
    tick_of: dict[datetime, int] = {}
    for _, when in stub.calls:
        tick_of.setdefault(when, len(tick_of))
    done: dict[str, set[int]] = {n: set() for n in names}
    for key, when in stub.calls:
        done[key.name].add(tick_of[when])
    gaps = {}
    for name, hit in done.items():
        longest = current = 0
        for t in range(len(tick_of) - ticks, len(tick_of)):
            current = 0 if t in hit else current + 1
            longest = max(longest, current)
        gaps[name] = longest
    return gaps


@pytest.mark.parametrize(("count", "cap", "per_tick", "max_gap_ticks"), [(50, None, 5, 9), (50, 2, 2, 24)])
def test_every_workload_is_resynced_within_the_bound(
    count: int, cap: int | None, per_tick: int, max_gap_ticks: int
) -> None:
    """Unchanged inputs: a tick reconciles min(ceil(N x tick / resync), cap) workloads, the least recently
    reconciled; so each is reconciled at least every max(resync_seconds, ceil(N / cap) x tick_seconds)."""
    clock = Clock()
    fleet, stub = _fleet(clock, resync_seconds=300.0, max_resyncs_per_tick=cap)
    names = [f"w{i:03d}" for i in range(count)]
    for name in names:
        fleet.observe("ADDED", _body(name))
    steady_ticks = 3 * math.ceil(count / per_tick)

    async def ticks() -> list[int]:
        reconciled = []
        for _ in range(1 + steady_ticks):
            before = len(stub.calls)
            clock.now += timedelta(seconds=30)
            await fleet.tick()
            reconciled.append(len(stub.calls) - before)
        return reconciled

    reconciled = _run(ticks())
    assert reconciled[0] == count, "the first tick reconciles everything (no fingerprint yet)"
    assert reconciled[1:] == [per_tick] * steady_ticks
    assert fleet.stats.skipped_unchanged == count - per_tick
    gaps = _reconcile_gaps(stub, names, steady_ticks)
    assert max(gaps.values()) == max_gap_ticks, gaps  # = bound / tick_seconds - 1 ticks without a reconcile
    # the resync never reconciles one workload twice while another waits longer
    counts = {n: sum(1 for k, _ in stub.calls if k.name == n) for n in names}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_a_changed_workload_moves_to_the_back_of_the_resync_queue() -> None:
    clock = Clock()
    fleet, stub = _fleet(clock, resync_seconds=300.0, max_resyncs_per_tick=None)
    names = [f"w{i:02d}" for i in range(10)]
    for name in names:
        fleet.observe("ADDED", _body(name))

    async def tick() -> list[str]:
        before = len(stub.calls)
        clock.now += timedelta(seconds=30)
        await fleet.tick()
        return [k.name for k, _ in stub.calls[before:]]

    _run(tick())  # all, once
    edited = _body("w05", generation=2, rv=100)
    fleet.observe("MODIFIED", edited)
    order = [_run(tick()) for _ in range(10)]
    assert "w05" in order[0], "a new generation is reconciled at the next tick"
    assert sum(1 for batch in order for n in batch if n == "w05") == 1, (
        "reconciled for its change, it is not resynced again within the period"
    )
    assert all(len(batch) <= 2 for batch in order)


def test_a_cooldown_deadline_is_reconciled_at_the_first_tick_after_it() -> None:
    clock = Clock()
    fleet, stub = _fleet(clock, resync_seconds=3600.0, max_resyncs_per_tick=0)  # no resync at all
    fleet.observe("ADDED", _body("a"))
    stub.revisit_at["a"] = START + timedelta(seconds=100)

    async def tick() -> int:
        before = len(stub.calls)
        clock.now += timedelta(seconds=30)
        await fleet.tick()
        return len(stub.calls) - before

    stub_counts = [_run(tick()) for _ in range(6)]  # ticks at +30, +60, +90, +120, +150, +180
    assert stub_counts == [1, 0, 0, 1, 0, 0]


def test_a_month_turning_and_a_window_going_stale_are_inputs() -> None:
    clock = Clock()
    clock.now = datetime(2024, 5, 31, 23, 58, 0, tzinfo=UTC)
    fleet, stub = _fleet(clock, resync_seconds=3600.0, max_resyncs_per_tick=0)
    metrics = cast(WindowMetrics, fleet.metrics)
    fleet.observe("ADDED", _body("a"))

    async def tick() -> int:
        before = len(stub.calls)
        clock.now += timedelta(seconds=30)
        await fleet.tick()
        return len(stub.calls) - before

    assert [_run(tick()) for _ in range(3)] == [1, 0, 0]  # 23:58:30 .. 23:59:30
    assert _run(tick()) == 1, "00:00:00 on June 1st: budgets reset, reconciled"
    assert _run(tick()) == 0
    metrics.end = clock.now  # the source keeps answering with the same last sample
    staleness = fleet.reconciler.max_metrics_staleness_seconds
    counts = [_run(tick()) for _ in range(int(staleness // 30) + 2)]
    assert counts[0] == 0
    assert sum(counts) == 1, f"reconciled once when the window turned stale, not on every tick: {counts}"
    assert counts.index(1) == int(staleness // 30), counts


# ---------------------------------------------------------------------- a refused write


class _RefusingCustomObjects:
    """The apiserver's answers to the writer: every status patch refused with 409 (another writer moved the
    object), a read gives the newer copy."""

    def __init__(self, newer: dict[str, Any]) -> None:
        self.newer = newer

    async def patch_namespaced_custom_object_status(self, *_args: Any, **_kwargs: Any) -> dict[str, Any]:
        raise ApiException(status=409, reason="Conflict")

    async def get_namespaced_custom_object(self, *_args: Any, **_kwargs: Any) -> dict[str, Any]:
        return self.newer


class _WritingReconciler(StubReconciler):
    async def reconcile(
        self, raw: Mapping[str, Any], inputs: TickInputs, *, parsed_spec: Any = None
    ) -> ReconcileResult:
        await super().reconcile(raw, inputs, parsed_spec=parsed_spec)
        meta = raw["metadata"]
        assert self.writer is not None
        await self.writer.patch_status(meta["namespace"], meta["name"], {}, resource_version=meta["resourceVersion"])
        return ReconcileResult()


def test_a_409_on_a_write_is_one_line_naming_the_write_and_the_newer_copy_is_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stale copy is an expected race: one INFO line saying which write was refused, no traceback, and the
    apiserver's copy replaces the fleet's."""

    async def scenario() -> dict[str, Any]:
        writer = KubeWriter(k8s.ApiClient())
        writer.custom = cast(Any, _RefusingCustomObjects(_body("a", rv=7)))
        stub = _WritingReconciler()
        stub.writer = cast(Any, writer)
        fleet, _ = _fleet(Clock(), stub)
        fleet.observe("ADDED", _body("a", rv=3))
        with caplog.at_level(logging.INFO, logger="inference_placement"):
            await fleet.tick()
        await writer.api.close()
        return fleet._workloads[WorkloadKey(NS, "a")].body

    stored = _run(scenario())
    assert stored["metadata"]["resourceVersion"] == "7"
    refused = [r for r in caplog.records if "refused: 409 on patch_status" in r.getMessage()]
    assert len(refused) == 1 and refused[0].exc_info is None, [r.getMessage() for r in caplog.records]


class GrowingHistory(WindowMetrics):
    """The same window every tick but a history one point longer each time: a source reading its day back. With
    ``gaps``, busy one step in three (an idle-gap plan's history); without, busy at every step."""

    def __init__(self, gaps: bool = True) -> None:
        super().__init__()
        self.points = 12
        self.gaps = gaps

    async def fetch(self, keys: Any, now: datetime, objective_seconds: Any = None) -> MetricsSnapshot:
        self.points += 1
        window = TrafficWindow(
            step_seconds=30.0,
            rps=(1.0,) * 60,
            observed_p99_seconds=0.2,
            end=now,
            history_rps=tuple(0.0 if self.gaps and i % 3 else 1.0 for i in range(self.points)),
            history_slo_misses=0.0,
            history_step_seconds=300.0,
        )
        return MetricsSnapshot(windows=dict.fromkeys(keys, window), queries=4, history_loading=True)


@pytest.mark.parametrize(
    ("min_replicas", "actuators", "gaps", "every_tick"),
    [
        pytest.param(1, Actuators(cluster_scale_to_zero=True), True, False, id="minReplicas 1: history never read"),
        pytest.param(0, Actuators(), True, False, id="minReplicas 0 but nothing wakes the cluster: read as 1"),
        pytest.param(0, Actuators(cluster_scale_to_zero=True), True, True, id="may go to zero: the history is read"),
        pytest.param(
            0, Actuators(cluster_scale_to_zero=True), False, False, id="read, but busy throughout: no gap to plan"
        ),
    ],
)
def test_a_history_being_read_back_re_reconciles_only_workloads_whose_decision_reads_it(
    min_replicas: int, actuators: Actuators, gaps: bool, every_tick: bool
) -> None:
    """While the source reads the day back (a longer history every tick), a workload is reconciled again only when
    ``decide`` may read its history (``policy.decide.reads_history``) and what it reads moved
    (``policy.decide.history_fingerprint``: a history busy at every step has no idle gap to plan, however long);
    otherwise only the resync share is."""
    clock = Clock()
    stub = StubReconciler()
    stub.actuators = actuators
    fleet, _ = _fleet(clock, stub, GrowingHistory(gaps), max_resyncs_per_tick=0)
    body = _body("w")
    body["spec"]["scaling"]["minReplicas"] = min_replicas
    fleet.observe("ADDED", body)

    async def ticks() -> list[int]:
        reconciled = []
        for _ in range(4):
            before = len(stub.calls)
            clock.now += timedelta(seconds=30)
            await fleet.tick()
            reconciled.append(len(stub.calls) - before)
        return reconciled

    assert _run(ticks()) == ([1, 1, 1, 1] if every_tick else [1, 0, 0, 0])
    # and why: the first sight, then what the history changed (``inference_placement_reconciles_total{cause}``)
    assert fleet.stats.causes == ({"object": 1, "metrics": 3} if every_tick else {"object": 1})


def test_each_reconcile_is_counted_by_its_cause() -> None:
    """``inference_placement_reconciles_total{cause}``: what made each reconcile of a full tick necessary (a
    benchmark that sees a tick reconcile 1,759 of 10,000 steady workloads needs to know which input moved)."""
    clock = Clock()
    fleet, _ = _fleet(clock, resync_seconds=90.0)  # 3 workloads: one resync per 30 s tick
    for name in ("a", "b", "c"):
        fleet.observe(None, _body(name))

    async def tick() -> dict[str, int]:
        before = dict(fleet.stats.causes)
        clock.now += timedelta(seconds=30)
        await fleet.tick()
        return {k: v - before.get(k, 0) for k, v in fleet.stats.causes.items() if v != before.get(k, 0)}

    async def ticks() -> list[dict[str, int]]:
        first = await tick()
        fleet.observe("MODIFIED", _body("a", rv=2))  # someone else wrote its status: same generation
        return [first, *[await tick() for _ in range(5)]]

    seen = _run(ticks())
    # new, then the edited one, then each 30 s one more resync (all three within the 90 s resync period)
    assert seen == [{"object": 3}, {"object": 1}, *[{"resync": 1}] * 4]
    assert fleet.stats.reconciles == sum(fleet.stats.causes.values())
