"""Kubernetes quantities: one grammar (Kubernetes' resource.Quantity) for the API, the renderer and capacity."""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from inference_placement.api.quantity import (
    BINARY_SUFFIXES,
    DECIMAL_SUFFIXES,
    NON_NEGATIVE_QUANTITY_PATTERN,
    QUANTITY_PATTERN,
    parse_quantity,
)
from inference_placement.api.spec import ModelSpec


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        pytest.param("0", Decimal(0), id="zero"),
        pytest.param("4", Decimal(4), id="integer"),
        pytest.param("1.5", Decimal("1.5"), id="decimal"),
        pytest.param(".5", Decimal("0.5"), id="leading-point"),
        pytest.param("5.", Decimal(5), id="trailing-point"),
        pytest.param("1.G", Decimal(10**9), id="trailing-point-suffix"),
        pytest.param("+1", Decimal(1), id="plus"),
        pytest.param("-500m", Decimal("-0.5"), id="minus-milli"),
        pytest.param("1n", Decimal("1e-9"), id="nano"),
        pytest.param("1u", Decimal("1e-6"), id="micro"),
        pytest.param("500m", Decimal("0.5"), id="milli"),
        pytest.param("1k", Decimal(1000), id="kilo"),
        pytest.param("100M", Decimal(10**8), id="mega"),
        pytest.param("1G", Decimal(10**9), id="giga"),
        pytest.param("1T", Decimal(10**12), id="tera"),
        pytest.param("1P", Decimal(10**15), id="peta"),
        pytest.param("1E", Decimal(10**18), id="exa-not-exponent"),
        pytest.param("1Ki", Decimal(1024), id="kibi"),
        pytest.param("2Gi", Decimal(2 * 2**30), id="gibi"),
        pytest.param("0.1Mi", Decimal("104857.6"), id="fractional-binary"),
        pytest.param("1Pi", Decimal(2**50), id="pebi"),
        pytest.param("1Ei", Decimal(2**60), id="exbi"),
        pytest.param("1e3", Decimal(1000), id="exponent"),
        pytest.param("1E3", Decimal(1000), id="upper-exponent"),
        pytest.param("1e+3", Decimal(1000), id="plus-exponent"),
        pytest.param("1e-3", Decimal("0.001"), id="minus-exponent"),
        pytest.param("1.5e3", Decimal(1500), id="fraction-exponent"),
        pytest.param("9223372036854775807", Decimal(2**63 - 1), id="int64-max"),
        pytest.param(
            "123456789012345678901234567890.123Ei",
            Decimal(f"{123456789012345678901234567890123 * 2**60}e-3"),
            id="exact-beyond-28-digits",
        ),
        pytest.param(4, Decimal(4), id="json-int"),
        pytest.param(-3, Decimal(-3), id="json-negative-int"),
        pytest.param(0.5, Decimal("0.5"), id="json-float"),
        pytest.param(1e-05, Decimal("0.00001"), id="json-float-exponent"),
    ],
)
def test_parse_quantity(quantity: str | int | float, value: Decimal) -> None:
    parsed = parse_quantity(quantity)
    assert parsed == value
    assert Fraction(parsed) == Fraction(value)  # exact, not merely equal after rounding


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("", id="empty"),
        pytest.param(" 1", id="leading-space"),
        pytest.param("1 ", id="trailing-space"),
        pytest.param("1\n", id="trailing-newline"),
        pytest.param(".", id="point"),
        pytest.param("+", id="sign"),
        pytest.param("--1", id="two-signs"),
        pytest.param("1x", id="unknown-suffix"),
        pytest.param("1K", id="upper-kilo"),
        pytest.param("1ki", id="lower-kibi"),
        pytest.param("1mi", id="lower-mebi"),
        pytest.param("Gi", id="no-number"),
        pytest.param("1.2.3", id="two-points"),
        pytest.param("1e", id="empty-exponent"),
        pytest.param("1E+", id="signed-empty-exponent"),
        pytest.param("1e1.5", id="fractional-exponent"),
        pytest.param("1Gi3", id="suffix-then-digits"),
        pytest.param("1_000", id="underscore"),
        pytest.param("\u0661", id="non-ascii-digit"),
        pytest.param("nan", id="nan"),
        pytest.param("inf", id="inf"),
        pytest.param("1e999999999999", id="exponent-out-of-range"),
        pytest.param(True, id="bool"),
        pytest.param(float("nan"), id="json-nan"),
        pytest.param(float("inf"), id="json-inf"),
        pytest.param(None, id="none"),
    ],
)
def test_parse_quantity_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(bad)  # type: ignore[arg-type]  # non-strings of the wrong type are refused too


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**30), max_value=10**30))
def test_a_decimal_written_out_reads_back_exactly(value: Decimal) -> None:
    # str(Decimal) writes 1.5E+7 or 1E-9 where it chooses to: Kubernetes' decimal exponent form
    assert parse_quantity(str(value)) == value


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_json_number_reads_back_as_itself(value: float) -> None:
    assert float(parse_quantity(value)) == value


_NUMBERS = st.tuples(
    st.sampled_from(["", "+", "-"]),
    st.text("0123456789", min_size=1, max_size=12),
    st.one_of(st.none(), st.text("0123456789", max_size=12)),
)
_SUFFIXES = st.one_of(
    st.sampled_from(sorted(DECIMAL_SUFFIXES)),
    st.sampled_from(sorted(BINARY_SUFFIXES)),
    st.tuples(st.sampled_from("eE"), st.sampled_from(["", "+", "-"]), st.integers(0, 40)).map(
        lambda e: f"{e[0]}{e[1]}{e[2]}"
    ),
)


def _expected(sign: str, whole: str, fraction: str | None, suffix: str) -> Fraction:
    number = Fraction(f"{whole}.{fraction or 0}") * (-1 if sign == "-" else 1)
    if suffix in BINARY_SUFFIXES:
        return number * Fraction(2) ** BINARY_SUFFIXES[suffix]
    power = DECIMAL_SUFFIXES[suffix] if suffix in DECIMAL_SUFFIXES else int(suffix[1:])
    return number * Fraction(10) ** power


@given(_NUMBERS, _SUFFIXES)
def test_every_written_form_has_its_value(number: tuple[str, str, str | None], suffix: str) -> None:
    sign, whole, fraction = number
    text = f"{sign}{whole}{'' if fraction is None else '.' + fraction}{suffix}"
    assert Fraction(parse_quantity(text)) == _expected(sign, whole, fraction, suffix)


@given(st.text("0123456789.+-eEnumkKMGTPi ", max_size=8))
def test_the_schema_pattern_admits_exactly_what_parses(text: str) -> None:
    try:
        parse_quantity(text)
        parses = True
    except ValueError:
        parses = False
    assert (re.search(QUANTITY_PATTERN, text) is not None) == parses
    # the API's field (pydantic's own regex engine) takes the same strings less the negative ones
    try:
        ModelSpec(image="i", size_mb=1, cpu=text)
        admitted = True
    except ValidationError:
        admitted = False
    assert admitted == (parses and not text.startswith("-"))
    assert admitted == (re.search(NON_NEGATIVE_QUANTITY_PATTERN, text) is not None)
