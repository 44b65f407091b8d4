"""A stand-in for the part of the Cloud Run Admin API v2 (REST) the operator uses. A test fixture, not operator code.

Surface: ``services`` create / get / patch / delete / list and ``operations`` get, on the same paths and with the
same JSON as ``run.googleapis.com`` so the real ``run_v2.ServicesClient`` (``transport="rest"``,
``client_options={"api_endpoint": "http://127.0.0.1:PORT"}``) drives it unchanged. Request bodies are parsed with
the real ``run_v2`` types (unknown fields are a 400) and checked against the service rules the operator relies on
(service id, labels, CPU/memory table, GPU minimums); mutations answer real ``google.longrunning.Operation``
objects that finish ``reconcile_seconds`` later, while the service reports ``reconciling``.

Test controls (Python API, and the same over HTTP under ``/standin/``):

* faults: the next K matching requests answer an error (429/500/403/...), optionally *after* applying the request
  (``after_effect``: the response is lost on the way back, e.g. a create that happened but looked failed);
* ``fail_next_deploy``: the next create/update operation fails and the service turns not-ready;
* ``service_url``: the ``uri`` services report (``{service}``/``{project}``/``{location}`` are filled in), e.g. a
  loopback HTTP upstream, so traffic can really flow to "the Cloud Run service";
* a token endpoint (``POST /token``) for service-account credentials whose ``token_uri`` points here, and an
  optional ``require_token`` that rejects requests without a bearer token (that one, or a service account's
  self-signed JWT, which is what the gapic clients send for service-account keys);
* a request log (method, path, status, whether a bearer token was present; never the token itself).

It binds loopback addresses only.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import json_format
from google.rpc import status_pb2

__all__ = ["CloudRunStandin", "Fault", "RecordedRequest", "validate_service"]

GRPC_STATUS: Final = {
    400: ("INVALID_ARGUMENT", 3),
    401: ("UNAUTHENTICATED", 16),
    403: ("PERMISSION_DENIED", 7),
    404: ("NOT_FOUND", 5),
    409: ("ALREADY_EXISTS", 6),
    412: ("FAILED_PRECONDITION", 9),
    429: ("RESOURCE_EXHAUSTED", 8),
    500: ("INTERNAL", 13),
    501: ("UNIMPLEMENTED", 12),
    503: ("UNAVAILABLE", 14),
    504: ("DEADLINE_EXCEEDED", 4),
}
DEFAULT_FAULT_MESSAGES: Final = {
    429: "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per region' "
    "of service 'run.googleapis.com'.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
    403: "Permission 'run.services.create' denied on resource (or it may not exist).",
    400: "Invalid request.",
}

_SERVICE_ID = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|Ki|Mi|Gi)?$")
_PATH_SERVICES = re.compile(r"^/v2/projects/([^/]+)/locations/([^/]+)/services$")
_PATH_SERVICE = re.compile(r"^/v2/projects/([^/]+)/locations/([^/]+)/services/([^/:]+)$")
_PATH_OPERATION = re.compile(r"^/v2/projects/([^/]+)/locations/([^/]+)/operations/([^/:]+)$")
_MEMORY_MAX_GIB_BY_CPU: Final = {1.0: 4, 2.0: 8, 4.0: 16, 6.0: 24, 8.0: 32}
_MEMORY_MIN_GIB_BY_CPU: Final = {4.0: 2, 6.0: 4, 8.0: 4}
_GPU_MINIMUMS: Final = {"nvidia-l4": (4.0, 16.0), "nvidia-rtx-pro-6000": (20.0, 80.0)}
"""Cloud Run's GPUs (2026) and the least CPU and GiB of memory of an instance with each."""
_GPU_SIZES: Final = {"nvidia-rtx-pro-6000": {20.0: 80}}
"""CPU -> most GiB of GPU instance sizes beyond the CPU-only table (the RTX PRO 6000's 20 CPU / 80 GiB)."""


class ApiError(Exception):
    """An error the stand-in answers in Google's JSON error format."""

    def __init__(self, status: int, message: str, grpc_status: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.grpc_status = grpc_status or GRPC_STATUS.get(status, ("UNKNOWN", 2))[0]

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message, "status": self.grpc_status}}


