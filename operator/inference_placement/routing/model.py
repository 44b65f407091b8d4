"""The route of one workload: which upstream each target is, and the share of traffic each one takes.

Pure: a ``Route`` is derived from the workload's status (``route_from_status``) and an ``EndpointsConfig`` that says
how published endpoints are reached from the router. Rendering it for Envoy lives in ``routing.envoy``; writing the
rendered files lives in ``routing.xds_files``.

Weights come from the migration recorded in status, never from memory, so a restarted operator renders the same
weights the migration had reached:

* no migration: the placement takes 100%;
* a migration shifting traffic: the source takes ``100 - traffic_percent``, the target ``traffic_percent``;
* a migration rolling back: the source takes 100% (the target leaves the route at once);
* nothing serving yet (first placement still provisioning): the route has no serving backend and the router answers
  503 for it (a clear "not placed yet" rather than a connection error).

A backend at weight 0 stays in the route when its upstream is known, so its Envoy cluster exists (and is warm) before
the first request is shifted to it, and a drained source keeps its cluster until the route drops it.

Spillover and scale-to-zero (what the router does once the policy has decided; ``routing.envoy`` renders it): a
route may carry an ``overflow`` (a Cloud Run or Lambda upstream) or a ``hold_seconds`` bound, never both. Then the
cluster backend's share goes to an Envoy composite cluster: [pods, overflow] sends a request the model server refuses
at its queue cap (429/503) to the serverless target on its second attempt, and every request to it while the pods
cluster has no host (scaled to zero); [pods, activator] holds a request that finds no pod in the router's activator
until a pod is ready (or ``hold_seconds`` pass). The pods are best given by address (``PodsUpstream``: the ready pod
IPs), so "no pod" is an empty cluster; a Service address always has its one ClusterIP, and a scaled-to-zero Service
spills only through the connect-failure retry.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from inference_placement.api.names import cloud_run_service_id, lambda_function_name, model_service_name
from inference_placement.api.spec import TargetName
from inference_placement.api.status import InferenceWorkloadStatus, MigrationStep, TargetResourceStatus
from inference_placement.api.workload import InferenceWorkload

__all__ = [
    "Backend",
    "CLUSTER_DOMAIN",
    "CloudRunUpstream",
    "EndpointsConfig",
    "LambdaUpstream",
    "Overflow",
    "PodsUpstream",
    "Route",
    "ServerlessUpstream",
    "RouteError",
    "ServiceUpstream",
    "Upstream",
    "UpstreamAddress",
    "UpstreamTrust",
    "route_for",
    "route_from_status",
    "traffic_weights",
]

CLUSTER_DOMAIN: Final = "cluster.local"
"""Default Kubernetes cluster DNS domain."""
_LAMBDA_HOST_TEMPLATE: Final = "lambda.{region}.amazonaws.com"
_LAMBDA_ARN: Final = re.compile(
    r"^arn:(?P<partition>aws|aws-cn|aws-us-gov):lambda:(?P<region>[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+):"
    r"(?P<account>[0-9]{12}):function:(?P<function>[A-Za-z0-9_-]{1,64})(:(?P<qualifier>[A-Za-z0-9_$-]{1,128}))?$"
)
_FUNCTION_URL_HOST: Final = re.compile(r"^[a-z0-9]{1,63}\.lambda-url\.(?P<region>[a-z0-9-]+)\.on\.aws$")
"""``<url-id>.lambda-url.<region>.on.aws``: the host of a Lambda Function URL (the id is AWS's, not the function's)."""


class RouteError(ValueError):
    """The status names a backend that must take traffic but says nothing the router could send it to."""


@dataclass(frozen=True)
class UpstreamAddress:
    """Where the router opens connections: host (DNS name or IP literal), port, and whether to speak TLS."""

    host: str
    port: int
    tls: bool = False

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("upstream host is empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"upstream port {self.port} out of range 1..65535")

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @classmethod
    def from_url(cls, url: str) -> UpstreamAddress:
        """``http://host:port`` / ``https://host`` (default ports 80/443); anything else is a ``ValueError``."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls)

    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class ServiceUpstream:
    """The in-cluster model Service, over plain HTTP."""

    address: UpstreamAddress


