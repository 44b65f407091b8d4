"""The Argo CD health check (charts/inference-placement/argocd-health.lua) run in real Lua interpreters.

Argo CD runs health scripts with gopher-lua, a Lua 5.1 dialect, with a global ``obj``; so the script runs here under
lupa's Lua 5.1 and 5.4 and under Debian's ``lua5.4`` binary (installed by e2e/setup.sh; required when ``CI=true``).
The fixtures' status blocks are built with the operator's own models and condition set, so they have exactly the
shape the operator writes.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from inference_placement.api.conditions import WORKLOAD_CONDITIONS
from inference_placement.api.spec import TargetName
from inference_placement.api.status import (
    Condition,
    ConditionStatus,
    ConditionType,
    InferenceWorkloadStatus,
    Reason,
)
from tests.plugins.cluster import REPO_ROOT

SCRIPT_PATH = REPO_ROOT / "charts" / "inference-placement" / "argocd-health.lua"
SCRIPT = SCRIPT_PATH.read_text(encoding="utf-8")
NOW = "2026-03-01T12:00:00Z"

Health = tuple[str, str]
Runner = Callable[[dict[str, Any]], Health]


# ----------------------------------------------------------------------------------------------- fixtures


def _status(
    marks: list[tuple[ConditionType, ConditionStatus, Reason, str]],
    *,
    generation: int = 3,
    observed_generation: int | None = 3,
    placement: TargetName | None = None,
) -> dict[str, Any]:
    conditions: list[Condition] = []
    for type_, state, reason, message in marks:
        conditions = WORKLOAD_CONDITIONS.mark(conditions, type_, state, reason, message, now=NOW, generation=generation)
    status = InferenceWorkloadStatus(
        conditions=conditions, placement=placement, observed_generation=observed_generation
    )
    return status.to_wire()


def _workload(status: dict[str, Any] | None, generation: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": "sentiment-classifier", "namespace": "ml", "generation": generation},
        "spec": {"model": {"image": "registry.example/sentiment:1", "sizeMb": 300}},
    }
    if status is not None:
        obj["status"] = status
    return obj


VALID = (ConditionType.INVALID_SPEC, ConditionStatus.FALSE, Reason.SPEC_VALID, "")
PLACED = (ConditionType.PLACED, ConditionStatus.TRUE, Reason.TARGET_READY, "serving on cluster")
NOT_MIGRATING = (ConditionType.MIGRATING, ConditionStatus.FALSE, Reason.NO_MIGRATION, "")

CASES = [
    pytest.param(_workload(None), "Progressing", "Waiting for the operator", id="no-status-yet"),
    pytest.param(
        _workload(_status([VALID, PLACED], observed_generation=2), generation=3),
        "Progressing",
        "generation 3",
        id="observed-generation-lags",
    ),
    pytest.param(
        _workload(_status([VALID, PLACED], observed_generation=None)),
        "Progressing",
        "generation 3",
        id="observed-generation-missing",
    ),
    pytest.param(
        _workload(_status([VALID, PLACED, NOT_MIGRATING], placement=TargetName.CLUSTER)),
        "Healthy",
        "Serving on cluster",
        id="ready-true",
    ),
    pytest.param(
        _workload(
            _status(
                [
                    VALID,
                    PLACED,
                    (
                        ConditionType.MIGRATING,
                        ConditionStatus.TRUE,
                        Reason.MIGRATION_IN_PROGRESS,
                        "cluster -> lambda: Shifting, 50% on target",
                    ),
                ],
                placement=TargetName.CLUSTER,
            )
        ),
        "Progressing",
        "cluster -> lambda: Shifting, 50% on target",
        id="migrating-while-ready",
    ),
    pytest.param(
        _workload(
            _status(
                [
                    VALID,
                    PLACED,
                    (
                        ConditionType.MIGRATING,
                        ConditionStatus.FALSE,
                        Reason.MIGRATION_ROLLED_BACK,
                        "lambda never became healthy",
                    ),
                ],
                placement=TargetName.CLUSTER,
            )
        ),
        "Healthy",
        "Serving on cluster",
        id="rolled-back-migration-still-serving",
    ),
    pytest.param(
        _workload(
            _status(
                [
                    (
                        ConditionType.INVALID_SPEC,
                        ConditionStatus.TRUE,
                        Reason.SPEC_INVALID,
                        "spec.accelerator: lambda has no GPU",
                    )
                ]
            )
        ),
        "Degraded",
        "InvalidSpec: spec.accelerator: lambda has no GPU",
        id="invalid-spec",
    ),
    pytest.param(
        _workload(
            _status(
                [
                    VALID,
                    (
                        ConditionType.PLACED,
                        ConditionStatus.FALSE,
                        Reason.TARGET_FAILED,
                        "cloudrun (permanent): quota exceeded",
                    ),
                ]
            )
        ),
        "Degraded",
        "TargetFailed: Placed: cloudrun (permanent): quota exceeded",
        id="target-failed",
    ),
    pytest.param(
        _workload(
            _status(
                [VALID, (ConditionType.PLACED, ConditionStatus.FALSE, Reason.TARGET_NOT_READY, "0/2 replicas ready")],
                placement=TargetName.CLUSTER,
            )
        ),
        "Degraded",
        "TargetNotReady",
        id="placed-target-not-ready",
    ),
    pytest.param(
        _workload(
            _status(
                [
                    VALID,
                    (ConditionType.PLACED, ConditionStatus.FALSE, Reason.TARGET_PROVISIONING, "provisioning cluster"),
                ]
            )
        ),
        "Progressing",
        "TargetProvisioning: Placed: provisioning cluster",
        id="first-placement-provisioning",
    ),
    pytest.param(
        _workload(_status([VALID])),
        "Progressing",
        "waiting for Placed",
        id="ready-unknown",
    ),
]


# ----------------------------------------------------------------------------------------------- interpreters


def _lupa_runner(module_name: str) -> Runner:
    import lupa  # a pinned dev dependency: its absence must fail, not skip

    module = getattr(lupa, module_name, None)
    if module is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"lupa has no {module_name} runtime", pytrace=False)
        pytest.skip(f"lupa has no {module_name} runtime")

    def run(obj: dict[str, Any]) -> Health:
        runtime = module.LuaRuntime(unpack_returned_tuples=True)
        runtime.globals().obj = runtime.table_from(obj, recursive=True)
        result = runtime.execute(SCRIPT)
        return str(result["status"]), str(result["message"])

    return run


def _lua_literal(value: Any) -> str:
    """A Python value (from JSON) as a Lua table constructor."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        assert math.isfinite(value)
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "{" + ", ".join(_lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{_lua_literal(str(k))}] = {_lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot express {type(value).__name__} in Lua")


def _binary_runner() -> Runner:
    binary = shutil.which("lua5.4")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("lua5.4 not found (e2e/setup.sh installs Debian's lua5.4)", pytrace=False)
        pytest.skip("lua5.4 not installed (apt-get install lua5.4)")

    def run(obj: dict[str, Any]) -> Health:
        chunk = (
            f"obj = {_lua_literal(obj)}\n"
            f"local hs = (function()\n{SCRIPT}\nend)()\n"
            'io.write(hs.status, "\\t", hs.message)\n'
        )
        done = subprocess.run([binary, "-"], input=chunk, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        status, _, message = done.stdout.partition("\t")
        return status, message

    return run


@pytest.fixture(params=["lupa-lua51", "lupa-lua54", "lua5.4-binary"])
def run_health(request: pytest.FixtureRequest) -> Runner:
    if request.param == "lupa-lua51":
        return _lupa_runner("lua51")  # gopher-lua, which Argo CD embeds, implements Lua 5.1
    if request.param == "lupa-lua54":
        return _lupa_runner("lua54")
    return _binary_runner()


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("obj", "expected_status", "message_part"), CASES)
def test_health_follows_generation_migration_and_ready(
    run_health: Runner, obj: dict[str, Any], expected_status: str, message_part: str
) -> None:
    status, message = run_health(obj)
    assert status == expected_status, message
    assert message_part in message


def test_every_ready_false_reason_is_classified_on_purpose(run_health: Runner) -> None:
    """A Ready=False reason is Degraded unless the script lists it as waiting; the waiting list names real reasons."""
    block = re.search(r"local waiting_reasons = \{(.*?)\}", SCRIPT, re.S)
    assert block is not None
    waiting = set(re.findall(r"(\w+) = true", block.group(1)))
    assert waiting == {Reason.AWAITING_PLACEMENT.value, Reason.TARGET_PROVISIONING.value}
    for reason in Reason:
        obj = _workload(
            {
                "observedGeneration": 3,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": reason.value,
                        "message": "x",
                        "lastTransitionTime": NOW,
                    }
                ],
            }
        )
        status, _ = run_health(obj)
        assert status == ("Progressing" if reason.value in waiting else "Degraded"), reason


def test_script_uses_only_lua51_and_argo_safe_libraries() -> None:
    """gopher-lua is Lua 5.1 and Argo CD opens only the safe base, string, table and math libraries."""
    code = "\n".join(line.split("--", 1)[0] for line in SCRIPT.splitlines())
    for forbidden in ("//", "goto", "<const>", "<close>", "require", "os.", "io.", "debug.", "load(", "dofile"):
        assert forbidden not in code, forbidden
