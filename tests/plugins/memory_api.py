"""An in-memory stand-in for the reconciler's ``KubeWriter``: status merge patches and finalizer writes applied to
stored objects (with a rising resourceVersion), Events recorded. For tests of the controller's own logic where the
apiserver adds nothing (the apiserver paths are covered by the cluster tests)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client.rest import ApiException

from inference_placement.controller.tenancy import TenancyCache
from inference_placement.devtools.merge_patch import apply_merge_patch

__all__ = ["MemoryWriter", "inline_tenancy"]


@dataclass
class MemoryWriter:
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    fail_status_writes_of: set[str] = field(default_factory=set)
    """Names whose status writes raise (a reconcile that raises, not a target error)."""
    _version: int = 100

    def put(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        self._version += 1
        meta["resourceVersion"] = str(self._version)
        self.objects[(meta["namespace"], meta["name"])] = body
        return copy.deepcopy(body)

    def _bump(self, body: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        body["metadata"]["resourceVersion"] = str(self._version)
        return copy.deepcopy(body)

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        if name in self.fail_status_writes_of:
            raise RuntimeError(f"status write of {name} refused")
        body = self.objects[(namespace, name)]
        if resource_version and body["metadata"].get("resourceVersion") != resource_version:
            raise ApiException(status=409, reason="Conflict")  # as the apiserver refuses a stale precondition
        body["status"] = apply_merge_patch(body.get("status") or {}, patch)
        return self._bump(body)

    async def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        body = self.objects[(namespace, name)]
        body["metadata"]["finalizers"] = list(finalizers)
        if not finalizers and body["metadata"].get("deletionTimestamp"):
            del self.objects[(namespace, name)]
        return self._bump(body)

    async def post_event(self, **event: Any) -> None:
        self.events.append(event)


def inline_tenancy() -> TenancyCache:
    """A reconciler's tenancy for the unit tests that drive cloud targets through the deprecated inline fields
    (``spec.lambda.roleArn``, ``spec.cloudRun.project``): the operator's ``tenancy.allowInlineCloudIdentity`` on.
    ``tests/test_tenancy.py`` covers the default (off) and the ServerlessTargets."""
    return TenancyCache(None, allow_inline_cloud_identity=True)
