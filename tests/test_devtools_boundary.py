"""The developer tools stay out of the operator: the image installs the whole package, but ``inference-placement run``
and every operator module load nothing from ``inference_placement.devtools``; the tools' commands keep their names and
flags (they are public: the README, ``bench/`` and the tests call them)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from typer.testing import CliRunner

from inference_placement.cli import app
from tests.plugins.cluster import REPO_ROOT

# In a fresh interpreter: the CLI with the ``run`` command resolved, the module ``run`` starts, and every other module
# of the package outside ``devtools``; then, as the control, the ``demo`` command resolved.
_PROBE = textwrap.dedent(
    """
    import json, pkgutil, sys, importlib
    import typer
    import inference_placement
    from inference_placement.cli import app

    group = typer.main.get_command(app)
    ctx = group.make_context("inference-placement", ["run", "--help"], resilient_parsing=True)
    assert group.get_command(ctx, "run") is not None
    importlib.import_module("inference_placement.controller.runtime")

    def import_all(package):  # pkgutil.walk_packages would import devtools to look inside it
        for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if module.name != "inference_placement.devtools":
                loaded = importlib.import_module(module.name)
                if module.ispkg:
                    import_all(loaded)

    import_all(inference_placement)

    def devtools():
        return sorted(m for m in sys.modules if m.startswith("inference_placement.devtools"))

    before = devtools()
    group.get_command(ctx, "demo")
    print(json.dumps({"operator": before, "after_demo": devtools()}))
    """
)


def test_the_operator_imports_nothing_from_the_devtools() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["operator"] == []
    assert "inference_placement.devtools.demo.cli" in loaded["after_demo"]  # the probe does see devtools imports


def test_the_devtools_commands_keep_their_names_and_flags() -> None:
    runner = CliRunner()
    listing = runner.invoke(app, ["--help"], terminal_width=200)
    assert listing.exit_code == 0, listing.output
    assert "demo" in listing.output and "bench-scale" in listing.output
    flags = {
        "demo": ["--trace", "--row", "--speedup", "--simulate", "--no-simulate", "--json", "--keep", "--namespace"],
        "bench-scale": [
            "--workloads",
            "--json",
            "--kubeconfig",
            "--tick-seconds",
            "--steady-ticks",
            "--future-seconds",
            "--workdir",
            "--keep-namespace",
            "--wait-cleanup",
            "--no-wait-cleanup",
        ],
    }
    for command, expected in flags.items():
        # wide enough that rich never shortens a flag in its table ("--no-wait-clean…")
        shown = runner.invoke(app, [command, "--help"], terminal_width=300, env={"COLUMNS": "300"})
        assert shown.exit_code == 0, shown.output
        assert [flag for flag in expected if flag not in shown.output] == [], command
    refused = runner.invoke(app, ["bench-scale", "--workloads", "none"])
    assert refused.exit_code == 2 and "comma-separated integers" in refused.output