@dataclass
class Fault:
    """Answer ``status`` to the next ``count`` matching requests."""

    status: int
    count: int = 1
    message: str | None = None
    methods: frozenset[str] | None = None
    """HTTP methods it applies to (GET, POST, PATCH, DELETE); None = all."""
    path_contains: str | None = None
    after_effect: bool = False
    """Apply the request first, then answer the error (the response got lost)."""
    retry_after_seconds: int | None = None
    """Send ``Retry-After`` with the error (as Google's front ends may with 429/503)."""

    def matches(self, method: str, path: str) -> bool:
        if self.count <= 0:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        return self.path_contains is None or self.path_contains in path


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    status: int
    bearer_token_present: bool
    injected_fault: bool


@dataclass
class _Operation:
    name: str
    service_name: str
    kind: str
    due: float
    done: bool = False
    response: run_v2.Service | None = None
    error: tuple[int, str] | None = None


@dataclass
class _ServiceRecord:
    service: run_v2.Service
    revision_counter: int = 1
    deleting: bool = False
    pending_operation: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _quantity(value: str) -> float | None:
    match = _QUANTITY.match(value)
    if match is None:
        return None
    number, suffix = float(match.group(1)), match.group(2) or ""
    factor = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30}[suffix]
    return number * factor


def _check_labels(where: str, labels: Mapping[str, str]) -> None:
    if len(labels) > 64:
        raise ApiError(400, f"{where}: at most 64 labels are allowed")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise ApiError(400, f"{where}: label key {key!r} violates the label rules")
        if not _LABEL_VALUE.match(value):
            raise ApiError(400, f"{where}: label value {value!r} for key {key!r} violates the label rules")


def _check_probe(where: str, probe: run_v2.Probe, port: int | None, *, max_period: int) -> None:
    if not run_v2.Probe.pb(probe).ByteSize():
        return
    if probe.http_get.path and not probe.http_get.path.startswith("/"):
        raise ApiError(400, f"{where}.httpGet.path must start with '/'")
    if probe.http_get.port and port is not None and probe.http_get.port != port:
        raise ApiError(400, f"{where}.httpGet.port must be the container port {port}")
    if probe.period_seconds and not 1 <= probe.period_seconds <= max_period:
        raise ApiError(400, f"{where}.periodSeconds must be between 1 and {max_period}")
    if probe.timeout_seconds and probe.period_seconds and probe.timeout_seconds > probe.period_seconds:
        raise ApiError(400, f"{where}.timeoutSeconds must not exceed periodSeconds")


def _check_container(where: str, container: run_v2.Container, accelerator: str = "") -> bool:
    """Raise ``ApiError(400, ...)`` where the real API would reject one container; True when it asks for a GPU.
    ``accelerator``: the template's ``nodeSelector.accelerator`` (the GPU's own instance sizes apply)."""
    if not container.image:
        raise ApiError(400, f"{where}.image is required")
    port = container.ports[0].container_port if container.ports else None
    if port is not None and not 1 <= port <= 65535:
        raise ApiError(400, f"{where}.ports[0].containerPort must be between 1 and 65535")
    limits = dict(container.resources.limits)
    unknown = set(limits) - {"cpu", "memory", "nvidia.com/gpu"}
    if unknown:
        raise ApiError(400, f"{where}.resources.limits: unsupported resources {sorted(unknown)}")
    cpu = _quantity(limits.get("cpu", "1"))
    memory = _quantity(limits.get("memory", "512Mi"))
    max_by_cpu = {**_MEMORY_MAX_GIB_BY_CPU, **_GPU_SIZES.get(accelerator, {})}
    if cpu is None or not (0.08 <= cpu <= max(max_by_cpu)) or (cpu > 1 and cpu not in max_by_cpu):
        raise ApiError(400, f"{where}.resources.limits.cpu: {limits.get('cpu')!r} is not a supported CPU value")
    if memory is None or memory < 128 * 2**20:
        raise ApiError(400, f"{where}.resources.limits.memory: {limits.get('memory')!r} is invalid")
    memory_gib = memory / 2**30
    max_gib = max_by_cpu.get(cpu, 1 if cpu < 1 else 4)
    if memory_gib > max_gib:
        raise ApiError(400, f"{where}: memory {limits['memory']} needs more than {limits.get('cpu', '1')} CPU")
    if memory_gib < _MEMORY_MIN_GIB_BY_CPU.get(cpu, 0):
        raise ApiError(400, f"{where}: {limits.get('cpu')} CPU needs at least {_MEMORY_MIN_GIB_BY_CPU[cpu]}Gi")
    gpu = "nvidia.com/gpu" in limits
    if gpu:
        if limits["nvidia.com/gpu"] != "1":
            raise ApiError(400, f"{where}: exactly one GPU per instance is supported")
        min_cpu, min_gib = _GPU_MINIMUMS.get(accelerator, (4.0, 16.0))
        if cpu < min_cpu or memory_gib < min_gib:
            raise ApiError(
                400, f"{where}: a {accelerator or 'GPU'} needs at least {min_cpu:g} CPU and {min_gib:g}Gi of memory"
            )
        if container.resources.cpu_idle:
            raise ApiError(400, f"{where}: a GPU needs instance-based billing (cpuIdle: false)")
    _check_probe(f"{where}.startupProbe", container.startup_probe, port, max_period=240)
    _check_probe(f"{where}.livenessProbe", container.liveness_probe, port, max_period=3600)
    return gpu


