"""The ``inference-placement`` command line.

Each area registers its own subcommands (``register(app)``) so this file stays a table of contents. Heavy imports
happen inside the commands, so ``inference-placement crd`` does not load kopf or the cloud clients. The developer
tools' commands (``demo``, ``bench-scale``) are registered only when one of them is called or the help lists them,
so the operator (``inference-placement run``) never imports ``inference_placement.devtools``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer import _click as click  # typer vendors click; TyperGroup's methods take its types

from inference_placement import __version__
from inference_placement.commandline import CommandError, ExitCode, run_app

__all__ = ["app", "main", "crd", "version", "PROG_NAME"]

PROG_NAME = "inference-placement"
"""The program's name, also under ``python -m inference_placement.cli`` (completion keys its variable on it)."""

# Modules that add subcommands with a ``register(app)`` function.
_COMMAND_MODULES = (
    "inference_placement.controller.cli",
    "inference_placement.sim.cli",
    "inference_placement.explain",
)
# The developer tools' commands, by name: the module whose ``register(app)`` adds it, imported on first use.
_DEVTOOLS_COMMANDS = {
    "demo": "inference_placement.devtools.demo.cli",
    "bench-scale": "inference_placement.devtools.scale.cli",
}


class _Commands(TyperGroup):
    """The commands of ``app``, plus the developer tools' commands, loaded when asked for by name."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return [*names, *(name for name in _DEVTOOLS_COMMANDS if name not in names)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = _DEVTOOLS_COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            tools = typer.Typer(add_completion=False)
            importlib.import_module(module).register(tools)
            self.add_command(typer.main.get_command(tools), cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    name="inference-placement",
    cls=_Commands,
    help="Decide where each inference workload runs (cluster GPUs, Cloud Run, Lambda) and move it there.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion: bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
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
    kind: Annotated[
        str,
        typer.Option("--kind", help="Which CRD: InferenceWorkload (namespaced) or ServerlessTarget (cluster-scoped)."),
    ] = "InferenceWorkload",
) -> None:
    """Print a CRD (default: InferenceWorkload) generated from the API models."""
    from inference_placement.api.crd import CRD_KINDS, render_crd_yaml

    if kind not in CRD_KINDS:
        raise CommandError(f"--kind {kind}: expected one of {', '.join(CRD_KINDS)}", ExitCode.USAGE)
    text = render_crd_yaml(kind)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as err:
        raise CommandError(f"--output {output}: cannot write it ({err.strerror or err})", ExitCode.INPUT) from None


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main() -> None:
    """The console script: user errors as one line and a documented exit code (``commandline.ExitCode``)."""
    run_app(app, PROG_NAME)


if __name__ == "__main__":
    main()
