"""The docs stay true to the code: generated pages are up to date, and the hand-written ones name what exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import cast

import click
import pytest
import yaml
from pydantic import BaseModel

from inference_placement.api.spec import InferenceWorkloadSpec
from inference_placement.api.status import ConditionType, Reason
from tests.plugins.cluster import REPO_ROOT

DOCS = REPO_ROOT / "docs"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


@pytest.mark.parametrize("page", sorted(GENERATOR.PAGES))
def test_generated_page_is_up_to_date(page: str) -> None:
    expected = GENERATOR.PAGES[page]()
    actual = (DOCS / page).read_text(encoding="utf-8")
    assert actual == expected, f"docs/{page} is out of date: run `python docs/generate.py`"


def test_crd_reference_lists_every_spec_field_by_its_wire_name() -> None:
    text = (DOCS / "crd-reference.md").read_text(encoding="utf-8")

    def walk(model: type[BaseModel], path: str) -> None:
        for name, field in model.model_fields.items():
            wire = field.alias or name
            assert f"| `{wire}`" in text, f"{path}.{wire} missing from docs/crd-reference.md"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                assert f"### `{path}.{wire}`" in text
                walk(cast(type[BaseModel], annotation), f"{path}.{wire}")

    walk(InferenceWorkloadSpec, "spec")


def test_operations_guide_explains_every_condition_and_reason() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    for type_ in ConditionType:
        assert f"| `{type_.value}` |" in text, f"condition {type_.value} is not explained"
    for reason in Reason:
        assert f"`{reason.value}`" in text, f"reason {reason.value} is not explained"


def test_argocd_page_embeds_the_charts_lua_script_verbatim() -> None:
    script = (REPO_ROOT / "charts" / "inference-placement" / "argocd-health.lua").read_text(encoding="utf-8")
    page = (DOCS / "argocd.md").read_text(encoding="utf-8")
    assert "resource.customizations.health.placement.inference.dev_InferenceWorkload: |" in page
    for line in script.splitlines():
        assert ("    " + line).rstrip() in page.splitlines(), line


def test_relative_links_between_pages_resolve() -> None:
    for page in [*DOCS.glob("*.md"), REPO_ROOT / "charts" / "inference-placement" / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"


def test_docs_name_only_run_flags_that_exist() -> None:
    """Flags the chart passes and the docs mention must be flags of `inference-placement run`."""
    import typer.main

    from inference_placement.cli import app

    command = cast(click.Group, typer.main.get_command(app))
    run = command.commands["run"]
    flags = {opt for param in run.params for opt in (*param.opts, *param.secondary_opts)}  # --no-leader-elect too
    deployment = (REPO_ROOT / "charts" / "inference-placement" / "templates" / "deployment.yaml").read_text()
    used = set(re.findall(r"- (--[a-z-]+)(?:=|\s*$)", deployment, re.M))
    assert used and used <= flags, used - flags
    explain = command.commands["explain"]  # operations.md documents `explain` too
    explain_flags = {opt for param in explain.params for opt in (*param.opts, *param.secondary_opts)}
    for page in (DOCS / "operations.md", DOCS / "price-book.md"):
        mentioned = set(re.findall(r"`(--[a-z-]+)", page.read_text(encoding="utf-8")))
        assert mentioned <= flags | explain_flags | {"--promql-templates"}, (page.name, mentioned - flags)


def _all_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def test_every_page_is_listed_in_the_docs_index() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in _all_pages():
        if page.name != "README.md":
            assert f"({page.name})" in index, page.name


def test_every_serverless_target_the_docs_show_is_one_the_operator_accepts() -> None:
    """A ServerlessTarget shown in a page is valid as written (the models, then the operator's own checks)."""
    import yaml

    from inference_placement.api.serverless_target import ServerlessTargetSpec, target_problems

    shown = 0
    for page in sorted((REPO_ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S):
            if "kind: ServerlessTarget" not in block:
                continue  # other pages' excerpts may elide (``...``)
            for doc in yaml.safe_load_all(block):
                if isinstance(doc, dict) and doc.get("kind") == "ServerlessTarget":
                    spec = ServerlessTargetSpec.model_validate(doc["spec"])
                    assert target_problems(spec) == [], (page.name, target_problems(spec))
                    shown += 1
    assert shown >= 2  # one per quickstart


def test_every_chart_value_is_documented_in_the_readme_and_the_schema() -> None:
    """helm-docs' convention: each value (or map of values) has a ``# --`` comment in values.yaml; the generated
    README table and values.schema.json's descriptions carry it (their drift: test_generated_page_is_up_to_date)."""
    import json

    values = GENERATOR.chart_values()
    undocumented = [v.key for v in values if not v.description]
    assert not undocumented, f"values.yaml keys without a `# --` comment: {undocumented}"
    readme = (REPO_ROOT / "charts" / "inference-placement" / "README.md").read_text(encoding="utf-8")
    schema = json.loads((REPO_ROOT / "charts" / "inference-placement" / "values.schema.json").read_text())
    for value in values:
        assert f"| `{value.key}` |" in readme, value.key
        node = schema
        for part in value.key.split("."):
            node = node["properties"][part]
        assert node["description"] == value.description, value.key
    top = yaml.safe_load((REPO_ROOT / "charts" / "inference-placement" / "values.yaml").read_text())
    assert {v.key.split(".")[0] for v in values} == set(top), "every top-level value is listed"
