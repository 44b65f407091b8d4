"""Google Cloud Run target: one Cloud Run service per workload, through ``google-cloud-run`` (``run_v2``).

``ensure`` builds the service the workload asks for (image, port, CPU/memory, concurrency, min/max instances,
startup and liveness probes on the health path, service account, ownership labels; a GPU (NVIDIA L4 or RTX PRO 6000
Blackwell) through ``nodeSelector.accelerator`` and an ``nvidia.com/gpu`` limit, with that GPU's CPU / memory minimum
(4 CPU / 16 GiB, 20 CPU / 80 GiB), instance-based billing, and GPU zonal redundancy as the price book prices it
(``gpuZonalRedundancyDisabled`` unless ``DesiredTarget.gpu_zonal_redundancy``)), creates it or updates it only
where it differs, and waits on the long-running operation up to a timeout. The service is found again by its
deterministic id (``naming.cloud_run_service_id``) and adopted only when its ``inference-placement-uid`` label is
the workload's uid; a service with the name and another owner is never modified (``NotOwnedError``).

The client is the sync REST client (the async client has no REST transport in google-cloud-run 0.16), run in a
worker thread so the controller's event loop never blocks. Credentials: Application Default Credentials /
workload identity when none are given, or service-account credentials from a Secret (``from_secret``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from google.api_core import exceptions as gexc
from google.api_core import operation as gapic_operation
from google.api_core import retry as gretry
from google.api_core.future import polling
from google.auth.credentials import Credentials
from google.cloud import run_v2

from inference_placement.api.spec import AcceleratorSpec, AcceleratorType, ModelSpec, TargetName
from inference_placement.api.workload import InferenceWorkload
from inference_placement.targets import naming
from inference_placement.targets.base import (
    BlockingTarget,
    DesiredTarget,
    NotOwnedError,
    PermanentTargetError,
    RetryableTargetError,
    TargetState,
    held_while_moving,
)
from inference_placement.targets.credentials import (
    GCP_SCOPES,
    SecretData,
    google_credentials_from_secret,
    secret_values,
)
from inference_placement.targets.retry import RetriedCalls, RetryPolicy, StillInProgressError, classify_google_error

__all__ = [
    "CONTAINER_NAME",
    "CloudRunTarget",
    "build_service",
    "cloud_run_limits",
    "service_differences",
    "GPU_ACCELERATOR",
    "GPU_INSTANCES",
    "GPU_MIN_CPU",
    "GPU_MIN_MEMORY_MIB",
    "GPUInstance",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

CONTAINER_NAME: Final = "model"
GPU_ACCELERATOR: Final = "nvidia-l4"
"""The default (first) Cloud Run GPU; every GPU this target deploys is in ``GPU_INSTANCES``."""
GPU_MIN_CPU: Final = 4
GPU_MIN_MEMORY_MIB: Final = 16 * 1024


@dataclass(frozen=True)
class GPUInstance:
    """The instance sizes this target deploys with one GPU of a type: CPU counts and the memory range of each."""

    memory_mib_by_cpu: Mapping[int, tuple[int, int]]
    """CPU -> (least, most) memory in MiB."""

    @property
    def min_cpu(self) -> int:
        return min(self.memory_mib_by_cpu)


GPU_INSTANCES: Final[Mapping[AcceleratorType, GPUInstance]] = {
    # cloud.google.com/run/docs/configuring/services/gpu: L4 needs at least 4 CPU and 16 GiB (up to Cloud Run's
    # 8 CPU / 32 GiB); RTX PRO 6000 Blackwell (preview) at least 20 CPU and 80 GiB, deployed at exactly that.
    # The price book's platforms.cloudrun.gpu_instances says the same (a test keeps them equal).
    AcceleratorType.NVIDIA_L4: GPUInstance({4: (16384, 16384), 6: (16384, 24576), 8: (16384, 32768)}),
    AcceleratorType.NVIDIA_RTX_PRO_6000: GPUInstance({20: (81920, 81920)}),
}
_CPU_STEPS: Final = (1, 2, 4, 6, 8)
_MAX_MEMORY_MIB_BY_CPU: Final = {1: 4096, 2: 8192, 4: 16384, 6: 24576, 8: 32768}
_MIN_MEMORY_MIB_BY_CPU: Final = {4: 2048, 6: 4096, 8: 4096}
_MIN_MEMORY_MIB: Final = 128
_RESERVED_ENV: Final = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"})


# ----------------------------------------------------------------------------------------------- the service


def cloud_run_limits(model: ModelSpec, accelerator: AcceleratorSpec) -> dict[str, str]:
    """``resources.limits`` for the model on Cloud Run: CPU rounded up to a size Cloud Run offers, memory raised to
    that size's minimum, and for a GPU one ``nvidia.com/gpu`` with that GPU's CPU and memory minimum."""
    gpu = accelerator.needs_gpu
    if not gpu:
        sizes = {c: (_MIN_MEMORY_MIB_BY_CPU.get(c, _MIN_MEMORY_MIB), _MAX_MEMORY_MIB_BY_CPU[c]) for c in _CPU_STEPS}
    else:
        instance = GPU_INSTANCES.get(accelerator.type)
        if instance is None:
            offered = ", ".join(sorted(t.value for t in GPU_INSTANCES))
            raise PermanentTargetError(
                f"Cloud Run offers {offered} GPUs only; spec.accelerator.type is {accelerator.type.value}"
            )
        if accelerator.count != 1:
            raise PermanentTargetError(
                f"Cloud Run attaches one GPU per instance; spec.accelerator.count is {accelerator.count}"
            )
        sizes = dict(instance.memory_mib_by_cpu)
    memory_mib = max(math.ceil(model.memory_mib), _MIN_MEMORY_MIB)
    cpu = next((c for c in sorted(sizes) if c >= model.cpu_cores - 1e-9 and sizes[c][1] >= memory_mib), None)
    if cpu is None:
        largest = max(sizes)
        raise PermanentTargetError(
            f"the model needs {model.cpu} CPU and {model.memory} of memory; the largest Cloud Run instance "
            f"{'with ' + accelerator.type.value + ' ' if gpu else ''}has {largest} CPU and "
            f"{sizes[largest][1] // 1024}Gi"
        )
    memory_mib = max(memory_mib, sizes[cpu][0])
    memory = f"{memory_mib // 1024}Gi" if memory_mib % 1024 == 0 else f"{memory_mib}Mi"
    limits = {"cpu": str(cpu), "memory": memory}
    if gpu:
        limits["nvidia.com/gpu"] = "1"
    return limits


def _startup_failure_threshold(model: ModelSpec, period_seconds: int) -> int:
    # Loading the weights dominates start-up: allow ~50 MB/s on top of 30 s, between 30 s and 10 min.
    budget_seconds = min(max(30.0 + model.size_mb / 50.0, 30.0), 600.0)
    return math.ceil(budget_seconds / period_seconds)


def _owner_of(workload: InferenceWorkload) -> naming.Owner:
    if not workload.metadata.uid:
        raise PermanentTargetError("metadata.uid is empty: cloud resources cannot be labelled with their owner")
    return naming.Owner(workload.metadata.uid, workload.metadata.namespace, workload.metadata.name)


def build_service(workload: InferenceWorkload, desired: DesiredTarget) -> run_v2.Service:
    """The Cloud Run service the workload asks for (no name: the id goes in the create request)."""
    spec = workload.spec
    model, cloud_run = spec.model, spec.cloud_run
    limits = cloud_run_limits(model, spec.accelerator)
    gpu = "nvidia.com/gpu" in limits
    health = run_v2.HTTPGetAction(path=model.health_path, port=model.port)
    startup_period = 10
    container = run_v2.Container(
        name=CONTAINER_NAME,
        image=cloud_run.image or model.image,
        ports=[run_v2.ContainerPort(name="http1", container_port=model.port)],
        env=[run_v2.EnvVar(name=e.name, value=e.value) for e in model.env if e.name not in _RESERVED_ENV],
        resources=run_v2.ResourceRequirements(
            limits=limits,
            cpu_idle=not gpu,  # a GPU needs instance-based billing; CPU-only bills per request
            startup_cpu_boost=True,
        ),
        startup_probe=run_v2.Probe(
            http_get=health,
            period_seconds=startup_period,
            timeout_seconds=5,
            failure_threshold=_startup_failure_threshold(model, startup_period),
        ),
        liveness_probe=run_v2.Probe(http_get=health, period_seconds=15, timeout_seconds=5, failure_threshold=3),
    )
    max_instances = cloud_run.max_instances
    if desired.max_replicas is not None:
        # A bill cap from the budget: the tighter of the two. 0 is not a cap Cloud Run accepts (it means
        # "default"), so the floor is one instance; a workload that may not run at all is retired instead.
        max_instances = max(1, min(max_instances, desired.max_replicas))
    min_instances = min(max(cloud_run.min_instances, desired.replicas), max_instances)
    template = run_v2.RevisionTemplate(
        containers=[container],
        scaling=run_v2.RevisionScaling(min_instance_count=min_instances, max_instance_count=max_instances),
        max_instance_request_concurrency=cloud_run.concurrency,
        service_account=cloud_run.service_account or "",
    )
    if gpu:
        template.node_selector = run_v2.NodeSelector(accelerator=spec.accelerator.type.value)
        # Cloud Run turns GPU zonal redundancy on by default (priced higher); the price book says which is priced
        template.gpu_zonal_redundancy_disabled = not desired.gpu_zonal_redundancy
    return run_v2.Service(
        description=f"inference-placement: {workload.key}",
        labels=naming.cloud_run_labels(_owner_of(workload)),
        template=template,
    )


def _probe_view(probe: run_v2.Probe) -> tuple[str, int, int, int, int, int]:
    return (
        probe.http_get.path,
        probe.http_get.port,
        probe.initial_delay_seconds,
        probe.period_seconds,
        probe.timeout_seconds,
        probe.failure_threshold,
    )


def _managed_view(service: run_v2.Service, *, reference: run_v2.Service) -> dict[str, object]:
    """The fields this target manages, as comparable values; ``reference`` (the desired service) says which
    optional fields count (an unset service account is Cloud Run's default, not a difference)."""
    template = service.template
    container = template.containers[0] if template.containers else run_v2.Container()
    view: dict[str, object] = {
        "labels": {key: service.labels.get(key) for key in reference.labels},
        "containers": len(template.containers),
        "image": container.image,
        "ports": [(p.name, p.container_port) for p in container.ports],
        "env": [(e.name, e.value) for e in container.env],
        "limits": dict(container.resources.limits),
        "cpu_idle": container.resources.cpu_idle,
        "startup_cpu_boost": container.resources.startup_cpu_boost,
        "startup_probe": _probe_view(container.startup_probe),
        "liveness_probe": _probe_view(container.liveness_probe),
        "concurrency": template.max_instance_request_concurrency,
        "min_instances": template.scaling.min_instance_count,
        "max_instances": template.scaling.max_instance_count,
        "accelerator": template.node_selector.accelerator,
        "gpu_zonal_redundancy_disabled": template.gpu_zonal_redundancy_disabled,
    }
    if reference.template.service_account:
        view["service_account"] = template.service_account
    return view


def service_differences(want: run_v2.Service, have: run_v2.Service) -> list[str]:
    """Names of the managed fields where the existing service differs from the desired one (empty = in sync)."""
    wanted = _managed_view(want, reference=want)
    current = _managed_view(have, reference=want)
    return [key for key, value in wanted.items() if current.get(key) != value]


def _state(service: run_v2.Service, *, message: str | None = None) -> TargetState:
    condition = service.terminal_condition
    succeeded = condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    ready = (
        succeeded
        and not service.reconciling
        and bool(service.uri)
        and service.observed_generation >= service.generation
        and not service.delete_time
    )
    if message is None and not ready:
        if condition.state == run_v2.Condition.State.CONDITION_FAILED:
            message = condition.message or "the latest revision failed"
        elif service.delete_time:
            message = "being deleted"
        else:
            message = condition.message or "deploying"
    return TargetState(
        name=service.name,
        endpoint=service.uri or None,
        ready=ready,
        replicas=None,  # the Admin API does not report running instances
        message=message,
    )


# ----------------------------------------------------------------------------------------------- the target


class CloudRunTarget(BlockingTarget, RetriedCalls):
    """Places workloads on Google Cloud Run (one service per workload).

    Args:
        credentials: Google credentials; None = Application Default Credentials (workload identity), resolved on
            first use. For the local stand-in pass ``credentials.google_anonymous_credentials()``.
        api_endpoint: Cloud Run Admin API endpoint; None = ``run.googleapis.com``. ``http://127.0.0.1:PORT``
            for the local stand-in.
        client: a ready ``run_v2.ServicesClient`` (REST transport); overrides ``credentials``/``api_endpoint``.
        default_project: project when ``spec.cloudRun.project`` is unset; else the credentials' project.
        default_regions: regions ``list_owned`` scans when none are given.
        retry_policy: backoff for throttling and 5xx on each call.
        operation_timeout_seconds: longest wait on a create/update/delete operation per call; after it the
            service is reported not ready ("deploying") and the next reconcile looks again.
        operation_poll_initial_seconds / operation_poll_max_seconds: operation polling interval bounds.
        request_timeout_seconds: timeout of each HTTP request.
        redact_values: secret strings scrubbed from every error message (``from_secret`` passes the Secret's).
    """

    classify_error = staticmethod(classify_google_error)

    name: TargetName = TargetName.CLOUDRUN

    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        api_endpoint: str | None = None,
        client: run_v2.ServicesClient | None = None,
        default_project: str | None = None,
        default_regions: Sequence[str] = ("us-central1",),
        retry_policy: RetryPolicy | None = None,
        operation_timeout_seconds: float = 120.0,
        operation_poll_initial_seconds: float = 1.0,
        operation_poll_max_seconds: float = 10.0,
        request_timeout_seconds: float = 30.0,
        redact_values: Sequence[str] = (),
    ) -> None:
        self._credentials = credentials
        self._secret_values = tuple(redact_values)
        self._api_endpoint = api_endpoint
        self._client = client
        self._default_project = default_project
        self._credentials_project: str | None = None
        self.default_regions = tuple(default_regions)
        self.retry_policy = retry_policy or RetryPolicy()
        self.operation_timeout_seconds = operation_timeout_seconds
        self._polling = polling.DEFAULT_POLLING.with_delay(
            initial=operation_poll_initial_seconds, maximum=operation_poll_max_seconds, multiplier=1.5
        )
        self.request_timeout_seconds = request_timeout_seconds
        self._lock = threading.Lock()

    @classmethod
    def from_secret(cls, secret_data: SecretData, *, key: str | None = None, **kwargs: Any) -> CloudRunTarget:
        """A target using the service-account key in a Secret's decoded ``data`` (see ``credentials.py``)."""
        kwargs.setdefault("redact_values", secret_values(secret_data))
        return cls(credentials=google_credentials_from_secret(secret_data, key=key), **kwargs)

    # -------------------------------------------------------------------------------- Target interface

    async def list_owned(
        self, *, project: str | None = None, regions: Sequence[str] | None = None, owner_uid: str | None = None
    ) -> list[naming.OwnedResource]:
        """Every Cloud Run service this operator owns in ``project`` and ``regions`` (by ownership label),
        optionally only those of one workload uid: for leak checks and a garbage sweep."""
        return await asyncio.to_thread(self.list_owned_sync, project=project, regions=regions, owner_uid=owner_uid)

    # -------------------------------------------------------------------------------- names

    def service_name(self, workload: InferenceWorkload) -> str:
        """Full resource name ``projects/P/locations/R/services/ID`` of the workload's service."""
        return f"{self._parent(workload)}/services/{self.service_id(workload)}"

    @staticmethod
    def service_id(workload: InferenceWorkload) -> str:
        return naming.cloud_run_service_id(workload.metadata.namespace, workload.metadata.name)

    def _parent(self, workload: InferenceWorkload) -> str:
        return f"projects/{self._project(workload.spec.cloud_run.project)}/locations/{workload.spec.cloud_run.region}"

    def _project(self, project: str | None) -> str:
        if project:
            return project
        if self._default_project:
            return self._default_project
        self._services()  # resolving ADC also yields its project
        if self._credentials_project:
            return self._credentials_project
        raise PermanentTargetError(
            "spec.cloudRun.project is not set and the operator has no default Google Cloud project"
        )

    # -------------------------------------------------------------------------------- sync implementation

    def ensure_sync(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        """Blocking ``ensure`` (run it in a worker thread). After a project or region edit the service recorded
        under the old name is reported (it serves) until the new one is ready (``held_while_moving``)."""
        state = self._ensure_here(workload, desired)
        moving = self._names_of(workload)[0] != self.service_name(workload)
        targets = workload.status.targets
        return held_while_moving(targets.cloudrun if targets is not None else None, moving, state)

    def _ensure_here(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        owner = _owner_of(workload)
        want = build_service(workload, desired)
        parent = self._parent(workload)
        service_id = self.service_id(workload)
        name = f"{parent}/services/{service_id}"
        current = self._get(name)
        if current is None:
            log.info("creating Cloud Run service %s for %s", name, workload.key)
            operation = self._call("create Cloud Run service", self._create, parent, want, service_id)
            if operation is not None:
                return self._finish(operation, name, "create")
            # It exists after all: created by an earlier attempt whose answer never arrived. Adopt it if ours.
            current = self._get(name)
            if current is None:
                raise RetryableTargetError(f"Cloud Run service {name} reported as existing but not found")
        self._check_owner(current, owner, name)
        changed = service_differences(want, current)
        if not changed:
            return _state(current)
        log.info("updating Cloud Run service %s for %s: %s differ", name, workload.key, ", ".join(changed))
        update = run_v2.Service(want)
        update.name = name
        update.labels = {**current.labels, **want.labels}  # keep labels other tools put there
        update.annotations = dict(current.annotations)
        operation = self._call("update Cloud Run service", self._update, update)
        return self._finish(operation, name, "update")

    def observe_sync(self, workload: InferenceWorkload) -> TargetState | None:
        """Blocking ``observe``."""
        owner = _owner_of(workload)
        name = self.service_name(workload)
        current = self._get(name)
        if current is None:
            return None
        self._check_owner(current, owner, name)
        return _state(current)

    def retire_sync(self, workload: InferenceWorkload) -> bool:
        """Blocking ``retire``: True once no service of this workload exists, under the name recorded when it was
        created (``status.targets.cloudrun.name``: project and region included) and the one the spec names now: a
        project or region edit never orphans the service made under the old one."""
        owner = _owner_of(workload)
        gone = True
        for name in self._names_of(workload):
            gone = self._retire_named(name, owner, str(workload.key)) and gone
        return gone

    def _names_of(self, workload: InferenceWorkload) -> list[str]:
        recorded = workload.status.targets.cloudrun if workload.status.targets is not None else None
        names = []
        suffix = f"/services/{self.service_id(workload)}"
        # only this workload's own service id counts (a patched status cannot widen what is deleted)
        if recorded is not None and recorded.name and recorded.name.endswith(suffix):
            if recorded.name.startswith("projects/") and recorded.name.count("/") == 5:
                names.append(recorded.name)
        try:
            names.append(self.service_name(workload))
        except PermanentTargetError:
            # no project (none in the spec, e.g. a workload that names a ServerlessTarget for Lambda only, and no
            # default): nothing can have been created under the spec's name, and a deletion must not wait for one
            pass
        return list(dict.fromkeys(names))

    def retire_owned_sync(self, resource: naming.OwnedResource) -> bool:
        """Delete a service ``list_owned`` reported (the sweep: its workload is gone), after checking its owner
        label once more; True once it is gone."""
        return self._retire_named(f"{resource.location}/services/{resource.name}", resource.owner, "a deleted workload")

    async def retire_owned(self, resource: naming.OwnedResource) -> bool:
        return await asyncio.to_thread(self.retire_owned_sync, resource)

    def _retire_named(self, name: str, owner: naming.Owner, who: str) -> bool:
        current = self._get(name)
        if current is None:
            return True
        if not self._owned_by(current, owner):
            log.warning("not deleting Cloud Run service %s: it is not owned by %s", name, who)
            return True
        log.info("deleting Cloud Run service %s of %s", name, who)
        operation = self._call("delete Cloud Run service", self._delete, name)
        if operation is None:
            return True
        try:
            self._call("wait for Cloud Run delete", self._wait, operation)
        except StillInProgressError:
            return False
        return self._get(name) is None

    def list_owned_sync(
        self, *, project: str | None = None, regions: Sequence[str] | None = None, owner_uid: str | None = None
    ) -> list[naming.OwnedResource]:
        """Blocking ``list_owned``."""
        owned: list[naming.OwnedResource] = []
        for region in regions or self.default_regions:
            parent = f"projects/{self._project(project)}/locations/{region}"
            for service in self._call("list Cloud Run services", self._list, parent):
                owner = naming.owner_from_cloud_run_labels(service.labels)
                if owner is None or (owner_uid is not None and owner.uid != naming.gcp_label_value(owner_uid)):
                    continue
                owned.append(naming.OwnedResource(service.name.rsplit("/", 1)[-1], parent, owner))
        return owned

    # -------------------------------------------------------------------------------- helpers

    def _services(self) -> run_v2.ServicesClient:
        with self._lock:
            if self._client is None:
                credentials = self._credentials
                if credentials is None:
                    import google.auth

                    try:
                        credentials, self._credentials_project = google.auth.default(scopes=list(GCP_SCOPES))
                    except Exception as exc:
                        raise self._classify(exc) from exc
                else:
                    self._credentials_project = getattr(credentials, "project_id", None)
                options = {"api_endpoint": self._api_endpoint} if self._api_endpoint else None
                self._client = run_v2.ServicesClient(credentials=credentials, transport="rest", client_options=options)
            return self._client

    def _get(self, name: str) -> run_v2.Service | None:
        def get() -> run_v2.Service | None:
            try:
                return self._services().get_service(name=name, retry=None, timeout=self.request_timeout_seconds)
            except gexc.NotFound:
                return None

        return self._call("get Cloud Run service", get)

    def _create(self, parent: str, service: run_v2.Service, service_id: str) -> gapic_operation.Operation | None:
        try:
            return self._services().create_service(
                parent=parent,
                service=service,
                service_id=service_id,
                retry=None,
                timeout=self.request_timeout_seconds,
            )
        except gexc.Conflict:
            return None  # over REST a duplicate create is 409 Conflict (not AlreadyExists)

    def _update(self, service: run_v2.Service) -> gapic_operation.Operation:
        return self._services().update_service(service=service, retry=None, timeout=self.request_timeout_seconds)

    def _delete(self, name: str) -> gapic_operation.Operation | None:
        try:
            return self._services().delete_service(name=name, retry=None, timeout=self.request_timeout_seconds)
        except gexc.NotFound:
            return None

    def _list(self, parent: str) -> list[run_v2.Service]:
        pager = self._services().list_services(parent=parent, retry=None, timeout=self.request_timeout_seconds)
        return list(pager)

    def _wait(self, operation: gapic_operation.Operation) -> Any:
        return operation.result(  # type: ignore[no-untyped-call]
            timeout=self.operation_timeout_seconds,
            polling=self._polling,
            retry=gretry.Retry(predicate=lambda _: False),  # polling RPC errors go to our policy, not a 2nd one
        )

    def _finish(self, operation: gapic_operation.Operation, name: str, verb: str) -> TargetState:
        """Wait for a create/update. A rollout that failed or is still running is a not-ready state (the service
        exists and is ours), not an exception; the next reconcile looks again."""
        try:
            result = self._call(f"wait for Cloud Run {verb}", self._wait, operation)
        except StillInProgressError:
            current = self._get(name)
            if current is None:
                raise
            state = _state(current)
            return state if state.ready else replace(state, message=f"{verb} still running")
        except PermanentTargetError as err:
            if not isinstance(err.__cause__, gexc.GoogleAPICallError):
                raise
            current = self._get(name)  # the operation failed, e.g. the revision did not start
            if current is None:
                raise
            state = _state(current)
            return state if state.ready else replace(state, message=err.message)
        if isinstance(result, run_v2.Service) and result.name:
            return _state(result)
        current = self._get(name)
        if current is None:
            raise RetryableTargetError(f"Cloud Run service {name} not found after {verb}")
        return _state(current)

    @staticmethod
    def _owned_by(service: run_v2.Service, owner: naming.Owner) -> bool:
        found = naming.owner_from_cloud_run_labels(service.labels)
        return found is not None and found.uid == naming.gcp_label_value(owner.uid)

    def _check_owner(self, service: run_v2.Service, owner: naming.Owner, name: str) -> None:
        if self._owned_by(service, owner):
            return
        found = naming.owner_from_cloud_run_labels(service.labels)
        whose = (
            f"it belongs to workload {found.namespace}/{found.name} (uid {found.uid})"
            if found is not None
            else "it was not created by inference-placement"
        )
        raise NotOwnedError(
            f"Cloud Run service {name} already exists and {whose}; it is left untouched "
            "(delete it or rename the workload)",
            status_code=409,
        )
