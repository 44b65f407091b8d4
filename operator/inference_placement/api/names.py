"""The names of everything the operator creates for a workload, as pure functions of ``namespace/name``.

One place, low in the layers, because two layers need the very same answer: the targets create resources under
these names, and the router (``routing.model``) accepts an upstream only when it is the workload's own resource
under these names (status is not trusted: a patched status cannot point the router at anything else). A name
is deterministic, so an operator that crashed between a cloud create and the status write finds what it created.
Every cloud name embeds a short hash of ``namespace/name``: two workloads whose sanitised names collide
("a-b"/"c" and "a"/"b-c") still get different names, and a name cut to fit a cloud's limit stays unique.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = [
    "CLOUD_RUN_SERVICE_ID_MAX",
    "DNS_LABEL_MAX",
    "DNS_LABEL_PATTERN",
    "LAMBDA_FUNCTION_NAME_MAX",
    "NAME_PREFIX",
    "cloud_run_service_id",
    "fit_name",
    "lambda_function_name",
    "model_service_name",
]

NAME_PREFIX: Final = "ip-"
"""Every cloud resource name starts with this, so a sweep can skip other resources before reading their tags."""
CLOUD_RUN_SERVICE_ID_MAX: Final = 49
"""Cloud Run service ids: begin with a letter, no trailing hyphen, fewer than 50 characters."""
LAMBDA_FUNCTION_NAME_MAX: Final = 64
"""Lambda function names: up to 64 characters of letters, digits, hyphens and underscores."""
DNS_LABEL_MAX: Final = 63
DNS_LABEL_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1035 label (a Service name): lowercase letters, digits and '-', starting with a letter, not ending in '-'."""
_MODEL_SUFFIX: Final = "-model"
_HASH_CHARS: Final = 8
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def fit_name(value: str, limit: int) -> str:
    """``value`` if it fits, else a prefix plus a short stable hash (labels and DNS labels max out at 63)."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{value[: limit - 9].rstrip('-.')}-{digest}"


def model_service_name(name: str) -> str:
    """The in-cluster Deployment and Service of workload ``name``: ``<name>-model`` (the bare ``<name>`` is the
    stable router Service)."""
    return fit_name(name, DNS_LABEL_MAX - len(_MODEL_SUFFIX)) + _MODEL_SUFFIX


def _name_hash(namespace: str, name: str) -> str:
    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:_HASH_CHARS]


def _slug(namespace: str, name: str) -> str:
    return _NOT_SLUG.sub("-", f"{namespace}-{name}".lower()).strip("-")


def _deterministic_name(namespace: str, name: str, limit: int) -> str:
    suffix = _name_hash(namespace, name)
    room = limit - len(NAME_PREFIX) - len(suffix) - 1
    stem = _slug(namespace, name)[:room].rstrip("-")
    return f"{NAME_PREFIX}{stem}-{suffix}" if stem else f"{NAME_PREFIX}{suffix}"


def cloud_run_service_id(namespace: str, name: str) -> str:
    """Cloud Run service id of a workload: ``ip-<namespace>-<name>-<hash8>``, at most 49 characters."""
    return _deterministic_name(namespace, name, CLOUD_RUN_SERVICE_ID_MAX)


def lambda_function_name(namespace: str, name: str) -> str:
    """Lambda function name of a workload: ``ip-<namespace>-<name>-<hash8>``, at most 64 characters."""
    return _deterministic_name(namespace, name, LAMBDA_FUNCTION_NAME_MAX)
