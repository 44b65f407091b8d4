"""The range answers decoded straight to float samples (``prometheus._MATRIX_DECODER``) give what the answers decoded
as Prometheus sends them give: the same kept windows, the same latest samples, the same matrices, the same texts
in the problems; and an answer the typed decoder refuses ("+Inf", garbage) is read as before."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_placement.metrics import matrix as matrix_module
from inference_placement.metrics import prometheus as P
from inference_placement.metrics.promql import Signal

STEP = 30
START = 1_700_000_000 // STEP * STEP
POINTS = 8
END = START + (POINTS - 1) * STEP


def _text(value: float) -> str:
    """A value as Prometheus writes it (Go's strconv 'f'/-1 for finite ones is close enough: any float text)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _body(series: dict[str, list[tuple[int, str]]]) -> bytes:
    result = [
        {"metric": {"namespace": "ns", "workload": name}, "values": [[ts, text] for ts, text in points]}
        for name, points in series.items()
    ]
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()


def _both(body: bytes) -> tuple[Any, Any]:
    return P._MATRIX_DECODER.decode(body).data.result, msgspec.json.decode(body)["data"]["result"]


def _source() -> P.PrometheusSource:
    return P.PrometheusSource("http://127.0.0.1:9", range_seconds=POINTS * STEP)


VALUES = st.one_of(
    st.floats(min_value=-5, max_value=1e7, allow_nan=False, allow_infinity=False),
    st.just(math.nan),
    st.just(-math.inf),
    st.just(0.0),
)
SERIES = st.dictionaries(
    st.sampled_from([f"w{i}" for i in range(6)]),
    st.lists(st.tuples(st.integers(0, POINTS - 1), VALUES), max_size=POINTS, unique_by=lambda p: p[0]),
    max_size=6,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return bool(a == b)


def _parsed(raw: dict[str, Any]) -> tuple[Any, Any]:
    """The generated answer parsed twice: decoded to floats, and as Prometheus sent it."""
    series = {name: [(START + i * STEP, _text(v)) for i, v in sorted(points)] for name, points in raw.items()}
    source = _source()
    return tuple(source._parse(answer) for answer in _both(_body(series)))  # type: ignore[return-value]


@settings(max_examples=150, deadline=None)
@given(SERIES)
def test_typed_and_untyped_answers_keep_the_same_windows_and_latest_samples(raw: dict[str, Any]) -> None:
    typed, plain = _parsed(raw)
    assert typed.series.keys() == plain.series.keys()
    wanted = frozenset(("ns", f"w{i}") for i in range(6))
    kept = {}
    for result in (typed, plain):
        kept[id(result)] = P._slide(
            None,
            END,
            result,
            wanted,
            start_ts=START,
            from_ts=START,
            end_ts=END,
            step=STEP,
            valid=P._VALID[Signal.REQUEST_RATE],
        )
    slid_typed, slid_plain = kept[id(typed)], kept[id(plain)]
    assert slid_typed.keys() == slid_plain.keys()
    for key, one in slid_typed.items():
        other = slid_plain[key]
        assert all(_same(x, y) for x, y in zip(one.values, other.values, strict=True)), key
        # the problems name the same points and values ("NaN", "-Inf", "-1.5")
        assert (one.invalid or {}).keys() == (other.invalid or {}).keys(), key
        for grid_ts, text in (one.invalid or {}).items():
            assert _same(float(text), float((other.invalid or {})[grid_ts])), key
    newest_typed = P._newest(None, typed, wanted, oldest_ts=float(START))
    newest_plain = P._newest(None, plain, wanted, oldest_ts=float(START))
    assert newest_typed.keys() == newest_plain.keys()
    for key, (ts, value) in newest_typed.items():
        plain_ts, text = newest_plain[key]
        assert ts == plain_ts
        assert _same(P._number(value), P._number(text))
        assert _same(float(P._sample_text(value)), float(text))


@settings(max_examples=80, deadline=None)
@given(SERIES)
def test_typed_and_untyped_answers_fill_the_same_matrix(raw: dict[str, Any]) -> None:
    rows = {("ns", f"w{i}"): i for i in range(6)}
    filled = []
    for result in _parsed(raw):
        matrix = matrix_module.SeriesMatrix(rows, np.full((6, POINTS), np.nan), END, STEP)
        matrix_module.fill(matrix, result.series, result.duplicated, from_ts=START)
        filled.append(matrix.values)
    np.testing.assert_array_equal(filled[0], filled[1])


def test_an_answer_the_typed_decoder_refuses_is_read_as_prometheus_sent_it() -> None:
    body = _body({"inf": [(START, "+Inf")], "ok": [(START, "1")]})
    try:
        P._MATRIX_DECODER.decode(body)
    except msgspec.ValidationError:
        pass
    else:  # pragma: no cover - msgspec learnt "+Inf": the fallback is then for garbage only
        raise AssertionError("msgspec reads '+Inf' now")
    garbage = _body({"text": [(START, "lots")]})
    for refused in (body, garbage):
        try:
            P._MATRIX_DECODER.decode(refused)
        except msgspec.ValidationError:
            continue
        raise AssertionError(refused)
    # what _result does then: the answer as it is, checked point by point
    plain = msgspec.json.decode(body)["data"]["result"]
    result = _source()._parse(plain)
    slid = P._slide(
        None,
        END,
        result,
        frozenset(result.series),
        start_ts=START,
        from_ts=START,
        end_ts=END,
        step=STEP,
        valid=P._VALID[Signal.REQUEST_RATE],
    )
    assert slid[("ns", "inf")].invalid == {START: "+Inf"}
    assert slid[("ns", "ok")].values[0] == 1.0


def test_a_decoded_value_is_written_back_as_prometheus_writes_it() -> None:
    assert [P._sample_text(v) for v in (math.nan, math.inf, -math.inf, -1.0, -0.5, 0.25, 1e6)] == [
        "NaN",
        "+Inf",
        "-Inf",
        "-1",
        "-0.5",
        "0.25",
        "1e+06",
    ]
    assert P._sample_text(0.1 + 0.2) == repr(0.1 + 0.2)
    assert P._sample_text("abc") == "abc"
