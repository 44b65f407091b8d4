"""Cloud resource names are deterministic, fit each cloud's limits, and ownership labels/tags satisfy the rules."""

from __future__ import annotations

import re

import pytest
from google.cloud import run_v2
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_placement.targets import naming
from tests.cloudrun_standin import validate_service

CLOUD_RUN_ID = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
LAMBDA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
GCP_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
GCP_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
LAMBDA_TAG = re.compile(r"^[\w.:/=+\-@ ]*$")

DNS_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z", fullmatch=True)
DNS_SUBDOMAIN = st.lists(DNS_LABEL, min_size=1, max_size=4).map(".".join).filter(lambda s: len(s) <= 253)


def test_names_are_a_pure_function_of_namespace_and_name() -> None:
    assert naming.cloud_run_service_id("ml", "embedder") == naming.cloud_run_service_id("ml", "embedder")
    assert naming.lambda_function_name("ml", "embedder") == naming.lambda_function_name("ml", "embedder")
    assert naming.cloud_run_service_id("ml", "embedder").startswith("ip-ml-embedder-")
    assert naming.cloud_run_service_id("ml", "embedder") != naming.cloud_run_service_id("ml", "embedder2")


def test_names_that_sanitise_alike_still_differ() -> None:
    assert naming.cloud_run_service_id("a-b", "c") != naming.cloud_run_service_id("a", "b-c")
    assert naming.lambda_function_name("team.x", "m") != naming.lambda_function_name("team-x", "m")


def test_long_names_are_cut_to_the_limit_and_stay_unique() -> None:
    long_a, long_b = "x" * 250 + "a", "x" * 250 + "b"
    id_a, id_b = naming.cloud_run_service_id("ns", long_a), naming.cloud_run_service_id("ns", long_b)
    assert len(id_a) == naming.CLOUD_RUN_SERVICE_ID_MAX and CLOUD_RUN_ID.match(id_a)
    assert id_a != id_b
    fn_a = naming.lambda_function_name("ns", long_a)
    assert len(fn_a) == naming.LAMBDA_FUNCTION_NAME_MAX and LAMBDA_NAME.match(fn_a)


@settings(max_examples=100, deadline=None)
@given(namespace=DNS_LABEL, name=DNS_SUBDOMAIN)
def test_every_kubernetes_name_gives_valid_cloud_names(namespace: str, name: str) -> None:
    service_id = naming.cloud_run_service_id(namespace, name)
    assert CLOUD_RUN_ID.match(service_id), service_id
    assert LAMBDA_NAME.match(naming.lambda_function_name(namespace, name))


@settings(max_examples=100, deadline=None)
@given(namespace=DNS_LABEL, name=DNS_SUBDOMAIN, uid=st.uuids().map(str))
def test_ownership_labels_satisfy_gcp_label_rules(namespace: str, name: str, uid: str) -> None:
    labels = naming.cloud_run_labels(naming.Owner(uid, namespace, name))
    for key, value in labels.items():
        assert GCP_LABEL_KEY.match(key), key
        assert GCP_LABEL_VALUE.match(value), value
    owner = naming.owner_from_cloud_run_labels(labels)
    assert owner is not None and owner.uid == uid and owner.namespace == namespace


def test_the_standin_accepts_the_labels_the_real_api_rules_allow() -> None:
    labels = naming.cloud_run_labels(
        naming.Owner("0b7e3c9a-1d2f-4e5a-9b8c-7d6e5f4a3b2c", "ml-prod", "a.b.c" + "x" * 200)
    )
    service = run_v2.Service(labels=labels, template=run_v2.RevisionTemplate(containers=[run_v2.Container(image="i")]))
    validate_service(service)  # raises on a rule violation


@pytest.mark.parametrize(
    ("labels", "owned"),
    [
        pytest.param({}, False, id="no-labels"),
        pytest.param({"managed-by": "someone-else", "inference-placement-uid": "u"}, False, id="other-manager"),
        pytest.param({"managed-by": "inference-placement"}, False, id="no-uid"),
        pytest.param({"managed-by": "inference-placement", "inference-placement-uid": "u"}, True, id="ours"),
    ],
)
def test_only_our_labels_name_an_owner(labels: dict[str, str], owned: bool) -> None:
    assert (naming.owner_from_cloud_run_labels(labels) is not None) is owned


def test_lambda_tags_round_trip_and_satisfy_tag_rules() -> None:
    owner = naming.Owner("0b7e3c9a-1d2f-4e5a-9b8c-7d6e5f4a3b2c", "ml", "embedder.v2")
    tags = naming.lambda_tags(owner)
    for key, value in tags.items():
        assert not key.startswith("aws:") and len(key) <= 128 and LAMBDA_TAG.match(key), key
        assert len(value) <= 256 and LAMBDA_TAG.match(value), value
    assert naming.owner_from_lambda_tags(tags) == owner
    assert naming.owner_from_lambda_tags({"app.kubernetes.io/managed-by": "helm"}) is None
