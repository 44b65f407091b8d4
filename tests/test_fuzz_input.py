"""Fuzzed input: hypothesis-generated InferenceWorkload specs and price books, valid and broken.

Pure part (fast): every generated spec goes through ``parse_spec`` (pydantic + semantic validation) and every valid
one through ``decide``; every price book through the loader. Nothing raises; every rejection names the field.

Cluster part (real apiserver + the real operator subprocess, a bounded number of examples): each generated object
is either refused by the CRD (schema or CEL rule) with a 422 naming the field, or reconciled by the operator to a
status with a ``Ready`` condition (``InvalidSpec=True`` naming the field when it is invalid; every semantic problem
is refused at admission); a serving workload survives a stream of bad edits (refused at admission, or let through
and refused by the operator) with its Deployment untouched; a broken price book, at start-up or on reload, is a
clear error and never a crash. The operator is alive and its log free of tracebacks at the end of each.

Deterministic: every hypothesis run here is derandomized (no example database), so CI sees the same examples.
"""

from __future__ import annotations

import copy
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from inference_placement.api.spec import TargetName
from inference_placement.api.validation import parse_spec
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import PlacementState, TrafficWindow, decide
from inference_placement.policy.price_book import (
    PriceBookError,
    default_price_book,
    load_price_book,
    price_book_from_mapping,
)
from tests.plugins.cluster import KubeCluster
from tests.plugins.operator import OperatorProcess, wait_for

Doc = dict[str, Any]

