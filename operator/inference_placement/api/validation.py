"""Semantic validation: the rules that span several fields.

Pure: takes a parsed spec, returns every problem found, each naming the field it is about. The controller turns a
non-empty list into ``InvalidSpec=True`` plus an Event and keeps serving whatever was already serving. The CRD
carries the same rules as CEL (``api/cel.py``), so the apiserver refuses such a spec at admission; these checks
remain for objects stored before a rule existed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from inference_placement.api.names import DNS_LABEL_MAX, DNS_LABEL_PATTERN
from inference_placement.api.spec import (
    CLOUD_RUN_REGION_PATTERN,
    LAMBDA_REGION_PATTERN,
    AcceleratorOption,
    AcceleratorType,
    GPUSharing,
    InferenceWorkloadSpec,
    TargetName,
    ThresholdMode,
)

__all__ = [
    "CLOUD_RUN_GPU_TYPES",
    "CLOUD_RUN_REGION_PATTERN",
    "LAMBDA_REGION_PATTERN",
    "MIG_PROFILES",
    "NAME_RULE_MESSAGE",
    "SpecProblem",
    "name_problems",
    "parse_spec",
    "semantic_problems",
]

MIG_PROFILES: dict[AcceleratorType, frozenset[str]] = {
    AcceleratorType.NVIDIA_A100_40GB: frozenset({"1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"}),
    AcceleratorType.NVIDIA_A100_80GB: frozenset({"1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"}),
    AcceleratorType.NVIDIA_H100_80GB: frozenset({"1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"}),
}
"""MIG profiles per GPU (NVIDIA MIG user guide); other GPU types have no MIG."""

CLOUD_RUN_GPU_TYPES = frozenset({AcceleratorType.NVIDIA_L4, AcceleratorType.NVIDIA_RTX_PRO_6000})
"""GPUs Cloud Run attaches in 2026: NVIDIA L4 and RTX PRO 6000 Blackwell (preview), one per instance."""


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with a spec: the field path as written in YAML, and why."""

    field: str
    message: str
    root: str = "spec"
    """The object part the field is under (``metadata`` for the name)."""

    def __str__(self) -> str:
        return f"{self.root}.{self.field}: {self.message}"


NAME_RULE_MESSAGE = (
    "must be a DNS-1035 label (at most 63 lowercase letters, digits and '-', starting with a letter, not ending "
    "in '-'): it names the workload's Services (the stable endpoint NAME.NAMESPACE.svc and NAME-model)"
)


def name_problems(name: str) -> list[SpecProblem]:
    """What is wrong with a workload's ``metadata.name`` for the objects named after it (the CRD's root rule says the
    same at admission; this covers objects stored before the rule existed)."""
    if len(name) <= DNS_LABEL_MAX and re.match(DNS_LABEL_PATTERN, name):
        return []
    return [SpecProblem("name", f"{name!r} {NAME_RULE_MESSAGE}", root="metadata")]


def parse_spec(raw: Any) -> tuple[InferenceWorkloadSpec | None, list[SpecProblem]]:
    """Parse a raw spec; on failure return the schema problems with their field paths (camelCase)."""
    # NaN passes no bound and infinity passes lower bounds; the apiserver cannot store either (JSON has neither).
    not_finite = [SpecProblem(path or "(root)", "must be a finite number") for path in _non_finite(raw)]
    try:
        spec = InferenceWorkloadSpec.model_validate(raw if raw is not None else {})
    except ValidationError as err:
        problems = [
            SpecProblem(".".join(str(p) for p in e["loc"]) or "(root)", e["msg"]) for e in err.errors(include_url=False)
        ]
        named = {p.field for p in problems}
        return None, problems + [p for p in not_finite if p.field not in named]
    if not_finite:
        return None, not_finite
    return spec, semantic_problems(spec)


def _non_finite(value: Any, path: str = "") -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}.{i}")]
    return []


def _accelerator_problems(acc: AcceleratorOption, where: str) -> list[SpecProblem]:
    """The checks of one acceptable accelerator (the first or an alternative) at ``where``."""
    problems: list[SpecProblem] = []
    if acc.sharing is not GPUSharing.EXCLUSIVE and not acc.needs_gpu:
        problems.append(SpecProblem(f"{where}.sharing", f"{acc.sharing.value} needs a GPU type, not none"))
    if acc.sharing is GPUSharing.MIG:
        valid = MIG_PROFILES.get(acc.type)
        if valid is None and acc.needs_gpu:
            problems.append(SpecProblem(f"{where}.sharing", f"{acc.type.value} does not support MIG"))
        if acc.mig_profile is None:
            problems.append(SpecProblem(f"{where}.migProfile", "required when sharing is mig"))
        elif valid is not None and acc.mig_profile not in valid:
            problems.append(
                SpecProblem(
                    f"{where}.migProfile",
                    f"{acc.mig_profile} is not a MIG profile of {acc.type.value} (valid: {', '.join(sorted(valid))})",
                )
            )
    elif acc.mig_profile is not None:
        problems.append(SpecProblem(f"{where}.migProfile", "only valid with sharing: mig"))
    if acc.time_slicing_replicas is not None and acc.sharing is not GPUSharing.TIME_SLICING:
        problems.append(SpecProblem(f"{where}.timeSlicingReplicas", "only valid with sharing: time-slicing"))
    if acc.count > 1 and acc.sharing is not GPUSharing.EXCLUSIVE:
        problems.append(SpecProblem(f"{where}.count", "more than one GPU needs sharing: exclusive"))
    if acc.count > 1 and not acc.needs_gpu:
        problems.append(SpecProblem(f"{where}.count", "a GPU count needs a GPU type"))
    return problems


