"""May this workload use that cloud target? The one answer the controller and ``explain`` share.

Pure: the workload's spec and namespace, the namespace's labels, the admin-defined ServerlessTargets and the
operator's setting in; the spec the targets may act on (the target's project/account, region and identity put in
place of whatever the workload wrote) or the problems, each naming the field, out. The controller marks a refused
workload ``InvalidSpec`` and makes no cloud call for it at all; what already serves keeps serving.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from inference_placement.api.serverless_target import (
    LabelSelector,
    SelectorOperator,
    ServerlessProvider,
    ServerlessTarget,
    target_problems,
)
from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.validation import SpecProblem

__all__ = [
    "Admission",
    "TenancyView",
    "admit_serverless",
    "identity_for_retire",
    "image_allowed",
    "namespace_allowed",
    "selector_matches",
]


@dataclass(frozen=True)
class TenancyView:
    """What the admission reads besides the workload: the cluster's ServerlessTargets by name, the labels of the
    namespaces (only needed where a target allows namespaces by selector), the operator's setting, and the projected
    monthly spend on each target by the workloads placed there now."""

    targets: Mapping[str, ServerlessTarget] = field(default_factory=dict)
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    allow_inline_cloud_identity: bool = False
    spend_usd: Mapping[str, float] = field(default_factory=dict)
    """ServerlessTarget name -> projected monthly USD of the workloads placed on it (this one's included)."""
    problem: str | None = None
    """Why the targets could not be read (no cloud call is allowed until they can); None = read."""


@dataclass(frozen=True)
class Admission:
    spec: InferenceWorkloadSpec | None
    """The spec the targets act on (the admin's project/account, region and identity in place); None = refused."""
    problems: list[SpecProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What the workload should know without being refused (deprecated inline identity, a spend cap reached)."""


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """``metav1.LabelSelector`` semantics: every matchLabels entry and every expression holds (empty: all match)."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        if requirement.operator is SelectorOperator.IN and not (present and value in requirement.values):
            return False
        if requirement.operator is SelectorOperator.NOT_IN and present and value in requirement.values:
            return False
        if requirement.operator is SelectorOperator.EXISTS and not present:
            return False
        if requirement.operator is SelectorOperator.DOES_NOT_EXIST and present:
            return False
    return True


def namespace_allowed(target: ServerlessTarget, namespace: str, labels: Mapping[str, str] | None) -> bool:
    """The namespace is named by the target, or its labels (when known) match the target's selector."""
    allowed = target.spec.allowed_namespaces
    if namespace in allowed.names:
        return True
    return allowed.selector is not None and labels is not None and selector_matches(allowed.selector, labels)


def image_allowed(image: str, prefixes: Collection[str]) -> bool:
    """``image`` starts with one of ``prefixes`` at a boundary: the prefix ends in ``/``, or the image goes on with
    ``/``, ``:`` or ``@`` (or ends) right after it. ``reg.io/team-a`` allows ``reg.io/team-a/m:1`` and
    ``reg.io/team-a:1``, never ``reg.io/team-ab/m`` nor ``reg.io.evil.com/m``."""
    for prefix in prefixes:
        if not prefix or not image.startswith(prefix):
            continue
        rest = image[len(prefix) :]
        if prefix.endswith("/") or rest == "" or rest[0] in "/:@":
            return True
    return False


_FIELD = {ServerlessProvider.CLOUDRUN: "cloudRun", ServerlessProvider.LAMBDA: "lambda"}


def admit_serverless(
    spec: InferenceWorkloadSpec,
    namespace: str,
    view: TenancyView,
    *,
    offered: Collection[TargetName] = (TargetName.CLOUDRUN, TargetName.LAMBDA),
    placed_on: Collection[TargetName] = (),
) -> Admission:
    """Check every serverless target the workload allows and this operator offers against its ServerlessTarget.

    ``placed_on``: the targets the workload's resources exist on now (placement, a migration's ends, a spill): a
    spend cap never moves a workload off a target it is on, it only keeps further workloads from moving on.
    """
    problems: list[SpecProblem] = []
    notes: list[str] = []
    effective = spec
    dropped: list[TargetName] = []
    for provider in ServerlessProvider:
        name = provider.target
        if name not in spec.placement.allowed_targets or name not in offered:
            continue
        where = _FIELD[provider]
        section = spec.cloud_run if provider is ServerlessProvider.CLOUDRUN else spec.lambda_
        ref = section.target_ref
        if ref is None:
            if view.allow_inline_cloud_identity:
                notes.append(f"spec.{where}: inline cloud identity is deprecated; name a ServerlessTarget in targetRef")
            else:
                problems.append(
                    SpecProblem(
                        f"{where}.targetRef",
                        f"required for {name.value}: name a ServerlessTarget your platform admin defined "
                        "(inline project, account, role and service account are off in this operator)",
                    )
                )
            continue
        if view.problem is not None:
            problems.append(SpecProblem(f"{where}.targetRef", f"ServerlessTargets cannot be read: {view.problem}"))
            continue
        target = view.targets.get(ref.name)
        if target is None:
            problems.append(SpecProblem(f"{where}.targetRef.name", f"no ServerlessTarget named {ref.name!r}"))
            continue
        own, effective = _check_one(spec, effective, namespace, view, target, provider)
        problems += own
        cap = target.spec.monthly_spend_cap_usd
        spent = view.spend_usd.get(target.name, 0.0)
        if not own and cap is not None and spent >= cap and name not in placed_on:
            dropped.append(name)
            notes.append(
                f"spec.{where}.targetRef: ServerlessTarget {target.name} reached its spend cap "
                f"(${spent:,.0f}/mo projected >= ${cap:,.0f}/mo): {name.value} is not considered"
            )
    if problems:
        return Admission(None, problems, notes)
    if dropped:
        kept = [t for t in effective.placement.allowed_targets if t not in dropped]
        if kept:  # the only target left is not taken away: the budget of the workload itself still governs it
            placement = effective.placement.model_copy(update={"allowed_targets": kept})
            if placement.pin in dropped:
                placement = placement.model_copy(update={"pin": None})
            effective = effective.model_copy(update={"placement": placement})
    return Admission(effective, [], notes)


def _check_one(
    spec: InferenceWorkloadSpec,
    effective: InferenceWorkloadSpec,
    namespace: str,
    view: TenancyView,
    target: ServerlessTarget,
    provider: ServerlessProvider,
) -> tuple[list[SpecProblem], InferenceWorkloadSpec]:
    where = _FIELD[provider]
    name = target.name
    if target.spec.provider is not provider:
        message = f"ServerlessTarget {name} is a {target.spec.provider.value} target, not {provider.value}"
        return [SpecProblem(f"{where}.targetRef.name", message)], effective
    broken = target_problems(target.spec)
    if broken:
        return [SpecProblem(f"{where}.targetRef.name", f"ServerlessTarget {name} is invalid: {broken[0]}")], effective
    if not namespace_allowed(target, namespace, view.namespace_labels.get(namespace)):
        message = f"namespace {namespace} is not allowed to use ServerlessTarget {name}"
        return [SpecProblem(f"{where}.targetRef", message)], effective
    problems: list[SpecProblem] = []
    t = target.spec
    if provider is ServerlessProvider.CLOUDRUN:
        section = spec.cloud_run
        image, image_field = (section.image, "cloudRun.image") if section.image else (spec.model.image, "model.image")
        inline = {
            "project": (section.project, t.project),
            "serviceAccount": (section.service_account, t.service_account),
        }
    else:
        lam = spec.lambda_
        image, image_field = (lam.image_uri, "lambda.imageUri") if lam.image_uri else (spec.model.image, "model.image")
        inline = {"roleArn": (lam.role_arn, t.role_arn)}
    for key, (written, admin) in inline.items():
        if written is not None and written != admin:
            problems.append(
                SpecProblem(f"{where}.{key}", f"set by ServerlessTarget {name} ({admin}); remove it from the workload")
            )
    if not image_allowed(image, t.allowed_images):
        problems.append(
            SpecProblem(
                image_field,
                f"{image} is not under an image prefix ServerlessTarget {name} allows ({', '.join(t.allowed_images)})",
            )
        )
    section_model = spec.cloud_run if provider is ServerlessProvider.CLOUDRUN else spec.lambda_
    region = section_model.region if "region" in section_model.model_fields_set else t.regions[0]
    if region not in t.regions:
        problems.append(
            SpecProblem(
                f"{where}.region", f"{region} is not a region of ServerlessTarget {name} ({', '.join(t.regions)})"
            )
        )
    if problems:
        return problems, effective
    return [], _with_identity(effective, target, region)


def _with_identity(spec: InferenceWorkloadSpec, target: ServerlessTarget, region: str) -> InferenceWorkloadSpec:
    """``spec`` with the target's project/account identity and ``region`` in place of what the workload wrote."""
    t = target.spec
    if t.provider is ServerlessProvider.CLOUDRUN:
        update = {"project": t.project, "service_account": t.service_account, "region": region}
        return spec.model_copy(update={"cloud_run": spec.cloud_run.model_copy(update=update)})
    lambda_ = spec.lambda_.model_copy(update={"role_arn": t.role_arn, "region": region})
    return spec.model_copy(update={"lambda_": lambda_})


def identity_for_retire(spec: InferenceWorkloadSpec, view: TenancyView) -> InferenceWorkloadSpec:
    """The spec a deletion retires with: each referenced target that still exists (of the right provider) gives
    its project/role and default region, without the namespace and image checks (a workload may always have what
    it created removed; the targets delete only resources labelled with its own uid, under the names recorded)."""
    for provider in ServerlessProvider:
        section = spec.cloud_run if provider is ServerlessProvider.CLOUDRUN else spec.lambda_
        ref = section.target_ref
        target = view.targets.get(ref.name) if ref is not None else None
        if target is None or target.spec.provider is not provider:
            continue
        region = section.region if "region" in section.model_fields_set else target.spec.regions[0]
        spec = _with_identity(spec, target, region)
    return spec