PURE = settings(derandomize=True, database=None, deadline=None, max_examples=200)
CLUSTER = settings(
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking against a real cluster: a failure prints its example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ----------------------------------------------------------------------------------------------- spec generator

MIG = {
    "nvidia-a100-40gb": ["1g.5gb", "2g.10gb", "3g.20gb"],
    "nvidia-a100-80gb": ["1g.10gb", "3g.40gb", "7g.80gb"],
    "nvidia-h100-80gb": ["1g.20gb", "4g.40gb"],
}


@st.composite
def valid_specs(draw: st.DrawFn) -> Doc:
    """A spec both the CRD and the operator accept: cluster target only, small resources."""
    doc: Doc = {
        "model": {
            "image": draw(st.sampled_from(["localhost/fuzz/model:1", "registry.invalid/m@sha256:" + "a" * 64])),
            "port": draw(st.integers(1, 65535)),
            "sizeMb": draw(st.integers(1, 200_000)),
            "cpu": draw(st.sampled_from(["10m", "100m", "0.5", 1])),
            "memory": draw(st.sampled_from(["16Mi", "64Mi", "1Gi"])),
            "serviceSeconds": draw(st.floats(0.001, 30)),
        },
        "slo": {
            "latencyP99Seconds": draw(st.floats(0.01, 60)),
            "attainment": draw(st.floats(0.5, 1.0)),
            "tolerableColdStartSeconds": draw(st.floats(0, 120)),
        },
        "placement": {"allowedTargets": ["cluster"]},
        "scaling": {"minReplicas": draw(st.integers(0, 2)), "maxReplicas": draw(st.integers(2, 5))},
    }
    gpu = draw(st.sampled_from(["none", "exclusive", "mig", "time-slicing"]))
    if gpu == "exclusive":
        doc["accelerator"] = {
            "type": draw(st.sampled_from(["nvidia-t4", "nvidia-l4"])),
            "count": draw(st.integers(1, 2)),
        }
    elif gpu == "mig":
        gpu_type = draw(st.sampled_from(sorted(MIG)))
        doc["accelerator"] = {"type": gpu_type, "sharing": "mig", "migProfile": draw(st.sampled_from(MIG[gpu_type]))}
    elif gpu == "time-slicing":
        doc["accelerator"] = {"type": "nvidia-t4", "sharing": "time-slicing", "timeSlicingReplicas": 4}
    if draw(st.booleans()):
        doc["budget"] = {
            "monthlyUsd": draw(st.floats(0, 100_000)),
            "action": draw(st.sampled_from(["alert", "prefer-cheaper", "cap-scaling"])),
        }
    if draw(st.booleans()):
        low = draw(st.floats(0, 100))
        doc["placement"]["thresholds"] = {
            "mode": "explicit",
            "offloadBelowRps": low,
            "reclaimAboveRps": low + draw(st.floats(0, 100)),
        }
    return doc


@dataclass(frozen=True)
class Mutation:
    kind: str
    """schema: both the CRD and pydantic refuse it; semantic: only semantic validation does; unknown: an unknown
    field (pydantic refuses, the apiserver prunes it); stress: legal but extreme; nonfinite: NaN/inf (not JSON)."""
    path: str
    """The field it is about, as written in YAML below ``spec`` (dotted, camelCase)."""
    value: Any = None
    delete: bool = False
    apply: Callable[[Doc], None] | None = field(default=None, compare=False)


_SCHEMA_BAD: dict[str, list[Any]] = {
    "model.sizeMb": [0, -5, "big", 1.5, True],
    "model.port": [0, 70000, "http"],
    "model.healthPath": ["healthz"],
    "model.cpu": ["lots", "1.5.5", "-1", "2 cores"],
    "model.memory": ["2GB", "lots"],
    "model.serviceSeconds": [0, -1, 901, "fast"],
    "model.env": [[{"name": "1BAD", "value": "x"}], "PATH=/bin", [{"value": "no name"}]],
    "accelerator.type": ["nvidia-z9", "tpu-v5", 7],
    "accelerator.count": [0, 9],
    "accelerator.sharing": ["shared"],
    "accelerator.migProfile": ["3g", "8g.80gb"],
    "accelerator.timeSlicingReplicas": [1, 65],
    "slo.latencyP99Seconds": [0, -1, "1s"],
    "slo.attainment": [0.3, 1.5],
    "slo.tolerableColdStartSeconds": [-1],
    "budget.monthlyUsd": [-1, -0.01, "lots"],
    "budget.action": ["panic"],
    "placement.allowedTargets": [[], ["mars"], "cluster", ["cluster", "lambda", "cloudrun", "mars"]],
    "placement.pin": ["mars"],
    "placement.thresholds.mode": ["manual"],
    "placement.thresholds.offloadBelowRps": [-1],
    "placement.thresholds.hysteresisFraction": [1.5, -0.1],
    "placement.sustainSeconds": [-1, 86401],
    "placement.cooldownSeconds": [604801],
    "scaling.minReplicas": [-1, 1001],
    "scaling.maxReplicas": [0],
    "scaling.targetConcurrency": [0],
    "cloudRun.minInstances": [-1],
    "cloudRun.concurrency": [0, 1001],
    "lambda.roleArn": ["not-an-arn", "arn:aws:iam::12:role/x"],
    "lambda.memoryMb": [64, 20000],
    "lambda.timeoutSeconds": [0, 901],
    "compliance.singleTenant": ["yes", 2],
    "cluster.spot": ["maybe"],
    "cluster.nodeSelector": [{"pool": 5}, ["a"]],
    "slo": ["fast", [1]],
    "placement": [["cluster"]],
    "model": [5, "image:tag"],
}
_REQUIRED = ["model", "model.image", "model.sizeMb"]


def _semantic(path: str, apply: Callable[[Doc], None]) -> Mutation:
    return Mutation("semantic", path, apply=apply)


def _set(doc: Doc, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    cur = doc
    for part in parents:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = cur[part] = {}
        cur = nxt
    cur[leaf] = value


def _set_all(doc: Doc, values: dict[str, Any]) -> None:
    for dotted, value in values.items():
        _set(doc, dotted, value)


SEMANTIC = [
    _semantic(
        "placement.thresholds.reclaimAboveRps",
        lambda d: _set(d, "placement.thresholds", {"mode": "explicit", "offloadBelowRps": 5, "reclaimAboveRps": 1}),
    ),
    _semantic("placement.thresholds.offloadBelowRps", lambda d: _set(d, "placement.thresholds", {"mode": "explicit"})),
    _semantic("scaling.minReplicas", lambda d: _set(d, "scaling", {"minReplicas": 4, "maxReplicas": 2})),
    _semantic("cloudRun.minInstances", lambda d: _set(d, "cloudRun", {"minInstances": 9, "maxInstances": 3})),
    _semantic("placement.pin", lambda d: _set(d, "placement.pin", "lambda")),
    _semantic(
        "accelerator.migProfile",
        lambda d: _set(d, "accelerator", {"type": "nvidia-a100-40gb", "sharing": "mig", "migProfile": "7g.80gb"}),
    ),
    _semantic("accelerator.sharing", lambda d: _set(d, "accelerator", {"type": "nvidia-l4", "sharing": "mig"})),
    _semantic(
        "accelerator.migProfile",
        lambda d: _set(d, "accelerator", {"type": "nvidia-a100-80gb", "sharing": "exclusive", "migProfile": "1g.10gb"}),
    ),
    _semantic(
        "accelerator.timeSlicingReplicas",
        lambda d: _set(d, "accelerator", {"type": "nvidia-t4", "timeSlicingReplicas": 4}),
    ),
    _semantic("accelerator.count", lambda d: _set(d, "accelerator", {"type": "none", "count": 2})),
    _semantic("accelerator.sharing", lambda d: _set(d, "accelerator", {"type": "none", "sharing": "time-slicing"})),
    _semantic(
        "placement.allowedTargets",
        lambda d: _set_all(
            d,
            {
                "accelerator": {"type": "nvidia-h100-80gb"},
                "placement.allowedTargets": ["cluster", "lambda"],
                "lambda.roleArn": "arn:aws:iam::123456789012:role/x",
            },
        ),
    ),
    _semantic("cloudRun.targetRef", lambda d: _set(d, "placement.allowedTargets", ["cluster", "cloudrun"])),
    _semantic("lambda.targetRef", lambda d: _set(d, "placement.allowedTargets", ["lambda", "cluster"])),
    _semantic(
        "compliance.singleTenant",
        lambda d: _set_all(
            d,
            {
                "compliance.singleTenant": True,
                "placement.allowedTargets": ["cluster", "lambda"],
                "placement.pin": "lambda",
                "lambda.roleArn": "arn:aws:iam::123456789012:role/x",
            },
        ),
    ),
]

STRESS = [
    Mutation("stress", "model.image", "registry.invalid/" + "x" * 100_000),
    Mutation("stress", "model.env", [{"name": f"V{i}", "value": "ü€😀\u202e" * 500} for i in range(20)]),
    Mutation("stress", "model.sizeMb", 2**63 - 1),
    Mutation("stress", "slo.latencyP99Seconds", 1e308),
    Mutation("stress", "slo.tolerableColdStartSeconds", 1e308),
    Mutation("stress", "budget.monthlyUsd", 1e308),
    Mutation("stress", "budget.monthlyUsd", 5e-324),
    Mutation("stress", "model.serviceSeconds", 5e-324),
    Mutation("stress", "cluster.nodeSelector", {f"k{i}.example/x": "v" * 63 for i in range(50)}),
]

NONFINITE_PATHS = [
    "slo.latencyP99Seconds",
    "slo.tolerableColdStartSeconds",
    "budget.monthlyUsd",
    "model.serviceSeconds",
    "slo.attainment",
    "placement.thresholds.offloadBelowRps",
    "placement.thresholds.hysteresisFraction",
]


def mutations(json_safe: bool) -> st.SearchStrategy[Mutation]:
    schema = st.sampled_from(sorted(_SCHEMA_BAD)).flatmap(
        lambda path: st.sampled_from(_SCHEMA_BAD[path]).map(lambda value: Mutation("schema", path, value))
    )
    missing = st.sampled_from(_REQUIRED).map(lambda path: Mutation("schema", path, delete=True))
    unknown = st.sampled_from(["model.gpuMemory", "placement.region", "budgetUsd", "slo.p50"]).map(
        lambda path: Mutation("unknown", path, 1)
    )
    options = [schema, missing, unknown, st.sampled_from(SEMANTIC), st.sampled_from(STRESS)]
    if not json_safe:
        nonfinite = st.tuples(st.sampled_from(NONFINITE_PATHS), st.sampled_from([math.nan, math.inf, -math.inf]))
        options.append(nonfinite.map(lambda pv: Mutation("nonfinite", pv[0], pv[1])))
    return st.one_of(*options)


@dataclass
class Case:
    doc: Doc
    mutations: list[Mutation]

    def of(self, kind: str) -> list[Mutation]:
        return [m for m in self.mutations if m.kind == kind]

    @property
    def refused_by_schema(self) -> bool:
        return bool(self.of("schema"))


def _apply(doc: Doc, mutation: Mutation) -> bool:
    """Apply ``mutation``; False (doc unchanged) when an earlier mutation replaced a parent with a non-object."""
    if mutation.apply is not None:
        mutation.apply(doc)
        return True
    *parents, leaf = mutation.path.split(".")
    cur: Any = doc
    for part in parents:
        if not isinstance(cur, dict):
            return False
        cur = cur.setdefault(part, {})
    if not isinstance(cur, dict):
        return False
    if mutation.delete:
        cur.pop(leaf, None)
    else:
        cur[leaf] = copy.deepcopy(mutation.value)
    return True


@st.composite
def cases(draw: st.DrawFn, json_safe: bool = False) -> Case:
    """A valid spec with 0-3 mutations on unrelated fields (at most one semantic one: they rewrite whole sections)."""
    doc = draw(valid_specs())
    chosen: list[Mutation] = []
    for mutation in draw(st.lists(mutations(json_safe), max_size=3)):
        overlaps = any(
            m.path == mutation.path or m.path.startswith(mutation.path + ".") or mutation.path.startswith(m.path + ".")
            for m in chosen
        )
        if mutation.kind == "semantic" and any(m.kind == "semantic" for m in chosen):
            continue
        if mutation.kind == "semantic" and chosen:
            continue  # a semantic rewrite could undo an earlier mutation of the same section
        if not overlaps and _apply(doc, mutation):
            chosen.append(mutation)
    return Case(doc, chosen)


def _names(message: str, path: str) -> bool:
    return f"spec.{path}" in message


# ----------------------------------------------------------------------------------------------- pure: specs

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PRICE_BOOK = default_price_book()


@PURE
@given(case=cases())
def test_every_generated_spec_is_parsed_or_rejected_naming_its_fields(case: Case) -> None:
    spec, problems = parse_spec(case.doc)
    messages = [str(p) for p in problems]
    assert all(m.startswith("spec.") and p.field and p.message for m, p in zip(messages, problems, strict=True))
    text = "; ".join(messages)
    refusing = case.of("schema") + case.of("unknown") + case.of("nonfinite")
    if refusing:
        assert spec is None, f"accepted despite {refusing}"
        for mutation in refusing:
            assert _names(text, mutation.path), f"{mutation} not named in: {text}"
        return
    assert spec is not None, text
    if case.of("semantic"):
        [mutation] = case.of("semantic")
        assert _names(text, mutation.path), f"{mutation} not named in: {text}"
        return
    assert problems == [], text
    # A valid spec survives the wire round trip unchanged, and the policy decides on it without raising.
    again, problems_again = parse_spec(spec.to_wire())
    assert again == spec and problems_again == []
    for window in (None, TrafficWindow(30.0, (0.0, 2.5, 40.0, 400.0), 0.2, NOW)):
        for current in (None, TargetName.CLUSTER):
            decision = decide(spec, window, PlacementState(current, None, 0.0), PRICE_BOOK, ClusterCapacity(), NOW)
            for cost in decision.projected_monthly_cost_usd.values():
                assert cost is None or math.isfinite(cost)


@PURE
@given(raw=st.one_of(st.none(), st.integers(), st.text(max_size=50), st.lists(st.integers(), max_size=3)))
def test_a_spec_that_is_not_an_object_is_rejected_at_the_root(raw: Any) -> None:
    spec, problems = parse_spec(raw)
    assert spec is None and problems and all(str(p).startswith("spec.") for p in problems)


# ----------------------------------------------------------------------------------------------- pure: price books

PACKAGED_TEXT = resources.files("inference_placement").joinpath("data/price-book.yaml").read_text(encoding="utf-8")
PACKAGED: Doc = yaml.safe_load(PACKAGED_TEXT)


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, (*path, str(k)))]
    return [path]


