"""Traces in the two shapes the benchmark accepts, and the requests they turn into.

- Per-step matrix (like ``azure-functions-2019/100_inv.csv``): one workload per row, identifier columns first,
  then one count column per step (``minute_1..minute_1440``). Every row is its own workload. Within a step the
  arrivals are spread uniformly at random (a Poisson process conditioned on the count), seeded per row, so runs
  are reproducible and every policy sees the very same requests.
- Per-request timestamps (like ``azure-llm-2023/code.csv``): a timestamp column (ISO date-time or seconds) and
  optional numeric per-request fields (``ContextTokens``, ``GeneratedTokens``) that feed a profile's service-time
  formula. The whole file is one workload.

A new trace in either shape is data: nothing here knows a file name.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference_placement.sim.scenario import ServiceFormula

__all__ = [
    "DEFAULT_START",
    "MinuteTrace",
    "RequestTrace",
    "MATERIALIZE_LIMIT",
    "Requests",
    "StepRequests",
    "Trace",
    "TraceError",
    "load_trace",
    "minute_trace_from_rates",
    "requests_for",
    "scaled_minute_trace",
    "service_sample",
    "snake_case",
    "FloatArray",
]

FloatArray = npt.NDArray[np.float64]

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
"""Clock start of traces that carry no dates (per-step matrices)."""


class TraceError(ValueError):
    """A trace file that is in neither shape."""


def snake_case(name: str) -> str:
    """``ContextTokens`` -> ``context_tokens``, ``generated-tokens`` -> ``generated_tokens``."""
    name = re.sub(r"[^0-9A-Za-z]+", "_", name.strip())
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return name.strip("_").lower()


@dataclass(frozen=True)
class MinuteTrace:
    path: str
    names: tuple[str, ...]
    counts: npt.NDArray[np.int64]
    """Requests per step, one row per workload."""
    step_seconds: float = 60.0
    start: datetime = DEFAULT_START

    @property
    def workloads(self) -> int:
        return int(self.counts.shape[0])

    @property
    def steps(self) -> int:
        return int(self.counts.shape[1])


@dataclass(frozen=True)
class RequestTrace:
    path: str
    start: datetime
    arrivals_seconds: FloatArray
    """Seconds after ``start``, sorted."""
    fields: dict[str, FloatArray] = field(default_factory=dict)
    """Per-request numeric fields by snake_case name."""
    step_seconds: float = 60.0

    @property
    def workloads(self) -> int:
        return 1

    @property
    def steps(self) -> int:
        if self.arrivals_seconds.size == 0:
            return 1
        return int(self.arrivals_seconds[-1] // self.step_seconds) + 1


Trace = MinuteTrace | RequestTrace

_TIME_HEADER = re.compile(r"time|date|timestamp|arrival", re.IGNORECASE)
_STEP_HEADER = re.compile(r"(\d+)$")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_times(values: list[str]) -> tuple[datetime, FloatArray]:
    if all(_is_float(v) for v in values[:50]):
        seconds = np.array([float(v) for v in values], dtype=np.float64)
        base = float(seconds.min()) if seconds.size else 0.0
        start = datetime.fromtimestamp(base, tz=UTC) if base > 1e8 else DEFAULT_START
        return start, seconds - base
    try:
        stamps = np.array([v.strip().replace("Z", "") for v in values], dtype="datetime64[ns]")
    except ValueError as err:
        raise TraceError(f"timestamp column is neither seconds nor ISO date-times: {err}") from err
    first = stamps.min()
    first_minute = first.astype("datetime64[m]")
    seconds = (stamps - first_minute).astype("timedelta64[ns]").astype(np.float64) / 1e9
    start = datetime.fromisoformat(str(first_minute)).replace(tzinfo=UTC)
    return start, seconds


def load_trace(path: Path, *, step_seconds: float = 60.0, start: datetime | None = None) -> Trace:
    """Read a trace file in either shape (detected from its header)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows = [r for r in reader if r]
    except (OSError, StopIteration, UnicodeDecodeError) as err:
        raise TraceError(f"{path}: cannot read a CSV trace: {err}") from err
    header = [h.strip() for h in header]
    time_columns = [i for i, h in enumerate(header) if _TIME_HEADER.search(h)]
    if time_columns:
        ti = time_columns[0]
        trace_start, arrivals = _parse_times([r[ti] for r in rows])
        order = np.argsort(arrivals, kind="stable")
        fields: dict[str, FloatArray] = {}
        for i, name in enumerate(header):
            if i == ti:
                continue
            column = [r[i] if i < len(r) else "" for r in rows]
            if column and all(_is_float(v) for v in column[:50]):
                try:
                    fields[snake_case(name)] = np.array([float(v) for v in column], dtype=np.float64)[order]
                except ValueError:
                    continue
        return RequestTrace(
            path=str(path),
            start=start or trace_start,
            arrivals_seconds=arrivals[order],
            fields=fields,
            step_seconds=step_seconds,
        )
    step_columns = [i for i, h in enumerate(header) if _STEP_HEADER.search(h) and rows and _is_float(rows[0][i])]
    if not step_columns:
        raise TraceError(
            f"{path}: neither a per-request trace (no time column) nor a per-step matrix (no numbered count columns)"
        )
    first_step = step_columns[0]
    id_columns = [i for i in range(first_step)]
    try:
        counts = np.array([[float(r[i]) for i in step_columns] for r in rows], dtype=np.float64)
    except (ValueError, IndexError) as err:
        raise TraceError(f"{path}: a count is not a number: {err}") from err
    if (counts < 0).any():
        raise TraceError(f"{path}: negative request counts")
    names = tuple(":".join(r[i][:12] for i in id_columns[:1]) or f"row{n}" for n, r in enumerate(rows))
    return MinuteTrace(
        path=str(path),
        names=names,
        counts=np.rint(counts).astype(np.int64),
        step_seconds=step_seconds,
        start=start or DEFAULT_START,
    )


