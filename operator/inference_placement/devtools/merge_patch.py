"""A JSON merge patch (RFC 7386) applied to a stored object, as the apiserver applies a status merge patch: for the
in-memory stand-ins of the apiserver (the tick-cost harness, the controller's unit tests)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["apply_merge_patch"]


def apply_merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``target`` with ``patch`` merged into it, in place: None removes a key, a mapping merges into a mapping,
    anything else replaces (a copy)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            apply_merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target
