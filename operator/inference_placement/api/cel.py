"""CEL validation rules (``x-kubernetes-validations``) that the generated CRD carries, so the apiserver refuses a spec
that no target could run at admission (``kubectl apply`` and an Argo CD sync fail at once, naming the field).

Each rule mirrors one check of :func:`inference_placement.api.validation.semantic_problems`, which stays: it covers
objects stored before a rule existed and is what the operator reports as ``InvalidSpec``. Rules read only the object
itself (no cluster state). Keys are the names of the models whose schema node carries the rules; ``self`` is that
node. Objects whose fields are optional in the schema are guarded with ``has()``: the apiserver fills scalar
defaults inside an object that is present, not the object itself.
"""

from __future__ import annotations

from typing import Any, Final

from inference_placement.api.names import DNS_LABEL_MAX, DNS_LABEL_PATTERN
from inference_placement.api.spec import AcceleratorType, GPUSharing, TargetName, ThresholdMode
from inference_placement.api.validation import (
    CLOUD_RUN_GPU_TYPES,
    CLOUD_RUN_REGION_PATTERN,
    LAMBDA_REGION_PATTERN,
    MIG_PROFILES,
    NAME_RULE_MESSAGE,
)

__all__ = ["CEL_RULES", "rules_for"]


def _rule(rule: str, message: str, field_path: str) -> dict[str, str]:
    # static messages: a messageExpression that builds a string (e.g. the valid MIG profiles) is estimated far above
    # the apiserver's CEL cost budget
    return {"rule": rule, "message": message, "fieldPath": field_path, "reason": "FieldValueInvalid"}


