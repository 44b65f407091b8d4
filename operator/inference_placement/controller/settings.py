"""Operator settings: typed, explicit, passed in; nothing is parsed at import time. Units are in the names.

``inference-placement run`` builds one ``OperatorSettings`` from its flags and its ``--set GROUP.KEY=VALUE`` options
(``build_settings``). The flags are the top-level fields; each ``--set`` group (``router``, ``cloudrun``, ``lambda``,
``migration``, ``metrics``, ``cluster``) is a nested model whose fields are spelled in camelCase on the command line
(``router.confirmTimeoutSeconds``) and in snake_case in the code (``settings.router.confirm_timeout_seconds``).
Whatever reads a setting is handed the group it needs (``runtime.build_router(settings.router, ...)``).

An unknown group or key, and a value that does not fit its field, is a ``SettingsError`` naming the key; the CLI
reports it as a usage error. An empty value (``--set router.url=``) means the field's default. Every field's
docstring (its unit, default and effect) is its description, and ``docs/settings-reference.md`` is generated from
these models (``docs/generate.py``).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import (
    AfterValidator,
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from inference_placement.controller.leader import LeaseTimings
from inference_placement.controller.migration import MigrationTimings
from inference_placement.policy.actuation import WakeTimings
from inference_placement.policy.dra import GPU_DEVICE_CLASS, MIG_DEVICE_CLASS, DRAClasses, GPURequest, SharingStrategy
from inference_placement.policy.node_labels import (
    NodeLabels,
    SpotLabels,
    SpotProvider,
    spot_labels_for,
    spot_provider,
)
from inference_placement.policy.traffic_health import TrafficGate
from inference_placement.routing.manifests import DEFAULT_ENVOY_IMAGE
from inference_placement.routing.model import CLUSTER_DOMAIN, UpstreamAddress

__all__ = [
    "PullPolicy",
    "Seconds",
    "ShiftSteps",
    "Url",
    "ClusterSettings",
    "CloudRunSettings",
    "LambdaSettings",
    "MetricsSettings",
    "SweepSettings",
    "TenancySettings",
    "MigrationSettings",
    "OperatorSettings",
    "RouterSettings",
    "SettingsError",
    "build_settings",
    "default_text",
    "describe_type",
    "parse_set_options",
    "set_groups",
    "set_keys",
]


class SettingsError(ValueError):
    """A flag or ``--set`` option the operator does not accept; the message names the key and what it expects."""


# ----------------------------------------------------------------------------------------------- value parsers


def _url(value: str) -> str:
    UpstreamAddress.from_url(value)  # ValueError: not an http(s) URL
    return value


def _comma_list(value: Any) -> Any:
    """``10,50,100`` -> ``["10", "50", "100"]`` (pydantic then makes each an int)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _pairs(value: Any) -> Any:
    """``published=url,published2=url2`` -> a mapping."""
    if not isinstance(value, str):
        return value
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        published, sep, connect = item.partition("=")
        if not sep or not published.strip() or not connect.strip():
            raise ValueError(f"expected PUBLISHED=URL, got {item!r}")
        pairs[published.strip()] = connect.strip()
    return pairs


def _url_pairs(value: dict[str, str]) -> dict[str, str]:
    for published, connect in value.items():
        _url(published)
        _url(connect)
    return value


def _shift_steps(value: tuple[int, ...]) -> tuple[int, ...]:
    if not value or value[-1] != 100 or list(value) != sorted(set(value)) or value[0] <= 0:
        raise ValueError(f"must rise strictly to 100, got {','.join(map(str, value))}")
    return value


Url = Annotated[str, AfterValidator(_url)]
_AwsAccount = Annotated[str, StringConstraints(pattern=r"^[0-9]{12}$")]
"""A 12-digit AWS account id."""
"""An http(s) URL, or ``host:port`` (read as http)."""
_DeviceClassName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", max_length=253)
]
"""A DeviceClass name (a DNS subdomain)."""
_ObjectName = _DeviceClassName
"""A ConfigMap's (any object's) name: a DNS subdomain."""
PullPolicy = Literal["Always", "IfNotPresent", "Never"]
"""A container's imagePullPolicy."""
Seconds = Annotated[float, Gt(0)]
"""A duration in seconds, > 0."""


