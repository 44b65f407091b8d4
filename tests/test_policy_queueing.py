"""Erlang C for a real number of servers (``policy/queueing.py``): what Hayward's approximation of a peaked load
needs, since its equivalent servers ``slots / Z`` are rarely a whole number; and the requests a burst may queue
behind busy slots and still start within the slack."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from inference_placement.policy.queueing import (
    allen_cunneen_scale,
    burst_level,
    erlang_b_real,
    late_in_queue,
    peaked_miss_share,
    queue_miss_scalar,
    queued_in_time,
    replicas_for_peaked_wait,
    sf_scalar,
    wait_slack,
)


def erlang_b(servers: int, a: float) -> float:
    b = 1.0
    for k in range(1, servers + 1):
        b = a * b / (k + a * b)
    return b


@pytest.mark.parametrize("a", [0.01, 0.083, 0.5, 3.0, 30.0])
def test_the_continuous_loss_formula_is_erlangs_at_whole_numbers_and_falls_between(a: float) -> None:
    for n in range(0, 8):
        assert erlang_b_real(float(n), a) == pytest.approx(erlang_b(n, a), rel=1e-9)
        assert erlang_b_real(n + 1 - 1e-9, a) == pytest.approx(erlang_b(n + 1, a), rel=1e-4)
        between = [erlang_b_real(n + f, a) for f in (0.25, 0.5, 0.75)]
        assert erlang_b(n, a) > between[0] > between[1] > between[2] > erlang_b(n + 1, a)


@pytest.mark.parametrize(("a", "slots"), [(0.083, 1.0), (0.5, 2.0), (3.0, 5.0), (20.0, 24.0)])
def test_the_wait_past_the_slack_is_continuous_in_the_servers(a: float, slots: float) -> None:
    # a fraction of a server below a whole number waits about as often as that whole number: rounding the
    # fractional servers down made it wait as often as one server fewer
    for slack in (0.0, 1.0):
        at = queue_miss_scalar(a, slots, slack)
        assert queue_miss_scalar(a, slots - 1e-6, slack) == pytest.approx(at, rel=1e-3, abs=1e-9)
        assert queue_miss_scalar(a, slots + 0.5, slack) <= at <= queue_miss_scalar(a, slots - 0.5, slack)


def test_a_peaked_load_on_fractional_equivalent_servers_is_not_sized_as_if_it_had_none() -> None:
    # an LLM coding stream: ~2.9 requests in flight on average, in bursts (35x Poisson's variance), 16 slots per
    # replica, one service time of slack: one replica is 16 / 35 = 0.46 equivalent servers, not none
    assert peaked_miss_share(2.9, 16.0, 1.06, 35.0) < 0.5
    assert replicas_for_peaked_wait(2.9, 16, 1.06, 0.005, 100, 35.0) == 4
    # a Poisson load (no peakedness) is sized exactly as before: whole servers
    assert replicas_for_peaked_wait(2.9, 16, 1.06, 0.005, 100, 1.0) == 1


def _simulated_late(slots: int, queued: int, slack: float, memoryless: bool, runs: int = 20000) -> float:
    """Monte Carlo: ``slots`` busy slots at time 0 (unit service times), ``queued`` requests waiting FIFO; how many
    start past ``slack``. Memoryless: residual times exponential. Otherwise: every slot's request started together
    and each takes exactly one service time."""
    rng = np.random.default_rng(3)
    late = 0
    for _ in range(runs):
        free = rng.exponential(1.0, slots) if memoryless else np.ones(slots)
        for _k in range(queued):
            i = int(np.argmin(free))
            start = free[i]
            late += start > slack
            free[i] = start + (rng.exponential(1.0) if memoryless else 1.0)
    return late / runs


@pytest.mark.parametrize(("slots", "queued", "slack"), [(4, 2, 1.6), (4, 6, 1.6), (2, 3, 0.5), (8, 12, 2.2)])
def test_late_in_queue_is_the_worse_of_the_two_service_laws(slots: int, queued: int, slack: float) -> None:
    expected = late_in_queue(float(slots), queued, slack)
    synchronised = _simulated_late(slots, queued, slack, memoryless=False, runs=1)
    memoryless = _simulated_late(slots, queued, slack, memoryless=True, runs=4000)
    assert expected == pytest.approx(max(synchronised, memoryless), abs=0.08 * queued + 0.02)
    assert expected >= synchronised - 1e-9


def test_a_slack_under_one_service_time_lets_no_burst_request_queue() -> None:
    """The LLM rows' regime (a 2 s objective on multi-second generations): nothing changes there."""
    for slots in (1.0, 16.0, 64.0):
        assert queued_in_time(slots, 0.9, 0.005) == 0
        assert late_in_queue(slots, 5, 0.9) == 5.0
        assert burst_level(slots, 0.0, 0.9, 0.005) == slots


def test_long_service_slots_take_a_queued_burst_request_each_within_the_slack() -> None:
    """23 s images against a 60 s objective (slack 1.6 service times): a request queued behind a busy slot starts
    within 23 s when service times are close to their mean; with memoryless ones, 4 busy slots free at least one
    within the slack but for a 0.17 % chance, two but for 1.2 %: at a 0.5 % tail one request may queue, and the
    burst level of 4 slots is 5."""
    assert queued_in_time(4.0, 37.0 / 23.0, 0.005) == 1
    assert burst_level(4.0, 0.0, 37.0 / 23.0, 0.005) == 5.0
    assert queued_in_time(4.0, 37.0 / 23.0, 0.05) == 3  # P(D < 3) = 4.6 %
    assert queued_in_time(40.0, 37.0 / 23.0, 0.005) == 40  # many slots: each frees once within the slack
    assert burst_level(4.0, 0.0, 37.0 / 23.0) == 4.0  # no tail given: no queueing counted on (as before)


