"""Requests in flight under Poisson arrivals (M/G/infinity): how many slots a rate needs and how often they overflow.

With arrivals at rate ``r`` and service time ``s`` the number of requests in flight is Poisson with mean ``a = r s``
whatever the service-time distribution; an arriving request sees that distribution too (PASTA). So the share of
requests that find ``n`` slots all busy is ``P(N >= n)``, and ``n`` slots keep that share under ``tail`` when
``n = poisson_slots(a, tail)``. Vectorised (numpy, broadcasting), no randomness: exact sums (as a table over
``k``) for small means, the Wilson-Hilferty approximation for large ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

__all__ = [
    "FloatArray",
    "allen_cunneen_scale",
    "burst_level",
    "busy_instances",
    "erlang_b_real",
    "late_in_queue",
    "poisson_mean_within",
    "poisson_sf",
    "peaked_miss_share",
    "poisson_slots",
    "queue_miss_many",
    "queue_miss_scalar",
    "queue_miss_share",
    "queued_in_time",
    "rate_peakedness",
    "replicas_for_burst",
    "replicas_for_peaked_wait",
    "replicas_for_wait",
    "replicas_for_wait_many",
    "replicas_for_wait_scalar",
    "sf_many",
    "sf_scalar",
    "slots_many",
    "slots_scalar",
    "wait_slack",
]

FloatArray = npt.NDArray[np.float64]

_APPROX_FROM = 20.0
"""From this mean on, the Wilson-Hilferty approximation (P(N >= n) = P(chi2 with 2n degrees <= 2a)) replaces the
exact sum; it is within a few tenths of a percent of the tail there, and keeps the cost flat in the mean."""
_ERF = np.frompyfunc(math.erf, 1, 1)
_LOG_FACTORIAL = np.array([math.lgamma(k + 1.0) for k in range(4096)])


def _normal_cdf(z: FloatArray) -> FloatArray:
    erf = np.asarray(_ERF(np.asarray(z, dtype=np.float64) / math.sqrt(2.0)), dtype=np.float64)
    result: FloatArray = 0.5 * (1.0 + erf)
    return result


def _wilson_hilferty_sf(a: FloatArray, n: FloatArray) -> FloatArray:
    """``P(N >= n)`` for Poisson ``N`` with mean ``a`` (``n >= 1``), through the chi-square form of the Poisson CDF."""
    n = np.maximum(n, 1.0)
    z = (np.cbrt(a / n) - 1.0 + 1.0 / (9.0 * n)) * 3.0 * np.sqrt(n)
    return _normal_cdf(z)


def _survival_table(a: FloatArray, top: int) -> FloatArray:
    """``S[k, j] = P(N_j >= k)`` for ``k = 0..top`` (exact; ``a`` small, > 0)."""
    k = np.arange(top + 1, dtype=np.float64)[:, None]
    log_pmf = k * np.log(a)[None, :] - a[None, :] - _LOG_FACTORIAL[: top + 1, None]
    survival = 1.0 - np.cumsum(np.exp(log_pmf), axis=0)
    # row k holds P(N >= k + 1); shift down so row k is P(N >= k)
    out = np.empty_like(survival)
    out[0] = 1.0
    np.clip(survival[:-1], 0.0, 1.0, out=out[1:])
    return out


def _small_sf(a: FloatArray, n: FloatArray) -> FloatArray:
    """Exact ``P(N >= n)``; ``a`` 1-D (> 0, < _APPROX_FROM), ``n`` of shape ``a.shape`` or ``(rows,) + a.shape``."""
    amax = float(a.max())
    cut = int(amax + 10.0 * math.sqrt(amax) + 12.0)
    top = max(0, min(int(n.max()), cut))
    table = _survival_table(a, top)
    ni = np.clip(n, 0, top).astype(np.int64)
    columns = np.arange(a.size)
    result: FloatArray = np.where(n > top, 0.0, table[ni, columns])
    return result


def poisson_sf(a: FloatArray | float, n: FloatArray | float) -> FloatArray:
    """``P(N >= n)`` for ``N ~ Poisson(a)`` (``n`` integral). ``a`` scalar or 1-D; ``n`` of the same shape or with
    extra leading rows (one row per capacity being priced)."""
    a_arr = np.atleast_1d(np.asarray(a, dtype=np.float64))
    n_arr = np.asarray(n, dtype=np.float64)
    if n_arr.shape[-1:] != a_arr.shape:
        n_arr = np.broadcast_to(n_arr, np.broadcast_shapes(n_arr.shape, a_arr.shape))
    if a_arr.size == 0:
        return np.zeros(n_arr.shape)
    safe = np.maximum(a_arr, 1e-300)
    if float(a_arr.max()) < _APPROX_FROM:
        out = _small_sf(safe, n_arr)
    else:
        big = safe >= _APPROX_FROM
        out = _wilson_hilferty_sf(np.broadcast_to(safe, n_arr.shape), n_arr)
        if not big.all():
            small_cols = np.flatnonzero(~big)
            out[..., small_cols] = _small_sf(safe[small_cols], n_arr[..., small_cols])
    out = np.where(n_arr <= 0, 1.0, np.where(a_arr > 0, out, 0.0))
    if np.ndim(a) == 0 and np.ndim(n) == 0:
        return out.reshape(())
    return out


def _scalar_slots(a: float, tail: float) -> float:
    if a <= 0:
        return 0.0
    tail = min(1.0, max(tail, 1e-12))
    if a >= _APPROX_FROM:
        return float(poisson_slots(np.array([a]), tail)[0])
    pmf = math.exp(-a)
    survival = 1.0 - pmf  # P(N >= 1)
    k = 1
    while survival > tail and k < 100_000:
        pmf *= a / k
        survival -= pmf
        k += 1
    return float(k)


def poisson_slots(a: FloatArray | float, tail: FloatArray | float) -> FloatArray:
    """Smallest ``n >= 1`` with ``P(N >= n) <= tail`` for ``N ~ Poisson(a)``; 0 where ``a == 0``."""
    if np.ndim(a) == 0 and np.ndim(tail) == 0:
        return np.asarray(_scalar_slots(float(np.asarray(a)), float(np.asarray(tail))))
    a_arr = np.asarray(a, dtype=np.float64)
    t_arr = np.clip(np.asarray(tail, dtype=np.float64), 1e-12, 1.0)
    if t_arr.shape != a_arr.shape:
        a_arr, t_arr = np.broadcast_arrays(a_arr, t_arr)
    out = np.zeros(a_arr.shape, dtype=np.float64)
    if out.size == 0:
        return out
    live = a_arr > 0
    big = live & (a_arr >= _APPROX_FROM)
    if big.any():
        ab = a_arr[big]
        tails = t_arr[big]
        if np.all(tails == tails.flat[0]):
            z: FloatArray | float = NormalDist().inv_cdf(1.0 - float(tails.flat[0]))
        else:
            z = np.array([NormalDist().inv_cdf(1.0 - float(t)) for t in tails])
        # Cornish-Fisher start, then step to the exact answer of the approximate tail
        n = np.maximum(1.0, np.round(ab + z * np.sqrt(ab) + (z * z - 1.0) / 6.0 + 0.5))
        for _ in range(8):
            down = (n > 1) & (_wilson_hilferty_sf(ab, n - 1.0) <= tails)
            up = _wilson_hilferty_sf(ab, n) > tails
            if not down.any() and not up.any():
                break
            n = n - down + up
        out[big] = n
    small = live & ~big
    if small.any():
        aa = a_arr[small]
        tt = t_arr[small]
        # Bernstein: P(N >= a + x) <= exp(-x^2 / (2 (a + x/3))), so the answer is below a + x for tail e^-L
        amax = float(aa.max())
        log_tail = -math.log(float(tt.min()))
        top = math.ceil(amax + log_tail / 3.0 + math.sqrt(log_tail**2 / 9.0 + 2.0 * amax * log_tail)) + 2
        table = _survival_table(aa, top)
        ok = table <= tt[None, :]
        ok[0, :] = False  # at least one slot wherever requests flow
        first = np.argmax(ok, axis=0)
        out[small] = np.where(ok.any(axis=0), first, top + 1).astype(np.float64)
    return out


def busy_instances(a: FloatArray, concurrency: int) -> FloatArray:
    """Expected instances with at least one request in flight when ``N ~ Poisson(a)`` requests pack onto
    instances of ``concurrency`` slots (request-based billing bills exactly that time)."""
    a = np.asarray(a, dtype=np.float64)
    return np.maximum(1.0 - np.exp(-a), a / float(max(1, concurrency)))


def queue_miss_share(a: FloatArray, slots: FloatArray, slack_over_service: float) -> FloatArray:
    """Share of requests that wait longer than their slack with ``slots`` servers sharing one FIFO queue.

    Erlang C (M/M/c): ``P(wait > x) = C(c, a) exp(-(c - a) x / s)``, with ``C(c, a)`` the chance to queue at all,
    written with Poisson terms: ``C = q / (1 - P(N >= c) + q)``, ``q = P(N = c) c / (c - a)``. The slack ``x`` is
    what the objective leaves after the warm latency (``slack_over_service = x / s``); at or above saturation
    (``a >= c``) every arrival waits unboundedly.
    """
    a = np.asarray(a, dtype=np.float64)
    c = np.asarray(slots, dtype=np.float64)
    sf = poisson_sf(a, np.stack([c, c + 1.0])) if c.ndim == a.ndim else None
    if sf is None:
        both = poisson_sf(a, np.concatenate([c, c + 1.0]))
        rows = c.shape[0]
        at_least, above = both[:rows], both[rows:]
    else:
        at_least, above = sf[0], sf[1]
    pmf = np.maximum(at_least - above, 0.0)
    headroom = c - a
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(headroom > 0, pmf * c / np.maximum(headroom, 1e-12), np.inf)
        erlang_c = np.where(headroom > 0, q / np.maximum(1.0 - at_least + q, 1e-300), 1.0)
    decay = np.exp(-np.maximum(headroom, 0.0) * max(0.0, slack_over_service))
    result: FloatArray = np.where(a > 0, np.clip(erlang_c * decay, 0.0, 1.0), 0.0)
    result = np.where(c <= 0, np.where(a > 0, 1.0, 0.0), result)
    return result


def replicas_for_wait(
    a: FloatArray, concurrency: int, slack_over_service: float, tail: float, max_replicas: int
) -> FloatArray:
    """Fewest replicas (of ``concurrency`` slots) keeping the share of requests waiting past their slack under
    ``tail`` (Erlang C); at least 1 where there is traffic, at most ``max_replicas``."""
    a = np.asarray(a, dtype=np.float64)
    conc = float(max(1, concurrency))
    out = np.where(a > 0, np.maximum(1.0, np.ceil(a / conc + 1e-9)), 0.0)
    out = np.minimum(out, float(max_replicas))
    pending = a > 0
    for _ in range(64):
        if not pending.any():
            break
        share = queue_miss_share(a[pending], out[pending] * conc, slack_over_service)
        grow = (share > tail) & (out[pending] < max_replicas)
        if not grow.any():
            break
        idx = np.flatnonzero(pending)
        out[idx[grow]] += 1.0
        done = np.ones(pending.sum(), dtype=bool)
        done[grow] = False
        pending[idx[done]] = False
    return out


# --------------------------------------------------------------------------- memoised scalar kernels
#
# Windows are short (hours of steps) and per-step rates repeat (counts per step are integers), so for small arrays
# a Python loop over memoised scalars is far cheaper than a dozen numpy calls. Same formulas as above.

_SCALAR_LIMIT = 256
"""Arrays up to this many elements go through the memoised scalars; larger ones through numpy."""

# Each memo holds at most 8,192 results (~160 B each with its key: ~1.3 MB). The operator decides for thousands of
# workloads with distinct rates: at 65,536 entries the four memos filled to ~55 MB at 10,000 workloads while
# their hits come from within one decision (the same load against several capacities) and from the same workload's
# next tick, which a smaller memo keeps as well (harness: no change in CPU per reconcile at 1,000 workloads).


@lru_cache(maxsize=1 << 13)
def sf_scalar(a: float, n: int) -> float:
    """``P(N >= n)`` for ``N ~ Poisson(a)``."""
    if n <= 0:
        return 1.0
    if a <= 0:
        return 0.0
    if a >= _APPROX_FROM:
        return float(_wilson_hilferty_sf(np.array([a]), np.array([float(n)]))[0])
    pmf = math.exp(-a)
    cdf = 0.0
    for k in range(n):
        cdf += pmf
        pmf *= a / (k + 1)
    return min(1.0, max(0.0, 1.0 - cdf))


@lru_cache(maxsize=1 << 13)
def slots_scalar(a: float, tail: float) -> float:
    return _scalar_slots(a, tail)


def allen_cunneen_scale(service_scv: float | None) -> float:
    """How much longer than under exponential service requests wait for a slot, ``(1 + c_s^2) / 2`` for service
    times of squared coefficient of variation ``c_s^2`` (Allen-Cunneen's M/G/c approximation of the wait:
    ``W(M/G/c) ~ W(M/M/c) (1 + c_s^2) / 2``, Poisson arrivals): 1/2 for constant service, 1 for exponential and
    for an unknown law. The models here keep Erlang C's exponential wait tail with the wait scaled, i.e. a slack of
    ``x`` counts as ``x / scale`` of Erlang C's (within 0.7-2.5x of a simulated M/D/c or M/G/c's share waiting
    past the slack, ``tests/test_policy_queueing.py``). ``c_s^2`` is taken at most 1: the estimate that measures it
    (``forecast.service_scv``) cannot tell service variability from a mix that drifts between steps, so above 1
    the models stay with Erlang C rather than charge the drift as queueing."""
    if service_scv is None or not math.isfinite(service_scv):
        return 1.0
    return (1.0 + min(1.0, max(0.0, service_scv))) / 2.0


def wait_slack(slack_over_service: float, wait_scale: float) -> float:
    """The slack as Erlang C's exponential waits count it when the service law scales the waits by ``wait_scale``
    (:func:`allen_cunneen_scale`, taken within its range 1/2..1)."""
    scale = min(1.0, max(0.5, wait_scale)) if math.isfinite(wait_scale) else 1.0
    return max(0.0, slack_over_service) / scale


def burst_level(
    slots: float,
    steady_in_flight: float,
    slack_over_service: float,
    tail: float = 0.0,
    service_scv: float | None = None,
) -> float:
    """The in-flight level a burst may reach on ``slots`` before its last request waits past the slack.

    Beyond the slots a request waits for a departure. Requests of a steady stream that were already in flight
    before the burst leave at ``steady / service`` per second (Little's law), so the k-th request beyond the slots
    waits about ``k x service / steady`` and stays within the slack while ``k <= steady x slack_over_service``. A
    burst's own requests free their slots too once served: where the slack is a service time or more, the requests
    queued behind the slots start in time as far as :func:`queued_in_time` allows (at a chance ``tail`` of one
    waiting past the slack, under the service law ``service_scv``). With a slack under one service time, a burst's
    own requests, started together, free no slot within it: with no steady stream under it, a burst needs its full
    slots."""
    steady = min(max(0.0, steady_in_flight), slots)
    queued = queued_in_time(slots, slack_over_service, tail, service_scv)
    return slots + max(steady * max(0.0, slack_over_service), float(queued))


def replicas_for_burst(
    peak: float,
    concurrency: int,
    steady_in_flight: float,
    slack_over_service: float,
    tail: float,
    max_replicas: int,
    service_scv: float | None = None,
) -> int:
    """The fewest replicas (of ``concurrency`` slots) whose :func:`burst_level` holds an in-flight ``peak``; 0 for
    no peak, at most ``max_replicas``. The burst level grows with the replicas, and ``ceil(peak / concurrency)``
    holds the peak with no queueing at all: bisection between 1 and that."""
    if peak <= 0:
        return 0
    slots = float(max(1, concurrency))
    low, high = 1, max(1, math.ceil(peak / slots - 1e-9))
    while low < high:
        mid = (low + high) // 2
        if burst_level(mid * slots, steady_in_flight, slack_over_service, tail, service_scv) >= peak - 1e-9:
            high = mid
        else:
            low = mid + 1
    return min(high, max(1, max_replicas))


_MIN_SCV = 0.01
"""The most regular service law the renewal counts model (a 10 % standard deviation); anything more regular is
counted as this (fewer departures right at whole service times: the conservative side)."""
_EXACT_SLOTS = 64
"""Up to this many busy slots the departures' distribution is the exact convolution of the slots' own; above, the
normal law with the same mean and variance."""


def _law(service_scv: float | None) -> float | None:
    """The service law the burst terms read: None (unknown: the worse of the synchronised and the memoryless
    laws), else ``c_s^2`` within ``[_MIN_SCV, 1]`` rounded to a hundredth (the memos key on it)."""
    if service_scv is None or not math.isfinite(service_scv):
        return None
    return round(min(1.0, max(_MIN_SCV, service_scv)), 2)


def _gamma_cdf(shape: float, x: float) -> float:
    """``P(G <= x)`` for ``G ~ Gamma(shape, 1)``: the regularised lower incomplete gamma function (its series below
    ``shape + 1``, Lentz's continued fraction of the upper one above; Numerical Recipes 6.2)."""
    if x <= 0:
        return 0.0
    log_front = shape * math.log(x) - x - math.lgamma(shape)
    if x < shape + 1.0:
        term = total = 1.0 / shape
        a = shape
        for _ in range(1000):
            a += 1.0
            term *= x / a
            total += term
            if abs(term) < abs(total) * 1e-14:
                break
        return min(1.0, total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1.0 - shape
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - shape)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return max(0.0, 1.0 - math.exp(log_front) * h)


@lru_cache(maxsize=1 << 10)
def _departures(slots: int, slack_over_service: float, scv: float) -> tuple[float, ...]:
    """``P(D = j)`` for ``j = 0, 1, ...``: departures within the slack from ``slots`` busy slots whose requests
    started together, each slot serving one after another with gamma service times (mean 1, ``c_s^2 = scv``).

    A slot's ``k``-th departure comes at a sum of ``k`` service times, ``Gamma(k / scv, scv)``, so its departures
    ``N`` within ``x`` have ``P(N >= k) = P(Gamma(k / scv, 1) <= x / scv)`` (a renewal count); the slots' ``D`` is
    the sum of ``slots`` independent ones (exact convolution up to ``_EXACT_SLOTS`` slots, the normal law with
    the same mean and variance above). At ``scv = 1`` this is Poisson with mean ``slots x x`` (memoryless
    departures); towards 0 every slot frees exactly ``floor(x)`` times (the synchronised law)."""
    shape = 1.0 / scv
    x = max(0.0, slack_over_service)
    at_least = [1.0]
    k = 1
    while k < 10_000:
        p = _gamma_cdf(k * shape, x * shape)
        if p < 1e-12:
            break
        at_least.append(p)
        k += 1
    at_least.append(0.0)
    one = np.maximum(np.diff(-np.asarray(at_least)), 0.0)  # P(N = k), k = 0..
    if slots <= _EXACT_SLOTS:
        total = np.ones(1)
        power = one
        n = slots
        while n:
            if n & 1:
                total = np.convolve(total, power)
            n >>= 1
            if n:
                power = np.convolve(power, power)
        return tuple(float(v) for v in total)
    ks = np.arange(one.size, dtype=np.float64)
    mean = float((ks * one).sum())
    var = max(float((ks * ks * one).sum()) - mean * mean, 1e-12)
    mu, sd = slots * mean, math.sqrt(slots * var)
    top = int(mu + 9.0 * sd) + 2
    edges = (np.arange(-1, top + 1, dtype=np.float64) + 0.5 - mu) / sd
    cdf = _normal_cdf(edges)
    pmf = np.maximum(np.diff(cdf), 0.0)
    return tuple(float(v) for v in pmf / max(float(pmf.sum()), 1e-300))


@lru_cache(maxsize=1 << 12)
def queued_in_time(slots: float, slack_over_service: float, tail: float, service_scv: float | None = None) -> int:
    """How many requests may queue behind ``slots`` busy slots with each one starting within the slack, but for a
    chance ``tail``: the k-th queued request starts in time when the departures ``D`` within the slack reach ``k``,
    so the largest ``k`` with ``P(D < k) <= tail`` (found by bisection, ``P(D < k)`` growing with ``k``), never
    more than ``slots x floor(slack / service)`` and none within a slack under one service time.

    With the service law unknown (``service_scv`` None), the worse of two laws:

    - Service times close to their mean, the requests in the slots started together (a burst's own): every slot
      frees once per service time, so ``slots x floor(slack / service)`` start in time.
    - Memoryless service times (Erlang C's law): departures from busy slots form a Poisson stream of ``slots /
      service`` per second, ``D ~ Poisson(slots x slack / service)`` within the slack.

    With a measured law (``forecast.service_scv``), the departures of slots that started together with gamma
    service times of that ``c_s^2`` (:func:`_departures`). For ``c_s^2 <= 1`` (an increasing failure rate) a slot
    busy for a while frees sooner than a fresh one, so slots that started together are the worse case of a burst.
    """
    slack = max(0.0, slack_over_service)
    synchronised = int(slots * math.floor(slack + 1e-9)) if slots > 0 else 0
    if synchronised <= 0:
        return 0
    law = _law(service_scv)
    below: Callable[[int], float]
    if law is None:
        mean = slots * slack

        def below(k: int) -> float:
            return 1.0 - sf_scalar(mean, k)

    else:
        cdf = np.cumsum(_departures(max(1, round(slots)), slack, law))

        def below(k: int) -> float:
            return float(cdf[k - 1]) if 0 < k <= cdf.size else (0.0 if k <= 0 else 1.0)

    low, high = 0, synchronised  # P(D < low) <= tail holds at low = 0 (P(D < 0) = 0)
    while low < high:
        mid = (low + high + 1) // 2
        if below(mid) <= tail:
            low = mid
        else:
            high = mid - 1
    return low


@lru_cache(maxsize=1 << 13)
def late_in_queue(slots: float, queued: int, slack_over_service: float, service_scv: float | None = None) -> float:
    """Expected number of ``queued`` requests waiting behind ``slots`` busy slots that start past the slack, under
    the laws of :func:`queued_in_time`: ``queued - E[min(D, queued)]``. Unknown law: the worse of ``queued - slots x
    floor(slack / service)`` (the slots free together once per service time) and memoryless departures, where for
    Poisson ``D`` of mean ``m``: ``E[min(D, q)] = m - E[(D - q)+] = m - m P(D >= q) + q P(D >= q + 1)``."""
    if queued <= 0:
        return 0.0
    whole = math.floor(max(0.0, slack_over_service) + 1e-9)
    if slots <= 0 or whole <= 0:
        return float(queued)  # a slack under one service time: every queued request of a burst waits past it
    law = _law(service_scv)
    if law is not None:
        pmf = np.asarray(_departures(max(1, round(slots)), slack_over_service, law))
        started = float((np.minimum(np.arange(pmf.size), queued) * pmf).sum())
        return max(0.0, queued - min(float(queued), started))
    synchronised = max(0.0, queued - slots * whole)
    mean = slots * slack_over_service
    started = mean - mean * sf_scalar(mean, queued) + queued * sf_scalar(mean, queued + 1)
    return max(synchronised, queued - min(float(queued), max(0.0, started)))


_LAGUERRE = np.polynomial.laguerre.laggauss(64)
"""Gauss-Laguerre nodes and weights for Jagerman's integral (a smooth integrand: the fractional power below 1)."""

_CONTINUOUS_UP_TO = 1000
"""Above this many servers the loss formula's continuous extension (a recursion of that many steps) is replaced by
the whole-number one: a fraction of a server among a thousand moves the wait by a thousandth."""


def erlang_b_real(servers: float, a: float) -> float:
    """Erlang's loss formula for a real number of servers: Jagerman's continuous extension, ``1 / B(x, a) =
    integral over u >= 0 of exp(-u) (1 + u / a)^x``, equal to the loss formula at whole numbers. Computed at the
    fractional part by Gauss-Laguerre quadrature, then up by the recursion ``B(x) = a B(x-1) / (x + a B(x-1))``."""
    if a <= 0:
        return 0.0
    whole = int(servers)
    fraction = servers - whole
    nodes, weights = _LAGUERRE
    b = 1.0 if fraction <= 0 else 1.0 / float(weights @ (1.0 + nodes / a) ** fraction)
    for k in range(1, whole + 1):
        x = fraction + k
        b = a * b / (x + a * b)
    return b


@lru_cache(maxsize=1 << 13)
def queue_miss_scalar(a: float, slots: float, slack_over_service: float) -> float:
    """Erlang C share of requests waiting past their slack (see :func:`queue_miss_share`).

    ``slots`` may be fractional (Hayward's equivalent servers of a peaked load, ``peaked_miss_share``): Erlang C
    then follows the loss formula's continuous extension, ``C = x B / (x - a (1 - B))``, which agrees with it at
    whole numbers and lies between its values at the two whole numbers around (truncating to the whole number below
    took a peaked load's 0.46 equivalent servers for none: every request waiting)."""
    if a <= 0:
        return 0.0
    if slots <= 0:
        return 1.0
    headroom = slots - a
    if headroom <= 0:
        return 1.0
    if slots != int(slots) and slots <= _CONTINUOUS_UP_TO:
        b = erlang_b_real(slots, a)
        erlang_c = slots * b / max(slots - a * (1.0 - b), 1e-300)
    else:
        at_least = sf_scalar(a, int(slots))
        pmf = max(at_least - sf_scalar(a, int(slots) + 1), 0.0)
        q = pmf * slots / headroom
        erlang_c = q / max(1.0 - at_least + q, 1e-300)
    return min(1.0, max(0.0, erlang_c * math.exp(-headroom * max(0.0, slack_over_service))))


@lru_cache(maxsize=1 << 13)
def replicas_for_wait_scalar(
    a: float, concurrency: int, slack_over_service: float, tail: float, max_replicas: int
) -> float:
    if a <= 0:
        return 0.0
    conc = float(max(1, concurrency))
    replicas = min(float(max_replicas), max(1.0, math.ceil(a / conc + 1e-9)))
    while replicas < max_replicas and queue_miss_scalar(a, replicas * conc, slack_over_service) > tail:
        replicas += 1.0
    return replicas


def sf_many(a: FloatArray, n: FloatArray) -> FloatArray:
    """:func:`poisson_sf` for a 1-D ``a`` and ``n`` of the same length or one row per capacity."""
    if a.size * (n.shape[0] if n.ndim == 2 else 1) > _SCALAR_LIMIT:
        return poisson_sf(a, n)
    av = a.tolist()
    if n.ndim == 1:
        return np.array([sf_scalar(x, int(k)) for x, k in zip(av, n.tolist(), strict=True)], dtype=np.float64)
    return np.array(
        [[sf_scalar(x, int(k)) for x, k in zip(av, row, strict=True)] for row in n.tolist()], dtype=np.float64
    ).reshape(n.shape)


def slots_many(a: FloatArray, tail: FloatArray) -> FloatArray:
    """:func:`poisson_slots` element-wise (1-D)."""
    if a.size > _SCALAR_LIMIT:
        return poisson_slots(a, tail)
    return np.array(
        [slots_scalar(x, t) for x, t in zip(a.tolist(), np.broadcast_to(tail, a.shape).tolist(), strict=True)],
        dtype=np.float64,
    )


def queue_miss_many(a: FloatArray, slots: FloatArray, slack_over_service: float) -> FloatArray:
    """:func:`queue_miss_share` for a 1-D ``a`` and ``slots`` of the same length or one row per capacity."""
    if a.size * (slots.shape[0] if slots.ndim == 2 else 1) > _SCALAR_LIMIT:
        return queue_miss_share(a, slots, slack_over_service)
    av = a.tolist()
    if slots.ndim == 1:
        return np.array(
            [queue_miss_scalar(x, c, slack_over_service) for x, c in zip(av, slots.tolist(), strict=True)],
            dtype=np.float64,
        )
    return np.array(
        [[queue_miss_scalar(x, c, slack_over_service) for x, c in zip(av, row, strict=True)] for row in slots.tolist()],
        dtype=np.float64,
    ).reshape(slots.shape)


def replicas_for_wait_many(
    a: FloatArray, concurrency: int, slack_over_service: float, tail: float, max_replicas: int
) -> FloatArray:
    """:func:`replicas_for_wait` element-wise (1-D)."""
    if a.size > _SCALAR_LIMIT:
        return replicas_for_wait(a, concurrency, slack_over_service, tail, max_replicas)
    return np.array(
        [replicas_for_wait_scalar(x, concurrency, slack_over_service, tail, max_replicas) for x in a.tolist()],
        dtype=np.float64,
    )


def peaked_miss_share(a: float, slots: float, slack_over_service: float, peakedness: float = 1.0) -> float:
    """:func:`queue_miss_scalar` for an in-flight count that varies more than Poisson: Hayward's approximation,
    ``slots`` servers offered a load ``a`` whose in-flight count has ``peakedness`` Z times Poisson's variance
    behave like ``slots / Z`` servers offered ``a / Z`` of Poisson load (``Z = 1``: Erlang C itself)."""
    z = max(1.0, peakedness)
    return queue_miss_scalar(a / z, slots / z, slack_over_service)


def rate_peakedness(a: float, service_seconds: float, rate_sd_rps: float, clumping: float = 1.0) -> float:
    """Peakedness (variance over mean) of the in-flight count when the rate itself is uncertain: Poisson given
    the rate (times ``clumping`` when arrivals clump within a step), plus the rate's own variance carried into
    flight (law of total variance: ``Var N = E[r s] Z + Var(r) s^2``)."""
    if a <= 0:
        return max(1.0, clumping)
    return max(1.0, clumping) + (rate_sd_rps * service_seconds) ** 2 / a


def replicas_for_peaked_wait(
    a: float,
    concurrency: int,
    slack_over_service: float,
    tail: float,
    max_replicas: int,
    peakedness: float = 1.0,
) -> int:
    """Fewest replicas keeping :func:`peaked_miss_share` under ``tail`` (at least 1 where requests flow, at most
    ``max_replicas``): :func:`replicas_for_wait_scalar` for an in-flight count of the given peakedness."""
    if a <= 0:
        return 0
    conc = float(max(1, concurrency))
    replicas = min(max_replicas, max(1, math.ceil(a / conc - 1e-9)))
    while replicas < max_replicas and peaked_miss_share(a, replicas * conc, slack_over_service, peakedness) > tail:
        replicas += 1
    return replicas


@lru_cache(maxsize=1 << 12)
def poisson_mean_within(count: int, tail: float) -> float:
    """The largest mean ``a`` with ``P(N > count) <= tail`` for ``N ~ Poisson(a)``: how many misses may be expected
    when more than ``count`` breaks the objective with a chance of at most ``tail`` (bisection)."""
    if tail >= 1.0:
        return math.inf
    low, high = 0.0, float(count) + 10.0 * math.sqrt(count + 1.0) + 10.0
    for _ in range(50):
        mid = 0.5 * (low + high)
        if sf_scalar(mid, count + 1) <= tail:
            low = mid
        else:
            high = mid
    return low