def _latency_buckets(value: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """The router's own checks (positive, rising), at start-up rather than when the router is built."""
    if value is not None:
        from inference_placement.routing.envoy import EnvoySettings

        EnvoySettings(latency_buckets_ms=value)
    return value


ShiftSteps = Annotated[tuple[int, ...], BeforeValidator(_comma_list), AfterValidator(_shift_steps)]
"""Percentages, comma-separated on the command line, rising strictly to 100."""


# ----------------------------------------------------------------------------------------------- --set groups


class _Group(BaseModel):
    """One ``--set`` group: its fields are set as ``GROUP.camelCaseName=VALUE``."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=AliasGenerator(validation_alias=to_camel),
        validate_by_name=True,
        validate_by_alias=True,
        use_attribute_docstrings=True,
        str_strip_whitespace=True,
    )


_WAKE = WakeTimings()


class RouterSettings(_Group):
    """The stable-endpoint router the operator keeps in step with the workloads (``routing/``)."""

    mode: Literal["off", "files", "cluster"] = "off"
    """Which router: ``off`` (none), ``files`` (a local Envoy reading ``xdsDir``: the demo and the tests) or
    ``cluster`` (an Envoy Deployment, Service and ConfigMap the operator manages in ``namespace``, and an
    ExternalName Service per workload). Default ``off``."""
    url: Url | None = None
    """The router's URL as the operator reaches it; when set, keep-warm pings go through it, like client traffic.
    Default: unset (no keep-warm pings)."""
    xds_dir: Path | None = None
    """``files`` mode: directory the Envoy reads ``cds.json`` and ``rds.json`` from, where the operator writes them.
    Default: unset; required with ``mode=files``."""
    admin_url: Url | None = None
    """``files`` mode: the Envoy's admin or health listener URL, where every route change is confirmed. Default:
    unset; required with ``mode=files``."""
    envoy_binary: str | None = None
    """``files`` mode: an ``envoy`` binary that validates each config (``envoy --mode validate``) before it is
    written. Default: unset (no validation)."""
    cluster_domain: str = CLUSTER_DOMAIN
    """Kubernetes cluster DNS domain, for the ``NAME.NAMESPACE.svc.<domain>`` host form. Default ``cluster.local``."""
    gcp_metadata: Url | None = None
    """``host:port`` or URL of the metadata server Cloud Run ID tokens are fetched from. Default: unset (the real
    ``metadata.google.internal:80``); tests and the demo point it at a loopback fake."""
    address_overrides: Annotated[dict[str, str], BeforeValidator(_pairs), AfterValidator(_url_pairs)] = Field(
        default_factory=dict
    )
    """Comma-separated ``PUBLISHED=URL`` pairs: connect to URL for an endpoint that status publishes as PUBLISHED
    (loopback stand-ins in tests and the demo). Default: none."""
    lambda_endpoint: Url | None = None
    """Set: the router invokes functions through the Lambda Invoke API at this URL (Envoy's ``aws_lambda`` filter;
    for functions that answer Lambda-proxy JSON themselves) instead of their Function URLs. Default: unset (every
    function through its Function URL, SigV4-signed: docs/lambda.md)."""
    lambda_passthrough: bool = False
    """With ``lambdaEndpoint``: send the request body to the function unchanged, and return its answer unchanged
    (no API Gateway-style event). Default ``false``."""
    lambda_url_endpoint: Url | None = None
    """URL the router connects to for every Function URL (Host and signature stay the URL's): a local stand-in of
    AWS's Function URL front end (tests, the demo). Default: unset (the Function URL itself, over TLS)."""
    namespace: str = "inference-placement"
    """``cluster`` mode: namespace of the router's Deployment, Service and ConfigMap. Default ``inference-placement``
    (the chart passes its release namespace)."""
    owner_config_map: _ObjectName | None = None
    """``cluster`` mode: a ConfigMap in ``namespace`` that owns the router's Deployment, Service and ConfigMap (an
    owner reference): when it is deleted, Kubernetes' garbage collector deletes them. The chart passes its own
    ConfigMap, so ``helm uninstall`` removes the router with the release. Default: unset (no owner)."""
    image: str = DEFAULT_ENVOY_IMAGE
    """``cluster`` mode: the Envoy image of the router Deployment. Default: the image the operator is tested with
    (``routing.manifests.DEFAULT_ENVOY_IMAGE``)."""
    replicas: Annotated[int, Ge(1)] = 2
    """``cluster`` mode: replicas of the router Deployment. Default 2."""
    image_pull_policy: PullPolicy | None = None
    """``cluster`` mode: imagePullPolicy of the router's container. Default: unset (Kubernetes' default)."""
    service_account: str | None = None
    """``cluster`` mode: the ServiceAccount the router Pods run as (the chart creates its own, never the operator's).
    Default: unset (the namespace's ``default``)."""
    automount_token: bool = False
    """``cluster`` mode: mount the router ServiceAccount's API token into its Pods. The router never calls the
    Kubernetes API (IRSA and GKE workload identity need no mounted token either); only a provider whose credential
    plugin reads it needs it. Default ``false``."""
    confirm_timeout_seconds: Seconds = 180.0
    """``cluster`` mode: seconds to wait until every router Pod serves a route change before it counts as failed.
    Default 180 (the kubelet refreshes ConfigMap mounts about once a minute)."""
    spillover: bool = False
    """Burst spillover: the policy may keep base replicas on the cluster and have the router retry what their model
    servers refuse at their queue cap on a serverless target the workload allows (``MAX_IN_FLIGHT`` env on the
    replicas while it spills). Needs a router (``mode`` files or cluster). Default ``false``."""
    overflow_port: Annotated[int, Ge(1), Le(65535)] | None = None
    """Loopback port of the router's overflow listener, the hop a spilled request takes to its serverless target
    (``routing.envoy.EnvoySettings.overflow_port``); with it (and scale to zero), a request that finds no pod at
    zero replicas may go to an allowed serverless target instead of being held (serverless as the activator).
    ``cluster`` mode: default 9905 when ``spillover`` is on; ``files`` mode: the port the local Envoy's bootstrap
    listens on. Default: unset."""
    activator_image: str | None = None
    """``cluster`` mode: image of the router's activator (``routing.activator``), run as a second container in the
    router Pod next to Envoy, on loopback port 9906; it holds the requests of a workload with no ready pod and no
    serverless target. Its ``/metrics`` is the Pod's port ``activator`` (9904). The operator's own image is the one
    (the chart passes it when ``router.activator.enabled``). Default: unset (no activator container)."""
    activator_port: Annotated[int, Ge(1), Le(65535)] | None = None
    """``files`` mode: loopback port of the activator running next to the local Envoy (``python -m
    inference_placement.routing.activator``), where a holding route's composite cluster falls through. With it
    (and ``activatorMetricsUrl``) the cluster target may scale to zero. Default: unset."""
    activator_metrics_url: Url | None = None
    """``files`` mode: the activator's ``/metrics`` URL, read every ``wakePollSeconds`` for wake-ups. Default:
    unset (``cluster`` mode reads every router Pod's activator through the apiserver's Pod proxy)."""
    pods_by_address: bool = True
    """Route to a workload's ready model-server Pods by IP, from its Service's EndpointSlices (watched; needs
    list/watch on ``endpointslices.discovery.k8s.io``), so that "no ready pod" falls through to the activator or a
    serverless target at once; an address in ``addressOverrides`` still wins. Scale to zero needs it. Default
    ``true``."""
    wake_poll_seconds: Annotated[float, Gt(0), Le(30)] = _WAKE.poll_seconds
    """Seconds between two reads of the activators' held requests (a held request wakes its workload within
    about this long). Default 0.5."""
    wake_keep_seconds: Annotated[float, Ge(0)] = _WAKE.keep_seconds
    """Seconds a workload woken from zero keeps at least one replica whatever the decision (the traffic that woke
    it must reach the metrics the policy reads before it may go back to zero). Default 60."""
    cloud_run_host_suffixes: Annotated[tuple[str, ...], BeforeValidator(_comma_list)] = (".run.app",)
    """Comma-separated host suffixes a Cloud Run URL in a workload's status must end with before the router sends
    traffic to it (and the host must start with the workload's own service id). Default ``.run.app``."""
    lambda_accounts: Annotated[tuple[_AwsAccount, ...], BeforeValidator(_comma_list)] = ()
    """Comma-separated AWS account ids whose functions the router may invoke (a function ARN in status from any
    other account is refused). Default: none (any account; set it in production)."""
    lambda_regions: Annotated[tuple[str, ...], BeforeValidator(_comma_list)] = ()
    """Comma-separated AWS regions whose functions the router may invoke. Default: none (any region)."""
    trusted_origins: Annotated[tuple[Url, ...], BeforeValidator(_comma_list)] = ()
    """Comma-separated published origins the router accepts as they are, without the checks above: local
    stand-ins that publish a loopback URL (tests and the demo). Default: none."""
    latency_buckets_ms: Annotated[
        tuple[float, ...] | None, BeforeValidator(_comma_list), AfterValidator(_latency_buckets)
    ] = None
    """Comma-separated bounds (milliseconds) of the router's request-time histogram, rising; the SLO-miss share
    is read at the largest bound at or under each objective, so include the objectives in use. Default: unset
    (``routing.envoy.DEFAULT_LATENCY_BUCKETS_MS``)."""

    @model_validator(mode="after")
    def _files_mode_is_complete(self) -> RouterSettings:
        if self.mode == "files" and (self.xds_dir is None or self.admin_url is None):
            raise ValueError("router.mode=files needs router.xdsDir and router.adminUrl")
        if self.activator_port is not None and self.activator_metrics_url is None:
            raise ValueError("router.activatorPort needs router.activatorMetricsUrl (where its held requests are read)")
        return self

    @property
    def scales_to_zero(self) -> bool:
        """The router can answer a request that finds no pod (the activator holds it): the cluster may go to zero
        replicas."""
        has_activator = self.activator_image is not None if self.mode == "cluster" else self.activator_port is not None
        return self.mode != "off" and self.pods_by_address and has_activator

    @property
    def falls_through(self) -> bool:
        """At zero the router can send a request that finds no pod to a serverless target instead of holding it
        (serverless as the activator, ``policy.actuation.zero_answer``): it scales to zero and has the overflow
        listener that hop takes (``overflowPort``, or ``spillover``, which gives it its default in cluster mode)."""
        return self.scales_to_zero and (self.overflow_port is not None or self.spillover)


class CloudRunSettings(_Group):
    """The Cloud Run target (``targets/cloudrun.py``)."""

    enabled: bool = False
    """Offer the Cloud Run target to the workloads that allow it (also on when ``endpoint`` is set). Default
    ``false``."""
    project: str | None = None
    """GCP project of the services a workload does not name one for. Default: unset (the workload must name it)."""
    credentials_dir: Path | None = None
    """A Secret mounted as a directory (one file per key) holding a service account key; its values are scrubbed
    from every log line. Default: unset (workload identity or the default credential chain)."""
    endpoint: str | None = None
    """Cloud Run Admin API endpoint of a local stand-in (``http://127.0.0.1:PORT``; tests and the demo); setting it
    enables the target. Default: unset (``run.googleapis.com``)."""
    anonymous: bool = True
    """With ``endpoint`` and no ``credentialsDir``: talk to the stand-in with anonymous credentials. Default
    ``true``."""
    request_timeout_seconds: Seconds = 30.0
    """Seconds each Cloud Run API request may take. Default 30."""

    @property
    def active(self) -> bool:
        """Whether the target is offered."""
        return self.enabled or self.endpoint is not None


class LambdaSettings(_Group):
    """The AWS Lambda target (``targets/aws_lambda.py``)."""

    enabled: bool = False
    """Offer the Lambda target to the workloads that allow it (also on when ``endpoint`` is set). Default
    ``false``."""
    region: str = "us-east-1"
    """AWS region of the functions a workload does not name one for. Default ``us-east-1``."""
    credentials_dir: Path | None = None
    """A Secret mounted as a directory (keys ``aws_access_key_id``, ``aws_secret_access_key``, optional
    ``aws_session_token``); its values are scrubbed from every log line. Default: unset (IRSA or the default
    credential chain)."""
    endpoint: str | None = None
    """Lambda API endpoint of a local stand-in (``http://127.0.0.1:PORT``, e.g. moto; tests and the demo); setting
    it enables the target. Default: unset (AWS)."""
    read_timeout_seconds: Seconds = 30.0
    """Seconds to wait for each Lambda API response. Default 30."""

    @property
    def active(self) -> bool:
        """Whether the target is offered."""
        return self.enabled or self.endpoint is not None


class SweepSettings(_Group):
    """The periodic sweep for leaked cloud resources (``controller/sweep.py``)."""

    interval_seconds: Annotated[float, Ge(0)] = 600.0
    """Seconds between two sweeps for cloud resources labelled/tagged as this operator's whose workload no longer
    exists (0 = no sweep). Default 600."""
    dry_run: bool = False
    """Report what the sweep would retire (log line, ``inference_placement_orphans_total{action="dry-run"}``)
    without deleting anything. Default ``false``."""
    lambda_regions: Annotated[tuple[str, ...], BeforeValidator(_comma_list)] = ()
    """Comma-separated AWS regions the sweep lists Lambda functions in. Default: none (``lambda.region`` only)."""
    cloud_run_regions: Annotated[tuple[str, ...], BeforeValidator(_comma_list)] = ()
    """Comma-separated Google Cloud regions the sweep lists Cloud Run services in (project ``cloudrun.project``).
    Default: none (us-central1 only)."""


class TenancySettings(_Group):
    """Who may use which cloud target (``policy/tenancy.py``; docs/security.md)."""

    allow_inline_cloud_identity: bool = False
    """Honour the deprecated inline cloud fields of a workload that names no ServerlessTarget
    (``spec.cloudRun.project``/``serviceAccount``, ``spec.lambda.roleArn``, the regions and images it writes): any
    team that can create a workload then deploys with the operator's identity wherever it may. Only for a migration
    from the inline fields (docs/security.md, "Migrating from inline cloud fields"). Default ``false``."""


_TIMINGS = MigrationTimings()
_GATE = TrafficGate()


class MigrationSettings(_Group):
    """How a workload moves between targets (``controller/migration.py``)."""

    shift_steps_percent: ShiftSteps = Field(_TIMINGS.shift_steps_percent, validation_alias="shiftSteps")
    """Comma-separated traffic shares (percent) on the new target at each shifting step, rising strictly to 100.
    Default ``10,50,100``."""
    step_hold_seconds: Annotated[float, Ge(0)] = _TIMINGS.step_hold_seconds
    """Seconds each traffic step is held (and watched) before the next. Default 10."""
    drain_seconds: Annotated[float, Ge(0)] = _TIMINGS.drain_seconds
    """Seconds the source keeps serving in-flight requests after all traffic has moved. Default 30."""
    provision_timeout_seconds: Seconds = _TIMINGS.provision_timeout_seconds
    """Seconds to wait for the new target to become healthy (model load included) before rolling back. Default
    900."""

    traffic_max_failure_share: Annotated[float, Ge(0), Le(1)] = _GATE.max_failure_share
    """Largest share (0..1) of the new target's requests in one traffic step (the shift steps, then the drain and the
    retire together) that may fail (5xx, resets, 401/403), as the router counts them, before the migration rolls back
    (shifting, draining) or holds the source's retire (retiring). Default 0.05."""
    traffic_max_slow_share: Annotated[float, Ge(0), Le(1)] = _GATE.max_slow_share
    """Largest share (0..1) of the new target's requests in one traffic step that may be slower than the workload's
    latency objective (``slo.latencyP99Seconds``) before the same happens. Default 0.25."""
    traffic_min_requests: Annotated[int, Ge(1)] = _GATE.min_requests
    """Fewest requests a traffic step's window needs before it is judged; with fewer the step goes on. Default 10."""

    def timings(self) -> MigrationTimings:
        """The migration state machine's timings."""
        return MigrationTimings(
            shift_steps_percent=self.shift_steps_percent,
            step_hold_seconds=self.step_hold_seconds,
            drain_seconds=self.drain_seconds,
            provision_timeout_seconds=self.provision_timeout_seconds,
            traffic_gate=TrafficGate(
                max_failure_share=self.traffic_max_failure_share,
                max_slow_share=self.traffic_max_slow_share,
                min_requests=self.traffic_min_requests,
            ),
        )


def _header_pairs(value: Any) -> Any:
    """``X-Scope-OrgID=tenant-a,X-Other=v`` -> a mapping (a header's value may not hold a comma here)."""
    if not isinstance(value, str):
        return value
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, header = item.partition("=")
        if not sep or not name.strip() or not header.strip():
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        pairs[name.strip()] = header.strip()
    return pairs


def _header_names(value: dict[str, str]) -> dict[str, str]:
    for name, header in value.items():
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name) or any(c in header for c in "\r\n"):
            raise ValueError(f"invalid HTTP header {name!r}")
    return value


class MetricsSettings(_Group):
    """The Prometheus source of the workloads' traffic metrics (``metrics/prometheus.py``), and how the operator
    authenticates to a managed or multi-tenant Prometheus (docs/metrics.md "Managed Prometheus")."""

    timeout_seconds: Seconds = 10.0
    """Seconds each Prometheus query (one HTTP request) may take before the fetch counts as failed. Default 10."""
    bearer_token_file: Path | None = None
    """File holding a token sent as ``Authorization: Bearer``, read again for every query (a rotated token needs no
    restart). Default: unset."""
    basic_auth_username: str | None = None
    """HTTP basic auth user name (with ``basicAuthPasswordFile``). Default: unset."""
    basic_auth_password_file: Path | None = None
    """File holding the basic auth password, read again for every query. Default: unset."""
    headers: Annotated[dict[str, str], BeforeValidator(_header_pairs), AfterValidator(_header_names)] = Field(
        default_factory=dict
    )
    """Comma-separated ``NAME=VALUE`` headers sent with every query, e.g. ``X-Scope-OrgID=tenant-a`` (Mimir, Cortex,
    Grafana Cloud tenancy). Default: none."""
    ca_file: Path | None = None
    """PEM bundle of the CAs that sign an ``https://`` Prometheus' certificate. Default: unset (the system's trust
    store)."""

    @model_validator(mode="after")
    def _one_authorization(self) -> MetricsSettings:
        if (self.basic_auth_username is None) != (self.basic_auth_password_file is None):
            raise ValueError("basicAuthUsername and basicAuthPasswordFile go together")
        if self.bearer_token_file is not None and self.basic_auth_username is not None:
            raise ValueError("use bearerTokenFile or basic auth, not both")
        if self.bearer_token_file is not None or self.basic_auth_username is not None:
            if any(name.lower() == "authorization" for name in self.headers):
                raise ValueError("an Authorization header conflicts with bearerTokenFile / basic auth")
        return self


class ClusterSettings(_Group):
    """The cluster target (``targets/cluster.py``)."""

    image_pull_policy: PullPolicy | None = None
    """imagePullPolicy of the model servers' containers. Default: unset (Kubernetes' default)."""
    dry_run: bool = False
    """Decide and record in status, apply nothing in the cluster (the fleet-scale benchmark, shadow evaluation).
    Default ``false``."""
    gpu_request: GPURequest = "auto"
    """How a replica requests its GPU: ``extendedResources`` (NVIDIA's device plugin: ``nvidia.com/gpu``,
    ``nvidia.com/mig-<profile>``, time-sliced ``nvidia.com/gpu``), ``dra`` (a ResourceClaimTemplate per workload
    claiming from the DeviceClasses below; capacity from ResourceSlices and allocated ResourceClaims), or ``auto``:
    DRA for whole and shared GPUs where ``draGpuDeviceClass`` exists, for MIG where ``draMigDeviceClass`` exists,
    extended resources otherwise. Default ``auto``."""
    gpu_node_labels: NodeLabels = "gfd"
    """The node labels a replica selects its GPU by, in what the cluster's node autoscaler can act on before the
    node exists (``policy/node_labels.py``, docs/operations.md): ``gfd`` (NVIDIA GPU feature discovery's
    ``nvidia.com/gpu.product`` and friends; the cluster-autoscaler acts on them when the node group templates
    carry them), ``gke`` (``cloud.google.com/gke-accelerator``, ``gke-gpu-partition-size``,
    ``gke-gpu-sharing-strategy``, ``gke-spot``: GKE node auto-provisioning and the cluster-autoscaler), or
    ``karpenter-aws`` (``karpenter.k8s.aws/instance-gpu-name`` / ``instance-gpu-memory``,
    ``karpenter.sh/capacity-type``). Applies to extended-resource GPUs (not DRA claims). Default ``gfd``."""
    spot_node_labels: SpotLabels | None = None
    """How the cluster labels its spot nodes, so a workload asking for spot (``spec.cluster.spot``) can be placed
    there and its pre-emption risk priced with that cloud's facts (``policy/node_labels.py``, ``policy/spot.py``,
    docs/operations.md): ``eks`` (EKS managed node groups: ``eks.amazonaws.com/capacityType: SPOT`` /
    ``ON_DEMAND``; AWS's interruption facts), ``gke`` (``cloud.google.com/gke-spot: "true"``, tolerating the
    ``cloud.google.com/gke-spot=true:NoSchedule`` taint; GCP's), ``karpenter`` (``karpenter.sh/capacity-type:
    spot`` / ``on-demand``; AWS's), or ``none`` (spot nodes cannot be told apart: spot workloads run and are priced
    on-demand). Default: unset, which follows ``gpuNodeLabels`` (``gke`` with ``gke``, ``karpenter`` with
    ``karpenter-aws``, ``none`` with ``gfd``)."""
    dra_gpu_device_class: _DeviceClassName = GPU_DEVICE_CLASS
    """DeviceClass of whole and shared GPUs (NVIDIA's DRA driver: ``gpu.nvidia.com``). Default ``gpu.nvidia.com``."""
    dra_mig_device_class: _DeviceClassName = MIG_DEVICE_CLASS
    """DeviceClass of MIG devices (NVIDIA's DRA driver: ``mig.nvidia.com``). Default ``mig.nvidia.com``."""
    dra_sharing_strategy: SharingStrategy = "none"
    """The sharing config a shared GPU's DRA claim carries (``GpuConfig.sharing.strategy`` of NVIDIA's driver):
    ``TimeSlicing``, ``MPS``, or ``none`` (no config: the driver's default time-slicing between the processes of the
    claims sharing the GPU). The driver accepts ``TimeSlicing`` only with its ``TimeSlicingSettings`` feature gate
    and ``MPS`` only with ``MPSSupport`` (both alpha). Default ``none``."""

    def spot_labels(self) -> SpotLabels:
        """``spot_node_labels``, or the vocabulary that goes with ``gpu_node_labels`` when it is not set."""
        return self.spot_node_labels if self.spot_node_labels is not None else spot_labels_for(self.gpu_node_labels)

    def spot_provider(self) -> SpotProvider | None:
        """The cloud whose spot pre-emption facts apply (None: the operator places nothing on spot)."""
        return spot_provider(self.spot_labels())

    def dra_classes(self) -> DRAClasses:
        """The DeviceClasses and sharing strategy GPUs are claimed with where DRA applies."""
        return DRAClasses(
            gpu=self.dra_gpu_device_class, mig=self.dra_mig_device_class, sharing_strategy=self.dra_sharing_strategy
        )


# ----------------------------------------------------------------------------------------------- the whole


class OperatorSettings(BaseModel):
    """How the operator runs. Built by ``inference-placement run`` from its flags and ``--set`` options."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True, use_attribute_docstrings=True
    )

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty = all namespaces (cluster-wide)."""
    tick_seconds: Seconds = 30.0
    """Period of the fleet-wide loop that refreshes metrics and re-decides every workload, in seconds."""
    dirty_debounce_seconds: Annotated[float, Ge(0)] = 0.5
    """After a spec change, seconds to wait for more changes before reconciling the changed workloads."""
    write_concurrency: Annotated[int, Ge(1)] = 16
    """At most this many apiserver writes in flight (kopf's connector has no connection limit)."""
    max_metrics_staleness_seconds: Seconds = 180.0
    """Metrics older than this many seconds are stale: placement freezes and MetricsAvailable turns False."""
    price_book_path: Path | None = None
    """YAML price book (mounted from a ConfigMap); default: the packaged one."""
    prometheus_url: str | None = None
    """Base URL of the Prometheus that holds the workloads' traffic metrics; default: no metrics (placement frozen)."""
    promql_templates_path: Path | None = None
    """YAML mapping of PromQL templates (requestRate, latencyP99, serviceSeconds, gpuUtilization, selector)."""
    metrics_range_seconds: Annotated[int, Ge(1)] = 1800
    """Trailing window of metrics fetched per tick, in seconds; sustain windows longer than this cannot be
    confirmed (the policy waits)."""
    metrics_step_seconds: Annotated[int, Ge(1)] = 30
    """Resolution of that window, in seconds."""
    kubeconfig: str | None = None
    """Kubeconfig path; default: the in-cluster service account, then ~/.kube/config."""
    health_port: Annotated[int, Ge(0), Lt(65536)] = 8081
    """Port of /healthz for liveness and readiness probes (0 = off)."""
    metrics_port: Annotated[int, Ge(0), Lt(65536)] = 9090
    """Port of the operator's own Prometheus /metrics (0 = off)."""
    peering: str | None = None
    """kopf peering name (kopf's own coordination of operators, not leader election: see ``--leader-elect``); default:
    standalone."""
    leader_elect: bool = True
    """Elect one leader among the operator's replicas on a ``coordination.k8s.io/v1`` Lease: only the leader runs the
    fleet loop and writes status, Events, router config and cloud resources; a standby keeps its caches warm and
    takes over when the Lease expires. Default on; off runs a single replica that always acts."""
    leader_election_namespace: str | None = None
    """Namespace of the Lease; default: the first watched namespace, else the Pod's own namespace, else
    ``default``."""
    leader_election_id: str = "inference-placement"
    """Name of the Lease; replicas with the same name and namespace elect one leader. Default
    ``inference-placement`` (the chart passes its release's full name)."""
    leader_election_identity: str | None = None
    """This replica's name in the Lease, Events and logs; default: ``$POD_NAME`` (the chart sets it), else
    ``HOSTNAME_RANDOM``."""
    lease_duration_seconds: Annotated[float, Ge(1)] = 15.0
    """Seconds a standby waits from the last renew it saw before it takes the Lease. Default 15
    (controller-runtime's)."""
    renew_deadline_seconds: Annotated[float, Ge(1)] = 10.0
    """Seconds the leader keeps acting after its last successful renew was sent; past it, it stops acting (fencing).
    Must be under the lease duration. Default 10."""
    retry_period_seconds: Annotated[float, Ge(0.5)] = 2.0
    """Seconds between renews of the leader and between tries of a standby. Default 2."""
    cloud_finalizer: str = "placement.inference.dev/cloud-resources"
    """Finalizer added only to workloads that own resources outside the cluster."""

    router: RouterSettings = Field(default_factory=RouterSettings)
    """``--set router.*``."""
    cloudrun: CloudRunSettings = Field(default_factory=CloudRunSettings)
    """``--set cloudrun.*``."""
    lambda_: LambdaSettings = Field(default_factory=LambdaSettings, validation_alias="lambda")
    """``--set lambda.*``."""
    migration: MigrationSettings = Field(default_factory=MigrationSettings)
    """``--set migration.*``."""
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    """``--set metrics.*``."""
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    """``--set cluster.*``."""
    sweep: SweepSettings = Field(default_factory=SweepSettings)
    """``--set sweep.*``."""
    tenancy: TenancySettings = Field(default_factory=TenancySettings)
    """``--set tenancy.*``."""

    @model_validator(mode="after")
    def _lease_timings_fit(self) -> OperatorSettings:
        self.lease_timings()  # ValueError naming the three values when they do not fit
        return self

    def lease_timings(self) -> LeaseTimings:
        """The leader election's timings."""
        return LeaseTimings(self.lease_duration_seconds, self.renew_deadline_seconds, self.retry_period_seconds)


def _key(field_name: str, info: FieldInfo) -> str:
    return info.validation_alias if isinstance(info.validation_alias, str) else field_name


def set_groups() -> dict[str, type[BaseModel]]:
    """Each ``--set`` group by the name typed on the command line, with its model."""
    groups: dict[str, type[BaseModel]] = {}
    for name, info in OperatorSettings.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, _Group):
            groups[_key(name, info)] = info.annotation
    return groups


