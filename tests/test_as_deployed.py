"""``devtools/scale/as_deployed.py``: the operator run with only what its image installs importable (bench-scale's
RSS is the deployed operator's, not that of a development environment's extra packages)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from inference_placement.devtools.scale.as_deployed import hidden_modules, runtime_closure

ROOT = Path(__file__).resolve().parents[1]


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_the_runtime_closure_is_the_image_s_dependencies_and_not_the_development_tools() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    closure = runtime_closure()
    runtime = _names(project["dependencies"])
    assert runtime <= closure
    dev_only = _names(project["optional-dependencies"]["dev"])
    # the synchronous client is the one kopf imports when present; pytest and moto never reach the image
    assert {"kubernetes", "pytest", "moto", "hypothesis"} <= dev_only - runtime
    assert not closure & {"kubernetes", "pytest", "moto", "hypothesis", "matplotlib"}
    hidden = hidden_modules()
    assert {"kubernetes", "pytest", "moto", "hypothesis"} <= hidden
    assert not hidden & {"kopf", "kubernetes_asyncio", "boto3", "google", "numpy", "aiohttp", "pip"}


def test_every_module_of_the_operator_imports_without_the_development_tools_and_kopf_skips_the_sync_client() -> None:
    """In a fresh interpreter with the dev-only packages hidden: every module of the package imports (nothing the
    image lacks is imported at module level), and kopf, imported as the operator does, leaves the synchronous
    ``kubernetes`` client alone, which it loads whenever that is installed."""
    script = """
import importlib, pkgutil, sys
from inference_placement.devtools.scale.as_deployed import install
install()
try:
    import kubernetes
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("kubernetes is importable")
import inference_placement
failed = []
for module in pkgutil.walk_packages(inference_placement.__path__, "inference_placement."):
    try:
        importlib.import_module(module.name)
    except Exception as err:
        failed.append(f"{module.name}: {err!r}")
import kopf
assert "kubernetes_asyncio" in sys.modules
print("\\n".join(failed) or ("clean" if "kubernetes" not in sys.modules else "kubernetes loaded"))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "clean", done.stdout[-3000:]


def test_the_command_line_runs_through_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "inference_placement.devtools.scale.as_deployed", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--prometheus-url" in done.stdout