LEAVES = _leaves(PACKAGED)
SECTIONS = sorted({leaf[:n] for leaf in LEAVES for n in range(1, len(leaf))})
_BAD_NUMBERS = [-1, -0.5, math.nan, math.inf, -math.inf, "cheap", [1], {"a": 1}, None, True]


@dataclass(frozen=True)
class BookMutation:
    path: tuple[str, ...]
    action: str
    value: Any = None


def _book_mutations() -> st.SearchStrategy[BookMutation]:
    numeric = [leaf for leaf in LEAVES if _get(PACKAGED, leaf).__class__ in (int, float)]
    bad_value = st.tuples(st.sampled_from(numeric), st.sampled_from(_BAD_NUMBERS)).map(
        lambda pv: BookMutation(pv[0], "set", pv[1])
    )
    delete = st.sampled_from([s for s in SECTIONS if s[0] in ("prices", "platforms")] + LEAVES).map(
        lambda p: BookMutation(p, "delete")
    )
    wrong_shape = st.tuples(st.sampled_from(SECTIONS), st.sampled_from(["a string", 3, ["list"]])).map(
        lambda pv: BookMutation(pv[0], "set", pv[1])
    )
    unknown = st.sampled_from(SECTIONS).map(lambda p: BookMutation((*p, "surprise_field"), "set", 1))
    return st.one_of(bad_value, delete, wrong_shape, unknown)


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _names_path(message: str, path: tuple[str, ...]) -> bool:
    """The message names the field: its path components appear in it, in order (pydantic reports a validator's
    complaint at the enclosing model, with the rest of the path in the text)."""
    at = 0
    for part in path:
        at = message.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


