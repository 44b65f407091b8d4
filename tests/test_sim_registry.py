"""The simulator's policies are listed once (sim/registry.py): what runs, what is reported and in which order."""

from __future__ import annotations

from inference_placement.sim.optimum import PlanPolicy
from inference_placement.sim.policies import OursPolicy
from inference_placement.sim.registry import (
    OPTIMUM,
    OURS,
    POLICIES,
    POLICY_NAMES,
    SINGLE_PLATFORM_BASELINES,
    online_policies,
)


def test_names_are_unique_and_start_with_ours_and_the_optimum() -> None:
    assert len(set(POLICY_NAMES)) == len(POLICY_NAMES)
    assert POLICY_NAMES[:2] == (OURS, OPTIMUM) == ("ours", "optimum")


def test_every_ticked_policy_is_built_under_its_registered_name_in_report_order() -> None:
    built = online_policies(window_seconds=1800.0)
    assert [p.name for p in built] == [name for name in POLICY_NAMES if name != OPTIMUM]
    assert len({id(p) for p in built + online_policies()}) == 2 * len(built)  # fresh instances every call
    ours = built[0]
    assert isinstance(ours, OursPolicy) and ours.window_seconds == 1800.0


def test_only_the_optimum_is_computed_rather_than_ticked() -> None:
    assert [p.name for p in POLICIES if p.make is None] == [OPTIMUM]
    assert PlanPolicy.name == OPTIMUM  # the plan the optimum replays reports under the same name


def test_single_platform_baselines_are_the_one_platform_policies() -> None:
    assert SINGLE_PLATFORM_BASELINES == (
        "static-cluster",
        "cluster-autoscaled",
        "cluster-scale-to-zero",
        "keda-http",
        "lambda",
        "cloudrun",
    )
    assert set(SINGLE_PLATFORM_BASELINES) <= set(POLICY_NAMES) - {OURS, OPTIMUM}
