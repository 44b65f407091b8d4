"""Choosing the histogram bucket that counts a workload's requests slower than its SLO (pure functions)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from inference_placement.metrics.slo_buckets import BucketBounds, bounds_query, le_matcher, miss_share_query

ENVOY_LIKE = ["0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "+Inf"]


def test_bounds_keep_finite_numbers_in_order_with_their_spelling() -> None:
    bounds = BucketBounds.from_le_values(["+Inf", "0.25", "0.1", "1e-3", "NaN", "-1", "fast", None, "0.10"])
    assert bounds.bounds == ((0.001, "1e-3"), (0.1, "0.1"), (0.25, "0.25"))


def test_the_bound_at_or_under_the_objective_is_chosen() -> None:
    bounds = BucketBounds.from_le_values(["0.05", "0.1", "0.25", "+Inf"])
    assert bounds.le_for(0.1) == "0.1"  # exactly at a bound: exact count
    assert bounds.le_for(0.2) == "0.1"  # between: the lower bound (more misses counted, never fewer)
    assert bounds.le_for(30.0) == "0.25"
    assert bounds.le_for(0.04) is None  # under every bound: unknown
    assert BucketBounds.from_le_values(["+Inf"]).le_for(1.0) is None
    # a bound written with rounding still counts as at the objective
    assert BucketBounds.from_le_values(["0.30000000000000004"]).le_for(0.3) == "0.30000000000000004"


@given(
    st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=0, max_size=20),
    st.floats(min_value=1e-6, max_value=1e4, allow_nan=False),
)
def test_the_chosen_bound_is_the_largest_not_above_the_objective(values: list[float], objective: float) -> None:
    bounds = BucketBounds.from_le_values([repr(v) for v in values])
    chosen = bounds.le_for(objective)
    under = [v for v in values if v <= objective * (1 + 1e-9)]
    if not under:
        assert chosen is None
    else:
        assert chosen is not None and math.isclose(float(chosen), max(under))


def test_queries_name_one_bucket_each_and_subtract_ignoring_le() -> None:
    assert le_matcher("0.25") == 'le="0.25"'
    assert le_matcher('a"b\\') == 'le="a\\"b\\\\"'
    assert bounds_query("sum by (le) (x)") == "count by (le) (sum by (le) (x))"
    assert miss_share_query("A", "B") == "((A) - ignoring (le) (B)) / ignoring (le) (A)"
    assert BucketBounds.from_le_values(ENVOY_LIKE).le_for(200.0) == "100"
