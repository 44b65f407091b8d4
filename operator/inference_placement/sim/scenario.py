"""The benchmark scenario: a price book plus workload profiles plus which trace runs as which profile.

``reference.yaml`` is read as data: a changed figure there changes the benchmark without a code change. A profile
becomes an ``InferenceWorkloadSpec`` (``profile_spec``), so every policy, ours included, decides on the same API
object the controller reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference_placement.api.spec import (
    AcceleratorOption,
    AcceleratorSpec,
    AcceleratorType,
    CloudRunSpec,
    GPUSharing,
    InferenceWorkloadSpec,
    LambdaSpec,
    LatencyMeasure,
    ModelSpec,
    PlacementSpec,
    ScalingSpec,
    SLOSpec,
    TargetName,
)
from inference_placement.policy.actuation import Actuators, WakeTimings
from inference_placement.policy.node_labels import SpotLabels, spot_provider
from inference_placement.policy.price_book import PriceBook, PriceBookError, price_book_from_mapping

__all__ = [
    "BenchmarkRow",
    "Profile",
    "ProfileSLO",
    "RouterPlatform",
    "Scenario",
    "ScenarioError",
    "ServiceFormula",
    "load_scenario",
    "parse_service_formula",
    "profile_latency_measure",
    "profile_spec",
    "ProfileGPU",
]


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the field."""


