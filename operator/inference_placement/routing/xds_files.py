"""Apply rendered routes to a running Envoy through its file-based xDS (``cds.json`` / ``rds.json``).

The traps this module exists for (each was measured with the real Envoy):

* Envoy only notices a file that is renamed into place: every write goes to a temp file in the same directory,
  is fsynced, then ``os.replace``d over the real name.
* Order matters. A route pointing at a cluster Envoy does not have yet answers 503 ``cluster_not_found``; a
  cluster removed while a route still points at it does the same. So one ``apply`` is up to three moves:
  CDS with the union of old and new clusters (wait until applied and warm), then RDS, then CDS with only the new
  clusters (``plan_xds_writes``).
* File-based config is never retried and a rejected file leaves the previous config serving, silently. After every
  move the applier reads the admin stats until ``version_text`` shows the new content hash; a higher
  ``update_rejected`` count means Envoy refused it: the previous file is put back (so the files on disk always
  describe what Envoy serves, and the next ``apply`` plans from the truth) and ``XdsRejectedError`` is raised.

The same plan drives the in-cluster router, where each move is one ConfigMap write; only the waiting differs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from inference_placement.routing.envoy import (
    CDS_FILE,
    RDS_FILE,
    ROUTE_CONFIG_NAME,
    EnvoySettings,
    JsonDict,
    render_cds,
    render_rds,
    render_static_config,
    xds_version,
)
from inference_placement.routing.model import Route
from inference_placement.routing.traffic_stats import TRAFFIC_STATS_QUERY

__all__ = [
    "AppliedMove",
    "EnvoyXdsApplier",
    "XdsApplyError",
    "XdsKind",
    "XdsRejectedError",
    "XdsStats",
    "XdsTimeoutError",
    "XdsValidationError",
    "XdsWrite",
    "parse_stats",
    "plan_xds_writes",
    "read_document",
    "stats_query",
    "validate_with_envoy",
    "write_document",
]

_ENVOY_VALIDATE_TIMEOUT_SECONDS: Final = 60.0


class XdsKind(StrEnum):
    CDS = "cds"
    RDS = "rds"

    @property
    def file_name(self) -> str:
        return CDS_FILE if self is XdsKind.CDS else RDS_FILE


class XdsApplyError(RuntimeError):
    """A routing change did not reach Envoy; whatever Envoy served before keeps serving."""


class XdsRejectedError(XdsApplyError):
    """Envoy read the file and refused it (``update_rejected`` went up)."""

    def __init__(self, kind: XdsKind, version: str, serving_version: str, path: Path, restored: bool) -> None:
        self.kind = kind
        self.version = version
        self.serving_version = serving_version
        self.path = path
        self.restored = restored
        restore = "the previous file was restored" if restored else "there was no previous file"
        super().__init__(
            f"Envoy rejected {kind.value.upper()} version {version} from {path}; it keeps serving version "
            f"{serving_version or 'none'} and {restore} (Envoy's log gives the reason; validate_with_envoy checks "
            f"a config before it is written)"
        )


class XdsTimeoutError(XdsApplyError):
    """Envoy did not report the new version in time (not watching the file, or not running)."""


class XdsValidationError(XdsApplyError):
    """``envoy --mode validate`` refused the composed static config; nothing was written."""


@dataclass(frozen=True)
class XdsWrite:
    """One move: this document into this file."""

    kind: XdsKind
    document: JsonDict

    @property
    def version(self) -> str:
        return str(self.document["version_info"])


@dataclass(frozen=True)
class AppliedMove:
    """A move Envoy confirmed."""

    kind: XdsKind
    version: str
    seconds: float
    """From the rename to Envoy reporting the version (and no warming cluster left, for CDS)."""


@dataclass(frozen=True)
class XdsStats:
    """The admin stats of one xDS subscription."""

    version_text: str = ""
    update_success: int = 0
    update_rejected: int = 0
    warming_clusters: int = 0


def _resources_by_name(document: JsonDict | None) -> dict[str, JsonDict]:
    if document is None:
        return {}
    return {str(r["name"]): r for r in document.get("resources", [])}


def _cds_document(clusters: dict[str, JsonDict]) -> JsonDict:
    resources = [clusters[name] for name in sorted(clusters)]
    return {"version_info": xds_version(resources), "resources": resources}


def plan_xds_writes(
    current_cds: JsonDict | None, current_rds: JsonDict | None, desired_cds: JsonDict, desired_rds: JsonDict
) -> list[XdsWrite]:
    """The moves that take Envoy from the current files to the desired ones without a request hitting a missing
    cluster: CDS(current + desired) if clusters are added or changed, RDS if routes changed, CDS(desired) if
    clusters are removed. Pure; empty when nothing changed."""
    current = _resources_by_name(current_cds)
    desired = _resources_by_name(desired_cds)
    added_or_changed = {name for name, cluster in desired.items() if current.get(name) != cluster}
    removed = set(current) - set(desired)
    writes: list[XdsWrite] = []
    if added_or_changed or current_cds is None:
        union = {**current, **desired}
        writes.append(XdsWrite(XdsKind.CDS, _cds_document(union) if removed else desired_cds))
    if current_rds is None or current_rds.get("resources") != desired_rds.get("resources"):
        writes.append(XdsWrite(XdsKind.RDS, desired_rds))
    if removed:
        writes.append(XdsWrite(XdsKind.CDS, desired_cds))
    return writes


def write_document(path: Path, document: JsonDict) -> None:
    """Write ``document`` as JSON to ``path`` atomically: temp file in the same directory, fsync, rename, fsync
    the directory (Envoy only sees a rename, and never a half-written file)."""
    data = (json.dumps(document, indent=1, sort_keys=False) + "\n").encode()
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_document(path: Path) -> JsonDict | None:
    """The JSON document in ``path``; None when the file does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    loaded: Any = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return loaded


