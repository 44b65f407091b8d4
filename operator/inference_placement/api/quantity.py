"""Kubernetes resource quantities (``500m``, ``2Gi``, ``1.5``, ``1e3``, ``100M``): one grammar, one parser (pure).

The API's ``cpu``/``memory`` fields, the renderer's comparison with live objects and the capacity index's sums
all read quantities here. The grammar is Kubernetes' ``resource.Quantity`` (k8s.io/apimachinery,
pkg/api/resource)::

    <quantity>        ::= <signedNumber><suffix>
    <signedNumber>    ::= <number> | <sign><number>
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <sign>            ::= "+" | "-"
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= "e" <signedInteger> | "E" <signedInteger>

``1E`` is 10^18 (exa) and ``1E3`` is 1000; the exponent is an integer, as Kubernetes' parser requires (its
written grammar says signedNumber, its code accepts only integers). Values are exact (``Decimal``): Kubernetes'
canonical form rounds a value up to its smallest unit and caps it, which changes how a quantity is written, not
which two written quantities are equal for the values this operator meets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Context, Decimal, DecimalException, Inexact, InvalidOperation, Overflow
from functools import lru_cache
from types import MappingProxyType
from typing import Final

__all__ = [
    "BINARY_SUFFIXES",
    "DECIMAL_SUFFIXES",
    "NON_NEGATIVE_QUANTITY_PATTERN",
    "QUANTITY_PATTERN",
    "parse_quantity",
]

DECIMAL_SUFFIXES: Final[Mapping[str, int]] = MappingProxyType(
    {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
)
"""Decimal SI suffix -> power of ten."""

BINARY_SUFFIXES: Final[Mapping[str, int]] = MappingProxyType(
    {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
)
"""Binary SI suffix -> power of two."""

_NUMBER: Final = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_SUFFIX: Final = r"(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"

QUANTITY_PATTERN: Final = rf"^[+-]?{_NUMBER}{_SUFFIX}$"
"""Every quantity Kubernetes parses (a JSON-schema / RE2 pattern)."""

NON_NEGATIVE_QUANTITY_PATTERN: Final = rf"^\+?{_NUMBER}{_SUFFIX}$"
"""The quantities without a minus sign: what a resource request may be."""

_QUANTITY_RE: Final = re.compile(
    rf"(?P<number>[+-]?{_NUMBER})(?:(?P<binary>[KMGTPE]i)|(?P<decimal>[numkMGTPE])|[eE](?P<exponent>[+-]?[0-9]+))?"
)


def parse_quantity(quantity: str | int | float) -> Decimal:
    """A Kubernetes quantity as an exact number: ``"500m"`` -> 0.5, ``"2Gi"`` -> 2147483648, ``"1e3"`` -> 1000.

    JSON numbers (``int``/``float``, as an int-or-string field may hold) are taken as written. Raises
    ``ValueError`` naming the text for anything else.
    """
    if isinstance(quantity, bool) or not isinstance(quantity, (str, int, float)):
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    return _parse_text(str(quantity), quantity)


@lru_cache(maxsize=4096)
def _parse_text(text: str, quantity: str | int | float) -> Decimal:
    """``parse_quantity`` of ``text`` (``quantity`` as given, for the error): kept per distinct text, since the
    same few requests ("500m", "8Gi") are parsed for every workload on every reconcile (a ``Decimal`` is immutable)."""
    match = _QUANTITY_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    number = match.group("number")
    # enough digits that no step rounds (Inexact is trapped): the mantissa's plus 2**60's 19
    context = Context(
        prec=len(number) + 20, Emax=999_999_999, Emin=-999_999_999, traps=[InvalidOperation, Overflow, Inexact]
    )
    try:
        value = Decimal(number)
        if (binary := match.group("binary")) is not None:
            return context.multiply(value, Decimal(2 ** BINARY_SUFFIXES[binary]))
        exponent = match.group("exponent")
        power = int(exponent) if exponent is not None else DECIMAL_SUFFIXES[match.group("decimal") or ""]
        return context.scaleb(value, power)
    except (DecimalException, ValueError) as err:
        raise ValueError(f"not a Kubernetes quantity (out of range): {quantity!r}") from err