@dataclass(frozen=True)
class PodsUpstream:
    """The model server Pods by address (the ready pod IPs of the workload's Service): one static Envoy cluster whose
    hosts are exactly these. Empty = scaled to zero: a spill route's composite cluster falls through to its next
    sub-cluster at once, and the activator waits until a host appears."""

    addresses: tuple[UpstreamAddress, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.addresses)) != len(self.addresses):
            raise ValueError(f"a pod address appears twice in {self.addresses}")
        if any(not address.is_ip or address.tls for address in self.addresses):
            raise ValueError(f"pod addresses must be plain-HTTP IP literals, got {self.addresses}")


@dataclass(frozen=True)
class CloudRunUpstream:
    """A Cloud Run service: TLS to its URL host, Host rewritten to it, an ID token for ``audience`` per request."""

    host: str
    """The ``*.run.app`` host: the Host header and TLS SNI."""
    audience: str
    """The audience of the ID token the ``gcp_authn`` filter fetches (the service URL)."""
    address: UpstreamAddress
    """Where to connect: ``host:443`` over TLS in production, a loopback stand-in in tests."""


@dataclass(frozen=True)
class LambdaUpstream:
    """A Lambda function, reached one of two ways (docs/lambda.md):

    * its Function URL (``url_host`` set; the production path): the HTTP request goes as it is to
      ``https://<url-id>.lambda-url.<region>.on.aws``, SigV4-signed for service ``lambda`` by Envoy's
      ``aws_request_signing`` filter (the URL's ``AuthType`` is ``AWS_IAM``); AWS turns it into a payload-2.0 event
      that the Lambda Web Adapter in the function turns back into HTTP for the model server;
    * the Invoke API (``url_host`` None, only when ``EndpointsConfig.lambda_endpoint`` is set): Envoy's
      ``aws_lambda`` filter wraps the request in its own JSON, which the Web Adapter does not read; kept for
      functions that answer Lambda-proxy JSON themselves and for tests that stand a plain server in."""

    function_arn: str
    """Qualified ARN (``...:function:NAME:ALIAS``) so the alias and its warm instances serve."""
    region: str
    address: UpstreamAddress
    """Where to connect: the Function URL host (or ``lambda.REGION.amazonaws.com``) on 443 over TLS in production;
    a loopback stand-in over plain HTTP in tests."""
    payload_passthrough: bool = False
    """Invoke API only. False: the request is wrapped in the filter's JSON and the function answers Lambda-proxy
    JSON."""
    url_host: str | None = None
    """The Function URL's host: the Host the request carries and is signed for (None = the Invoke API)."""

    @property
    def host_rewrite(self) -> str:
        """The Host the request is signed for (always the real AWS host, so SigV4 matches real AWS)."""
        return self.url_host or _LAMBDA_HOST_TEMPLATE.format(region=self.region)


Upstream = ServiceUpstream | PodsUpstream | CloudRunUpstream | LambdaUpstream
ServerlessUpstream = CloudRunUpstream | LambdaUpstream


@dataclass(frozen=True)
class Backend:
    """One target of a route and its share of the workload's traffic, in percent."""

    target: TargetName
    upstream: Upstream
    weight: int


@dataclass(frozen=True)
class Overflow:
    """The serverless target that takes what the pods cannot: requests refused at the model server's queue cap
    (429/503, burst spillover) and every request while the pods cluster has no host (scale to zero)."""

    target: TargetName
    upstream: ServerlessUpstream

    def __post_init__(self) -> None:
        if self.target is TargetName.CLUSTER:
            raise ValueError("the overflow of a route is a serverless target, not the cluster")
        expected = CloudRunUpstream if self.target is TargetName.CLOUDRUN else LambdaUpstream
        if not isinstance(self.upstream, expected):
            raise ValueError(f"overflow {self.target.value} needs a {expected.__name__}")


