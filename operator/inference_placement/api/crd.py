"""Generate the CustomResourceDefinition from the pydantic models.

pydantic emits JSON Schema (draft 2020-12, with ``$ref``, ``anyOf`` for optionals, numeric ``exclusiveMinimum``);
the apiserver wants a *structural* OpenAPI v3.0 schema (no refs, a type on every node, boolean exclusive bounds).
``structural_schema`` does that conversion; ``render_crd`` wraps it with names, the status subresource and the
printer columns.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from inference_placement.api.cel import rules_for
from inference_placement.api.serverless_target import (
    TARGET_KIND,
    TARGET_PLURAL,
    TARGET_SHORT_NAME,
    TARGET_SINGULAR,
    ServerlessTargetSpec,
    ServerlessTargetStatus,
)
from inference_placement.api.spec import InferenceWorkloadSpec
from inference_placement.api.status import InferenceWorkloadStatus
from inference_placement.api.workload import CATEGORY, GROUP, KIND, PLURAL, SHORT_NAME, SINGULAR, VERSION

__all__ = [
    "CRD_KINDS",
    "render_crd",
    "render_crd_yaml",
    "render_serverless_target_crd",
    "structural_schema",
]

_DROP = {"title", "$defs", "discriminator"}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema turned into a structural OpenAPI v3.0 schema."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = raw.get("$defs", {})
    # CEL rules (api/cel.py) on the node of the model they are about
    for name, node in [(model.__name__, raw), *defs.items()]:
        rules = rules_for(name)
        if rules:
            node["x-kubernetes-validations"] = rules
    schema: dict[str, Any] = _convert(raw, defs)
    return schema


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    node = dict(node)
    if "anyOf" in node:
        # Optional[X] -> X (absence means unset; null is never written).
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union of {len(options)} types structurally: {options}")
        base = _convert(options[0], defs)
        node = {**base, **node}
        if node.get("default", 0) is None:
            node.pop("default")
    return _structural_fixes(_convert_keys(node, defs))


def _convert_keys(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One schema object's keys in their structural form (nested schemas converted, bounds made v3.0)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _convert(prop, defs) for name, prop in value.items()}
        elif key == "additionalProperties" and value is False:
            # Structural schemas forbid it; unknown fields are pruned by the apiserver instead.
            continue
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, defs)
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "enum" and "type" not in node:
            out[key] = value
            out["type"] = "string"
        else:
            out[key] = value
    return out


def _structural_fixes(out: dict[str, Any]) -> dict[str, Any]:
    """What Kubernetes needs beyond OpenAPI: int-or-string without a type, open objects, no empty defaults."""
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("default") == "":
        # Kubernetes 1.20 read an empty-string default as null and rejected the CRD; pydantic applies it anyway.
        out.pop("default")
    if "default" in out and isinstance(out["default"], (dict, list)) and not out["default"]:
        # Empty object/list defaults: let the nested defaults apply instead of storing {} or [].
        if out.get("type") == "object":
            out["default"] = {}
        else:
            out.pop("default")
    return out


def render_crd() -> dict[str, Any]:
    spec_schema = structural_schema(InferenceWorkloadSpec)
    status_schema = structural_schema(InferenceWorkloadStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "inference-placement"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Placement", "type": "string", "jsonPath": ".status.placement"},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "RPS", "type": "number", "jsonPath": ".status.observed.rps"},
                        {"name": "Cost/mo", "type": "number", "jsonPath": ".status.currentMonthlyCostUsd"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "An inference workload whose placement (cluster GPU Deployment, Cloud Run "
                            "or Lambda) the operator decides from live traffic, cost, SLO and budget.",
                            "required": ["spec"],
                            "x-kubernetes-validations": rules_for("InferenceWorkload"),
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_serverless_target_crd() -> dict[str, Any]:
    """The cluster-scoped ServerlessTarget CRD (``api/serverless_target.py``)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{TARGET_PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "inference-placement"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": TARGET_KIND,
                "listKind": f"{TARGET_KIND}List",
                "plural": TARGET_PLURAL,
                "singular": TARGET_SINGULAR,
                "shortNames": [TARGET_SHORT_NAME],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Provider", "type": "string", "jsonPath": ".spec.provider"},
                        {"name": "Project", "type": "string", "jsonPath": ".spec.project", "priority": 1},
                        {"name": "Account", "type": "string", "jsonPath": ".spec.account", "priority": 1},
                        {"name": "Regions", "type": "string", "jsonPath": ".spec.regions"},
                        {"name": "Workloads", "type": "integer", "jsonPath": ".status.workloads"},
                        {"name": "Spend/mo", "type": "number", "jsonPath": ".status.projectedMonthlyUsd"},
                        {"name": "Cap/mo", "type": "number", "jsonPath": ".spec.monthlySpendCapUsd"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A cloud target (Cloud Run or Lambda) a platform admin defines: project or "
                            "account, regions, the identity services run as, the images they may run and the "
                            "namespaces whose InferenceWorkloads may use it.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": structural_schema(ServerlessTargetSpec),
                                "status": structural_schema(ServerlessTargetStatus),
                            },
                        }
                    },
                }
            ],
        },
    }


CRD_KINDS: dict[str, tuple[str, Any]] = {
    KIND: (f"{PLURAL}.yaml", render_crd),
    TARGET_KIND: (f"{TARGET_PLURAL}.yaml", render_serverless_target_crd),
}
"""Every CRD this operator defines: kind -> (file name under crds/, renderer)."""


class _CrdDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True  # plain YAML, no &anchors: easier to read and to diff


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_CrdDumper.add_representer(str, _str_presenter)


def render_crd_yaml(kind: str = KIND) -> str:
    """The CRD of ``kind`` (``InferenceWorkload`` or ``ServerlessTarget``) as the committed YAML file."""
    header = "# Generated by `inference-placement crd` from the pydantic models in operator/inference_placement/api.\n"
    header += "# Do not edit by hand: change the models and regenerate.\n"
    return header + yaml.dump(CRD_KINDS[kind][1](), Dumper=_CrdDumper, sort_keys=False, width=120)