def minute_trace_from_rates(name: str, rates_rps: FloatArray, step_seconds: float, start: datetime) -> MinuteTrace:
    """A one-row matrix from a rate series (e.g. a Prometheus range query): counts = rate x step, rounded."""
    counts = np.rint(np.clip(np.nan_to_num(rates_rps), 0, None) * step_seconds).astype(np.int64)[None, :]
    return MinuteTrace(path=name, names=(name,), counts=counts, step_seconds=step_seconds, start=start)


@dataclass(frozen=True)
class Requests:
    """The requests of one workload, in arrival order."""

    arrivals: FloatArray
    service: FloatArray
    """Seconds a request occupies a slot once it starts (warm)."""
    latency_part: FloatArray
    """Seconds after its start at which the request's SLO latency is measured (service, or time to first token)."""
    steps: int
    step_seconds: float

    @property
    def count(self) -> int:
        return int(self.arrivals.size)

    def per_step(self) -> FloatArray:
        idx = np.minimum((self.arrivals // self.step_seconds).astype(np.int64), self.steps - 1)
        return np.bincount(idx, minlength=self.steps).astype(np.float64)


MATERIALIZE_LIMIT = 5_000_000
"""A per-step row with more requests than this is not materialised (three float arrays of 8 bytes per request):
its requests are drawn step by step (``StepRequests``), and high-volume steps are simulated in aggregate."""


@dataclass(frozen=True)
class StepRequests:
    """The requests of one high-volume workload, kept as counts per step and a service-time distribution.

    Memory is O(steps + sample), whatever the volume. Within a step the arrivals are a Poisson process given the
    count (uniform in the step), as for a materialised per-step row; each request's (service, latency part) pair is
    drawn from the sample (the empirical distribution of a per-request trace's fields through the profile's
    formula, or a constant). ``step_requests(k)`` draws one step's requests (seeded per step: reproducible, the
    same for every policy) for the steps the simulator runs request by request.
    """

    counts: npt.NDArray[np.int64]
    """Requests per step."""
    service: FloatArray
    """A sample of the service-time distribution (seconds a request occupies a slot once it starts)."""
    latency_part: FloatArray
    """The sample's matching latency parts (service, or time to first token), pairwise with ``service``."""
    steps: int
    step_seconds: float
    seed: int = 0

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def per_step(self) -> FloatArray:
        return self.counts.astype(np.float64)

    _service_sums: dict[int, float] = field(default_factory=dict, compare=False, repr=False)

    def step_requests(self, k: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(arrivals, service, latency part) of step ``k``, in arrival order."""
        n = int(self.counts[k])
        rng = np.random.default_rng([self.seed, k])
        pick = rng.integers(0, self.service.size, n)
        arrivals = np.sort(k * self.step_seconds + rng.random(n) * self.step_seconds)
        return arrivals, self.service[pick], self.latency_part[pick]

    def service_sum(self, k: int) -> float:
        """The summed service time of step ``k``'s requests (the very requests ``step_requests(k)`` draws)."""
        cached = self._service_sums.get(k)
        if cached is None:
            n = int(self.counts[k])
            pick = np.random.default_rng([self.seed, k]).integers(0, self.service.size, n)
            cached = self._service_sums[k] = float(self.service[pick].sum())
        return cached


def scaled_minute_trace(
    trace: RequestTrace, factor: float, *, steps: int | None = None, step_seconds: float = 60.0, name: str = ""
) -> MinuteTrace:
    """A one-row per-step matrix with ``trace``'s shape: its requests per step x ``factor``, tiled over ``steps``
    (default: the trace's own length). The first and last steps are partial (the trace starts and ends inside
    them) and are left out, so the tiles join without a false lull. The synthetic high-volume rows are built this
    way (never stored)."""
    idx = (trace.arrivals_seconds // step_seconds).astype(np.int64)
    own = np.bincount(idx, minlength=int(idx.max()) + 1 if idx.size else 1).astype(np.float64)
    if own.size > 2:
        own = own[1:-1]
    total = steps if steps is not None else own.size
    tiled = np.resize(own, total)
    counts = np.rint(tiled * factor).astype(np.int64)[None, :]
    label = name or f"{Path(trace.path).stem}-x{factor:g}"
    return MinuteTrace(path=label, names=(label,), counts=counts, step_seconds=step_seconds, start=trace.start)


def service_sample(
    trace: RequestTrace, formula: ServiceFormula | None, service_seconds: float, *, first_token: bool = False
) -> tuple[FloatArray, FloatArray]:
    """(service, latency part) of every request of ``trace``: the empirical distribution a high-volume row of its
    shape draws from."""
    service, first = _services(trace, formula, service_seconds)
    return service, (first if first_token else service)


def _services(
    trace: RequestTrace, formula: ServiceFormula | None, service_seconds: float
) -> tuple[FloatArray, FloatArray]:
    """Per-request (service, time to first token) from the trace's fields through ``formula`` (or a constant)."""
    arrivals = trace.arrivals_seconds
    if formula is not None and all(f in trace.fields for f in formula.fields):
        service = np.full(arrivals.size, formula.constant)
        first = np.full(arrivals.size, formula.constant)
        for name, coefficient in formula.terms:
            values = trace.fields[name]
            service = service + coefficient * values
            # the first token arrives after the prompt is read and one token is generated
            streamed = "generated" in name or "output" in name or "completion" in name
            first = first + coefficient * (np.minimum(values, 1.0) if streamed else values)
        service = np.maximum(service, 1e-3)
        first = np.maximum(np.minimum(first, service), 1e-3)
    else:
        service = np.full(arrivals.size, service_seconds)
        first = service.copy()
    return service, first


def _seed(path: str, row: int, seed: int) -> int:
    digest = hashlib.sha256(f"{Path(path).name}:{row}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def requests_for(
    trace: Trace,
    row: int,
    *,
    service_seconds: float,
    formula: ServiceFormula | None = None,
    first_token: bool = False,
    seed: int = 0,
    sample: RequestTrace | None = None,
) -> Requests | StepRequests:
    """One workload's requests: arrivals, warm service time, and the part of it the SLO latency measures.

    A per-step row draws each request's fields from ``sample`` (a per-request trace) when one is given, and is kept
    as counts per step (``StepRequests``) when it has a sample or more than ``MATERIALIZE_LIMIT`` requests."""
    if isinstance(trace, MinuteTrace):
        counts = trace.counts[row]
        if sample is not None or int(counts.sum()) > MATERIALIZE_LIMIT:
            if sample is not None:
                svc, part = service_sample(sample, formula, service_seconds, first_token=first_token)
            else:
                svc = part = np.full(1, service_seconds)
            return StepRequests(
                counts=counts.copy(),
                service=svc,
                latency_part=part,
                steps=trace.steps,
                step_seconds=trace.step_seconds,
                seed=_seed(trace.path, row, seed),
            )
        rng = np.random.default_rng(_seed(trace.path, row, seed))
        steps = np.repeat(np.arange(counts.size, dtype=np.float64), counts)
        arrivals = np.sort((steps + rng.random(steps.size)) * trace.step_seconds)
        service = np.full(arrivals.size, service_seconds)
        return Requests(arrivals, service, service.copy(), trace.steps, trace.step_seconds)
    service, first = _services(trace, formula, service_seconds)
    latency_part = first if first_token else service
    return Requests(trace.arrivals_seconds.copy(), service, latency_part, trace.steps, trace.step_seconds)