@dataclass(frozen=True)
class Route:
    """The route of one workload: its backends and their weights (summing to 100, or all 0 = nothing serves).

    ``overflow`` or ``hold_seconds`` (at most one) turns the cluster backend's share into a spill: see the module
    docstring. Both need a cluster backend."""

    namespace: str
    name: str
    backends: tuple[Backend, ...] = ()
    overflow: Overflow | None = None
    """Serverless target for what the pods refuse or cannot take (None: no spillover)."""
    hold_seconds: float | None = None
    """Scale to zero without a serverless target: the router's activator holds a request that finds no pod for at
    most this long (the workload's tolerable cold start), then answers 503 with ``Retry-After`` (None: no hold)."""
    first_token: bool = False
    """The workload's objective bounds the time to the first byte (``spec.slo.latencyMeasure: FirstToken``): the
    router measures that time for it, as the client sees it (``routing/envoy.py``, ``FIRST_TOKEN_STAT``)."""

    def __post_init__(self) -> None:
        if not self.namespace or not self.name:
            raise ValueError("a route needs a namespace and a name")
        targets = [b.target for b in self.backends]
        if len(set(targets)) != len(targets):
            raise ValueError(f"{self.key}: a target appears twice in {targets}")
        for backend in self.backends:
            if not 0 <= backend.weight <= 100:
                raise ValueError(f"{self.key}: weight {backend.weight} of {backend.target.value} outside 0..100")
        total = sum(b.weight for b in self.backends)
        if total not in (0, 100):
            raise ValueError(f"{self.key}: weights sum to {total}, not 100")
        if self.overflow is not None and self.hold_seconds is not None:
            raise ValueError(f"{self.key}: a route spills to an overflow target or holds, not both")
        if self.hold_seconds is not None and not 0 < self.hold_seconds < float("inf"):
            raise ValueError(f"{self.key}: hold_seconds must be positive and finite, got {self.hold_seconds}")
        if self.spills:
            if TargetName.CLUSTER not in targets:
                raise ValueError(f"{self.key}: spillover and hold need a cluster backend")
            if self.pods is not None and isinstance(self.pods.upstream, (CloudRunUpstream, LambdaUpstream)):
                raise ValueError(f"{self.key}: the cluster backend must be a Service or pods upstream")
        if self.overflow is not None:
            same = [b for b in self.backends if b.target is self.overflow.target]
            if same and same[0].upstream != self.overflow.upstream:
                raise ValueError(f"{self.key}: overflow {self.overflow.target.value} differs from its backend")

    @property
    def spills(self) -> bool:
        """True when the cluster backend's share goes through a composite cluster (overflow or hold)."""
        return self.overflow is not None or self.hold_seconds is not None

    @property
    def pods(self) -> Backend | None:
        """The cluster backend, if any."""
        return next((b for b in self.backends if b.target is TargetName.CLUSTER), None)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def serving(self) -> bool:
        """True when some backend takes traffic."""
        return any(b.weight > 0 for b in self.backends)

    def weights(self) -> dict[TargetName, int]:
        return {b.target: b.weight for b in self.backends}