def _cel_list(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


_MIG_MAP: Final = (
    "{" + ", ".join(f"'{gpu.value}': {_cel_list(sorted(p))}" for gpu, p in sorted(MIG_PROFILES.items())) + "}"
)
_MIG_PROFILES_TEXT: Final = "; ".join(f"{gpu.value}: {', '.join(sorted(p))}" for gpu, p in sorted(MIG_PROFILES.items()))
_NONE: Final = AcceleratorType.NONE.value
_EXCLUSIVE: Final = GPUSharing.EXCLUSIVE.value
_MIG: Final = GPUSharing.MIG.value
_TIME_SLICING: Final = GPUSharing.TIME_SLICING.value
_CLUSTER: Final = TargetName.CLUSTER.value
_CLOUDRUN: Final = TargetName.CLOUDRUN.value
_LAMBDA: Final = TargetName.LAMBDA.value
_EXPLICIT: Final = ThresholdMode.EXPLICIT.value
_CLOUD_RUN_GPU_NAMES: Final = sorted(t.value for t in CLOUD_RUN_GPU_TYPES)
_CLOUD_RUN_GPUS: Final = _cel_list(_CLOUD_RUN_GPU_NAMES)


def _allowed(target: str) -> str:
    """``target`` is an allowed target of the spec (``self`` = spec); unset allowedTargets means [cluster]."""
    has_list = "has(self.placement) && has(self.placement.allowedTargets)"
    if target == _CLUSTER:
        return f"(!({has_list}) || '{target}' in self.placement.allowedTargets)"
    return f"({has_list} && '{target}' in self.placement.allowedTargets)"


_GPU: Final = f"(has(self.accelerator) && self.accelerator.type != '{_NONE}')"

_ACCELERATOR_RULES: Final = [
    _rule(
        f"self.sharing == '{_EXCLUSIVE}' || self.type != '{_NONE}'",
        "mig and time-slicing sharing need a GPU type, not none",
        ".sharing",
    ),
    _rule(
        f"self.sharing != '{_MIG}' || self.type == '{_NONE}' || self.type in {_MIG_MAP}",
        "this GPU type does not support MIG",
        ".sharing",
    ),
    _rule(f"self.sharing != '{_MIG}' || has(self.migProfile)", "required when sharing is mig", ".migProfile"),
    _rule(f"!has(self.migProfile) || self.sharing == '{_MIG}'", "only valid with sharing: mig", ".migProfile"),
    _rule(
        f"!has(self.migProfile) || !(self.type in {_MIG_MAP}) || self.migProfile in {_MIG_MAP}[self.type]",
        "not a MIG profile of this GPU type (" + _MIG_PROFILES_TEXT + ")",
        ".migProfile",
    ),
    _rule(
        f"!has(self.timeSlicingReplicas) || self.sharing == '{_TIME_SLICING}'",
        "only valid with sharing: time-slicing",
        ".timeSlicingReplicas",
    ),
    _rule(f"self.count <= 1 || self.sharing == '{_EXCLUSIVE}'", "more than one GPU needs sharing: exclusive", ".count"),
    _rule(f"self.count <= 1 || self.type != '{_NONE}'", "a GPU count needs a GPU type", ".count"),
]
"""The rules of one acceptable accelerator: the first (``AcceleratorSpec``) and each alternative alike."""

CEL_RULES: Final[dict[str, list[dict[str, str]]]] = {
    "AcceleratorOption": list(_ACCELERATOR_RULES),
    "InferenceWorkload": [
        # the root: only metadata.name (and generateName) can be read here; no fieldPath (metadata has no schema)
        {
            "rule": f"size(self.metadata.name) <= {DNS_LABEL_MAX} && self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
            "message": f"metadata.name {NAME_RULE_MESSAGE}",
            "reason": "FieldValueInvalid",
        },
    ],
    "AcceleratorSpec": [
        *_ACCELERATOR_RULES,
        _rule(
            f"!has(self.alternatives) || self.alternatives.all(a, (a.type == '{_NONE}') == (self.type == '{_NONE}'))",
            "every alternative needs a GPU when the first does, and none else",
            ".alternatives",
        ),
    ],
    "ThresholdsSpec": [
        _rule(
            f"self.mode != '{_EXPLICIT}' || has(self.offloadBelowRps)", "required in explicit mode", ".offloadBelowRps"
        ),
        _rule(
            f"self.mode != '{_EXPLICIT}' || has(self.reclaimAboveRps)", "required in explicit mode", ".reclaimAboveRps"
        ),
        _rule(
            f"self.mode != '{_EXPLICIT}' || !has(self.offloadBelowRps) || !has(self.reclaimAboveRps) || "
            "self.reclaimAboveRps >= self.offloadBelowRps",
            "must not be below offloadBelowRps",
            ".reclaimAboveRps",
        ),
    ],
    "PlacementSpec": [
        _rule(
            "!has(self.pin) || (has(self.allowedTargets) ? self.pin in self.allowedTargets : "
            f"self.pin == '{_CLUSTER}')",
            "is not in allowedTargets",
            ".pin",
        ),
    ],
    "ScalingSpec": [
        _rule("self.minReplicas <= self.maxReplicas", "exceeds maxReplicas", ".minReplicas"),
    ],
    "CloudRunSpec": [
        _rule("self.minInstances <= self.maxInstances", "exceeds cloudRun.maxInstances", ".minInstances"),
        _rule(
            f"self.region.matches('{CLOUD_RUN_REGION_PATTERN}')",
            "not a Google Cloud region name (such as us-central1)",
            ".region",
        ),
    ],
    "LambdaSpec": [
        _rule(
            f"self.region.matches('{LAMBDA_REGION_PATTERN}')",
            "not an AWS region name (such as us-east-1)",
            ".region",
        ),
    ],
    "InferenceWorkloadSpec": [
        _rule(
            f"!{_allowed(_LAMBDA)} || !{_GPU}",
            "lambda has no GPU: remove lambda from allowedTargets or set accelerator.type: none",
            ".placement.allowedTargets",
        ),
        _rule(
            f"!{_allowed(_CLOUDRUN)} || !{_GPU} || (self.accelerator.type in {_CLOUD_RUN_GPUS} && "
            f"self.accelerator.sharing == '{_EXCLUSIVE}' && self.accelerator.count == 1)",
            f"Cloud Run offers exactly one whole GPU per instance, of type {' or '.join(sorted(_CLOUD_RUN_GPU_NAMES))}",
            ".placement.allowedTargets",
        ),
        _rule(
            f"!{_allowed(_CLOUDRUN)} || (has(self.cloudRun) && (has(self.cloudRun.targetRef) || "
            "has(self.cloudRun.project)))",
            "required when cloudrun is an allowed target (targetRef; inline project only where the operator allows it)",
            ".cloudRun.targetRef",
        ),
        _rule(
            f"!{_allowed(_LAMBDA)} || (has(self.lambda) && (has(self.lambda.targetRef) || has(self.lambda.roleArn)))",
            "required when lambda is an allowed target (targetRef; inline roleArn only where the operator allows it)",
            ".lambda.targetRef",
        ),
        _rule(
            f"!has(self.compliance) || !self.compliance.singleTenant || {_allowed(_CLUSTER)}",
            "pins the workload to the cluster, which is not an allowed target",
            ".compliance.singleTenant",
        ),
        _rule(
            "!has(self.compliance) || !self.compliance.singleTenant || !has(self.placement) || "
            f"!has(self.placement.pin) || self.placement.pin == '{_CLUSTER}'",
            "pins the workload to the cluster, but placement.pin names another target",
            ".compliance.singleTenant",
        ),
    ],
    "ServerlessTargetSpec": [
        _rule(
            "self.provider != 'cloudrun' || (has(self.project) && has(self.serviceAccount))",
            "a cloudrun target needs project and serviceAccount",
            ".provider",
        ),
        _rule(
            "self.provider != 'lambda' || (has(self.account) && has(self.roleArn))",
            "a lambda target needs account and roleArn",
            ".provider",
        ),
        _rule(
            "!has(self.roleArn) || !has(self.account) || self.roleArn.contains(':iam::' + self.account + ':role/')",
            "roleArn must be a role in account",
            ".roleArn",
        ),
    ],
}
"""Rules per model name (the ``$defs`` key pydantic gives it; the spec itself is the spec node's root;
``InferenceWorkload`` is the object's root, where ``self.metadata.name`` is readable)."""


def rules_for(model_name: str) -> list[dict[str, Any]]:
    return [dict(r) for r in CEL_RULES.get(model_name, [])]
