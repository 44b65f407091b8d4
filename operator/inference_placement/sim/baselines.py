"""Baselines: what platform teams run today, each a policy on the same simulator as ``ours``.

- ``static-cluster``: cluster replicas provisioned for the trace's peak, never changed;
- ``cluster-autoscaled``: an HPA on in-flight requests (70% of the per-replica concurrency, scale-down
  stabilisation 300 s), at least 1 replica;
- ``cluster-scale-to-zero``: Knative KPA defaults (target 70% of the container concurrency over the 60 s stable
  window, scale to zero after the stable window + 30 s grace, a request wakes a replica through the activator);
- ``keda-http``: the KEDA HTTP add-on: its interceptor holds requests while the workload has no ready replica (a
  request to a scaled-to-zero workload waits for the cold start instead of failing), and KEDA's HPA scales on the
  in-flight requests the interceptor counts, ``ceil(in flight / targetValue)`` with the target set to the
  replica's concurrency (the add-on's default of 100 would overload a model server with fewer slots), the HPA's
  300 s scale-down stabilisation, and scale to zero after the 300 s without requests of its ``scaledownPeriod`` /
  KEDA's ``cooldownPeriod`` default (keda.sh/http-add-on, "Scaling" and the HTTPScaledObject reference);
- ``lambda`` / ``cloudrun``: everything on one serverless platform with its defaults (no warm instances);
- ``rule-of-thumb``: the seeds' daily-volume crossover (serverless below 50K requests/day, cluster above 100K,
  in between stay; the first day cuts at 75K), re-decided every day from that day's volume (a generous reading:
  the team knows its daily volume); serverless is Lambda where it fits, else Cloud Run; the cluster is the HPA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from inference_placement.api.spec import TargetName
from inference_placement.policy.economics import TargetEconomics
from inference_placement.policy.price_book import PriceBook
from inference_placement.policy.queueing import poisson_slots
from inference_placement.sim.simulator import Control, Observation, SimWorkload

__all__ = [
    "HPA_TARGET_UTILIZATION",
    "KPA_IDLE_SECONDS",
    "AllCloudRunPolicy",
    "AllLambdaPolicy",
    "ClusterAutoscaledPolicy",
    "ClusterScaleToZeroPolicy",
    "RuleOfThumbPolicy",
    "StaticClusterPolicy",
    "HPA_SCALE_DOWN_STABILIZATION_SECONDS",
    "KEDA_SCALEDOWN_SECONDS",
    "KedaHttpPolicy",
    "KPA_SCALE_TO_ZERO_GRACE_SECONDS",
    "KPA_STABLE_WINDOW_SECONDS",
]

HPA_TARGET_UTILIZATION = 0.7
"""Knative's default target utilisation, also a common HPA target."""
HPA_SCALE_DOWN_STABILIZATION_SECONDS = 300.0
KPA_STABLE_WINDOW_SECONDS = 60.0
KPA_SCALE_TO_ZERO_GRACE_SECONDS = 30.0
KPA_IDLE_SECONDS = KPA_STABLE_WINDOW_SECONDS + KPA_SCALE_TO_ZERO_GRACE_SECONDS


class _Base:
    name = "baseline"

    def __init__(self) -> None:
        self.workload: SimWorkload | None = None
        self.economics: dict[TargetName, TargetEconomics] = {}

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        self.workload = workload
        self.economics = economics

    def applicable(self, economics: dict[TargetName, TargetEconomics]) -> bool:
        return TargetName.CLUSTER in economics


class StaticClusterPolicy(_Base):
    name = "static-cluster"

    def tick(self, obs: Observation) -> Sequence[Control]:
        if obs.step != 0:
            return []
        assert self.workload is not None
        econ = self.economics[TargetName.CLUSTER]
        reqs = self.workload.requests
        peak_rps = float(reqs.per_step().max()) / reqs.step_seconds if reqs.count else 0.0
        service = float(reqs.service.mean()) if reqs.count else self.workload.spec.model.service_seconds
        tail = (1.0 - self.workload.spec.slo.attainment) / 2.0
        slots = float(poisson_slots(peak_rps * service, max(tail, 1e-6)))
        replicas = max(1, math.ceil(slots / max(1, econ.concurrency)))
        return [Control(TargetName.CLUSTER, replicas=min(replicas, econ.max_instances))]


def _in_flight(obs: Observation) -> float:
    if obs.step == 0:
        return 0.0
    return float(obs.service_sum_per_step[-1]) / obs.step_seconds