@dataclass(frozen=True)
class UpstreamTrust:
    """What a published upstream must be before the router sends a workload's traffic to it.

    Status is not routing input to be trusted (anyone allowed to patch ``status`` could otherwise point the router
    at the cloud metadata server, the router's own admin port or another team's function). An upstream is accepted
    only when it is the workload's own resource, under the name the operator creates it with (``api.names``):

    * cluster: ``http://<name>-model.<namespace>.svc[.<domain>]:<port>``, a DNS name, never an IP literal;
    * Cloud Run: ``https://<service id>-...<suffix>`` on port 443, ``suffix`` one of ``cloud_run_host_suffixes``;
    * Lambda: ``arn:<partition>:lambda:<region>:<account>:function:<function name>[:<qualifier>]`` with the account
      in ``lambda_accounts`` and the region in ``lambda_regions`` (when those are set); its Function URL
      ``https://<url-id>.lambda-url.<region>.on.aws`` on port 443 in the ARN's region (the URL id is AWS's random
      name: requests to it are signed for that host only, and a URL of a function the router's credentials may not
      invoke answers 403).

    ``trusted_origins`` are published origins an admin declared trusted as they are (local stand-ins that publish
    a loopback URL); nothing a workload writes can add to them."""

    cloud_run_host_suffixes: tuple[str, ...] = (".run.app",)
    lambda_accounts: frozenset[str] = frozenset()
    """AWS accounts whose functions the router may invoke; empty = any account (set it in production)."""
    lambda_regions: frozenset[str] = frozenset()
    """AWS regions whose functions the router may invoke; empty = any region name."""
    trusted_origins: frozenset[str] = frozenset()
    """Published origins accepted as they are (normalised ``scheme://host:port``), for stand-ins."""
    lambda_scope: frozenset[tuple[str, str]] | None = None
    """(account, region) pairs the platform admins' Lambda ServerlessTargets allow, when workloads may use no other
    (no inline cloud identity): a function elsewhere is no workload's, whatever its status says; None = not
    restricted by targets (``lambda_accounts`` / ``lambda_regions`` still apply)."""

    def trusted(self, published: UpstreamAddress) -> bool:
        return published.origin() in {UpstreamAddress.from_url(o).origin() for o in self.trusted_origins}


@dataclass(frozen=True)
class EndpointsConfig:
    """How the router reaches what the status publishes (the production defaults need nothing set)."""

    address_overrides: Mapping[str, str] = field(default_factory=dict)
    """Origin as published in status (``http://embedder-model.default.svc:8080``, ``https://x.a.run.app``) -> URL
    the router connects to instead. Tests map Services and Cloud Run URLs to loopback stand-ins here; a Service
    ClusterIP is never used."""
    lambda_endpoint: str | None = None
    """Set: invoke functions through the Lambda Invoke API at this URL (Envoy's ``aws_lambda`` filter) instead of
    their Function URLs; for functions that answer Lambda-proxy JSON themselves and tests with a plain server.
    None (the default): every function through its Function URL."""
    lambda_payload_passthrough: bool = False
    """Invoke API only: send the request body to the function unchanged (and return its answer unchanged)."""
    lambda_url_endpoint: str | None = None
    """Connect to this URL for every Function URL (the Host and the signature stay the URL's): a local stand-in of
    AWS's Function URL front end in tests and the demo. None = the URL itself (``address_overrides`` still apply)."""
    trust: UpstreamTrust = field(default_factory=UpstreamTrust)
    """What a published upstream must be to be routed to (status is checked, not trusted)."""
    cluster_domain: str = CLUSTER_DOMAIN
    """The cluster DNS domain a model Service's host may carry (``NAME.NAMESPACE.svc.<domain>``)."""

    def connect_address(self, published: UpstreamAddress) -> UpstreamAddress:
        """Where to connect for an endpoint published in status (keys compared as normalised origins, so
        ``https://x.a.run.app`` and ``https://x.a.run.app:443`` are the same key)."""
        for key, override in self.address_overrides.items():
            if UpstreamAddress.from_url(key) == published:
                return UpstreamAddress.from_url(override)
        return published

    def lambda_address(self, region: str) -> UpstreamAddress:
        if self.lambda_endpoint is not None:
            return UpstreamAddress.from_url(self.lambda_endpoint)
        return UpstreamAddress(_LAMBDA_HOST_TEMPLATE.format(region=region), 443, tls=True)


def traffic_weights(status: InferenceWorkloadStatus) -> dict[TargetName, int]:
    """The share of traffic each target takes, in percent, as the status says (empty: nothing is placed)."""
    migration = status.migration
    if migration is None:
        return {status.placement: 100} if status.placement is not None else {}
    source, target = migration.source, migration.target
    if migration.step is MigrationStep.ROLLING_BACK:
        return {source: 100} if source is not None else {}
    if source is None or source is target:
        # A first placement is routed its traffic_percent (100 once its target is healthy: it is placed when the
        # router serves that); same-target: nothing to split.
        return {target: 100 if source is target else migration.traffic_percent}
    percent = migration.traffic_percent
    return {source: 100 - percent, target: percent}