@PURE
@given(mutation=_book_mutations())
def test_every_broken_price_book_value_is_rejected_naming_the_field(mutation: BookMutation) -> None:
    raw = copy.deepcopy(PACKAGED)
    parent = _get(raw, mutation.path[:-1])
    if mutation.action == "delete":
        del parent[mutation.path[-1]]
    else:
        parent[mutation.path[-1]] = mutation.value
    try:
        price_book_from_mapping(raw, source="fuzzed book")  # what load_price_book does after YAML parsing
    except PriceBookError as err:
        message = str(err)
        assert message.startswith("fuzzed book"), message
        path = mutation.path
        named = _names_path(message, path) or (_names_path(message, path[:-1]) and path[-1] in message)
        assert named, f"{mutation}: {message}"
        return
    # Accepted: only where the mutation left a legal book.
    new_key_in_a_map = mutation.path[-1] == "surprise_field" and any(
        part in ("gpu_hour", "gpu_second", "gpu_second_zonal_redundancy", "instance_hour", "mig_profiles")
        for part in mutation.path
    )  # a price for a new GPU type or instance type, a new MIG profile
    lax_bool = mutation.value is True  # pydantic's lax mode reads true as 1
    assert mutation.action == "delete" or new_key_in_a_map or lax_bool, f"accepted: {mutation}"


