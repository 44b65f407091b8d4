"""``FloatSeries``: the window's per-step and history series as views of the source's arrays, read, compared and
decided on exactly as the tuples of Python floats they replace."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest

from inference_placement.policy.actuation import Actuators
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import TrafficWindow, decide
from inference_placement.policy.series import FloatSeries
from tests.test_policy_idle_gaps import NOW, PB, gpu_spec, on_cluster, periodic, window_of


def test_a_series_reads_and_compares_as_the_tuple_of_its_floats() -> None:
    matrix = np.array([[1.5, 2.25, np.float32(0.1), 4.0], [9.0, 9.0, 9.0, 9.0]], dtype=np.float32)
    series = FloatSeries(matrix[0, 1:])
    as_tuple = tuple(matrix[0, 1:].tolist())
    assert len(series) == 3 and series == as_tuple and as_tuple == series
    assert hash(series) == hash(as_tuple)
    assert series[0] == 2.25 and type(series[0]) is float and series[-1] == 4.0
    assert series[1:] == as_tuple[1:] and isinstance(series[1:], FloatSeries)
    assert list(series) == list(as_tuple) and sum(series) == sum(as_tuple)
    assert series != tuple(matrix[1, 1:].tolist()) and series != FloatSeries(matrix[1, 1:])
    assert bool(FloatSeries(np.zeros(0))) is False and bool(series) is True
    assert pickle.loads(pickle.dumps(series)) == series


def test_a_series_is_a_read_only_view_not_a_copy() -> None:
    matrix = np.arange(12, dtype=np.float64).reshape(3, 4)
    series = FloatSeries(matrix[1])
    view = np.asarray(series)
    assert np.shares_memory(view, matrix) and not view.flags.writeable
    with pytest.raises(ValueError):
        view[0] = 1.0
    assert matrix.flags.writeable, "only the view is read-only"
    assert np.asarray(series, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError):
        FloatSeries(matrix)


def _as_series(window: TrafficWindow, dtype: type[np.floating]) -> TrafficWindow:
    def series(values: object) -> FloatSeries | None:
        return None if values is None else FloatSeries(np.asarray(values, dtype=dtype))

    return replace(
        window,
        peak_in_flight=series(window.peak_in_flight),
        slo_misses=series(window.slo_misses),
        history_rps=series(window.history_rps),
    )


@pytest.mark.parametrize("actuators", [Actuators(), Actuators(cluster_scale_to_zero=True)], ids=["keep-one", "zero"])
@pytest.mark.parametrize(
    "history",
    [periodic(5, 288, idle_after=2), periodic(5, 288, idle_after=3), np.full(288, 2.7), periodic(7, 40, 3.3, 1)],
)
def test_decide_is_the_same_on_series_as_on_tuples(actuators: Actuators, history: np.ndarray) -> None:
    """The float32 history the source keeps, as tuples of its floats (before) or as views of it (now): equal
    Decisions, whether or not the idle-gap plan reads the history."""
    history32 = history.astype(np.float32)
    base = window_of(history32.astype(np.float64))
    base = replace(base, slo_misses=tuple(r * 0.003 * 60 for r in base.rps))
    tuples = replace(base, history_rps=tuple(history32.tolist()))
    views = _as_series(replace(base, history_rps=FloatSeries(history32)), np.float32)
    views = replace(views, slo_misses=FloatSeries(np.asarray(base.slo_misses)))
    assert views == tuples
    for state in (on_cluster(), replace(on_cluster(), current=None)):
        assert decide(gpu_spec(), views, state, PB, ClusterCapacity(), NOW, actuators=actuators) == decide(
            gpu_spec(), tuples, state, PB, ClusterCapacity(), NOW, actuators=actuators
        )