def validate_service(service: run_v2.Service) -> None:
    """Raise ``ApiError(400, ...)`` where the real API would reject ``service`` (the rules the operator relies on)."""
    _check_labels("service.labels", service.labels)
    template = service.template
    _check_labels("service.template.labels", template.labels)
    if not template.containers:
        raise ApiError(400, "service.template.containers: at least one container is required")
    if template.max_instance_request_concurrency > 1000:
        raise ApiError(400, "service.template.maxInstanceRequestConcurrency must be at most 1000")
    scaling = template.scaling
    if scaling.max_instance_count and scaling.min_instance_count > scaling.max_instance_count:
        raise ApiError(400, "service.template.scaling: minInstanceCount must not exceed maxInstanceCount")
    if template.service_account and "@" not in template.service_account:
        raise ApiError(400, "service.template.serviceAccount must be a service account email")
    gpu_requested = False
    accelerator = template.node_selector.accelerator
    for i, container in enumerate(template.containers):
        if _check_container(f"service.template.containers[{i}]", container, accelerator):
            gpu_requested = True
    if accelerator and accelerator not in _GPU_MINIMUMS:
        raise ApiError(400, f"service.template.nodeSelector.accelerator: {accelerator!r} is not available")
    if gpu_requested != bool(accelerator):
        raise ApiError(400, "service.template: nvidia.com/gpu limits and nodeSelector.accelerator go together")


