"""Packaging: an image the operator can tell will not start on Lambda or Cloud Run is refused there, by field.

The check is pure (``policy/packaging.py``): the spec's declarations (``spec.lambda.webAdapter``, ``architecture``,
the Web Adapter's ``AWS_LWA_*`` settings against ``model.port`` / ``healthPath``) and, where given, the image's OCI
config. Feasibility refuses the target, the reconciler says so in ``PackagingValid=False`` (``PackagingInvalid``)
with an Event, the Lambda target refuses before any call, and ``explain`` lists what is missing.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.explain import explain_workload, load_image_config_file
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.feasibility import assess_feasibility
from inference_placement.policy.packaging import (
    ImageConfig,
    ImageConfigError,
    lambda_adapter_env,
    packaging_problems,
    parse_image_config,
)
from inference_placement.policy.price_book import default_price_book
from inference_placement.targets.aws_lambda import LambdaTarget, function_config
from inference_placement.targets.base import DesiredTarget, PermanentTargetError
from inference_placement.targets.dry_run import DryRunTarget
from tests.plugins.cloud import LambdaFaults, MotoAws, make_workload
from tests.plugins.memory_api import MemoryWriter, inline_tenancy

BOOK = default_price_book()
ROLE = "arn:aws:iam::123456789012:role/fn"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NS = "unit"


def _spec(
    *, env: dict[str, str] | None = None, lam: dict[str, Any] | None = None, port: int = 8080, **extra: Any
) -> InferenceWorkloadSpec:
    raw: dict[str, Any] = {
        "model": {
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/m:1",
            "port": port,
            "healthPath": "/ready",
            "sizeMb": 200,
            "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        },
        "placement": {"allowedTargets": ["cluster", "lambda", "cloudrun"]},
        "lambda": {"roleArn": ROLE, **(lam or {})},
        "cloudRun": {"project": "p"},
    }
    raw.update(extra)
    return InferenceWorkloadSpec.model_validate(raw)


def _oci(architecture: str = "amd64", *, os: str = "linux", entrypoint: list[str] | None = None) -> ImageConfig:
    return parse_image_config(
        {
            "architecture": architecture,
            "os": os,
            "config": {"Entrypoint": entrypoint, "Cmd": ["python", "server.py"], "Env": ["PATH=/usr/bin"]},
        }
    )


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        pytest.param(_spec(lam={"webAdapter": "layer"}), "lambda.webAdapter", "no layers", id="adapter-as-layer"),
        pytest.param(_spec(env={"AWS_LWA_PORT": "9000"}), "model.env[0]", "does not listen on", id="port-mismatch"),
        pytest.param(_spec(env={"AWS_LWA_PORT": "http"}), "model.env[0]", "not a port number", id="port-not-a-number"),
        pytest.param(_spec(port=80), "model.port", "non-root user", id="privileged-port"),
        pytest.param(_spec(port=9001), "model.port", "Lambda Runtime API", id="runtime-api-port"),
        pytest.param(
            _spec(env={"MODEL": "x", "AWS_LWA_READINESS_CHECK_PATH": "ready"}),
            "model.env[1]",
            "starting with /",
            id="readiness-not-a-path",
        ),
        pytest.param(
            _spec(env={"AWS_LWA_INVOKE_MODE": "response_stream"}), "model.env[0]", "BUFFERED", id="streaming-mode"
        ),
    ],
)
def test_a_spec_lambda_cannot_start_is_refused_naming_the_field(
    spec: InferenceWorkloadSpec, field: str, words: str
) -> None:
    [problem] = packaging_problems(spec)
    assert (problem.target, problem.field) == (TargetName.LAMBDA, field)
    assert words in problem.message
    reason = assess_feasibility(spec, BOOK, ClusterCapacity()).infeasible[TargetName.LAMBDA]
    assert reason == f"packaging: lambda: spec.{field}: {problem.message}"
    # the other targets are untouched: the cluster and Cloud Run still run it
    assert assess_feasibility(spec, BOOK, ClusterCapacity()).feasible(TargetName.CLOUDRUN)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(_spec(), id="defaults"),
        pytest.param(_spec(env={"AWS_LWA_PORT": "8080", "AWS_LWA_INVOKE_MODE": "buffered"}), id="same-port-declared"),
        pytest.param(_spec(port=80, lam={"webAdapter": "none"}), id="no-adapter-no-adapter-rules"),
        pytest.param(_spec(port=80, placement={"allowedTargets": ["cluster"]}), id="lambda-not-allowed"),
    ],
)
def test_what_the_adapter_can_serve_passes(spec: InferenceWorkloadSpec) -> None:
    assert packaging_problems(spec) == []


def test_the_adapter_settings_follow_the_model_and_vanish_without_an_adapter() -> None:
    assert lambda_adapter_env(_spec()) == {"AWS_LWA_PORT": "8080", "AWS_LWA_READINESS_CHECK_PATH": "/ready"}
    assert lambda_adapter_env(_spec(lam={"webAdapter": "none"})) == {}


@pytest.mark.parametrize(
    ("spec", "image", "expected"),
    [
        pytest.param(_spec(), _oci("amd64"), [], id="amd64-everywhere"),
        pytest.param(
            _spec(),
            _oci("arm64"),
            [(TargetName.LAMBDA, "lambda.architecture"), (TargetName.CLOUDRUN, "image.architecture")],
            id="arm64-image-x86-function",
        ),
        pytest.param(
            _spec(lam={"architecture": "arm64"}),
            _oci("arm64"),
            [(TargetName.CLOUDRUN, "image.architecture")],
            id="arm64-function-ok-cloud-run-amd64-only",
        ),
        pytest.param(
            _spec(), _oci(os="windows"), [(TargetName.LAMBDA, "image.os"), (TargetName.CLOUDRUN, "image.os")], id="os"
        ),
        pytest.param(
            _spec(),
            _oci(entrypoint=["/lambda-entrypoint.sh"]),
            [(TargetName.LAMBDA, "image.config.Entrypoint")],
            id="aws-base-image-entrypoint",
        ),
        pytest.param(
            _spec(lam={"webAdapter": "none"}), _oci(entrypoint=["/lambda-entrypoint.sh"]), [], id="handler-image"
        ),
        pytest.param(
            _spec(),
            parse_image_config({"architecture": "amd64", "os": "linux", "config": {}}),
            [(TargetName.LAMBDA, "image.config"), (TargetName.CLOUDRUN, "image.config")],
            id="nothing-to-start",
        ),
    ],
)
def test_the_images_oci_config_is_checked_where_given(
    spec: InferenceWorkloadSpec, image: ImageConfig, expected: list[tuple[TargetName, str]]
) -> None:
    assert [(p.target, p.field) for p in packaging_problems(spec, image)] == expected


def test_oci_and_docker_inspect_configs_parse_and_bad_ones_say_why() -> None:
    docker = parse_image_config(
        {"Architecture": "arm64", "Os": "linux", "Config": {"Cmd": ["serve"], "ExposedPorts": {"8080/tcp": {}}}}
    )
    assert (docker.architecture, docker.os, docker.cmd, docker.exposed_ports) == (
        "arm64",
        "linux",
        ("serve",),
        ("8080/tcp",),
    )
    assert parse_image_config({"config": {"Env": ["A=1=2", "B"]}}).env == {"A": "1=2", "B": ""}
    for bad, words in (([], "JSON object"), ({"config": {"Cmd": "serve"}}, "config.Cmd"), ({"config": 3}, "object")):
        with pytest.raises(ImageConfigError, match=words):
            parse_image_config(bad)


def test_the_lambda_target_refuses_a_package_that_cannot_start_before_any_call() -> None:
    workload = make_workload(spec={"lambda": {"webAdapter": "layer"}})
    with pytest.raises(PermanentTargetError, match=r"lambda: spec\.lambda\.webAdapter: Lambda attaches no layers"):
        function_config(workload, DesiredTarget(replicas=0), default_role_arn=ROLE)


async def test_the_function_gets_the_declared_architecture_and_no_adapter_settings_without_an_adapter(
    lambda_target: LambdaTarget, lambda_client: Any
) -> None:
    spec = {"model": {"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/m:1", "sizeMb": 100}}
    arm = make_workload("arm", "ml", spec={**spec, "lambda": {"architecture": "arm64", "webAdapter": "none"}})
    state = await lambda_target.ensure(arm, DesiredTarget(replicas=0))
    assert state.ready, state.message
    config = lambda_client.get_function(FunctionName=lambda_target.function_name(arm))["Configuration"]
    assert config["Architectures"] == ["arm64"]
    assert "AWS_LWA_PORT" not in config.get("Environment", {}).get("Variables", {})
    # back to x86_64 with the adapter: the code update carries the architecture (UpdateFunctionCode's
    # Architectures; moto's server ignores that parameter, so the request itself is checked), the configuration
    # update the adapter's settings
    sent: list[dict[str, Any]] = []
    client = lambda_target.client("us-east-1")
    client.meta.events.register(
        "provide-client-params.lambda.UpdateFunctionCode", lambda params, **_: sent.append(dict(params))
    )
    x86 = make_workload("arm", "ml", uid=arm.metadata.uid, spec=spec)
    assert (await lambda_target.ensure(x86, DesiredTarget(replicas=0))).ready
    assert [p["Architectures"] for p in sent] == [["x86_64"]]
    config = lambda_client.get_function(FunctionName=lambda_target.function_name(x86))["Configuration"]
    assert config["Environment"]["Variables"]["AWS_LWA_PORT"] == "8080"
    assert await lambda_target.retire(x86)


def test_the_reconciler_marks_packaging_invalid_refuses_lambda_and_clears_when_fixed(
    lambda_target: LambdaTarget, lambda_faults: LambdaFaults, moto_aws: MotoAws
) -> None:
    writer = MemoryWriter()
    lambda_faults.attach(lambda_target.client(moto_aws.region))
    reconciler = Reconciler(
        cast(Any, writer),
        {TargetName.LAMBDA: lambda_target, TargetName.CLUSTER: DryRunTarget()},
        tenancy=inline_tenancy(),
    )
    inputs = TickInputs(now=NOW, price_book=BOOK, capacity=ClusterCapacity())
    body = {
        "metadata": {"name": "pkg", "namespace": NS, "uid": "uid-pkg", "generation": 1, "finalizers": []},
        "spec": {
            "model": {"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/m:1", "sizeMb": 100},
            "placement": {"allowedTargets": ["cluster", "lambda"], "pin": "lambda"},
            "lambda": {"roleArn": moto_aws.role_arn, "webAdapter": "layer"},
        },
    }
    writer.put(body)

    def condition(type_: str) -> dict[str, Any] | None:
        return next((c for c in writer.objects[(NS, "pkg")]["status"]["conditions"] if c["type"] == type_), None)

    async def run() -> None:
        await reconciler.reconcile(writer.objects[(NS, "pkg")], inputs)
        packaging = condition("PackagingValid")
        assert packaging is not None and (packaging["status"], packaging["reason"]) == ("False", "PackagingInvalid")
        assert packaging["message"].startswith("lambda: spec.lambda.webAdapter: Lambda attaches no layers")
        assert [e["reason"] for e in writer.events if e["reason"] == "PackagingInvalid"] == ["PackagingInvalid"]
        invalid = condition("InvalidSpec")
        assert invalid is not None and invalid["status"] == "False"  # the spec is valid; only lambda is refused
        assert not [c for c in lambda_faults.calls if c.startswith(("Create", "Update", "Publish"))], (
            lambda_faults.calls
        )
        assert writer.objects[(NS, "pkg")]["status"].get("placement") != "lambda"

        fixed = writer.objects[(NS, "pkg")]
        fixed["spec"]["lambda"]["webAdapter"] = "image"
        fixed["metadata"]["generation"] = 2
        await reconciler.reconcile(fixed, inputs)
        packaging = condition("PackagingValid")
        assert packaging is not None and (packaging["status"], packaging["reason"]) == ("True", "PackagingValid")
        await lambda_target.retire(make_workload("pkg", NS, uid="uid-pkg"))

    asyncio.run(run())


def test_a_workload_without_packaging_problems_carries_no_packaging_condition() -> None:
    writer = MemoryWriter()
    reconciler = Reconciler(cast(Any, writer), {TargetName.CLUSTER: DryRunTarget()}, tenancy=inline_tenancy())
    writer.put(
        {
            "metadata": {"name": "ok", "namespace": NS, "uid": "u", "generation": 1},
            "spec": {"model": {"image": "m", "sizeMb": 1}},
        }
    )
    asyncio.run(
        reconciler.reconcile(
            writer.objects[(NS, "ok")], TickInputs(now=NOW, price_book=BOOK, capacity=ClusterCapacity())
        )
    )
    assert "PackagingValid" not in {c["type"] for c in writer.objects[(NS, "ok")]["status"]["conditions"]}


def _workload_object(spec: InferenceWorkloadSpec) -> dict[str, Any]:
    return {"metadata": {"name": "m", "namespace": "ml", "generation": 1}, "spec": spec.to_wire(), "status": {}}


def test_explain_says_what_the_image_lacks_from_the_spec_and_the_oci_config(tmp_path: Path) -> None:
    from rich.console import Console

    from inference_placement.explain import render

    spec = _spec(lam={"webAdapter": "layer"})
    expl = explain_workload(_workload_object(spec), BOOK)
    assert [(r.target, r.field) for r in expl.packaging] == [(TargetName.LAMBDA, "spec.lambda.webAdapter")]
    assert not expl.image_config_read
    lambda_row = next(r for r in expl.targets if r.target is TargetName.LAMBDA)
    assert not lambda_row.feasible and lambda_row.why_not.startswith("packaging: lambda: spec.lambda.webAdapter")

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"architecture": "arm64", "os": "linux", "config": {"Cmd": ["serve"]}}))
    image = load_image_config_file(config)
    expl = explain_workload(_workload_object(_spec()), BOOK, image_config=image)
    assert expl.image_config_read
    assert [(r.target.value, r.field) for r in expl.packaging] == [
        ("lambda", "spec.lambda.architecture"),
        ("cloudrun", "image.architecture"),
    ]
    console = Console(width=200, record=True)
    render(expl, console)
    text = console.export_text()
    assert "Packaging: what the image lacks" in text and "linux/amd64 executables only" in text
    assert expl.to_dict()["packaging"][0]["field"] == "spec.lambda.architecture"

    spec_only = Console(width=200, record=True)
    render(explain_workload(_workload_object(_spec()), BOOK), spec_only)
    assert "pass --image-config" in spec_only.export_text()


def test_explain_refuses_an_unreadable_image_config_in_one_line(tmp_path: Path) -> None:
    from inference_placement.cli import app

    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(app, ["explain", "m", "--image-config", str(bad)])
    assert result.exit_code != 0
    assert "--image-config" in result.output and "invalid" in result.output
