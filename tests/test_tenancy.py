"""Admin-defined cloud targets (issue 18, item 1): the pure admission ``policy.tenancy.admit_serverless``.

A workload names a ServerlessTarget; it is refused, naming the field, when its namespace is not allowed, its image is
outside the allowed prefixes, the target is missing or of the other provider, or it writes an identity of its own;
without a target it is refused unless the operator allows the deprecated inline fields. An admitted workload's spec
carries the admin's project/account, role or service account and region, whatever it wrote.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from inference_placement.api.names import lambda_function_name
from inference_placement.api.serverless_target import (
    LabelSelector,
    LabelSelectorRequirement,
    SelectorOperator,
    ServerlessTarget,
    ServerlessTargetSpec,
    target_problems,
)
from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.validation import parse_spec
from inference_placement.api.workload import InferenceWorkload
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.controller.tenancy import TenancyCache
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.price_book import default_price_book
from inference_placement.policy.tenancy import (
    TenancyView,
    admit_serverless,
    identity_for_retire,
    image_allowed,
    selector_matches,
)
from inference_placement.targets.aws_lambda import LambdaTarget
from inference_placement.targets.base import DesiredTarget, TargetState
from tests.plugins.cloud import FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_SECRET_ACCESS_KEY, MotoAws
from tests.plugins.memory_api import MemoryWriter

ROLE = "arn:aws:iam::111122223333:role/team-a-inference"
SA = "team-a-run@team-a-prod.iam.gserviceaccount.com"


def _lambda_target(**overrides: Any) -> ServerlessTarget:
    spec: dict[str, Any] = {
        "provider": "lambda",
        "account": "111122223333",
        "regions": ["eu-west-1", "us-east-1"],
        "roleArn": ROLE,
        "allowedImages": ["111122223333.dkr.ecr.eu-west-1.amazonaws.com/team-a"],
        "allowedNamespaces": {"names": ["team-a"]},
    }
    spec.update(overrides)
    return ServerlessTarget(name="team-a-lambda", spec=ServerlessTargetSpec.model_validate(spec))


def _cloudrun_target(**overrides: Any) -> ServerlessTarget:
    spec: dict[str, Any] = {
        "provider": "cloudrun",
        "project": "team-a-prod",
        "regions": ["europe-west4"],
        "serviceAccount": SA,
        "allowedImages": ["europe-docker.pkg.dev/team-a-prod/models/"],
        "allowedNamespaces": {"selector": {"matchLabels": {"team": "a"}}},
    }
    spec.update(overrides)
    return ServerlessTarget(name="team-a-run", spec=ServerlessTargetSpec.model_validate(spec))


def _spec(**sections: Any) -> InferenceWorkloadSpec:
    raw: dict[str, Any] = {
        "model": {"image": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/team-a/m:1", "sizeMb": 100},
        "placement": {"allowedTargets": ["cluster", "lambda"]},
        "lambda": {"targetRef": {"name": "team-a-lambda"}},
    }
    raw.update(sections)
    spec, problems = parse_spec(raw)
    assert spec is not None and not problems, problems
    return spec


def _view(*targets: ServerlessTarget, **kwargs: Any) -> TenancyView:
    return TenancyView(targets={t.name: t for t in targets}, **kwargs)


def _fields(admission: Any) -> list[str]:
    return [p.field for p in admission.problems]


def test_an_allowed_workload_deploys_with_the_admins_role_and_default_region() -> None:
    admission = admit_serverless(_spec(), "team-a", _view(_lambda_target()))
    assert admission.problems == [] and admission.spec is not None
    assert (admission.spec.lambda_.role_arn, admission.spec.lambda_.region) == (ROLE, "eu-west-1")


def test_a_region_the_workload_names_is_kept_when_the_target_allows_it() -> None:
    spec = _spec(**{"lambda": {"targetRef": {"name": "team-a-lambda"}, "region": "us-east-1"}})
    admission = admit_serverless(spec, "team-a", _view(_lambda_target()))
    assert admission.spec is not None and admission.spec.lambda_.region == "us-east-1"


@pytest.mark.parametrize(
    ("namespace", "lambda_section", "model_image", "field", "words"),
    [
        pytest.param("team-b", None, None, "lambda.targetRef", "namespace team-b is not allowed", id="namespace"),
        pytest.param(
            "team-a", None, "111122223333.dkr.ecr.eu-west-1.amazonaws.com/team-ab/m:1", "model.image", "not under",
            id="image-of-a-sibling-prefix",
        ),
        pytest.param(
            "team-a", {"imageUri": "999999999999.dkr.ecr.eu-west-1.amazonaws.com/team-b/m:1"}, None,
            "lambda.imageUri", "not under", id="image-uri-of-another-account",
        ),
        pytest.param(
            "team-a", {"roleArn": "arn:aws:iam::111122223333:role/admin"}, None, "lambda.roleArn",
            "set by ServerlessTarget", id="own-role",
        ),
        pytest.param("team-a", {"region": "ap-south-1"}, None, "lambda.region", "not a region of", id="region"),
        pytest.param(
            "team-a", {"targetRef": {"name": "nope"}}, None, "lambda.targetRef.name", "no ServerlessTarget",
            id="missing-target",
        ),
        pytest.param(
            "team-a", {"targetRef": {"name": "team-a-run"}}, None, "lambda.targetRef.name", "cloudrun target",
            id="other-provider",
        ),
    ],
)  # fmt: skip
def test_a_workload_outside_the_targets_policy_is_refused_naming_the_field(
    namespace: str, lambda_section: dict[str, Any] | None, model_image: str | None, field: str, words: str
) -> None:
    section: dict[str, Any] = {"targetRef": {"name": "team-a-lambda"}, **(lambda_section or {})}
    raw_model = {"image": model_image or "111122223333.dkr.ecr.eu-west-1.amazonaws.com/team-a/m:1", "sizeMb": 100}
    spec = _spec(model=raw_model, **{"lambda": section})
    admission = admit_serverless(spec, namespace, _view(_lambda_target(), _cloudrun_target()))
    assert admission.spec is None
    assert field in _fields(admission), admission.problems
    assert any(words in p.message for p in admission.problems), admission.problems


def test_without_a_target_the_inline_fields_are_refused_unless_the_operator_allows_them() -> None:
    inline = _spec(**{"lambda": {"roleArn": "arn:aws:iam::999999999999:role/anything"}})
    refused = admit_serverless(inline, "team-a", _view())
    assert refused.spec is None and _fields(refused) == ["lambda.targetRef"]
    allowed = admit_serverless(inline, "team-a", _view(allow_inline_cloud_identity=True))
    assert allowed.spec is not None and allowed.spec.lambda_.role_arn == "arn:aws:iam::999999999999:role/anything"
    assert any("deprecated" in note for note in allowed.notes)


def test_targets_the_operator_does_not_offer_are_not_checked() -> None:
    inline = _spec(**{"lambda": {"roleArn": "arn:aws:iam::999999999999:role/anything"}})
    assert admit_serverless(inline, "team-a", _view(), offered=(TargetName.CLUSTER,)).spec is not None


def test_targets_that_cannot_be_read_refuse_every_workload_that_names_one() -> None:
    admission = admit_serverless(_spec(), "team-a", _view(_lambda_target(), problem="HTTP 403"))
    assert admission.spec is None and "cannot be read" in admission.problems[0].message


def test_a_namespace_selector_admits_by_label_and_cloud_run_gets_the_admins_identity() -> None:
    spec = _spec(
        model={"image": "europe-docker.pkg.dev/team-a-prod/models/m:1", "sizeMb": 100},
        placement={"allowedTargets": ["cluster", "cloudrun"]},
        cloudRun={"targetRef": {"name": "team-a-run"}},
    )
    view = _view(_cloudrun_target(), namespace_labels={"ml": {"team": "a"}, "other": {"team": "b"}})
    admitted = admit_serverless(spec, "ml", view)
    assert admitted.spec is not None
    run = admitted.spec.cloud_run
    assert (run.project, run.service_account, run.region) == ("team-a-prod", SA, "europe-west4")
    assert admit_serverless(spec, "other", view).spec is None
    assert admit_serverless(spec, "unlabelled", view).spec is None


def test_a_target_that_allows_no_namespace_allows_none() -> None:
    target = _lambda_target(allowedNamespaces={})
    assert admit_serverless(_spec(), "team-a", _view(target)).spec is None


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("reg.io/team-a/m:1", True),
        ("reg.io/team-a:1", True),
        ("reg.io/team-a@sha256:abc", True),
        ("reg.io/team-ab/m:1", False),
        ("reg.io.evil.com/team-a/m:1", False),
        ("evil.com/reg.io/team-a/m:1", False),
    ],
)
def test_image_prefixes_match_only_at_a_boundary(image: str, allowed: bool) -> None:
    assert image_allowed(image, ["reg.io/team-a"]) is allowed


def test_label_selector_expressions() -> None:
    selector = LabelSelector(
        match_expressions=[
            LabelSelectorRequirement(key="tier", operator=SelectorOperator.IN, values=["prod", "staging"]),
            LabelSelectorRequirement(key="frozen", operator=SelectorOperator.DOES_NOT_EXIST),
        ]
    )
    assert selector_matches(selector, {"tier": "prod"})
    assert not selector_matches(selector, {"tier": "dev"})
    assert not selector_matches(selector, {"tier": "prod", "frozen": "yes"})
    assert selector_matches(LabelSelector(), {})


def test_a_target_over_its_spend_cap_takes_no_further_workload_but_keeps_those_on_it() -> None:
    view = _view(_lambda_target(monthlySpendCapUsd=100.0), spend_usd={"team-a-lambda": 120.0})
    moving = admit_serverless(_spec(), "team-a", view)
    assert moving.spec is not None and moving.spec.placement.allowed_targets == [TargetName.CLUSTER]
    assert any("spend cap" in note for note in moving.notes)
    staying = admit_serverless(_spec(), "team-a", view, placed_on=(TargetName.LAMBDA,))
    assert staying.spec is not None and TargetName.LAMBDA in staying.spec.placement.allowed_targets


def test_a_target_with_the_other_providers_fields_or_a_foreign_role_is_not_usable() -> None:
    assert target_problems(_lambda_target().spec) == []
    assert any("not in account" in p for p in target_problems(_lambda_target(account="444455556666").spec))
    assert any("only valid for cloudrun" in p for p in target_problems(_lambda_target(project="team-a-prod").spec))
    broken = _lambda_target(account="444455556666")
    admission = admit_serverless(_spec(), "team-a", _view(broken))
    assert admission.spec is None and "is invalid" in admission.problems[0].message


def test_a_deletion_retires_with_the_targets_role_and_region_whatever_the_namespace() -> None:
    spec = identity_for_retire(_spec(), _view(_lambda_target()))
    assert (spec.lambda_.role_arn, spec.lambda_.region) == (ROLE, "eu-west-1")


# ---------------------------------------------------------------------------------------------- the reconciler


NS = "team-b"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _body(name: str, spec: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1, "finalizers": []},
        "spec": spec,
    }


def _functions(moto_aws: MotoAws) -> list[str]:
    import boto3

    client = boto3.client(
        "lambda",
        region_name=moto_aws.region,
        endpoint_url=moto_aws.endpoint_url,
        aws_access_key_id=FAKE_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_AWS_SECRET_ACCESS_KEY,
    )
    return [f["FunctionName"] for f in client.list_functions()["Functions"]]


@pytest.mark.parametrize(
    ("namespace", "image", "field"),
    [
        pytest.param("team-b", "registry.example/team-a/m:1", "spec.lambda.targetRef", id="namespace-not-allowed"),
        pytest.param("team-a", "registry.example/team-b/m:1", "spec.model.image", id="image-outside-prefixes"),
    ],
)
def test_a_refused_workload_gets_invalid_spec_an_event_and_no_lambda_call(
    lambda_target: LambdaTarget, moto_aws: MotoAws, namespace: str, image: str, field: str
) -> None:
    tenancy = TenancyCache(None)
    account = moto_aws.role_arn.split(":")[4]
    target = _lambda_target(
        account=account,
        roleArn=moto_aws.role_arn,
        regions=[moto_aws.region],
        allowedImages=["registry.example/team-a/"],
        allowedNamespaces={"names": ["team-a"]},
    )
    tenancy.load([target])
    writer = MemoryWriter()
    calls: list[str] = []
    reconciler = Reconciler(cast(Any, writer), {TargetName.LAMBDA: _Recording(lambda_target, calls)}, tenancy=tenancy)
    inputs = TickInputs(now=NOW, price_book=default_price_book(), capacity=ClusterCapacity())
    spec: dict[str, Any] = {
        "model": {"image": image, "sizeMb": 100, "memory": "512Mi"},
        "placement": {"allowedTargets": ["lambda"], "pin": "lambda"},
        "lambda": {"targetRef": {"name": "team-a-lambda"}},
    }
    writer.put(_body("w", spec, namespace))
    asyncio.run(reconciler.reconcile(writer.objects[(namespace, "w")], inputs))
    status = writer.objects[(namespace, "w")]["status"]
    invalid = next(c for c in status["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["status"] == "True" and invalid["message"].startswith(field), invalid
    assert [e["reason"] for e in writer.events] == ["InvalidSpec"] and field in writer.events[0]["message"]
    assert calls == [] and _functions(moto_aws) == [], "no cloud call at all"
    assert writer.objects[(namespace, "w")]["metadata"]["finalizers"] == []

    # the same workload in the allowed namespace with an allowed image is deployed with the admin's role
    allowed = {**spec, "model": {**spec["model"], "image": "registry.example/team-a/m:1"}}
    writer.put(_body("ok", allowed, "team-a"))
    asyncio.run(reconciler.reconcile(writer.objects[("team-a", "ok")], inputs))
    assert calls and all(call == "ensure" for call in calls)
    assert _functions(moto_aws) == [lambda_function_name("team-a", "ok")]


class _Recording:
    """The real Lambda target, recording which calls reached it."""

    def __init__(self, target: LambdaTarget, calls: list[str]) -> None:
        self.target, self.calls, self.name = target, calls, target.name

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        self.calls.append("ensure")
        assert workload.spec.lambda_.role_arn is not None
        return await self.target.ensure(workload, desired)

    async def observe(self, workload: InferenceWorkload) -> TargetState | None:
        self.calls.append("observe")
        return await self.target.observe(workload)

    async def retire(self, workload: InferenceWorkload) -> bool:
        self.calls.append("retire")
        return await self.target.retire(workload)


def test_explain_refuses_what_the_operator_refuses_with_the_same_words() -> None:
    from inference_placement.explain import explain_workload

    target = _lambda_target()
    body: dict[str, Any] = {
        "metadata": {"name": "w", "namespace": "team-b"},
        "spec": {
            "model": {"image": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/team-a/m:1", "sizeMb": 100},
            "placement": {"allowedTargets": ["cluster", "lambda"]},
            "lambda": {"targetRef": {"name": target.name}},
        },
    }
    spec, _ = parse_spec(body["spec"])
    assert spec is not None
    expected = admit_serverless(spec, "team-b", _view(target)).problems
    refused = explain_workload(body, default_price_book(), tenancy=_view(target))
    assert refused.spec_problems == tuple(str(p) for p in expected)
    assert refused.verdict.startswith("verdict: invalid spec, spec.lambda.targetRef: namespace team-b is not allowed")
    body["metadata"]["namespace"] = "team-a"
    allowed = explain_workload(body, default_price_book(), tenancy=_view(target))
    assert allowed.spec_problems == () and any(
        row.target is TargetName.LAMBDA and row.allowed for row in allowed.targets
    )


def test_the_demo_and_the_examples_pass_their_admins_targets() -> None:
    """What the demo applies (examples/admin/serverless-targets.yaml opened to its namespace, and the live workload's
    target) is valid, and every example and the live workload are admitted in the demo's namespace as the demo
    applies them (CPU-only models on the local model-server image)."""
    from pathlib import Path

    import yaml

    from inference_placement.devtools.demo.cli import NAMESPACE
    from inference_placement.devtools.demo.lambda_phase import lambda_image_prefix, lambda_workload
    from inference_placement.devtools.demo.live import LiveSettings, demo_serverless_targets, demo_workload

    root = Path(__file__).resolve().parents[1]
    image = "localhost/inference-placement/model-server:dev"
    role = "arn:aws:iam::123456789012:role/inference-placement-lambda"
    docs = demo_serverless_targets(root, NAMESPACE, image, role, lambda_image_prefix("us-east-1"))
    targets = [
        ServerlessTarget(name=d["metadata"]["name"], spec=ServerlessTargetSpec.model_validate(d["spec"])) for d in docs
    ]
    assert all(target_problems(t.spec) == [] for t in targets)
    view = _view(*targets)
    workloads = [
        demo_workload("live", NAMESPACE, image, LiveSettings()),
        lambda_workload("live-lambda", NAMESPACE, image, LiveSettings(), region="us-east-1"),
    ]
    for path in sorted((root / "examples").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc["spec"].get("accelerator", {}).get("type", "none") == "none":
            doc["spec"]["model"]["image"] = image
        workloads.append(doc)
    for doc in workloads:
        spec, problems = parse_spec(doc["spec"])
        assert spec is not None and not problems, problems
        admission = admit_serverless(spec, NAMESPACE, view)
        assert admission.problems == [], (doc["metadata"]["name"], admission.problems)
        assert admit_serverless(spec, "not-the-demo", view).spec is None or not (
            {TargetName.CLOUDRUN, TargetName.LAMBDA} & set(spec.placement.allowed_targets)
        )