class ClusterAutoscaledPolicy(_Base):
    name = "cluster-autoscaled"

    def __init__(self, min_replicas: int = 1) -> None:
        super().__init__()
        self.min_replicas = min_replicas
        self._history: list[int] = []

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        super().reset(workload, economics, price_book)
        self._history = []

    def desired(self, obs: Observation) -> int:
        econ = self.economics[TargetName.CLUSTER]
        raw = math.ceil(_in_flight(obs) / (econ.concurrency * HPA_TARGET_UTILIZATION) - 1e-9)
        self._history.append(raw)
        window = max(1, int(HPA_SCALE_DOWN_STABILIZATION_SECONDS // obs.step_seconds))
        replicas = max(self._history[-window:])
        return max(self.min_replicas, min(replicas, econ.max_instances))

    def tick(self, obs: Observation) -> Sequence[Control]:
        return [Control(TargetName.CLUSTER, replicas=self.desired(obs))]


class ClusterScaleToZeroPolicy(_Base):
    name = "cluster-scale-to-zero"

    def tick(self, obs: Observation) -> Sequence[Control]:
        econ = self.economics[TargetName.CLUSTER]
        desired = math.ceil(_in_flight(obs) / (econ.concurrency * HPA_TARGET_UTILIZATION) - 1e-9)
        if obs.step > 0 and obs.requests_per_step[-1] > 0:
            desired = max(desired, 1)
        desired = min(desired, econ.max_instances)
        return [Control(TargetName.CLUSTER, replicas=desired, idle_timeout_seconds=KPA_IDLE_SECONDS)]


KEDA_SCALEDOWN_SECONDS = 300.0
"""KEDA's ``cooldownPeriod`` / the HTTP add-on's ``scaledownPeriod`` default: idle this long, then zero replicas."""


class KedaHttpPolicy(_Base):
    name = "keda-http"

    def __init__(self) -> None:
        super().__init__()
        self._history: list[int] = []

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        super().reset(workload, economics, price_book)
        self._history = []

    def tick(self, obs: Observation) -> Sequence[Control]:
        econ = self.economics[TargetName.CLUSTER]
        raw = math.ceil(_in_flight(obs) / max(1, econ.concurrency) - 1e-9)
        if obs.step > 0 and obs.requests_per_step[-1] > 0:
            raw = max(raw, 1)
        self._history.append(raw)
        window = max(1, int(HPA_SCALE_DOWN_STABILIZATION_SECONDS // obs.step_seconds))
        desired = min(max(self._history[-window:]), econ.max_instances)
        # the interceptor holds a request that finds no replica until one is ready (the pool wakes one)
        return [Control(TargetName.CLUSTER, replicas=desired, idle_timeout_seconds=KEDA_SCALEDOWN_SECONDS)]


class _AllServerless(_Base):
    target = TargetName.LAMBDA

    def applicable(self, economics: dict[TargetName, TargetEconomics]) -> bool:
        return self.target in economics

    def tick(self, obs: Observation) -> Sequence[Control]:
        return [Control(self.target)] if obs.step == 0 else []


class AllLambdaPolicy(_AllServerless):
    name = "lambda"
    target = TargetName.LAMBDA


class AllCloudRunPolicy(_AllServerless):
    name = "cloudrun"
    target = TargetName.CLOUDRUN


class RuleOfThumbPolicy(_Base):
    name = "rule-of-thumb"
    LOW_PER_DAY = 50_000.0
    HIGH_PER_DAY = 100_000.0

    def __init__(self) -> None:
        super().__init__()
        self._hpa = ClusterAutoscaledPolicy()
        self._on_cluster = False
        self._daily: np.ndarray = np.zeros(0)

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        super().reset(workload, economics, price_book)
        self._hpa.reset(workload, economics, price_book)
        reqs = workload.requests
        per_step = reqs.per_step()
        day_steps = max(1, int(86400 // reqs.step_seconds))
        days = math.ceil(per_step.size / day_steps)
        volumes = np.zeros(days)
        for d in range(days):
            part = per_step[d * day_steps : (d + 1) * day_steps]
            # a partial day is scaled to a full day's volume
            volumes[d] = part.sum() * day_steps / max(1, part.size)
        self._daily = volumes
        self._on_cluster = False

    def _serverless(self) -> TargetName | None:
        for target in (TargetName.LAMBDA, TargetName.CLOUDRUN):
            if target in self.economics:
                return target
        return None

    def tick(self, obs: Observation) -> Sequence[Control]:
        day_steps = max(1, int(86400 // obs.step_seconds))
        day = obs.step // day_steps
        if obs.step % day_steps == 0:
            volume = float(self._daily[min(day, self._daily.size - 1)])
            if obs.step == 0:
                self._on_cluster = volume > (self.LOW_PER_DAY + self.HIGH_PER_DAY) / 2.0
            elif volume > self.HIGH_PER_DAY:
                self._on_cluster = True
            elif volume < self.LOW_PER_DAY:
                self._on_cluster = False
        serverless = self._serverless()
        if (self._on_cluster or serverless is None) and TargetName.CLUSTER in self.economics:
            return [Control(TargetName.CLUSTER, replicas=self._hpa.desired(obs))]
        self._hpa.desired(obs)
        assert serverless is not None
        return [Control(serverless)]

    def applicable(self, economics: dict[TargetName, TargetEconomics]) -> bool:
        return bool(economics)