class CloudRunStandin:
    """The stand-in server. ``start()``/``stop()`` or use it as a context manager; ``url`` is its endpoint."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        service_url: str | None = None,
        reconcile_seconds: float = 0.05,
        require_token: bool = False,
        access_token: str | None = None,
        project_number: str = "123456789012",
        max_page_size: int = 100,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the stand-in binds loopback addresses only, not {host}")
        self.host = host
        self.port = port
        self.service_url = service_url
        self.reconcile_seconds = reconcile_seconds
        self.require_token = require_token
        self.access_token = access_token or f"ya29.standin-{secrets.token_urlsafe(24)}"
        self.project_number = project_number
        self.max_page_size = max_page_size
        self._lock = threading.RLock()
        self._services: dict[str, _ServiceRecord] = {}
        self._operations: dict[str, _Operation] = {}
        self._faults: list[Fault] = []
        self._answer = threading.local()
        """Per request thread: the ``Retry-After`` of the answer being written (set by a fault that has one)."""
        self._fail_next_deploy: str | None = None
        self._requests: list[RecordedRequest] = []
        self.seen_bearer_tokens: set[str] = set()
        """Bearer tokens requests carried (tests check that none of them reached a log)."""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> CloudRunStandin:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="cloudrun-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> CloudRunStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    # ------------------------------------------------------------------------------------ test controls

    def inject_faults(
        self,
        status: int,
        count: int = 1,
        *,
        message: str | None = None,
        methods: Iterable[str] | None = None,
        path_contains: str | None = None,
        after_effect: bool = False,
        retry_after_seconds: int | None = None,
    ) -> Fault:
        fault = Fault(
            status=status,
            count=count,
            message=message,
            methods=frozenset(m.upper() for m in methods) if methods is not None else None,
            path_contains=path_contains,
            after_effect=after_effect,
            retry_after_seconds=retry_after_seconds,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def take_retry_after(self) -> str | None:
        """The ``Retry-After`` a fault set for the answer this thread is writing (cleared on the way)."""
        value: str | None = getattr(self._answer, "retry_after", None)
        self._answer.retry_after = None
        return value

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def fail_next_deploy(
        self, message: str = "The user-provided container failed to start and listen on the port."
    ) -> None:
        with self._lock:
            self._fail_next_deploy = message

    def reset(self) -> None:
        with self._lock:
            self._services.clear()
            self._operations.clear()
            self._faults.clear()
            self._requests.clear()
            self._fail_next_deploy = None
            self.seen_bearer_tokens.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def services(self) -> list[run_v2.Service]:
        with self._lock:
            self._advance()
            return [run_v2.Service(record.service) for _, record in sorted(self._services.items())]

    def put_service(
        self,
        parent: str,
        service_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        image: str = "gcr.io/other/app:1",
    ) -> run_v2.Service:
        """Seed a ready service directly (e.g. one that somebody else owns)."""
        name = f"{parent}/services/{service_id}"
        service = run_v2.Service(
            labels=dict(labels or {}),
            template=run_v2.RevisionTemplate(containers=[run_v2.Container(image=image)]),
        )
        with self._lock:
            record = self._new_record(name, service)
            self._finish_deploy(record, failure=None)
            return run_v2.Service(record.service)

    # ------------------------------------------------------------------------------------ request handling

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, Any]:
        split = urlsplit(raw_path)
        path, query = split.path, {k: v[-1] for k, v in parse_qs(split.query).items()}
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        with self._lock:
            if path.startswith("/standin/"):
                return self._admin(method, path, body)
            if path == "/token" and method == "POST":
                return self._token(body)
            if path == METADATA_IDENTITY_PATH and method == "GET":
                # the GCE metadata server's identity endpoint, for Envoy's gcp_authn filter (raw token body)
                audience = query.get("audience", "")
                if not audience:
                    return 400, b"audience is required"
                return 200, fake_id_token(audience).encode()
            status, payload, injected = self._api(method, path, query, body, authorization)
            self._requests.append(
                RecordedRequest(method, path, status, authorization.lower().startswith("bearer "), injected)
            )
            return status, payload

    def _api(
        self, method: str, path: str, query: Mapping[str, str], body: bytes, authorization: str
    ) -> tuple[int, Any, bool]:
        if authorization.lower().startswith("bearer "):
            self.seen_bearer_tokens.add(authorization[7:])
        if self.require_token and not self._authorized(authorization):
            return 401, ApiError(401, "Request had invalid authentication credentials.").body(), False
        fault = next((f for f in self._faults if f.matches(method, path)), None)
        if fault is not None:
            fault.count -= 1
            error = ApiError(fault.status, fault.message or DEFAULT_FAULT_MESSAGES.get(fault.status, "Injected fault."))
            if fault.retry_after_seconds is not None:
                self._answer.retry_after = str(fault.retry_after_seconds)
            if not fault.after_effect:
                return error.status, error.body(), True
        try:
            self._advance()
            status, payload = self._route(method, path, query, body)
        except ApiError as err:
            status, payload = err.status, err.body()
        if fault is not None:
            return error.status, error.body(), True
        return status, payload, False

    def _route(self, method: str, path: str, query: Mapping[str, str], body: bytes) -> tuple[int, Any]:
        if match := _PATH_SERVICES.match(path):
            parent = f"projects/{match.group(1)}/locations/{match.group(2)}"
            if method == "POST":
                return self._create(parent, query, body)
            if method == "GET":
                return self._list(parent, query)
        elif match := _PATH_SERVICE.match(path):
            name = f"projects/{match.group(1)}/locations/{match.group(2)}/services/{match.group(3)}"
            if method == "GET":
                return 200, _service_json(self._get_record(name).service)
            if method == "PATCH":
                return self._update(name, query, body)
            if method == "DELETE":
                return self._delete(name, query)
        elif match := _PATH_OPERATION.match(path):
            name = f"projects/{match.group(1)}/locations/{match.group(2)}/operations/{match.group(3)}"
            if method == "GET":
                operation = self._operations.get(name)
                if operation is None:
                    raise ApiError(404, f"Operation {name} not found.")
                return 200, _operation_json(operation)
        raise ApiError(404, f"No route for {method} {path}.", "NOT_FOUND")

    # ------------------------------------------------------------------------------------ services

    def _parse(self, body: bytes) -> run_v2.Service:
        try:
            service: run_v2.Service = run_v2.Service.from_json(
                body.decode("utf-8") or "{}", ignore_unknown_fields=False
            )
        except Exception as exc:  # json_format.ParseError, UnicodeDecodeError
            raise ApiError(400, f"Invalid JSON payload received. {exc}") from exc
        return service

    def _get_record(self, name: str) -> _ServiceRecord:
        record = self._services.get(name)
        if record is None:
            raise ApiError(404, f"Resource '{name}' was not found", "NOT_FOUND")
        return record

    def _new_record(self, name: str, service: run_v2.Service) -> _ServiceRecord:
        stored = run_v2.Service(service)
        stored.name = name
        stored.uid = str(uuid.uuid4())
        stored.generation = 1
        stored.create_time = _now()
        stored.update_time = _now()
        stored.creator = "standin@example.invalid"
        stored.etag = f'"{secrets.token_hex(8)}"'
        record = _ServiceRecord(stored)
        self._services[name] = record
        self._start_deploy(record)
        return record

    def _start_deploy(self, record: _ServiceRecord) -> None:
        service = record.service
        short = service.name.rsplit("/", 1)[-1]
        service.reconciling = True
        service.latest_created_revision = (
            f"{service.name}/revisions/{short}-{record.revision_counter:05d}-{secrets.token_hex(2)[:3]}"
        )
        service.terminal_condition = run_v2.Condition(
            type_="Ready",
            state=run_v2.Condition.State.CONDITION_RECONCILING,
            message="Deploying revision.",
            last_transition_time=_now(),
        )

    def _finish_deploy(self, record: _ServiceRecord, failure: str | None) -> None:
        service = record.service
        service.reconciling = False
        service.observed_generation = service.generation
        if failure is None:
            service.latest_ready_revision = service.latest_created_revision
            service.terminal_condition = run_v2.Condition(
                type_="Ready", state=run_v2.Condition.State.CONDITION_SUCCEEDED, last_transition_time=_now()
            )
        else:
            service.terminal_condition = run_v2.Condition(
                type_="Ready",
                state=run_v2.Condition.State.CONDITION_FAILED,
                message=f"Revision '{service.latest_created_revision.rsplit('/', 1)[-1]}' is not ready and cannot "
                f"serve traffic. {failure}",
                last_transition_time=_now(),
            )
        uri = self._uri(service.name)
        service.uri = uri
        service.urls = [uri]
        service.traffic_statuses = [
            run_v2.TrafficTargetStatus(
                type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, percent=100
            )
        ]

    def _uri(self, name: str) -> str:
        _, project, _, location, _, short = name.split("/")
        if self.service_url:
            return self.service_url.format(service=short, project=project, location=location)
        return f"https://{short}-{self.project_number}.{location}.run.app"

    def _new_operation(self, parent: str, service_name: str, kind: str) -> _Operation:
        name = f"{parent}/operations/{uuid.uuid4()}"
        operation = _Operation(name, service_name, kind, due=time.monotonic() + self.reconcile_seconds)
        self._operations[name] = operation
        return operation

    def _create(self, parent: str, query: Mapping[str, str], body: bytes) -> tuple[int, Any]:
        service_id = query.get("serviceId", "")
        if not _SERVICE_ID.match(service_id):
            raise ApiError(
                400,
                f"serviceId {service_id!r}: must begin with a letter, contain only lowercase letters, digits and "
                "hyphens, not end with a hyphen, and have fewer than 50 characters",
            )
        service = self._parse(body)
        name = f"{parent}/services/{service_id}"
        if service.name and service.name != name:
            raise ApiError(400, "service.name must be empty or match the serviceId on create")
        validate_service(service)
        if name in self._services:
            raise ApiError(409, f"Resource '{service_id}' already exists.", "ALREADY_EXISTS")
        if query.get("validateOnly") == "true":
            operation = _Operation(f"{parent}/operations/{uuid.uuid4()}", name, "validate", 0.0, True, service)
            return 200, _operation_json(operation)
        record = self._new_record(name, service)
        operation = self._new_operation(parent, name, "create")
        record.pending_operation = operation.name
        return 200, _operation_json(operation, metadata=record.service)

    def _update(self, name: str, query: Mapping[str, str], body: bytes) -> tuple[int, Any]:
        service = self._parse(body)
        if service.name and service.name != name:
            raise ApiError(400, "service.name does not match the resource name in the URL")
        validate_service(service)
        parent = name.rsplit("/services/", 1)[0]
        record = self._services.get(name)
        if record is None:
            if query.get("allowMissing") != "true":
                raise ApiError(404, f"Resource '{name}' was not found", "NOT_FOUND")
            record = self._new_record(name, service)
        else:
            if record.deleting:
                raise ApiError(409, f"Resource '{name}' is being deleted.", "FAILED_PRECONDITION")
            if service.etag and service.etag != record.service.etag:
                raise ApiError(409, "The etag does not match the current resource.", "ABORTED")
            if query.get("validateOnly") == "true":
                operation = _Operation(f"{parent}/operations/{uuid.uuid4()}", name, "validate", 0.0, True, service)
                return 200, _operation_json(operation)
            previous = record.service
            updated = run_v2.Service(service)
            for keep in ("name", "uid", "create_time", "creator"):
                setattr(updated, keep, getattr(previous, keep))
            updated.generation = previous.generation + 1
            updated.update_time = _now()
            updated.etag = f'"{secrets.token_hex(8)}"'
            updated.uri = previous.uri
            updated.urls = list(previous.urls)
            updated.latest_ready_revision = previous.latest_ready_revision
            record.service = updated
            record.revision_counter += 1
            self._start_deploy(record)
        operation = self._new_operation(parent, name, "update")
        record.pending_operation = operation.name
        return 200, _operation_json(operation, metadata=record.service)

    def _delete(self, name: str, query: Mapping[str, str]) -> tuple[int, Any]:
        record = self._get_record(name)
        parent = name.rsplit("/services/", 1)[0]
        if query.get("validateOnly") == "true":
            operation = _Operation(f"{parent}/operations/{uuid.uuid4()}", name, "validate", 0.0, True, record.service)
            return 200, _operation_json(operation)
        record.deleting = True
        record.service.reconciling = True
        record.service.delete_time = _now()
        operation = self._new_operation(parent, name, "delete")
        record.pending_operation = operation.name
        return 200, _operation_json(operation, metadata=record.service)

    def _list(self, parent: str, query: Mapping[str, str]) -> tuple[int, Any]:
        names = sorted(n for n in self._services if n.startswith(parent + "/services/"))
        size = min(int(query.get("pageSize") or self.max_page_size), self.max_page_size)
        start = int(query.get("pageToken") or 0)
        page = names[start : start + size]
        payload: dict[str, Any] = {"services": [_service_json(self._services[n].service) for n in page]}
        if start + size < len(names):
            payload["nextPageToken"] = str(start + size)
        return 200, payload

    def _advance(self) -> None:
        now = time.monotonic()
        for operation in self._operations.values():
            if operation.done or operation.due > now:
                continue
            operation.done = True
            record = self._services.get(operation.service_name)
            if record is None:
                continue
            if operation.kind == "delete":
                operation.response = run_v2.Service(record.service)
                del self._services[operation.service_name]
                continue
            if record.pending_operation != operation.name:
                operation.response = run_v2.Service(record.service)  # superseded by a later change
                continue
            failure, self._fail_next_deploy = self._fail_next_deploy, None
            self._finish_deploy(record, failure)
            record.pending_operation = None
            if failure is not None:
                operation.error = (9, record.service.terminal_condition.message)
            else:
                operation.response = run_v2.Service(record.service)

    # ------------------------------------------------------------------------------------ token and admin

    def _authorized(self, authorization: str) -> bool:
        """The token ``/token`` issued, or a service account's self-signed JWT (what the gapic clients send for
        service-account keys); the JWT's signature is not checked: this stand-in knows no public keys."""
        if not authorization.startswith("Bearer "):
            return False
        token = authorization[len("Bearer ") :]
        if token == self.access_token:
            return True
        parts = token.split(".")
        if len(parts) != 3:
            return False
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            return False
        return isinstance(claims, dict) and str(claims.get("iss", "")).endswith(".gserviceaccount.com")

    def _token(self, body: bytes) -> tuple[int, Any]:
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        assertion = form.get("assertion", "")
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or assertion.count(".") != 2:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT."}
        return 200, {"access_token": self.access_token, "expires_in": 3600, "token_type": "Bearer"}

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/standin/health":
            return 200, {"ok": True}
        if path == "/standin/faults" and method == "POST":
            spec = json.loads(body or b"{}")
            fault = self.inject_faults(
                int(spec["status"]),
                int(spec.get("count", 1)),
                message=spec.get("message"),
                methods=spec.get("methods"),
                path_contains=spec.get("pathContains"),
                after_effect=bool(spec.get("afterEffect", False)),
            )
            return 200, {"status": fault.status, "count": fault.count}
        if path == "/standin/faults" and method == "DELETE":
            self.clear_faults()
            return 200, {}
        if path == "/standin/fail-next-deploy" and method == "POST":
            spec = json.loads(body or b"{}")
            self.fail_next_deploy(spec.get("message") or "The user-provided container failed to start.")
            return 200, {}
        if path == "/standin/requests" and method == "GET":
            return 200, {"requests": [r.__dict__ for r in self._requests]}
        if path == "/standin/services" and method == "GET":
            self._advance()
            return 200, {"services": [json.loads(_service_json_text(r.service)) for r in self._services.values()]}
        if path == "/standin/reset" and method == "POST":
            self.reset()
            return 200, {}
        return 404, ApiError(404, f"No admin route {method} {path}.").body()


