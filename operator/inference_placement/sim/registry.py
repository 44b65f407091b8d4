"""Every policy the simulator scores, listed once: ours, the baselines, the offline optimum.

``simulate`` and ``bench`` run the policies from here, and the tables and the JSON list them in this order; a new
baseline is one entry below. Names come from the policy classes (``name``), so a result's ``policy`` field and
this list cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from inference_placement.sim.baselines import (
    AllCloudRunPolicy,
    AllLambdaPolicy,
    ClusterAutoscaledPolicy,
    ClusterScaleToZeroPolicy,
    KedaHttpPolicy,
    RuleOfThumbPolicy,
    StaticClusterPolicy,
)
from inference_placement.sim.optimum import OptimumPolicy
from inference_placement.sim.policies import DEFAULT_WINDOW_SECONDS, ClairvoyantOursPolicy, OursPolicy
from inference_placement.sim.scenario import RouterPlatform
from inference_placement.sim.simulator import SimPolicy

__all__ = [
    "CLAIRVOYANT",
    "OPTIMUM",
    "OURS",
    "POLICIES",
    "POLICY_NAMES",
    "SINGLE_PLATFORM_BASELINES",
    "RegisteredPolicy",
    "online_policies",
]


@dataclass(frozen=True)
class RegisteredPolicy:
    name: str
    make: Callable[[float, RouterPlatform | None], SimPolicy] | None
    """Builds the policy for a window (seconds) and the scenario's router (None: the operator's default settings);
    None for the optimum, which ``optimum()`` computes from the whole trace instead of ticking."""
    single_platform: bool = False
    """A baseline that keeps the workload on one platform (what the summary checks ``ours`` is cheaper than)."""
    reference: bool = False
    """A reference line, not a policy anyone could run (it is fed the future): reported, never compared for credit."""


def _ours(window_seconds: float, router: RouterPlatform | None) -> OursPolicy:
    if router is None:
        return OursPolicy(window_seconds=window_seconds)
    return OursPolicy(window_seconds=window_seconds, actuators=router.actuators(), wake=router.wake())


def _clairvoyant(window_seconds: float, router: RouterPlatform | None) -> ClairvoyantOursPolicy:
    if router is None:
        return ClairvoyantOursPolicy(window_seconds=window_seconds)
    return ClairvoyantOursPolicy(window_seconds=window_seconds, actuators=router.actuators(), wake=router.wake())


OURS: Final = OursPolicy.name
OPTIMUM: Final = OptimumPolicy.name
CLAIRVOYANT: Final = ClairvoyantOursPolicy.name

POLICIES: Final[tuple[RegisteredPolicy, ...]] = (
    RegisteredPolicy(OURS, lambda window, router: _ours(window, router)),
    RegisteredPolicy(OPTIMUM, None),
    RegisteredPolicy(CLAIRVOYANT, lambda window, router: _clairvoyant(window, router), reference=True),
    RegisteredPolicy(StaticClusterPolicy.name, lambda _, __: StaticClusterPolicy(), single_platform=True),
    RegisteredPolicy(ClusterAutoscaledPolicy.name, lambda _, __: ClusterAutoscaledPolicy(), single_platform=True),
    RegisteredPolicy(ClusterScaleToZeroPolicy.name, lambda _, __: ClusterScaleToZeroPolicy(), single_platform=True),
    RegisteredPolicy(KedaHttpPolicy.name, lambda _, __: KedaHttpPolicy(), single_platform=True),
    RegisteredPolicy(AllLambdaPolicy.name, lambda _, __: AllLambdaPolicy(), single_platform=True),
    RegisteredPolicy(AllCloudRunPolicy.name, lambda _, __: AllCloudRunPolicy(), single_platform=True),
    RegisteredPolicy(RuleOfThumbPolicy.name, lambda _, __: RuleOfThumbPolicy()),
)
"""In report order."""

POLICY_NAMES: Final = tuple(p.name for p in POLICIES)
SINGLE_PLATFORM_BASELINES: Final = tuple(p.name for p in POLICIES if p.single_platform)


def online_policies(
    window_seconds: float = DEFAULT_WINDOW_SECONDS, router: RouterPlatform | None = None
) -> list[SimPolicy]:
    """A fresh instance of every policy that ticks through the trace (all but the optimum), in report order;
    ``router``: the scenario's (``ours`` acts with what the live operator behind it carries out), None = the
    operator's default settings (no activator: no cluster scale to zero)."""
    return [p.make(window_seconds, router) for p in POLICIES if p.make is not None]
