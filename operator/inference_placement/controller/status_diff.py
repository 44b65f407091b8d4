"""Decide whether a status changed *semantically*, and build the JSON merge patch (RFC 7386) that applies it.

Observed rates and projected costs move a little on every tick; writing each wobble would make every workload
cost one apiserver write per tick. Numbers therefore count as changed only beyond a relative tolerance, and the
sample timestamp alone never triggers a write.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "IGNORED_PATHS",
    "merge_patch",
    "semantically_equal",
    "ABSOLUTE_TOLERANCE",
    "PATH_TOLERANCES",
    "RELATIVE_TOLERANCE",
]

RELATIVE_TOLERANCE = 0.05
ABSOLUTE_TOLERANCE = 0.01

IGNORED_PATHS: frozenset[tuple[str, ...]] = frozenset(
    {("observed", "sampledAt"), ("budget", "accountedAt"), ("budget", "monthToDateUsd")}
)
"""Paths whose change alone is not worth a write (they are refreshed with the next real change).

Month-to-date spend is one of them: it grows with the clock, not with anything the operator concluded, and the
record it is part of stays exact whenever it was written (the spend up to ``accountedAt``, accrued on from there at
``currentMonthlyCostUsd``, which is written when it changes: ``policy.budget.accrue_spend``, what the reconciler,
``explain`` and a restarted operator read). Re-writing it every ~$1 made every workload on an expensive GPU a status
write every few minutes (25 per steady tick at 1,000 workloads in ``bench-scale``, where a quarter run on an H100)."""

PATH_TOLERANCES: dict[tuple[str, ...], tuple[float, float]] = {
    ("budget", "projectedMonthUsd"): (0.05, 1.0),
}
"""(relative, absolute USD) tolerance for a money figure: re-written when it moved by more than ~5% or $1."""


def semantically_equal(old: Any, new: Any, _path: tuple[str, ...] = ()) -> bool:
    if _path in IGNORED_PATHS:
        return True
    if type(old) is type(new) and type(old) in _EXACT_FIRST and old == new:
        # identical (compared in C): equal under any tolerance; most of a steady status (conditions, targets,
        # decisions) is, so the walk below only descends where something moved. (Python's == would also take a
        # True for a 1 inside, which the walk does not; a status field has one JSON type, the CRD schema's, so two
        # statuses never differ that way.)
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return old is new
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        if isinstance(old, int) and isinstance(new, int):
            return old == new
        rel, abs_ = PATH_TOLERANCES.get(_path, (RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE))
        return math.isclose(float(old), float(new), rel_tol=rel, abs_tol=abs_)
    if isinstance(old, dict) and isinstance(new, dict):
        keys = set(old) | set(new)
        return all(
            (*_path, k) in IGNORED_PATHS or (k in old and k in new and semantically_equal(old[k], new[k], (*_path, k)))
            for k in keys
        )
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(semantically_equal(a, b, _path) for a, b in zip(old, new, strict=True))
    return bool(old == new)


_EXACT_FIRST = (dict, list)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The RFC 7386 merge patch turning ``old`` into ``new`` (removed keys become null; lists are replaced)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = merge_patch(old[key], value)
            if sub:
                patch[key] = sub
        elif value != old[key]:
            patch[key] = value
    return patch