METADATA_IDENTITY_PATH = "/computeMetadata/v1/instance/service-accounts/default/identity"
"""Where the stand-in also plays the metadata server's identity endpoint (ID tokens for Cloud Run)."""


def fake_id_token(audience: str, lifetime_seconds: int = 3600) -> str:
    """A JWT-shaped ID token (unsigned signature part): the ``gcp_authn`` filter parses it to cache it by expiry."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    header = part({"alg": "RS256", "typ": "JWT", "kid": "test"})
    claims = part({"aud": audience, "iss": "https://accounts.google.com", "iat": now, "exp": now + lifetime_seconds})
    return f"{header}.{claims}.c2lnbmF0dXJl"


def _service_json_text(service: run_v2.Service) -> str:
    text: str = run_v2.Service.to_json(service, indent=None)
    return text


def _service_json(service: run_v2.Service) -> Any:
    return json.loads(_service_json_text(service))


def _operation_json(operation: _Operation, *, metadata: run_v2.Service | None = None) -> Any:
    message = operations_pb2.Operation(name=operation.name, done=operation.done)
    meta = metadata if metadata is not None else operation.response
    if meta is not None:
        message.metadata.Pack(run_v2.Service.pb(meta))
    if operation.done and operation.error is not None:
        message.error.CopyFrom(status_pb2.Status(code=operation.error[0], message=operation.error[1]))
    elif operation.done and operation.response is not None:
        message.response.Pack(run_v2.Service.pb(operation.response))
    return json.loads(json_format.MessageToJson(message, indent=None))


def _make_handler(standin: CloudRunStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        server_version = "cloudrun-standin"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, payload = standin.handle(self.command, self.path, dict(self.headers.items()), body)
            except Exception as exc:  # a bug in the stand-in must show up as a 500, not a hung client
                status, payload = 500, ApiError(500, f"stand-in failure: {type(exc).__name__}: {exc}").body()
            raw = isinstance(payload, bytes)
            data = payload if raw else json.dumps(payload).encode()
            retry_after = standin.take_retry_after()
            self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else None)
            if retry_after is not None and status >= 400:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Type", "text/plain" if raw else "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