def set_keys(group: type[BaseModel]) -> dict[str, tuple[str, FieldInfo]]:
    """A group's keys as typed on the command line -> (field name in the code, field)."""
    return {_key(name, info): (name, info) for name, info in group.model_fields.items()}


def parse_set_options(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """``["router.mode=files", "router.xdsDir=/x"]`` -> ``{"router": {"mode": "files", "xdsDir": "/x"}}``.

    Raises ``SettingsError`` for an item that is not ``GROUP.KEY=VALUE`` or names an unknown group or key. Values
    stay strings (typed by ``build_settings``); an empty value is left out (the default applies); the last of two
    items with one key wins.
    """
    groups = set_groups()
    parsed: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise SettingsError(f"--set expects KEY=VALUE, got {item!r}")
        group, dot, name = key.partition(".")
        if group not in groups or not dot:
            raise SettingsError(f"--set {key}: unknown group {group!r} (groups: {', '.join(sorted(groups))})")
        known = set_keys(groups[group])
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {group}.{close[0]}?" if close else ""
            raise SettingsError(
                f"--set {key}: unknown key {name!r} of {group} (known: {', '.join(sorted(known))}){hint}"
            )
        if value:
            parsed.setdefault(group, {})[name] = value
        else:
            parsed.get(group, {}).pop(name, None)
    return parsed


def build_settings(set_options: Iterable[str] = (), **flags: Any) -> OperatorSettings:
    """The operator's settings from ``run``'s flags (field names) and ``--set`` items; a ``SettingsError`` names the
    flag or key that is unknown or has a bad value, and what it expects."""
    options = parse_set_options(set_options)
    try:
        return OperatorSettings.model_validate({**flags, **options})
    except ValidationError as err:
        raise SettingsError("; ".join(_explain(error, options) for error in err.errors())) from None


def _explain(error: Mapping[str, Any], options: Mapping[str, Mapping[str, str]]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    groups = set_groups()
    if loc and loc[0] in groups:
        group = groups[loc[0]]
        if len(loc) == 1:  # a rule across keys of the group
            return f"--set {loc[0]}: {message}"
        key = f"{loc[0]}.{loc[1]}"
        given = options.get(loc[0], {}).get(loc[1], error.get("input"))
        info = set_keys(group).get(loc[1], ("", None))[1]
        expected = f"; expected {describe_type(info)}" if info is not None else ""
        return f"--set {key}={given}: {message}{expected}"
    if not loc:
        return message
    info = OperatorSettings.model_fields.get(loc[0])
    expected = f"; expected {describe_type(info)}" if info is not None else ""
    return f"{_flag(loc[0])}={error.get('input')}: {message}{expected}"


def _flag(field_name: str) -> str:
    """The ``run`` flag that sets a top-level field (``price_book_path`` -> ``--price-book``)."""
    return "--namespace" if field_name == "namespaces" else "--" + field_name.removesuffix("_path").replace("_", "-")


# ----------------------------------------------------------------------------------------------- descriptions


_NAMES: dict[Any, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Path: "a path",
}


def _describe(annotation: Any, metadata: Iterable[Any]) -> str:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        inner, *extra = typing.get_args(annotation)
        return _describe(inner, [*extra, *metadata])
    if origin in (Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(_describe(arg, metadata) for arg in options)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin is tuple:
        return "comma-separated integers"
    if origin is dict:
        if any(isinstance(rule, AfterValidator) and rule.func is _header_names for rule in metadata):
            return "comma-separated `NAME=VALUE` HTTP headers"
        return "comma-separated `PUBLISHED=URL` pairs"
    bounds = []
    for rule in metadata:
        if isinstance(rule, Gt):
            bounds.append(f"> {rule.gt:g}")
        elif isinstance(rule, Ge):
            bounds.append(f">= {rule.ge:g}")
        elif isinstance(rule, Lt):
            bounds.append(f"< {rule.lt:g}")
        elif isinstance(rule, Le):
            bounds.append(f"<= {rule.le:g}")
        elif isinstance(rule, AfterValidator) and rule.func is _url:
            return "an http(s) URL or host:port"
    if annotation is type(None):
        return "nothing"
    name = _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return " ".join([name, *bounds])


def describe_type(info: FieldInfo) -> str:
    """What a field accepts, in words (``an integer >= 1``, ``one of `off`, `files`, `cluster```)."""
    return _describe(info.annotation, info.metadata)


def default_text(info: FieldInfo) -> str:
    """A field's default as it would be typed after ``--set KEY=`` (``unset`` for none, ``10,50,100``)."""
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value) or "none"
    if isinstance(value, dict):
        return ",".join(f"{key}={url}" for key, url in value.items()) or "none"
    return str(value)
