"""The in-cluster model server as plain Kubernetes objects, and the minimal patch that brings a live one in line (pure).

``render_deployment`` / ``render_service`` return dicts exactly as they are sent to the apiserver. ``merge_patch``
compares a rendered object with the live one and returns the JSON merge patch (RFC 7386) of only the fields that
differ, or None when nothing does, so an unchanged workload costs no write. The comparison is semantic where the
apiserver rewrites what it stores: defaulted fields the render does not set are ignored, quantities compare by
value (``0.5`` == ``500m``), and an absent list/map equals an empty one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from inference_placement.api.names import fit_name, model_service_name
from inference_placement.api.quantity import parse_quantity
from inference_placement.api.workload import API_VERSION, KIND, InferenceWorkload
from inference_placement.policy.dra import CLAIM_NAME, DRAClaim, claim_template_spec
from inference_placement.policy.gpu_scheduling import GPUScheduling

__all__ = [
    "COMPONENT_LABEL",
    "MANAGED_BY",
    "PRE_STOP_SLEEP_SECONDS",
    "MANAGED_BY_LABEL",
    "MODEL_SERVER_COMPONENT",
    "MODEL_SERVER_CONTAINER",
    "NAME_LABEL",
    "QUEUE_CAP_ENV",
    "SCHEDULING_ANNOTATION",
    "WORKLOAD_LABEL",
    "claim_template_name",
    "deployment_name",
    "is_ours",
    "left_by_predecessor",
    "merge_patch",
    "model_labels",
    "owner_reference",
    "render_claim_template",
    "render_deployment",
    "render_service",
    "selector_labels",
    "service_name",
    "PORT_NAME",
]

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "inference-placement"
NAME_LABEL: Final = "app.kubernetes.io/name"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
WORKLOAD_LABEL: Final = "placement.inference.dev/workload"
MODEL_SERVER_COMPONENT: Final = "model-server"
MODEL_SERVER_CONTAINER: Final = "model-server"
SCHEDULING_ANNOTATION: Final = "placement.inference.dev/gpu-scheduling"
PORT_NAME: Final = "http"

_LABEL_VALUE_MAX = 63


QUEUE_CAP_ENV = "MAX_IN_FLIGHT"
"""The model server's queue cap (requests in flight) beyond which it answers 429: the reference server
(``e2e/model_server.py``) reads it; a real server takes its own flag (e.g. TGI's ``--max-concurrent-requests``)."""


def deployment_name(workload: InferenceWorkload) -> str:
    """``<name>-model``; the bare ``<name>`` is reserved for the stable router Service."""
    return model_service_name(workload.metadata.name)


def service_name(workload: InferenceWorkload) -> str:
    """Service in front of the model server Pods (a DNS-1035 label, so at most 63 characters)."""
    return deployment_name(workload)


def _label_value(workload: InferenceWorkload) -> str:
    return fit_name(workload.metadata.name, _LABEL_VALUE_MAX)


def selector_labels(workload: InferenceWorkload) -> dict[str, str]:
    """The Deployment's (immutable) selector and the Service's selector."""
    return {WORKLOAD_LABEL: _label_value(workload), COMPONENT_LABEL: MODEL_SERVER_COMPONENT}


def model_labels(workload: InferenceWorkload) -> dict[str, str]:
    """Labels on every object the cluster target owns, and on its Pods."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        NAME_LABEL: _label_value(workload),
        **selector_labels(workload),
    }


def is_ours(obj: Mapping[str, Any], workload: InferenceWorkload) -> bool:
    """True when a live object carries this workload's ownership labels, or a controller reference to it.

    A found object that is ours is adopted; anything else with our deterministic name is never touched.
    """
    metadata = obj.get("metadata") or {}
    for ref in metadata.get("ownerReferences") or []:
        if ref.get("controller"):
            return bool(ref.get("kind") == KIND and ref.get("uid") == workload.metadata.uid)
    labels = metadata.get("labels") or {}
    return bool(labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(WORKLOAD_LABEL) == _label_value(workload))


def left_by_predecessor(obj: Mapping[str, Any], workload: InferenceWorkload) -> bool:
    """True when the object belongs to a deleted InferenceWorkload of the same name (garbage collection pending)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == KIND:
            return bool(ref.get("name") == workload.metadata.name and ref.get("uid") != workload.metadata.uid)
    return False


def owner_reference(workload: InferenceWorkload) -> dict[str, Any]:
    """Controller reference to the InferenceWorkload: deleting it garbage-collects what we created."""
    if not workload.metadata.uid:
        raise ValueError(f"{workload.key} has no uid (read it from the apiserver before rendering)")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": workload.metadata.name,
        "uid": workload.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(workload: InferenceWorkload, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": workload.metadata.namespace,
        "labels": model_labels(workload),
        "ownerReferences": [owner_reference(workload)],
    }


def claim_template_name(workload: InferenceWorkload, claim: DRAClaim) -> str:
    """``<name>-model-gpu-<hash of the claim>``: a template's spec is immutable, so another claim is another name
    (the Deployment's rolling update moves to it; the old one is removed once the rollout is done)."""
    digest = hashlib.sha256(json.dumps(claim_template_spec(claim), sort_keys=True).encode()).hexdigest()[:8]
    return f"{fit_name(deployment_name(workload), _LABEL_VALUE_MAX - 13)}-gpu-{digest}"


def render_claim_template(workload: InferenceWorkload, claim: DRAClaim) -> dict[str, Any]:
    """The ResourceClaimTemplate each replica's GPU claim is made from (``resource.k8s.io/v1``): the device class,
    CEL selectors for the GPU product / MIG profile / sharing, and the driver's opaque sharing config. Its claims
    carry the workload's labels, so the capacity view knows which claims are the workload's own."""
    template = claim_template_spec(claim)
    template["metadata"] = {"labels": model_labels(workload)}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": _metadata(workload, claim_template_name(workload, claim)),
        "spec": template,
    }