def _simulated_late_gamma(slots: int, queued: int, slack: float, scv: float, runs: int = 4000) -> float:
    """Monte Carlo as ``_simulated_late`` with gamma service times of squared coefficient of variation ``scv``
    (mean 1): the busy slots' requests started together (a burst's own), each one a fresh draw."""
    rng = np.random.default_rng(5)
    shape = 1.0 / scv
    late = 0
    for _ in range(runs):
        free = rng.gamma(shape, scv, slots)
        for _k in range(queued):
            i = int(np.argmin(free))
            start = free[i]
            late += start > slack
            free[i] = start + rng.gamma(shape, scv)
    return late / runs


def test_the_allen_cunneen_scale_goes_from_half_for_constant_service_to_one_for_exponential() -> None:
    assert allen_cunneen_scale(0.0) == 0.5
    assert allen_cunneen_scale(0.25) == pytest.approx(0.625)
    assert allen_cunneen_scale(1.0) == 1.0
    assert allen_cunneen_scale(None) == 1.0, "an unknown law is taken as exponential (Erlang C)"
    assert allen_cunneen_scale(9.0) == 1.0, "above 1 the models stay with Erlang C"
    assert allen_cunneen_scale(float("nan")) == 1.0
    assert wait_slack(1.6, 0.5) == pytest.approx(3.2)
    assert wait_slack(1.6, 7.0) == pytest.approx(1.6) and wait_slack(1.6, 0.1) == pytest.approx(3.2)


@pytest.mark.parametrize(("slots", "queued", "slack"), [(1, 1, 1.6), (4, 6, 1.6), (8, 12, 2.2), (80, 120, 1.6)])
def test_a_measured_service_law_counts_the_late_burst_requests_a_simulation_of_it_shows(
    slots: int, queued: int, slack: float
) -> None:
    """Image generation's service times are close to their mean (gamma, c_s^2 = 1/4 here): slots a burst filled
    together free near one service time. The renewal count of that law (exact for up to 64 slots, its normal
    law above) matches a Monte Carlo of it; at c_s^2 = 1 it is the memoryless law, towards 0 the synchronised
    one; with no law measured the worse of those two stays in force."""
    runs = 400 if slots > 10 else 4000
    simulated = _simulated_late_gamma(slots, queued, slack, 0.25, runs)
    modelled = late_in_queue(float(slots), queued, slack, 0.25)
    assert modelled == pytest.approx(simulated, abs=0.02 * queued + 0.02)
    unknown = late_in_queue(float(slots), queued, slack)
    mean = slots * slack
    poisson = queued - (mean - mean * sf_scalar(mean, queued) + queued * sf_scalar(mean, queued + 1))
    assert late_in_queue(float(slots), queued, slack, 1.0) == pytest.approx(poisson, abs=0.02 * queued + 1e-6)
    synchronised = max(0.0, queued - slots * math.floor(slack))
    assert late_in_queue(float(slots), queued, slack, 0.0) == pytest.approx(synchronised, abs=0.01 * queued + 1e-6)
    assert unknown >= max(synchronised, poisson) - 1e-9
    # one busy image slot, one queued: memoryless residuals make it late 20 % of the time, gamma ones 12 %
    assert late_in_queue(1.0, 1, 37.0 / 23.0) == pytest.approx(math.exp(-37.0 / 23.0), rel=1e-6)
    assert late_in_queue(1.0, 1, 37.0 / 23.0, 0.25) < 0.13
    # and at a 0.5 % tail, near-constant service lets the 4 slots of that burst take 4 queued requests, not 1
    assert queued_in_time(4.0, 37.0 / 23.0, 0.005) == 1
    assert queued_in_time(4.0, 37.0 / 23.0, 0.005, 0.01) == 4


def _simulated_wait_share(a: float, servers: int, slack: float, scv: float, n: int = 400_000) -> float:
    """Monte Carlo of an M/G/c FIFO queue (service mean 1, gamma of ``scv``; 0 = constant): the share of requests
    waiting past ``slack``."""
    rng = np.random.default_rng(2)
    arrivals = np.cumsum(rng.exponential(1.0 / a, n))
    services = np.ones(n) if scv == 0 else rng.gamma(1.0 / scv, scv, n)
    free = [0.0] * servers
    late = 0
    for i in range(n):
        f = heapq.heappop(free)
        start = max(f, arrivals[i])
        late += start - arrivals[i] > slack
        heapq.heappush(free, start + services[i])
    return late / n


@pytest.mark.parametrize(("a", "servers"), [(0.77, 1), (0.77, 2), (2.0, 3), (6.0, 8)])
@pytest.mark.parametrize("scv", [0.0, 0.25])
def test_erlang_c_with_allen_cunneens_scaling_stays_near_a_simulated_m_g_c_queue(
    a: float, servers: int, scv: float
) -> None:
    """The steady queue's share of requests waiting past the slack, Erlang C's exponential tail with the wait
    scaled by ``(1 + c_s^2) / 2``, against a simulation of the queue: within the error Erlang C itself has for
    exponential service (0.7-2.5x here), and below plain Erlang C's (which took every law as exponential)."""
    for slack in (0.5, 1.6):
        simulated = _simulated_wait_share(a, servers, slack, scv)
        modelled = queue_miss_scalar(a, float(servers), wait_slack(slack, allen_cunneen_scale(scv)))
        assert 0.7 * simulated - 1e-4 <= modelled <= 2.5 * simulated + 1e-3, (slack, simulated, modelled)
        assert modelled < queue_miss_scalar(a, float(servers), slack)
