"""The ``inference-placement`` command line.

Each area registers its own subcommands (``register(app)``) so this file stays a table of contents. Heavy imports
happen inside the commands, so ``inference-placement crd`` does not load kopf or the cloud clients.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from inference_placement import __version__

__all__ = ["app", "main", "crd", "version"]

app = typer.Typer(
    name="inference-placement",
    help="Decide where each inference workload runs (cluster GPUs, Cloud Run, Lambda) and move it there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that add subcommands with a ``register(app)`` function.
_COMMAND_MODULES = (
    "inference_placement.demo",
    "inference_placement.controller.cli",
    "inference_placement.sim.cli",
    "inference_placement.explain",
    "inference_placement.scale.cli",
)


@app.command()
def version() -> None:
    """Print the operator's version."""
    typer.echo(__version__)


@app.command()
def crd(
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the InferenceWorkload CRD generated from the API models."""
    from inference_placement.api.crd import render_crd_yaml

    text = render_crd_yaml()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
