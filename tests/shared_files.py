"""The read-only shared inputs (``../shared`` next to the checkout: the reference scenario, the traces) as the tests
find them: a file that is missing fails the test in CI, where ``../shared`` is always there, and skips it elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["SHARED", "shared_file"]

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_file(path: str) -> Path:
    """``../shared/PATH``, failing the test in CI and skipping it elsewhere when it is missing."""
    target = SHARED / path
    if not target.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{target} is missing (CI needs ../shared)")
        pytest.skip(f"{target} not available")
    return target