class ProfileSLO(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_p99_seconds: float | None = Field(default=None, gt=0)
    time_to_first_token_p99_seconds: float | None = Field(default=None, gt=0)
    attainment: float = Field(default=0.99, ge=0.5, le=1.0)


class ProfileGPU(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    mig: dict[str, str] | None = None
    """A MIG slice the model also runs on: ``{gpu: <type>, profile: <g>g.<mem>gb}``."""
    alternatives: list[str | dict[str, object]] = Field(default_factory=list)
    """Further acceptable accelerators: a GPU type (whole GPU), or an ``accelerator`` object of the API
    (``{type, sharing, migProfile, timeSlicingReplicas, serviceTimeFactor}``)."""

    def accelerator(self) -> AcceleratorSpec:
        """The spec's accelerator: ``type`` first, then the MIG slice, then ``alternatives``, in that order."""
        options: list[AcceleratorOption] = []
        if self.mig is not None:
            options.append(
                AcceleratorOption(
                    type=AcceleratorType(self.mig["gpu"]), sharing=GPUSharing.MIG, mig_profile=self.mig["profile"]
                )
            )
        for alternative in self.alternatives:
            if isinstance(alternative, str):
                options.append(AcceleratorOption(type=AcceleratorType(alternative)))
            else:
                options.append(AcceleratorOption.model_validate(alternative))
        return AcceleratorSpec(type=AcceleratorType(self.type), alternatives=options)


class Profile(BaseModel):
    """A workload shape from the scenario (``profiles.<name>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_mb: float = Field(gt=0)
    vcpu: float = Field(gt=0)
    memory_gib: float = Field(gt=0)
    gpu: ProfileGPU | str = "none"
    service_seconds: float = Field(gt=0)
    service_seconds_formula: str | None = None
    concurrency_per_replica: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=50, ge=1, le=1000)
    """The spec's ``scaling.maxReplicas`` (a fleet row needs more than the default)."""
    slo: ProfileSLO

    @property
    def gpu_type(self) -> str:
        return self.gpu.type if isinstance(self.gpu, ProfileGPU) else "none"


_WAKE = WakeTimings()


class RouterPlatform(BaseModel):
    """``platforms.router``: the operator's stable-endpoint router as the benchmark runs it.

    Absent from a scenario, the router runs the activator (the default below): ``ours`` is measured at the router
    (``policy/observation.py``), and the activator is a container of that same router Pod (the chart's
    ``router.activator.enabled``); the scale-to-zero baselines are credited with their own activators (Knative's,
    KEDA's interceptor), so ``ours`` is given its own. ``platforms.cluster.scale_to_zero`` is the platform's own
    default (a Deployment under an HPA keeps a replica) and says nothing about the router."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    activator: bool = True
    """The router holds a request that finds no pod until a replica is ready, so the operator may scale a cluster
    target to zero (``router.activator.enabled`` live; ``Actuators.cluster_scale_to_zero``)."""
    wake_poll_seconds: float = Field(default=_WAKE.poll_seconds, gt=0)
    """``router.wakePollSeconds``: how often the operator reads the held requests."""
    wake_keep_seconds: float = Field(default=_WAKE.keep_seconds, ge=0)
    """``router.wakeKeepSeconds``: a woken workload keeps a replica at least this long."""
    fall_through: bool = False
    """The router has the overflow listener (``router.overflowPort``), so with the activator, at zero a request
    that finds no pod goes to an allowed serverless target whose cold start the SLO tolerates (serverless as the
    activator, ``Actuators.zero_fall_through``) instead of being held. Off by default, as live."""

    spot_node_labels: SpotLabels = "none"
    """The operator's ``cluster.spotNodeLabels`` as the benchmark runs it: with ``eks``/``karpenter`` (AWS's
    pre-emption facts) or ``gke`` (GCP's), ``ours`` weighs spot for a workload asking for it and is billed at the
    capacity type it picks (``Actuators.spot_provider``); ``none``, the live default with GFD labels: on-demand."""

    def actuators(self) -> Actuators:
        """What the live operator with this router carries out (burst spillover stays off, its live default)."""
        return Actuators(
            cluster_scale_to_zero=self.activator,
            zero_fall_through=self.activator and self.fall_through,
            spot_provider=spot_provider(self.spot_node_labels),
        )

    def wake(self) -> WakeTimings:
        return WakeTimings(poll_seconds=self.wake_poll_seconds, keep_seconds=self.wake_keep_seconds)


class BenchmarkRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trace: str
    profile: str
    service_sample: str | None = None
    """A per-request trace (under the traces directory, or an absolute path) whose requests' fields every request
    of this per-step row draws from (the service-time distribution of a high-volume row of that shape)."""


@dataclass(frozen=True)
class ServiceFormula:
    """``service = constant + sum(coefficient x field)``, parsed from a string like ``0.0002 * context_tokens``."""

    constant: float
    terms: tuple[tuple[str, float], ...]
    text: str

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.terms)


_TERM = re.compile(
    r"^\s*(?:(?P<c1>[0-9.eE+-]+)\s*\*\s*(?P<f1>[A-Za-z_][A-Za-z0-9_]*)|"
    r"(?P<f2>[A-Za-z_][A-Za-z0-9_]*)\s*\*\s*(?P<c2>[0-9.eE+-]+)|"
    r"(?P<c3>[0-9.eE+-]+)|(?P<f3>[A-Za-z_][A-Za-z0-9_]*))\s*$"
)


def parse_service_formula(text: str) -> ServiceFormula:
    """A linear formula over per-request fields; anything else is refused (never ``eval``)."""
    constant = 0.0
    terms: list[tuple[str, float]] = []
    for raw in text.split("+"):
        match = _TERM.match(raw)
        if match is None:
            raise ScenarioError(f"service_seconds_formula: cannot read term {raw.strip()!r} of {text!r}")
        try:
            if match.group("f1"):
                terms.append((match.group("f1"), float(match.group("c1"))))
            elif match.group("f2"):
                terms.append((match.group("f2"), float(match.group("c2"))))
            elif match.group("f3"):
                terms.append((match.group("f3"), 1.0))
            else:
                constant += float(match.group("c3"))
        except ValueError as err:
            raise ScenarioError(f"service_seconds_formula: bad number in {raw.strip()!r}") from err
    return ServiceFormula(constant=constant, terms=tuple(terms), text=text)


@dataclass(frozen=True)
class Scenario:
    price_book: PriceBook
    profiles: dict[str, Profile]
    benchmark: tuple[BenchmarkRow, ...]
    source: str
    router: RouterPlatform = field(default_factory=RouterPlatform)


def load_scenario(path: Path) -> Scenario:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ScenarioError(f"{path}: {err}") from err
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a mapping")
    data = dict(raw)
    profiles_raw = data.pop("profiles", {}) or {}
    bench_raw = data.pop("benchmark", []) or []
    router = RouterPlatform()
    platforms = data.get("platforms")
    if isinstance(platforms, dict) and "router" in platforms:
        platforms = dict(platforms)
        try:
            router = RouterPlatform.model_validate(platforms.pop("router") or {})
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ScenarioError(f"{path}: platforms.router.{where}: {first['msg']}") from err
        data["platforms"] = platforms
    try:
        price_book = price_book_from_mapping(data, source=str(path))
    except PriceBookError as err:
        raise ScenarioError(str(err)) from err
    profiles: dict[str, Profile] = {}
    for name, body in profiles_raw.items():
        try:
            profiles[name] = Profile.model_validate(body)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ScenarioError(f"{path}: profiles.{name}.{where}: {first['msg']}") from err
        if profiles[name].service_seconds_formula:
            parse_service_formula(profiles[name].service_seconds_formula or "")
    rows: list[BenchmarkRow] = []
    for i, body in enumerate(bench_raw):
        try:
            row = BenchmarkRow.model_validate(body)
        except ValidationError as err:
            raise ScenarioError(f"{path}: benchmark[{i}]: {err.errors(include_url=False)[0]['msg']}") from err
        if row.profile not in profiles:
            raise ScenarioError(f"{path}: benchmark[{i}].profile: unknown profile {row.profile!r}")
        rows.append(row)
    return Scenario(price_book=price_book, profiles=profiles, benchmark=tuple(rows), source=str(path), router=router)


def _quantity_gib(value: float) -> str:
    mib = round(value * 1024)
    return f"{mib}Mi"


def profile_spec(profile: Profile, price_book: PriceBook) -> InferenceWorkloadSpec:
    """The spec a platform team would write for this profile: every target the platform model allows, ``auto``
    thresholds, default sustain/cooldown, and replicas free to scale to zero where the policy decides so."""
    gpu = profile.gpu_type
    needs_gpu = gpu != "none"
    allowed = [TargetName.CLUSTER, TargetName.CLOUDRUN]
    if not needs_gpu or price_book.platforms.lambda_.gpu:
        allowed.append(TargetName.LAMBDA)
    if needs_gpu and gpu not in price_book.platforms.cloudrun.gpu_types:
        allowed.remove(TargetName.CLOUDRUN)
    objective_seconds = profile.slo.latency_p99_seconds or profile.slo.time_to_first_token_p99_seconds or 1.0
    memory_mb = int(profile.memory_gib * 1024)
    cloud_run_concurrency = min(
        profile.concurrency_per_replica, price_book.platforms.cloudrun.default_concurrency_per_instance
    )
    return InferenceWorkloadSpec(
        model=ModelSpec(
            image="bench/model:latest",
            size_mb=max(1, round(profile.model_mb)),
            cpu=f"{profile.vcpu:g}",
            memory=_quantity_gib(profile.memory_gib),
            service_seconds=profile.service_seconds,
        ),
        accelerator=profile.gpu.accelerator() if isinstance(profile.gpu, ProfileGPU) else AcceleratorSpec(),
        slo=SLOSpec(
            objective_seconds=objective_seconds,
            attainment=profile.slo.attainment,
            latency_measure=profile_latency_measure(profile),
        ),
        placement=PlacementSpec(allowed_targets=allowed),
        scaling=ScalingSpec(
            min_replicas=0, max_replicas=profile.max_replicas, target_concurrency=profile.concurrency_per_replica
        ),
        cloud_run=CloudRunSpec(
            project="bench",
            concurrency=cloud_run_concurrency,
            max_instances=price_book.platforms.cloudrun.max_instances_default,
        ),
        lambda_=LambdaSpec(
            role_arn="arn:aws:iam::000000000000:role/bench",
            # a function larger than Lambda allows is left unset: feasibility then names the model's memory
            memory_mb=max(128, memory_mb) if memory_mb <= 10240 else None,
        ),
    )


def profile_latency_measure(profile: Profile) -> LatencyMeasure:
    """What the profile's objective bounds: the first token where it sets ``time_to_first_token_p99_seconds``."""
    if profile.slo.time_to_first_token_p99_seconds is not None:
        return LatencyMeasure.FIRST_TOKEN
    return LatencyMeasure.RESPONSE