@PURE
@given(cut=st.integers(0, len(PACKAGED_TEXT)), noise=st.sampled_from(["", "\t", ": :", "[", "{{", "\x00", "- -"]))
def test_a_truncated_or_garbled_price_book_file_is_a_price_book_error(cut: int, noise: str) -> None:
    text = PACKAGED_TEXT[:cut] + noise + PACKAGED_TEXT[cut : cut + 40]
    try:
        load_price_book(text, source="garbled book")
    except PriceBookError as err:
        assert str(err).startswith("garbled book")


# ----------------------------------------------------------------------------------------------- real cluster

GROUP, VERSION, PLURAL = "placement.inference.dev", "v1alpha1", "inferenceworkloads"
FUZZ_EXAMPLES = 32
OPERATOR_ARGS = ("--set", "cluster.imagePullPolicy=Never")  # pods never pull: no traffic beyond loopback


def _api(cluster: KubeCluster) -> Any:
    from kubernetes import client, config

    return client.CustomObjectsApi(config.new_client_from_config(config_file=cluster.kubeconfig))


def _body(name: str, namespace: str, spec: Doc) -> Doc:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _condition(obj: Doc, type_: str) -> Doc | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def _settled(obj: Doc) -> bool:
    status = obj.get("status") or {}
    return _condition(obj, "Ready") is not None and status.get("observedGeneration") == obj["metadata"]["generation"]


def _small_cluster_spec(cluster: KubeCluster) -> Doc:
    """A CPU workload for the cluster target; it really serves when the local node runs Pods."""
    return {
        "model": {"image": cluster.model_server_image, "sizeMb": 300, "cpu": "50m", "memory": "128Mi"},
        "placement": {"allowedTargets": ["cluster"]},
    }


