"""What every command of ``inference-placement`` and ``kubectl-iw`` shares: the exit codes, the one-line error a
user sees instead of a traceback, reading the files a user names, and the output formats.

A command raises :class:`CommandError` (or typer's ``BadParameter`` for a flag) and :func:`run_app` prints
``error: <one line>`` on stderr and exits with the error's code; the codes are documented in the README's
"Commands" section. A bug still shows its traceback: only errors a user can fix are turned into one line.
"""

from __future__ import annotations

import enum
import importlib
import json
import sys
import urllib.error
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "CommandError",
    "ExitCode",
    "OutputFormat",
    "apiserver_error",
    "compact_table",
    "load_yaml_file",
    "one_line",
    "read_input_file",
    "require_extra",
    "require_kubeconfig",
    "run_app",
    "unreachable",
]


class ExitCode(enum.IntEnum):
    """The exit codes of every command (README, "Commands")."""

    OK = 0
    FAILED = 1
    """The command ran and could not do what was asked (no such workload, no target can run the spec, a failed
    step of the demo)."""
    USAGE = 2
    """A flag or argument is wrong or missing (click's code for a usage error)."""
    INPUT = 3
    """A file the command was given (workload, trace, price book, scenario, kubeconfig) is missing, unreadable or
    invalid."""
    UNREACHABLE = 4
    """A service the command needs (Prometheus, the Kubernetes apiserver) cannot be reached or refused the
    request."""
    MISSING_EXTRA = 5
    """An optional dependency the flag needs is not installed (``--plot`` without matplotlib)."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (or SIGTERM where the command handles it)."""


class OutputFormat(enum.StrEnum):
    """How a command prints its result: rich tables for a person, JSON or YAML for a program."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


class CommandError(ClickException):
    """A failure the user can fix, shown as one line (no traceback), exiting with ``code`` (a click exception, so
    typer's own runner, e.g. its test runner, reports it the same way)."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.exit_code = int(code)
        self.code = code


def one_line(text: object) -> str:
    """``text`` on one line: its lines joined with "; ", runs of blanks collapsed."""
    lines = [" ".join(line.split()) for line in str(text).splitlines()]
    return "; ".join(line for line in lines if line)


def read_input_file(path: Path, flag: str) -> str:
    """The text of a file the user named with ``flag``; a missing or unreadable one is a :class:`CommandError`."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"{flag} {path}: no such file", ExitCode.INPUT) from None
    except IsADirectoryError:
        raise CommandError(f"{flag} {path}: is a directory, not a file", ExitCode.INPUT) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise CommandError(f"{flag} {path}: cannot read it ({one_line(reason)})", ExitCode.INPUT) from None


def load_yaml_file(path: Path, flag: str) -> Any:
    """The YAML document in a file the user named; invalid YAML is a :class:`CommandError` naming the line."""
    import yaml

    text = read_input_file(path, flag)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise CommandError(f"{flag} {path}: invalid YAML{where}: {problem}", ExitCode.INPUT) from None


def require_extra(module: str, extra: str, flag: str) -> None:
    """Refuse ``flag`` at once (before any work) when the optional ``module`` cannot be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise CommandError(
            f"{flag} needs {module}, which is not installed: pip install 'inference-placement[{extra}]'",
            ExitCode.MISSING_EXTRA,
        ) from None


def unreachable(what: str, err: BaseException) -> CommandError:
    """A :class:`CommandError` for a service that could not be reached (``what``: "Prometheus at URL")."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        reason: object = err.reason
    else:
        reason = err
    text = one_line(reason) or type(err).__name__
    return CommandError(f"{what} is unreachable: {text}", ExitCode.UNREACHABLE)


def compact_table(title: str | None, *columns: str, right: Collection[str] = (), **options: Any) -> Table:
    """A rich Table that fits a narrow terminal (80 columns): no vertical rules, one space between columns, and
    every column wrapping its words and folding a word longer than the column, so nothing is cut off."""
    from rich import box
    from rich.table import Table

    settings: dict[str, Any] = {
        "box": box.SIMPLE_HEAD,
        "pad_edge": False,
        "collapse_padding": True,
        "padding": (0, 1),
        "title_justify": "left",
    }
    table = Table(title=title, **(settings | options))
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    return table


def apiserver_error(err: BaseException, what: str) -> CommandError | None:
    """The one-line :class:`CommandError` for an error reading ``what`` from the apiserver, or None for a bug.

    A kubeconfig that is missing or invalid is an input error; an apiserver that cannot be reached, or that refuses
    (401/403/5xx), is unreachable; an object that does not exist is a plain failure."""
    import yaml
    from kubernetes_asyncio.client.rest import ApiException
    from kubernetes_asyncio.config import ConfigException

    if isinstance(err, ConfigException | yaml.YAMLError):
        return CommandError(f"kubeconfig: {one_line(err)}", ExitCode.INPUT)
    if isinstance(err, FileNotFoundError):
        return CommandError(f"kubeconfig {err.filename}: no such file", ExitCode.INPUT)
    if isinstance(err, ApiException):
        if err.status == 404:
            return CommandError(f"{what}: not found (is the name, the namespace and the context right?)")
        reason = err.reason or ""
        try:
            reason = json.loads(err.body or "{}").get("message") or reason
        except (ValueError, AttributeError):
            pass
        return CommandError(
            f"{what}: the apiserver refused (HTTP {err.status}): {one_line(reason)}", ExitCode.UNREACHABLE
        )
    import aiohttp

    if isinstance(err, aiohttp.ClientError | OSError | TimeoutError):
        return CommandError(
            f"the Kubernetes apiserver is unreachable: {one_line(err) or type(err).__name__}", ExitCode.UNREACHABLE
        )
    return None


def require_kubeconfig(path: str | None, flag: str = "--kubeconfig") -> None:
    """Refuse a kubeconfig that is not there (the client would report a missing key of an empty config)."""
    if path is not None and not Path(path).is_file():
        raise CommandError(f"{flag} {path}: no such file", ExitCode.INPUT)


def _is_connection_error(err: BaseException) -> bool:
    """An error of reaching a service, whichever client raised it (aiohttp only when already imported)."""
    if isinstance(err, ConnectionError | TimeoutError | urllib.error.URLError):
        return True
    aiohttp = sys.modules.get("aiohttp")
    return aiohttp is not None and isinstance(err, aiohttp.ClientConnectionError)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {one_line(message)}", err=True)
    sys.exit(code)


def run_app(app: typer.Typer, prog_name: str, args: Sequence[str] | None = None) -> NoReturn:
    """Run ``app`` and exit: a user error as one line on stderr and its :class:`ExitCode`, never a traceback.

    Typer's usage errors (a bad flag, an invalid value) are printed on one line too, with the command to ask for
    help, instead of typer's boxed panel."""
    try:
        result = app(args=args, prog_name=prog_name, standalone_mode=False)
    except NoArgsIsHelpError as err:
        typer.echo(err.format_message())
        sys.exit(ExitCode.USAGE)
    except CommandError as err:
        _fail(err.message, err.code)  # no "see --help": the flags were right
    except ClickException as err:
        ctx = getattr(err, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _fail(f"{err.format_message()}{hint}", err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted", ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `... | head`: the reader left; nothing to say
        sys.stderr.close()
        sys.exit(ExitCode.OK)
    except Exception as err:
        if _is_connection_error(err):
            _fail(f"a service is unreachable: {err}", ExitCode.UNREACHABLE)
        raise  # a bug: its traceback is what a report needs
    sys.exit(result if isinstance(result, int) else ExitCode.OK)