async def validate_with_envoy(config: JsonDict, envoy_binary: str) -> None:
    """Run ``envoy --mode validate`` on ``config`` (a composed static config); ``XdsValidationError`` with Envoy's
    message when it refuses it."""
    with tempfile.TemporaryDirectory(prefix="envoy-validate-") as directory:
        path = Path(directory) / "static.json"
        path.write_text(json.dumps(config))
        process = await asyncio.create_subprocess_exec(
            envoy_binary,
            "--mode",
            "validate",
            "-c",
            str(path),
            "--log-level",
            "error",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), _ENVOY_VALIDATE_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise XdsValidationError(
                f"envoy --mode validate did not finish in {_ENVOY_VALIDATE_TIMEOUT_SECONDS:.0f}s"
            ) from None
    if process.returncode != 0:
        message = output.decode(errors="replace").strip()
        raise XdsValidationError(f"envoy --mode validate refused the config: {message[-2000:]}")


_STAT_NAMES: Final = {
    "cluster_manager.cds.version_text": "cds.version_text",
    "cluster_manager.cds.update_success": "cds.update_success",
    "cluster_manager.cds.update_rejected": "cds.update_rejected",
    "cluster_manager.warming_clusters": "cds.warming_clusters",
}


@dataclass
class EnvoyXdsApplier:
    """Applies routes to one Envoy whose bootstrap came from ``render_bootstrap(settings)``.

    ``xds_dir`` is where that bootstrap reads ``cds.json`` and ``rds.json``; ``admin_url`` is its admin interface
    (or the health listener, which proxies ``/stats``). ``envoy_binary``, when given, validates the composed
    static config of the new routes before anything is written.
    """

    xds_dir: Path
    admin_url: str
    settings: EnvoySettings = field(default_factory=EnvoySettings)
    envoy_binary: str | None = None
    timeout_seconds: float = 10.0
    """Longest wait for Envoy to report one move."""
    poll_interval_seconds: float = 0.01
    """Admin stats polling interval while waiting."""

    def __post_init__(self) -> None:
        self.xds_dir = Path(self.xds_dir)
        self.admin_url = self.admin_url.rstrip("/")
        self._lock = asyncio.Lock()

    def path(self, kind: XdsKind) -> Path:
        return self.xds_dir / kind.file_name

    async def apply(self, routes: Sequence[Route]) -> list[AppliedMove]:
        """Make Envoy route ``routes`` (all workloads), moving files in the safe order; returns the confirmed moves
        (empty when nothing changed). Raises ``XdsValidationError``, ``XdsRejectedError`` or ``XdsTimeoutError``."""
        desired_cds = render_cds(routes, self.settings)
        desired_rds = render_rds(routes, self.settings)
        if self.envoy_binary is not None:
            await validate_with_envoy(render_static_config(routes, self.settings), self.envoy_binary)
        async with self._lock:
            current_cds, current_rds = await asyncio.gather(
                asyncio.to_thread(read_document, self.path(XdsKind.CDS)),
                asyncio.to_thread(read_document, self.path(XdsKind.RDS)),
            )
            applied: list[AppliedMove] = []
            for move in plan_xds_writes(current_cds, current_rds, desired_cds, desired_rds):
                applied.append(await self._apply_unlocked(move.kind, move.document))
            return applied

    async def apply_document(self, kind: XdsKind, document: JsonDict) -> AppliedMove:
        """Move one raw document into place and wait for Envoy's verdict (no planning, no validation)."""
        async with self._lock:
            return await self._apply_unlocked(kind, document)

    async def stats(self, kind: XdsKind) -> XdsStats:
        """Current admin stats of the CDS or RDS subscription."""
        values = await asyncio.to_thread(self._fetch_stats)
        prefix = "cds" if kind is XdsKind.CDS else "rds"
        return XdsStats(
            version_text=str(values.get(f"{prefix}.version_text", "")),
            update_success=int(values.get(f"{prefix}.update_success", 0)),
            update_rejected=int(values.get(f"{prefix}.update_rejected", 0)),
            warming_clusters=int(values.get("cds.warming_clusters", 0)) if kind is XdsKind.CDS else 0,
        )

    async def _apply_unlocked(self, kind: XdsKind, document: JsonDict) -> AppliedMove:
        path = self.path(kind)
        version = str(document.get("version_info", ""))
        previous = await asyncio.to_thread(read_document, path)
        before = await self.stats(kind)
        await asyncio.to_thread(write_document, path, document)
        started = time.monotonic()
        deadline = started + self.timeout_seconds
        while True:
            now = await self.stats(kind)
            if now.update_rejected > before.update_rejected:
                if previous is not None:
                    await asyncio.to_thread(write_document, path, previous)
                raise XdsRejectedError(kind, version, now.version_text, path, restored=previous is not None)
            if now.version_text == version and now.warming_clusters == 0:
                return AppliedMove(kind, version, time.monotonic() - started)
            if time.monotonic() > deadline:
                raise XdsTimeoutError(
                    f"Envoy at {self.admin_url} did not report {kind.value.upper()} version {version} from {path} "
                    f"within {self.timeout_seconds:.0f}s (reports {now.version_text or 'none'}, "
                    f"{now.warming_clusters} cluster(s) warming)"
                )
            await asyncio.sleep(self.poll_interval_seconds)

    async def traffic_stats(self, query: str = TRAFFIC_STATS_QUERY) -> list[Any]:
        """The router's per-target traffic counters (``routing.traffic_stats``; ``query``: which ones, e.g.
        ``FIRST_REQUEST_STATS_QUERY``): one ``/stats`` answer, raw."""
        return [await asyncio.to_thread(self._fetch_traffic_stats, query)]

    def _fetch_traffic_stats(self, query: str) -> Any:
        with urllib.request.urlopen(f"{self.admin_url}/stats?{query}", timeout=5) as response:
            return json.load(response)

    def _fetch_stats(self) -> dict[str, Any]:
        query = stats_query(self.settings)
        with urllib.request.urlopen(f"{self.admin_url}/stats?{query}", timeout=5) as response:
            payload: Any = json.load(response)
        return parse_stats(payload, self.settings)


def stats_query(settings: EnvoySettings) -> str:
    """The ``/stats`` query string selecting the xDS subscription stats this module reads (JSON format)."""
    rds_prefix = f"http.{settings.stat_prefix}.rds.{ROUTE_CONFIG_NAME}."
    pattern = "^cluster_manager\\.(cds\\.|warming_clusters$)|^" + re.escape(rds_prefix)
    return urllib.parse.urlencode({"format": "json", "filter": pattern})


def parse_stats(payload: Any, settings: EnvoySettings) -> dict[str, Any]:
    """``cds.*`` / ``rds.*`` values from a ``/stats?format=json`` answer (see ``XdsStats``)."""
    rds_prefix = f"http.{settings.stat_prefix}.rds.{ROUTE_CONFIG_NAME}."
    values: dict[str, Any] = {}
    for stat in payload.get("stats", []) if isinstance(payload, dict) else []:
        name = stat.get("name")
        if not isinstance(name, str):
            continue
        if name in _STAT_NAMES:
            values[_STAT_NAMES[name]] = stat.get("value")
        elif name.startswith(rds_prefix):
            values[f"rds.{name[len(rds_prefix) :]}"] = stat.get("value")
    return values