def _on_cluster(api: Any, namespace: str, name: str) -> Doc | None:
    """The object once the cluster is its placement or the target it is being placed on (its Deployment exists)."""
    obj: Doc = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    status = obj.get("status") or {}
    target = status.get("placement") or (status.get("migration") or {}).get("target")
    return obj if target == "cluster" else None


def _assert_operator_healthy(op: OperatorProcess) -> None:
    logs = op.logs()
    assert op.alive(), f"the operator died:\n{logs[-4000:]}"
    assert "Traceback" not in logs, logs[logs.index("Traceback") - 500 :][:6000]


@pytest.mark.cluster
def test_fuzzed_workloads_through_the_real_apiserver_and_operator(
    crd_installed: KubeCluster, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    from kubernetes.client import ApiException

    op = operator_factory(namespace, *OPERATOR_ARGS)
    api = _api(crd_installed)
    accepted: dict[str, Case] = {}
    refused: list[tuple[Case, str]] = []
    deadline = time.monotonic() + 40.0

    @settings(CLUSTER, max_examples=FUZZ_EXAMPLES)
    @given(case=cases(json_safe=True))
    def apply_one(case: Case) -> None:
        if time.monotonic() > deadline:  # deadline-aware: a slow machine runs fewer examples, never a slow test
            return
        name = f"fz-{len(accepted) + len(refused):02d}-{uuid.uuid4().hex[:4]}"
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _body(name, namespace, case.doc))
        except ApiException as err:
            assert err.status == 422, f"{case}: {err.status} {err.body[:2000]}"
            message = json.loads(err.body)["message"]
            assert case.refused_by_schema or case.of("semantic"), (
                f"refused though only {case.mutations}: {message[:2000]}"
            )
            refused.append((case, message))
            return
        # the CRD's CEL rules refuse every semantic problem at admission
        assert not case.of("semantic"), f"accepted though {case.of('semantic')}"
        accepted[name] = case

    apply_one()
    assert accepted and refused, f"the generator should produce both: {len(accepted)} accepted, {len(refused)} refused"

    for case, message in refused:  # the apiserver names every field it refused ...
        named = case.of("schema") + case.of("semantic")
        assert any(_names(message, m.path) for m in named), f"{case.mutations}: {message[:1500]}"

    def all_settled() -> dict[str, Doc] | None:
        assert op.alive(), op.logs()[-4000:]
        items = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        objs = {o["metadata"]["name"]: o for o in items}
        pending = [n for n in accepted if n not in objs or not _settled(objs[n])]
        return objs if not pending else None

    objs = wait_for(all_settled, timeout=60, interval=1, what="a status with Ready on every accepted workload")
    for name, case in accepted.items():
        invalid = _condition(objs[name], "InvalidSpec")
        assert invalid is not None, f"{name}: no InvalidSpec condition: {objs[name].get('status')}"
        expected = case.of("schema") + case.of("semantic")  # ... and what it let through, the operator names
        if expected:
            assert invalid["status"] == "True", f"{name} {case.mutations}: {invalid}"
            assert any(_names(invalid["message"], m.path) for m in expected), f"{case.mutations}: {invalid}"
        else:
            assert invalid["status"] == "False", f"{name} {case.mutations}: {invalid}"
    _assert_operator_healthy(op)


@st.composite
def bad_edits(draw: st.DrawFn) -> Mutation:
    """Bad edits: semantic ones (the CRD's CEL rules refuse them), or schema ones the CRD cannot see (the operator
    refuses them)."""
    return draw(
        st.one_of(
            st.sampled_from(SEMANTIC),
            st.sampled_from([Mutation("schema", "model.cpu", -1), Mutation("schema", "model.memory", -2)]),
        )
    )


