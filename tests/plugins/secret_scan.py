"""Secret canaries, and a session-wide scan proving that no credential reaches logs, Events, status or metrics.

Every fake credential the tests hand out is a *canary*: a distinctive value (``CANARIES``) that can only appear in an
artifact if something copied a secret there. The fake AWS keys that ``tests.plugins.cloud`` puts in the session's
environment (inherited by every operator subprocess) are canaries, and tests that mint other secrets (a service-account
key, a bearer token) add them with :func:`register_secret`.

What is scanned (:data:`SCAN`, one per session):

* the log file of every operator run started by ``operator_factory`` (it calls :func:`record_operator_run` for each
  run before stopping it, which also takes a copy of the run's ``/metrics`` text and of the Events and
  InferenceWorkloads in its namespace while they still exist; the logs themselves are read at the end, so they
  include shutdown);
* anything else a test hands to :meth:`SecretScan.add_text` / :meth:`SecretScan.add_file`.

At session end (``pytest_sessionfinish``) everything registered is scanned for every canary, raw and in the
encodings a leak could take (base64 as in a Secret's ``data``, URL-encoding as in a query string); any finding is
printed in the terminal summary and FAILS the run, whichever test produced it. ``tests/test_security_scan.py``
also scans mid-session, and shows with planted canaries that the scan does detect them.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

if TYPE_CHECKING:
    from tests.plugins.operator import OperatorProcess

__all__ = [
    "CANARIES",
    "CANARY_AWS_ACCESS_KEY_ID",
    "CANARY_AWS_SECRET_ACCESS_KEY",
    "CANARY_AWS_SESSION_TOKEN",
    "SCAN",
    "Finding",
    "SecretScan",
    "record_operator_run",
    "register_secret",
    "scan_text",
]

# Distinctive, and deliberately NOT shaped like real keys (no AKIA/ASIA prefix, no JWT, no PEM): the operator's
# pattern-based redaction does not recognise them, so they stay hidden only if nothing copies them anywhere (or
# the operator scrubs the exact values of the Secrets it was given).
CANARY_AWS_ACCESS_KEY_ID: Final = "CANARYAKIDQ7X4PLACEMENT0"
CANARY_AWS_SECRET_ACCESS_KEY: Final = "canary/SecretKeyQ7x4+inferencePlacement00"
CANARY_AWS_SESSION_TOKEN: Final = "canarySessionTokenQ7x4inferencePlacement"
CANARIES: Final = (CANARY_AWS_ACCESS_KEY_ID, CANARY_AWS_SECRET_ACCESS_KEY, CANARY_AWS_SESSION_TOKEN)

_MIN_SECRET_CHARS: Final = 12
"""Shorter values would match by accident; every canary is longer."""


@dataclass(frozen=True)
class Finding:
    source: str
    secret_hint: str
    """The first four characters of the secret and its length: enough to identify it, useless to an attacker."""
    encoding: str
    context: str
    """The text around the hit, with the secret itself masked."""

    def __str__(self) -> str:
        return f"{self.source}: {self.encoding} {self.secret_hint} in ...{self.context}..."


def _hint(secret: str) -> str:
    return f"{secret[:4]}…({len(secret)} chars)"


def _variants(secret: str) -> dict[str, str]:
    raw = secret.encode()
    forms = {
        "raw": secret,
        "base64": base64.b64encode(raw).decode(),
        "url-encoded": urllib.parse.quote(secret, safe=""),
        "url-encoded (plus)": urllib.parse.quote_plus(secret),
        "json-escaped": json.dumps(secret)[1:-1],
    }
    # A secret inside a longer base64 blob is encoded at one of three alignments; the aligned core of each is
    # independent of its neighbours.
    for shift in (1, 2):
        core = base64.b64encode(b"\0" * shift + raw).decode()[4:-4]
        if len(core) >= _MIN_SECRET_CHARS:
            forms[f"base64 (offset {shift})"] = core
    return forms


def scan_text(text: str, secrets: Iterable[str], source: str) -> list[Finding]:
    """Every occurrence (one per secret and encoding) of ``secrets`` in ``text``."""
    findings: list[Finding] = []
    for secret in sorted({s for s in secrets if len(s) >= _MIN_SECRET_CHARS}):
        seen: set[str] = set()
        for encoding, form in _variants(secret).items():
            if form in seen:
                continue
            seen.add(form)
            at = text.find(form)
            if at < 0:
                continue
            before = text[max(0, at - 60) : at].replace("\n", " ")
            after = text[at + len(form) : at + len(form) + 60].replace("\n", " ")
            findings.append(Finding(source, _hint(secret), encoding, f"{before}<SECRET>{after}"))
    return findings


@dataclass
class SecretScan:
    """What one session scans, and for which secrets."""

    secrets: set[str] = field(default_factory=lambda: set(CANARIES))
    files: dict[Path, str] = field(default_factory=dict)
    """Path -> what it is (e.g. 'operator log of test_x')."""
    texts: list[tuple[str, str]] = field(default_factory=list)
    """(what it is, text) snapshots taken while their source existed."""

    def add_secret(self, value: str) -> None:
        if len(value) < _MIN_SECRET_CHARS:
            raise ValueError(f"a secret canary must be at least {_MIN_SECRET_CHARS} characters to be scanned for")
        self.secrets.add(value)

    def add_file(self, path: Path, what: str) -> None:
        self.files[path] = what

    def add_text(self, what: str, text: str) -> None:
        self.texts.append((what, text))

    def findings(self) -> list[Finding]:
        found: list[Finding] = []
        for path, what in self.files.items():
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            found += scan_text(text, self.secrets, f"{what} ({path})")
        for what, text in self.texts:
            found += scan_text(text, self.secrets, what)
        return found

    def sources(self) -> int:
        return len(self.files) + len(self.texts)


SCAN = SecretScan()
"""The session's scan."""