PRE_STOP_SLEEP_SECONDS: Final = 5
"""Seconds a replica that is being removed keeps serving before its model server is told to stop: longer than the
router takes to drop its address (the EndpointSlice watch, the route, Envoy's update: about a second here)."""


def render_deployment(
    workload: InferenceWorkload,
    replicas: int | None,
    scheduling: GPUScheduling,
    *,
    image_pull_policy: str | None = None,
    max_in_flight: int | None = None,
) -> dict[str, Any]:
    """The model server Deployment: ``replicas`` as decided, GPU scheduling as given, readiness on the health path;
    ``max_in_flight``: the model server's queue cap while the workload spills (env ``MAX_IN_FLIGHT``);
    ``replicas`` None: left out, so the autoscaler that owns ``spec.replicas`` keeps it (``policy.replica_ownership``).

    CPU-only workloads (``CPU_ONLY``) get no GPU resource, affinity or toleration at all. With a DRA claim
    (``scheduling.claim``) the Pod claims its GPU from ``render_claim_template``'s template instead of requesting
    an extended resource.
    """
    if replicas is not None and replicas < 0:
        raise ValueError(f"replicas must be >= 0, got {replicas}")
    model = workload.spec.model
    requests: dict[str, str] = {"cpu": model.cpu, "memory": model.memory, **scheduling.resources}
    limits: dict[str, str] = {"memory": model.memory, **scheduling.resources}
    container: dict[str, Any] = {
        "name": MODEL_SERVER_CONTAINER,
        "image": model.image,
        "ports": [{"name": PORT_NAME, "containerPort": model.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": model.health_path, "port": PORT_NAME},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {"requests": requests, "limits": limits},
        # A replica that is removed keeps serving until the router has stopped sending to it: its address leaves
        # the Service's EndpointSlices at once, the router's route a moment later (a scale-down otherwise answered
        # a request sent in between 503).
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
    }
    env = [{"name": e.name, "value": e.value} if e.value else {"name": e.name} for e in model.env]
    if max_in_flight is not None:
        # burst spillover: the model server refuses (429) beyond this many requests in flight, and the router
        # retries those on the overflow target (``controller/spill.py`` sets it only while the router does)
        env = [e for e in env if e["name"] != QUEUE_CAP_ENV] + [{"name": QUEUE_CAP_ENV, "value": str(max_in_flight)}]
    if env:
        # An empty value is dropped by the apiserver (omitempty); leaving it out keeps the comparison exact.
        container["env"] = env
    if image_pull_policy is not None:
        container["imagePullPolicy"] = image_pull_policy

    pod_spec: dict[str, Any] = {"containers": [container]}
    if scheduling.claim is not None:
        container["resources"]["claims"] = [{"name": CLAIM_NAME}]
        pod_spec["resourceClaims"] = [
            {"name": CLAIM_NAME, "resourceClaimTemplateName": claim_template_name(workload, scheduling.claim)}
        ]
    node_selector = dict(workload.spec.cluster.node_selector)
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    affinity = scheduling.affinity()
    if affinity is not None:
        pod_spec["affinity"] = affinity
    if scheduling.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in scheduling.tolerations]

    metadata = _metadata(workload, deployment_name(workload))
    metadata["annotations"] = {SCHEDULING_ANNOTATION: scheduling.description}
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    spec |= {
        "selector": {"matchLabels": selector_labels(workload)},
        # Make before break: a new replica must be Ready before an old one goes.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "revisionHistoryLimit": 3,
        "template": {"metadata": {"labels": model_labels(workload)}, "spec": pod_spec},
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


def render_service(workload: InferenceWorkload) -> dict[str, Any]:
    """ClusterIP Service ``<name>-model`` in front of the model server Pods (the router targets it)."""
    port = workload.spec.model.port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(workload, service_name(workload)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(workload),
            "ports": [{"name": PORT_NAME, "port": port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


# ----------------------------------------------------------------------------------------------- minimal patches

_FieldPath = tuple[str, ...]
_ITEM: Final = "[]"
_POD_SPEC: Final[_FieldPath] = ("spec", "template", "spec")
_CONTAINER: Final[_FieldPath] = (*_POD_SPEC, "containers", _ITEM)

_OWNED_EXACTLY: Final[frozenset[_FieldPath]] = frozenset(
    {
        (*_POD_SPEC, "nodeSelector"),
        (*_CONTAINER, "resources", "requests"),
        (*_CONTAINER, "resources", "limits"),
        ("spec", "selector"),
    }
)
"""Maps the render owns entirely: keys the live object has and the render lacks are removed."""

_OWNED_WHEN_ABSENT: Final[Mapping[_FieldPath, frozenset[str]]] = {
    _POD_SPEC: frozenset({"affinity", "tolerations", "nodeSelector", "resourceClaims"}),
    _CONTAINER: frozenset({"env"}),
    (*_CONTAINER, "resources"): frozenset({"claims"}),
}
"""Fields the render owns even when it leaves them out (a workload that became CPU-only drops its affinity)."""


def _is_quantity_map(path: _FieldPath) -> bool:
    return len(path) >= 2 and path[-2] == "resources" and path[-1] in ("requests", "limits")


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def _scalar_equal(want: Any, have: Any, path: _FieldPath) -> bool:
    if want == have and type(want) is type(have):
        return True
    if len(path) >= 2 and _is_quantity_map(path[:-1]):
        try:
            return parse_quantity(want) == parse_quantity(have)
        except (ValueError, TypeError):
            return False
    # JSON has one number type: 1 and 1.0 are the same value.
    if isinstance(want, (int, float)) and isinstance(have, (int, float)) and not isinstance(want, bool):
        return not isinstance(have, bool) and float(want) == float(have)
    return False


def _equal(want: Any, have: Any, path: _FieldPath) -> bool:
    if isinstance(want, dict):
        if have is None and not want:
            return True
        return isinstance(have, dict) and _dict_patch(want, have, path) is None
    if isinstance(want, list):
        if have is None and not want:
            return True
        if not isinstance(have, list) or len(want) != len(have):
            return False
        item_path = (*path, _ITEM)
        return all(_equal(w, h, item_path) for w, h in zip(want, have, strict=True))
    return _scalar_equal(want, have, path)


def _dict_patch(want: Mapping[str, Any], have: Mapping[str, Any], path: _FieldPath) -> dict[str, Any] | None:
    patch: dict[str, Any] = {}
    for key, wanted in want.items():
        sub = (*path, key)
        current = have.get(key)
        if isinstance(wanted, dict) and isinstance(current, dict):
            nested = _dict_patch(wanted, current, sub)
            if nested is not None:
                patch[key] = nested
        elif not _equal(wanted, current, sub):
            patch[key] = wanted
    removable = set(_OWNED_WHEN_ABSENT.get(path, frozenset()))
    if path in _OWNED_EXACTLY:
        removable |= set(have)
    for key in sorted(removable - set(want)):
        if not _empty(have.get(key)):
            patch[key] = None
    return patch or None


def merge_patch(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any] | None:
    """JSON merge patch that makes ``live`` match ``desired`` in the fields the render owns; None when it does.

    Only ``metadata`` (labels, annotations, owner references) and ``spec`` are compared; labels and annotations
    others added are kept. A list that differs is replaced whole (merge-patch semantics), which for containers is
    what a template change means anyway.
    """
    patch: dict[str, Any] = {}
    want_meta = desired.get("metadata") or {}
    have_meta = live.get("metadata") or {}
    meta: dict[str, Any] = {}
    for key in ("labels", "annotations", "ownerReferences"):
        if key in want_meta:
            sub = _dict_patch({key: want_meta[key]}, {key: have_meta.get(key)}, ("metadata",))
            if sub is not None:
                meta.update(sub)
    if meta:
        patch["metadata"] = meta
    if "spec" in desired:
        spec_patch = _dict_patch({"spec": desired["spec"]}, {"spec": live.get("spec") or {}}, ())
        if spec_patch is not None:
            patch.update(spec_patch)
    return patch or None