@pytest.mark.cluster
def test_bad_edits_of_a_serving_workload_leave_its_deployment_untouched(
    crd_installed: KubeCluster, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    from kubernetes.client import ApiException

    op = operator_factory(namespace, *OPERATOR_ARGS)
    api = _api(crd_installed)
    base = _small_cluster_spec(crd_installed)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _body("serving", namespace, base))
    wait_for(lambda: _on_cluster(api, namespace, "serving"), timeout=60, what="placement on the cluster")

    def deployment() -> Doc:
        items: list[Doc] = crd_installed.kubectl_json("get", "deployments", "-n", namespace)["items"]
        assert len(items) == 1, [d["metadata"]["name"] for d in items]
        return items[0]

    before = wait_for(lambda: crd_installed.kubectl_json("get", "deployments", "-n", namespace)["items"], timeout=60)
    before_identity = (before[0]["metadata"]["uid"], before[0]["metadata"]["generation"], before[0]["spec"])
    edits: list[Mutation] = []

    @settings(CLUSTER, max_examples=6)
    @given(edit=bad_edits())
    def edit_once(edit: Mutation) -> None:
        spec = copy.deepcopy(base)
        _apply(spec, edit)
        try:
            for attempt in range(10):  # the operator's status write between the get and the replace is a 409
                obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "serving")
                obj["spec"] = spec
                try:
                    written = api.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "serving", obj)
                    break
                except ApiException as conflict:
                    if conflict.status != 409 or attempt == 9:
                        raise
        except ApiException as err:
            assert err.status == 422 and edit.kind == "semantic", f"{edit}: {err.status} {err.body[:2000]}"
            assert _names(json.loads(err.body)["message"], edit.path), f"{edit}: {err.body[:2000]}"
            now = deployment()
            assert (now["metadata"]["uid"], now["metadata"]["generation"], now["spec"]) == before_identity, edit
            edits.append(edit)
            return
        assert edit.kind == "schema", f"the apiserver let a semantic edit through: {edit}"
        generation = written["metadata"]["generation"]

        def refused() -> Doc | None:
            now = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "serving")
            cond = _condition(now, "InvalidSpec")
            settled = (now.get("status") or {}).get("observedGeneration") == generation
            return cond if settled and cond and cond["status"] == "True" else None

        cond = wait_for(refused, timeout=30, interval=0.5, what=f"InvalidSpec for {edit}")
        assert _names(cond["message"], edit.path), f"{edit}: {cond['message']}"
        now = deployment()
        assert (now["metadata"]["uid"], now["metadata"]["generation"], now["spec"]) == before_identity, edit
        edits.append(edit)

    edit_once()
    assert len(edits) >= 3
    obj = _on_cluster(api, namespace, "serving")
    assert obj is not None, "a bad edit moved the workload off the cluster"
    obj["spec"] = base
    api.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "serving", obj)
    wait_for(
        lambda: (
            (
                c := _condition(
                    api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "serving"), "InvalidSpec"
                )
            )
            and c["status"] == "False"
        ),
        timeout=30,
        what="InvalidSpec=False once the spec is fixed",
    )
    _assert_operator_healthy(op)


BROKEN_BOOKS = {
    "not-yaml": "prices: [unclosed\n",
    "not-a-mapping": "- just\n- a list\n",
    "negative-price": PACKAGED_TEXT.replace("cpu_vcpu_hour:", "cpu_vcpu_hour: -1 #", 1),
    "nan-price": yaml.safe_dump(
        {
            **PACKAGED,
            "prices": {**PACKAGED["prices"], "lambda": {**PACKAGED["prices"]["lambda"], "gb_second": math.nan}},
        }
    ),
    "empty": "",
}
EXPECTED_IN_MESSAGE = {
    "not-yaml": "not valid YAML",
    "not-a-mapping": "expected a mapping",
    "negative-price": "prices.cluster.cpu_vcpu_hour",
    "nan-price": "prices.lambda.gb_second",
    "empty": "expected a mapping",
}


