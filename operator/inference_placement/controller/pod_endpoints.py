"""The ready model-server Pods of every workload, by address, from the EndpointSlices of their Services.

The router reaches a workload's cluster target through its pods by address (``routing.model.PodsUpstream``) rather
than the Service: "no ready pod" is then an empty Envoy cluster, which the route's composite cluster falls through
at once (to the activator that holds the request, or to a serverless target), where a Service address would still
be one ClusterIP that fails only at connect time. Pod IPs are also what reaches the Pods where Service IPs are not
routable (this machine's local cluster, a router outside the cluster network).

The slices come from ONE watch over the model Services' EndpointSlices (``discovery.k8s.io/v1``, label
``kubernetes.io/service-name``, narrowed to the Services this operator manages: the EndpointSlice controller copies
a Service's labels to its slices), fed by kopf's event stream like the workloads themselves: nothing is polled per
workload. A Service has any number of slices (one per 100 endpoints by default, more during a rollout); the ready
addresses of a Service are the union over its slices.

Pure: ``observe`` takes the event, ``ready`` answers from what was seen.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from inference_placement.routing.model import UpstreamAddress

__all__ = ["SERVICE_NAME_LABEL", "PodEndpoints", "ServiceKey", "ready_addresses"]

SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
"""The label the EndpointSlice controller puts on each slice: the name of its Service."""

ServiceKey = tuple[str, str]
"""(namespace, Service name)."""


def ready_addresses(body: Mapping[str, Any], port_name: str) -> tuple[UpstreamAddress, ...]:
    """The ready endpoints of one EndpointSlice, as plain-HTTP addresses on its port ``port_name`` (or its only port).

    An endpoint counts when ``conditions.ready`` is not false (the API's rule: unset means ready) and it is not
    terminating; only IP addresses (IPv4 or IPv6 slices; an FQDN slice gives none). A slice without a usable port
    (``ports: null`` when the Service has no endpoint at all) gives none."""
    if body.get("addressType") not in ("IPv4", "IPv6"):
        return ()
    ports = [p for p in body.get("ports") or [] if isinstance(p, Mapping) and isinstance(p.get("port"), int)]
    named = [p for p in ports if p.get("name") == port_name]
    chosen = named[0] if named else ports[0] if len(ports) == 1 else None
    if chosen is None:
        return ()
    port = int(chosen["port"])
    if not 0 < port < 65536:
        return ()
    found: list[UpstreamAddress] = []
    for endpoint in body.get("endpoints") or []:
        if not isinstance(endpoint, Mapping):
            continue
        conditions = endpoint.get("conditions") or {}
        if conditions.get("ready") is False or conditions.get("terminating") is True:
            continue
        for address in endpoint.get("addresses") or []:
            try:
                ip = ipaddress.ip_address(str(address))
            except ValueError:
                continue
            found.append(UpstreamAddress(str(ip), port))
    return tuple(found)


@dataclass
class PodEndpoints:
    """Ready pod addresses per model Service, from the watched EndpointSlices."""

    port_name: str = "http"
    """The Service port the model server listens on (``targets.cluster_render.PORT_NAME``)."""
    _slices: dict[ServiceKey, dict[str, tuple[UpstreamAddress, ...]]] = field(default_factory=dict)
    events: int = 0
    """Slice events seen (for tests and the operator's logs)."""

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> ServiceKey | None:
        """Take one watch event of an EndpointSlice; the Service whose ready addresses changed, or None."""
        meta = body.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        name = meta.get("name")
        if not service or not name:
            return None
        self.events += 1
        key: ServiceKey = (str(meta.get("namespace") or "default"), str(service))
        before = self.ready(*key)
        slices = self._slices.setdefault(key, {})
        if event_type == "DELETED":
            slices.pop(str(name), None)
            if not slices:
                del self._slices[key]
        else:
            slices[str(name)] = ready_addresses(body, self.port_name)
        return key if self.ready(*key) != before else None

    def ready(self, namespace: str, service: str) -> tuple[UpstreamAddress, ...] | None:
        """The ready addresses of the Service's pods, sorted (empty: none ready, e.g. scaled to zero); None when no
        slice of it was seen (the Service is new, or slices are not watched)."""
        slices = self._slices.get((namespace, service))
        if slices is None:
            return None
        unique = {address for addresses in slices.values() for address in addresses}
        return tuple(sorted(unique, key=lambda a: (a.host, a.port)))

    def __len__(self) -> int:
        return len(self._slices)
