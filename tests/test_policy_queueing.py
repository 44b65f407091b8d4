"""Erlang C for a real number of servers (``policy/queueing.py``): what Hayward's approximation of a peaked load
needs, since its equivalent servers ``slots / Z`` are rarely a whole number; and the requests a burst may queue
behind busy slots and still start within the slack."""

from __future__ import annotations

import numpy as np
import pytest

from inference_placement.policy.queueing import (
    burst_level,
    erlang_b_real,
    late_in_queue,
    peaked_miss_share,
    queue_miss_scalar,
    queued_in_time,
    replicas_for_peaked_wait,
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