@pytest.mark.cluster
def test_a_broken_price_book_reload_keeps_the_last_good_one_and_the_fleet_running(
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    book = tmp_path / "price-book.yaml"
    book.write_text(PACKAGED_TEXT)
    op = operator_factory(namespace, *OPERATOR_ARGS, "--price-book", str(book))
    api = _api(crd_installed)
    spec = _small_cluster_spec(crd_installed)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _body("priced", namespace, spec))

    def settled_at(generation: int) -> Doc | None:
        obj: Doc = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "priced")
        status = obj.get("status") or {}
        return obj if status.get("observedGeneration") == generation and status.get("lastDecision") else None

    wait_for(lambda: settled_at(1), timeout=60, what="first placement")
    for number, (kind, text) in enumerate(BROKEN_BOOKS.items(), start=1):
        time.sleep(0.05)  # a distinct mtime even on coarse-grained filesystems
        book.write_text(text)
        expected = EXPECTED_IN_MESSAGE[kind]

        def rejected(expected: str = expected) -> list[str]:
            return [line for line in op.logs().splitlines() if "price book rejected" in line and expected in line]

        wait_for(
            rejected,
            timeout=20,
            what=f"the {kind} price book to be rejected with a message naming the problem",
        )
        # The fleet keeps reconciling with the last good book: an edit is still observed and costed.
        spec["scaling"] = {"maxReplicas": 2 + number}
        # a merge patch of the spec, not get-then-replace: the operator's status writes move resourceVersion
        # between the two (a 409 on a loaded machine)
        patched = api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "priced", {"spec": spec})
        generation = patched["metadata"]["generation"]
        settled = wait_for(partial(settled_at, generation), timeout=30, what=f"reconcile under the {kind} book")
        invalid = _condition(settled, "InvalidSpec")
        assert invalid is not None and invalid["status"] == "False"
        assert settled["status"]["projectedMonthlyCostUsd"]["cluster"] > 0
    book.write_text(PACKAGED_TEXT)
    wait_for(lambda: "price book reloaded" in op.logs(), timeout=20, what="the fixed book to be reloaded")
    _assert_operator_healthy(op)


def _metric(op: OperatorProcess, name: str) -> float | None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values) if values else None


@pytest.mark.cluster
@pytest.mark.parametrize("kind", ["not-yaml", "missing-file"])
def test_a_broken_price_book_at_start_up_runs_on_the_packaged_book_and_says_so(
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    tmp_path: Path,
    kind: str,
) -> None:
    """No crash loop: the operator runs on the packaged book; every workload's PriceBookValid condition names the
    problem, the metrics say it, and a fixed file (then a broken edit: the last good book) is picked up live."""
    book = tmp_path / "price-book.yaml"
    if kind != "missing-file":
        book.write_text(BROKEN_BOOKS[kind])
    op = operator_factory(namespace, *OPERATOR_ARGS, "--price-book", str(book))
    api = _api(crd_installed)
    api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _body("priced", namespace, _small_cluster_spec(crd_installed))
    )

    def book_condition(status: str) -> Doc | None:
        obj: Doc = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "priced")
        cond = _condition(obj, "PriceBookValid")
        return cond if cond is not None and cond["status"] == status and obj["status"].get("lastDecision") else None

    cond = wait_for(lambda: book_condition("False"), timeout=60, what="PriceBookValid=False on the workload")
    expected = {"missing-file": str(book)}.get(kind) or EXPECTED_IN_MESSAGE[kind]
    assert expected in cond["message"] and "packaged price book" in cond["message"], cond
    assert cond["reason"] == "PriceBookRejected"
    assert _metric(op, "inference_placement_price_book_valid") == 0
    assert _metric(op, 'inference_placement_price_book_rejections_total{phase="startup"}') == 1
    # the file fixed: in force at the next tick, the condition turns True
    book.write_text(PACKAGED_TEXT)
    wait_for(lambda: book_condition("True"), timeout=30, what="PriceBookValid=True once the file is fixed")
    assert _metric(op, "inference_placement_price_book_valid") == 1
    # broken at run time: the last good book stays, and the condition, a metric and an Event say so
    time.sleep(0.05)
    book.write_text(BROKEN_BOOKS["negative-price"])
    cond = wait_for(lambda: book_condition("False"), timeout=30, what="PriceBookValid=False after a broken edit")
    assert "last good price book" in cond["message"] and EXPECTED_IN_MESSAGE["negative-price"] in cond["message"]
    assert _metric(op, 'inference_placement_price_book_rejections_total{phase="reload"}') == 1
    events = crd_installed.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", "reason=PriceBookRejected,involvedObject.name=priced"
    )
    assert events["items"] and all(e["type"] == "Warning" for e in events["items"]), events["items"]
    _assert_operator_healthy(op)