def _resource(status: InferenceWorkloadStatus, target: TargetName) -> TargetResourceStatus | None:
    targets = status.targets
    if targets is None:
        return None
    if target is TargetName.CLUSTER:
        return targets.cluster
    if target is TargetName.CLOUDRUN:
        return targets.cloudrun
    return targets.lambda_


def _lambda_upstream(
    namespace: str, name: str, resource: TargetResourceStatus, config: EndpointsConfig
) -> LambdaUpstream | str:
    """The function's upstream, or why there is none yet; ``RouteError`` when the ARN is not this workload's
    function where it may be, or the Function URL is not a Function URL of the ARN's region."""
    arn = resource.name or ""
    match = _LAMBDA_ARN.match(arn)
    if match is None:
        raise RouteError(f"{namespace}/{name}: {arn!r} is not a Lambda function ARN")
    trust = config.trust
    region, account, function = match["region"], match["account"], match["function"]
    refusal = None
    if function != lambda_function_name(namespace, name):
        refusal = f"is not this workload's function ({lambda_function_name(namespace, name)})"
    elif trust.lambda_accounts and account not in trust.lambda_accounts:
        refusal = f"is in account {account}, not an allowed account"
    elif trust.lambda_regions and region not in trust.lambda_regions:
        refusal = f"is in region {region}, not an allowed region"
    elif trust.lambda_scope is not None and (account, region) not in trust.lambda_scope:
        refusal = f"is in account {account}, region {region}, which no admin's ServerlessTarget allows"
    if refusal is not None:
        raise RouteError(f"{namespace}/{name}: untrusted upstream in status: {arn!r} {refusal}")
    if config.lambda_endpoint is not None:
        return LambdaUpstream(
            function_arn=arn,
            region=region,
            address=config.lambda_address(region),
            payload_passthrough=config.lambda_payload_passthrough,
        )
    if not resource.endpoint:
        return "no function URL recorded yet"
    try:
        published = UpstreamAddress.from_url(resource.endpoint)
        address = config.connect_address(published)
        if config.lambda_url_endpoint is not None and address == published:
            address = UpstreamAddress.from_url(config.lambda_url_endpoint)
    except ValueError as err:
        return str(err)
    if not config.trust.trusted(published):
        url = _FUNCTION_URL_HOST.match(published.host.lower().rstrip("."))
        if not published.tls or published.port != 443 or url is None or url["region"] != region:
            raise RouteError(
                f"{namespace}/{name}: untrusted upstream in status.targets.lambda: {published.origin()} is not a "
                f"Function URL in {region} (https://<url-id>.lambda-url.{region}.on.aws)"
            )
    return LambdaUpstream(function_arn=arn, region=region, address=address, url_host=published.host)


