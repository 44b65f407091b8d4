"""Erlang C for a real number of servers (``policy/queueing.py``): what Hayward's approximation of a peaked load
needs, since its equivalent servers ``slots / Z`` are rarely a whole number."""

from __future__ import annotations

import pytest

from inference_placement.policy.queueing import (
    erlang_b_real,
    peaked_miss_share,
    queue_miss_scalar,
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