def semantic_problems(spec: InferenceWorkloadSpec) -> list[SpecProblem]:  # noqa: C901 - flat independent rules
    problems: list[SpecProblem] = []
    acc = spec.accelerator
    allowed = set(spec.placement.allowed_targets)

    problems += _accelerator_problems(acc, "accelerator")
    for i, alternative in enumerate(acc.alternatives):
        problems += _accelerator_problems(alternative, f"accelerator.alternatives[{i}]")
    if acc.alternatives and any(a.needs_gpu != acc.needs_gpu for a in acc.alternatives):
        problems.append(
            SpecProblem("accelerator.alternatives", "every alternative needs a GPU when the first does, and none else")
        )

    if TargetName.LAMBDA in allowed and acc.needs_gpu:
        problems.append(
            SpecProblem(
                "placement.allowedTargets",
                f"lambda has no GPU but the model needs {acc.type.value} (Lambda's GPUs exist only on Lambda "
                "Managed Instances, which this operator does not deploy)",
            )
        )
    if TargetName.CLOUDRUN in allowed and acc.needs_gpu:
        if acc.type not in CLOUD_RUN_GPU_TYPES:
            problems.append(
                SpecProblem(
                    "placement.allowedTargets",
                    f"Cloud Run offers only {' and '.join(sorted(t.value for t in CLOUD_RUN_GPU_TYPES))} GPUs, "
                    f"not {acc.type.value}",
                )
            )
        elif acc.sharing is not GPUSharing.EXCLUSIVE or acc.count != 1:
            problems.append(
                SpecProblem("placement.allowedTargets", "Cloud Run offers exactly one whole GPU per instance")
            )
    if TargetName.CLOUDRUN in allowed and spec.cloud_run.target_ref is None and spec.cloud_run.project is None:
        problems.append(
            SpecProblem(
                "cloudRun.targetRef",
                "required when cloudrun is an allowed target "
                "(targetRef; inline project only where the operator allows it)",
            )
        )
    if TargetName.LAMBDA in allowed and spec.lambda_.target_ref is None and spec.lambda_.role_arn is None:
        problems.append(
            SpecProblem(
                "lambda.targetRef",
                "required when lambda is an allowed target "
                "(targetRef; inline roleArn only where the operator allows it)",
            )
        )

    pin = spec.placement.pin
    if pin is not None and pin not in allowed:
        problems.append(SpecProblem("placement.pin", f"{pin.value} is not in allowedTargets"))
    if spec.compliance.single_tenant:
        if TargetName.CLUSTER not in allowed:
            problems.append(
                SpecProblem("compliance.singleTenant", "pins the workload to the cluster, which is not allowed")
            )
        if pin is not None and pin is not TargetName.CLUSTER:
            problems.append(
                SpecProblem("compliance.singleTenant", f"pins to the cluster, but placement.pin is {pin.value}")
            )

    th = spec.placement.thresholds
    if th.mode is ThresholdMode.EXPLICIT:
        if th.offload_below_rps is None:
            problems.append(SpecProblem("placement.thresholds.offloadBelowRps", "required in explicit mode"))
        if th.reclaim_above_rps is None:
            problems.append(SpecProblem("placement.thresholds.reclaimAboveRps", "required in explicit mode"))
        if (
            th.offload_below_rps is not None
            and th.reclaim_above_rps is not None
            and th.reclaim_above_rps < th.offload_below_rps
        ):
            problems.append(
                SpecProblem(
                    "placement.thresholds.reclaimAboveRps",
                    f"{th.reclaim_above_rps} is below offloadBelowRps {th.offload_below_rps}",
                )
            )
    if spec.scaling.min_replicas > spec.scaling.max_replicas:
        problems.append(
            SpecProblem(
                "scaling.minReplicas",
                f"{spec.scaling.min_replicas} exceeds maxReplicas {spec.scaling.max_replicas}",
            )
        )
    if spec.cloud_run.min_instances > spec.cloud_run.max_instances:
        problems.append(SpecProblem("cloudRun.minInstances", "exceeds cloudRun.maxInstances"))
    if not re.match(CLOUD_RUN_REGION_PATTERN, spec.cloud_run.region):
        problems.append(SpecProblem("cloudRun.region", f"{spec.cloud_run.region} is not a Google Cloud region name"))
    if not re.match(LAMBDA_REGION_PATTERN, spec.lambda_.region):
        problems.append(SpecProblem("lambda.region", f"{spec.lambda_.region} is not an AWS region name"))
    return problems