def _untrusted(
    namespace: str, name: str, target: TargetName, published: UpstreamAddress, config: EndpointsConfig
) -> str | None:
    """Why ``published`` is not the workload's own ``target`` resource; None = it is."""
    if config.trust.trusted(published):
        return None
    if published.is_ip:
        return f"{published.origin()} is an IP address, not the workload's {target.value} resource"
    host = published.host.lower().rstrip(".")
    if target is TargetName.CLOUDRUN:
        service_id = cloud_run_service_id(namespace, name)
        suffixes = config.trust.cloud_run_host_suffixes
        if not published.tls or published.port != 443:
            return f"{published.origin()} is not https on port 443"
        if not any(host.endswith(s.lower()) for s in suffixes) or not host.startswith(f"{service_id}-"):
            return f"{published.origin()} is not this workload's Cloud Run service ({service_id}-*{'|'.join(suffixes)})"
        return None
    service = model_service_name(name)
    hosts = (f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.{config.cluster_domain}")
    if published.tls or host not in hosts:
        return f"{published.origin()} is not this workload's model Service ({service}.{namespace}.svc)"
    return None


def _upstream(
    namespace: str, name: str, target: TargetName, resource: TargetResourceStatus | None, config: EndpointsConfig
) -> Upstream | str:
    """The upstream of ``target``, or why there is none yet; ``RouteError`` when status names something that is not
    the workload's own resource (``UpstreamTrust``): such a route is refused whatever its weight."""
    if resource is None:
        return "no resource recorded in status.targets"
    if target is TargetName.LAMBDA:
        if not resource.name:
            return "no function recorded yet"
        return _lambda_upstream(namespace, name, resource, config)
    if not resource.endpoint:
        return "no endpoint recorded yet"
    try:
        published = UpstreamAddress.from_url(resource.endpoint)
        address = config.connect_address(published)
    except ValueError as err:
        return str(err)
    refusal = _untrusted(namespace, name, target, published, config)
    if refusal is not None:
        raise RouteError(f"{namespace}/{name}: untrusted upstream in status.targets.{target.value}: {refusal}")
    if target is TargetName.CLOUDRUN:
        audience = f"https://{published.host}" if published.port == 443 else published.origin()
        return CloudRunUpstream(host=published.host, audience=audience, address=address)
    return ServiceUpstream(address)


def route_from_status(workload: InferenceWorkload, config: EndpointsConfig | None = None) -> Route:
    """The route of ``workload`` as its status says (weights from the migration, upstreams from status.targets).

    Raises ``RouteError`` when a backend that must take traffic has no usable upstream in status; a backend at
    weight 0 without one is left out (it is still being provisioned).
    """
    return route_for(workload.metadata.namespace, workload.metadata.name, workload.status, config)


def route_for(
    namespace: str,
    name: str,
    status: InferenceWorkloadStatus,
    config: EndpointsConfig | None = None,
    *,
    pod_addresses: Sequence[UpstreamAddress] | None = None,
    overflow: TargetName | None = None,
    hold_seconds: float | None = None,
    first_token: bool = False,
) -> Route:
    """``route_from_status`` from the parts a route depends on: identity and status, never the spec.

    The spill inputs come from the decision, not the status: ``pod_addresses`` (the ready pods; None = reach the
    cluster target through its Service as before) makes the cluster backend a ``PodsUpstream``; ``overflow`` names
    the serverless target that takes what the pods refuse or cannot take (its upstream from status.targets exactly
    like a backend's; left out while it has none, i.e. still provisioning); ``hold_seconds`` asks the activator to
    hold requests that find no pod (given with ``overflow``, it is the fallback while the overflow target has no
    upstream yet). The spill parts apply only while the route has a cluster backend. ``first_token``: the router
    measures the time to the first byte for this workload (its objective bounds that, read leniently from the spec
    like the hold bound).
    """
    config = config or EndpointsConfig()
    backends: list[Backend] = []
    for target, weight in traffic_weights(status).items():
        upstream: Upstream | str
        if target is TargetName.CLUSTER and pod_addresses is not None:
            upstream = PodsUpstream(tuple(pod_addresses))
        else:
            upstream = _upstream(namespace, name, target, _resource(status, target), config)
        if isinstance(upstream, str):
            if weight > 0:
                raise RouteError(f"{namespace}/{name}: {target.value} must take {weight}% of traffic but {upstream}")
            continue
        backends.append(Backend(target, upstream, weight))
    has_pods = any(b.target is TargetName.CLUSTER for b in backends)
    spill: Overflow | None = None
    if has_pods and overflow is not None and overflow is not TargetName.CLUSTER:
        serverless = _upstream(namespace, name, overflow, _resource(status, overflow), config)
        if isinstance(serverless, (CloudRunUpstream, LambdaUpstream)):
            spill = Overflow(overflow, serverless)
    hold = hold_seconds if has_pods and spill is None else None
    return Route(namespace, name, tuple(backends), overflow=spill, hold_seconds=hold, first_token=first_token)
