"""Deterministic cloud resource names and the ownership labels/tags that tie a resource to its workload.

A workload's cloud resources are found again by name alone: the name is a pure function of ``namespace/name``
(so an operator that crashed between the cloud create and the status write finds what it created), and the
ownership label/tag carrying the workload's ``metadata.uid`` decides whether the resource is ours to adopt or
somebody else's to leave alone. Every name embeds a short hash of ``namespace/name``: two workloads whose
sanitised names collide ("a-b"/"c" and "a"/"b-c") still get different names, and a name cut to fit a cloud's
limit stays unique.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from inference_placement.api.names import (
    CLOUD_RUN_SERVICE_ID_MAX,
    LAMBDA_FUNCTION_NAME_MAX,
    NAME_PREFIX,
    cloud_run_service_id,
    lambda_function_name,
)

__all__ = [
    "CLOUD_RUN_LABEL_MANAGED_BY",
    "CLOUD_RUN_LABEL_NAME",
    "CLOUD_RUN_LABEL_NAMESPACE",
    "CLOUD_RUN_LABEL_OWNER_UID",
    "CLOUD_RUN_SERVICE_ID_MAX",
    "LAMBDA_FUNCTION_NAME_MAX",
    "LAMBDA_TAG_MANAGED_BY",
    "LAMBDA_TAG_NAME",
    "LAMBDA_TAG_NAMESPACE",
    "LAMBDA_TAG_OWNER_UID",
    "MANAGED_BY",
    "NAME_PREFIX",
    "OwnedResource",
    "Owner",
    "cloud_run_labels",
    "cloud_run_service_id",
    "gcp_label_value",
    "lambda_function_name",
    "lambda_tags",
    "owner_from_cloud_run_labels",
    "owner_from_lambda_tags",
]

MANAGED_BY: Final = "inference-placement"
"""Value of the managed-by label/tag on every cloud resource this operator creates."""

# GCP labels: keys start with a lowercase letter; keys and values use lowercase letters, digits, '_' and '-';
# at most 63 characters each. No '/' or '.', so the keys are flat.
CLOUD_RUN_LABEL_MANAGED_BY: Final = "managed-by"
CLOUD_RUN_LABEL_OWNER_UID: Final = "inference-placement-uid"
CLOUD_RUN_LABEL_NAMESPACE: Final = "inference-placement-namespace"
CLOUD_RUN_LABEL_NAME: Final = "inference-placement-name"

# Lambda tags allow '/', '.', ':' in keys (the "aws:" prefix is reserved), values up to 256 characters.
LAMBDA_TAG_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LAMBDA_TAG_OWNER_UID: Final = "placement.inference.dev/owner-uid"
LAMBDA_TAG_NAMESPACE: Final = "placement.inference.dev/namespace"
LAMBDA_TAG_NAME: Final = "placement.inference.dev/name"

_GCP_LABEL_MAX: Final = 63
_NOT_GCP_LABEL = re.compile(r"[^a-z0-9_-]")


@dataclass(frozen=True)
class Owner:
    """Who a cloud resource belongs to, as its ownership label/tag says."""

    uid: str
    """``metadata.uid`` of the owning InferenceWorkload: the only field that decides ownership."""
    namespace: str = ""
    """For humans reading the cloud console (may be shortened on Cloud Run)."""
    name: str = ""
    """For humans reading the cloud console (may be shortened on Cloud Run)."""


@dataclass(frozen=True)
class OwnedResource:
    """A cloud resource this operator owns, as ``list_owned`` reports it."""

    name: str
    """Cloud Run service id or Lambda function name."""
    location: str
    """Cloud Run ``projects/P/locations/R`` parent, or the Lambda region."""
    owner: Owner


def gcp_label_value(value: str) -> str:
    """``value`` made a valid GCP label value: lowercase, other characters as '_', at most 63 characters."""
    return _NOT_GCP_LABEL.sub("_", value.lower())[:_GCP_LABEL_MAX]


def cloud_run_labels(owner: Owner) -> dict[str, str]:
    """Ownership labels of a Cloud Run service."""
    return {
        CLOUD_RUN_LABEL_MANAGED_BY: MANAGED_BY,
        CLOUD_RUN_LABEL_OWNER_UID: gcp_label_value(owner.uid),
        CLOUD_RUN_LABEL_NAMESPACE: gcp_label_value(owner.namespace),
        CLOUD_RUN_LABEL_NAME: gcp_label_value(owner.name),
    }


def owner_from_cloud_run_labels(labels: Mapping[str, str]) -> Owner | None:
    """The owner a Cloud Run service's labels name, or None when this operator did not create it."""
    if labels.get(CLOUD_RUN_LABEL_MANAGED_BY) != MANAGED_BY or not labels.get(CLOUD_RUN_LABEL_OWNER_UID):
        return None
    return Owner(
        uid=labels[CLOUD_RUN_LABEL_OWNER_UID],
        namespace=labels.get(CLOUD_RUN_LABEL_NAMESPACE, ""),
        name=labels.get(CLOUD_RUN_LABEL_NAME, ""),
    )


def lambda_tags(owner: Owner) -> dict[str, str]:
    """Ownership tags of a Lambda function."""
    return {
        LAMBDA_TAG_MANAGED_BY: MANAGED_BY,
        LAMBDA_TAG_OWNER_UID: owner.uid,
        LAMBDA_TAG_NAMESPACE: owner.namespace,
        LAMBDA_TAG_NAME: owner.name[:256],
    }


def owner_from_lambda_tags(tags: Mapping[str, str]) -> Owner | None:
    """The owner a Lambda function's tags name, or None when this operator did not create it."""
    if tags.get(LAMBDA_TAG_MANAGED_BY) != MANAGED_BY or not tags.get(LAMBDA_TAG_OWNER_UID):
        return None
    return Owner(
        uid=tags[LAMBDA_TAG_OWNER_UID],
        namespace=tags.get(LAMBDA_TAG_NAMESPACE, ""),
        name=tags.get(LAMBDA_TAG_NAME, ""),
    )