def register_secret(value: str) -> None:
    """Scan for ``value`` too (a secret a test minted: a key id, a token the stand-in issued)."""
    SCAN.add_secret(value)


def _metrics_text(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text: str = response.read().decode(errors="replace")
            return text
    except OSError:
        return None


def record_operator_run(op: OperatorProcess, test: str = "") -> None:
    """Register an operator run for the scan: its log, its /metrics now (while it still serves them), and the Events
    and InferenceWorkloads of its namespace now (before the namespace is deleted)."""
    label = test or op.namespace
    SCAN.add_file(op.log_path, f"operator log [{label}]")
    if op.metrics_port and op.alive():
        text = _metrics_text(op.metrics_port)
        if text is not None:
            SCAN.add_text(f"operator /metrics [{label}]", text)
    for resource in ("events", "inferenceworkloads"):
        done = op.cluster.kubectl("get", resource, "-n", op.namespace, "-o", "json", check=False, timeout=30)
        if done.returncode == 0:
            SCAN.add_text(f"{resource} in namespace {op.namespace} [{label}]", done.stdout)


# ----------------------------------------------------------------------------------------------- session hooks

_FINDINGS_KEY = pytest.StashKey[list[Finding]]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if SCAN.sources() == 0:
        return
    findings = SCAN.findings()
    session.config.stash[_FINDINGS_KEY] = findings
    if findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    findings = config.stash.get(_FINDINGS_KEY, None)
    if findings is None:
        return
    if not findings:
        terminalreporter.write_line(
            f"secret scan: no canary in {SCAN.sources()} logs, metrics and Event/status snapshots"
        )
        return
    terminalreporter.section("secret scan: SECRET VALUES LEAKED", sep="=", red=True, bold=True)
    for finding in findings[:50]:
        terminalreporter.write_line(str(finding), red=True)
    if len(findings) > 50:
        terminalreporter.write_line(f"... and {len(findings) - 50} more")
