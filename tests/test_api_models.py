"""The API models: examples parse, semantic validation names the field, the CRD is generated from the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from inference_placement.api.crd import CRD_KINDS, render_crd, render_crd_yaml
from inference_placement.api.spec import (
    SERVERLESS,
    InferenceWorkloadSpec,
    TargetName,
    parse_cpu_cores,
    parse_memory_mib,
)
from inference_placement.api.validation import parse_spec, semantic_problems

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_generated_crd_matches_committed_file() -> None:
    committed = (ROOT / "crds" / "inferenceworkloads.yaml").read_text()
    assert committed == render_crd_yaml(), (
        "crds/ drifted from the models: run `inference-placement crd -o crds/inferenceworkloads.yaml`"
    )


def test_generated_serverless_target_crd_matches_committed_file() -> None:
    committed = (ROOT / "crds" / "serverlesstargets.yaml").read_text()
    assert committed == render_crd_yaml("ServerlessTarget"), (
        "crds/ drifted from the models: run "
        "`inference-placement crd --kind ServerlessTarget -o crds/serverlesstargets.yaml`"
    )


def _walk(node: object, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.items():
            out.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_walk(value, f"{path}[{i}]"))
    return out


@pytest.mark.parametrize("kind", ["InferenceWorkload", "ServerlessTarget"])
def test_crd_schema_is_structural(kind: str) -> None:
    schema = CRD_KINDS[kind][1]()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        if path.endswith(".properties") or (path.endswith("additionalProperties") and not isinstance(node, dict)):
            continue
        if "properties" in node:
            assert node.get("type") == "object", f"{path} has properties but no type object"
        if "enum" in node:
            assert node.get("type") == "string", path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path
        assert node.get("additionalProperties") is not False, path


def test_crd_names_and_columns() -> None:
    crd = render_crd()
    names = crd["spec"]["names"]
    assert (names["plural"], names["shortNames"], names["categories"]) == ("inferenceworkloads", ["iw"], ["inference"])
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Placement",
        "Phase",
        "RPS",
        "Cost/mo",
        "Ready",
        "Age",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_valid(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    spec, problems = parse_spec(doc["spec"])
    assert spec is not None and problems == []


def test_examples_cover_the_seed_cases() -> None:
    specs = [InferenceWorkloadSpec.model_validate(yaml.safe_load(p.read_text())["spec"]) for p in EXAMPLES]
    assert any(TargetName.LAMBDA in s.placement.allowed_targets and not s.accelerator.needs_gpu for s in specs)
    assert any(s.accelerator.sharing.value == "mig" for s in specs)
    assert any(
        s.accelerator.type.value == "nvidia-l4" and TargetName.CLOUDRUN in s.placement.allowed_targets for s in specs
    )
    assert any(s.compliance.single_tenant for s in specs)


BASE = {"model": {"image": "img", "sizeMb": 100}}


def _with(**changes: object) -> dict[str, Any]:
    spec: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    spec.update(changes)
    return spec


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        pytest.param(
            _with(
                accelerator={"type": "nvidia-l4"},
                placement={"allowedTargets": ["lambda"]},
                **{"lambda": {"roleArn": "arn:aws:iam::123456789012:role/x"}},
            ),
            "spec.placement.allowedTargets",
            "lambda has no GPU",
            id="lambda-with-gpu",
        ),
        pytest.param(
            _with(accelerator={"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "1g.5gb"}),
            "spec.accelerator.migProfile",
            "not a MIG profile of nvidia-a100-80gb",
            id="mig-profile-of-other-gpu",
        ),
        pytest.param(
            _with(accelerator={"type": "nvidia-t4", "sharing": "mig", "migProfile": "1g.10gb"}),
            "spec.accelerator.sharing",
            "does not support MIG",
            id="mig-on-t4",
        ),
        pytest.param(
            _with(placement={"thresholds": {"mode": "explicit", "offloadBelowRps": 5, "reclaimAboveRps": 1}}),
            "spec.placement.thresholds.reclaimAboveRps",
            "below offloadBelowRps",
            id="reclaim-below-offload",
        ),
        pytest.param(
            _with(
                placement={"allowedTargets": ["cloudrun"]}, cloudRun={"project": "p"}, compliance={"singleTenant": True}
            ),
            "spec.compliance.singleTenant",
            "not allowed",
            id="single-tenant-serverless-only",
        ),
        pytest.param(
            _with(placement={"allowedTargets": ["cluster"], "pin": "lambda"}),
            "spec.placement.pin",
            "not in allowedTargets",
            id="pin-outside-allowed",
        ),
        pytest.param(
            _with(scaling={"minReplicas": 5, "maxReplicas": 2}),
            "spec.scaling.minReplicas",
            "exceeds maxReplicas",
            id="min-above-max",
        ),
        pytest.param(
            _with(
                accelerator={"type": "nvidia-h100-80gb"},
                placement={"allowedTargets": ["cloudrun"]},
                cloudRun={"project": "p"},
            ),
            "spec.placement.allowedTargets",
            "only nvidia-l4",
            id="cloudrun-with-h100",
        ),
    ],
)
def test_semantic_problems_name_the_field(raw: dict[str, Any], field: str, fragment: str) -> None:
    spec, problems = parse_spec(raw)
    assert spec is not None, "schema-valid input"
    messages = [str(p) for p in problems]
    assert any(m.startswith(field + ":") and fragment in m for m in messages), messages


def test_schema_problem_names_the_camel_case_field() -> None:
    spec, problems = parse_spec({"model": {"image": "img", "sizeMb": 0}})
    assert spec is None
    assert [p.field for p in problems] == ["model.sizeMb"]


def test_unknown_field_is_rejected_with_its_name() -> None:
    spec, problems = parse_spec({"model": {"image": "img", "sizeMb": 1, "sizeMB": 2}})
    assert spec is None and problems[0].field == "model.sizeMB"


def test_valid_spec_has_no_semantic_problems() -> None:
    spec = InferenceWorkloadSpec.model_validate(BASE)
    assert semantic_problems(spec) == []
    assert spec.placement.allowed_targets == [TargetName.CLUSTER]


@pytest.mark.parametrize(("quantity", "cores"), [("500m", 0.5), ("2", 2.0), ("1.5", 1.5)])
def test_cpu_quantities(quantity: str, cores: float) -> None:
    assert parse_cpu_cores(quantity) == pytest.approx(cores)


@pytest.mark.parametrize(("quantity", "mib"), [("2Gi", 2048.0), ("512Mi", 512.0), ("1G", 953.674)])
def test_memory_quantities(quantity: str, mib: float) -> None:
    assert parse_memory_mib(quantity) == pytest.approx(mib, rel=1e-4)


@pytest.mark.parametrize(("quantity", "cores"), [("1e3", 1000.0), ("100u", 1e-4), ("+.5", 0.5)])
def test_every_kubernetes_quantity_form_is_a_cpu(quantity: str, cores: float) -> None:
    spec = InferenceWorkloadSpec.model_validate({"model": {"image": "i", "sizeMb": 1, "cpu": quantity}})
    assert spec.model.cpu_cores == pytest.approx(cores)


def test_a_negative_quantity_is_refused_with_the_field_named() -> None:
    spec, problems = parse_spec({"model": {"image": "i", "sizeMb": 1, "memory": "-1Gi"}})
    assert spec is None and [p.field for p in problems] == ["model.memory"]


def test_serverless_is_every_target_but_the_cluster_in_declaration_order() -> None:
    assert SERVERLESS == tuple(t for t in TargetName if t is not TargetName.CLUSTER)


def test_numbers_are_accepted_as_quantities() -> None:
    spec = InferenceWorkloadSpec.model_validate({"model": {"image": "i", "sizeMb": 1, "cpu": 2, "memory": "4Gi"}})
    assert spec.model.cpu == "2" and spec.model.cpu_cores == 2.0
