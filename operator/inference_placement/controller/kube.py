"""The operator's apiserver access: an async client, writes funnelled through one counted, bounded writer.

All writes go through ``KubeWriter`` so that (a) concurrency is capped (a burst of PATCHes must not open one TLS
connection per object) and (b) tests and the operator's own metrics can count writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.rest import ApiException

from inference_placement.api.workload import GROUP, KIND, PLURAL, VERSION

__all__ = ["KubeWriter", "make_api_client", "now_rfc3339", "MERGE_PATCH"]

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


def now_rfc3339(now: datetime | None = None) -> str:
    moment = now or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def make_api_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """An ApiClient from a kubeconfig path, else the in-cluster service account, else the default kubeconfig."""
    configuration = k8s.Configuration()
    if kubeconfig:
        await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            await k8s_config.load_kube_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)


class KubeWriter:
    """Every write the operator makes to the apiserver, bounded and counted."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        concurrency: int = 16,
        component: str = "inference-placement",
        instance: str | None = None,
        on_write: Callable[[str], None] | None = None,
        fence: Callable[[], None] | None = None,
    ) -> None:
        self.api = api
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self._slots = asyncio.Semaphore(concurrency)
        self.component = component
        self.instance = instance or component
        """The replica's identity (the Lease holder's name), as the Events' ``reportingInstance``."""
        self.fence = fence
        """Raises (``leader.NotLeaderError``) when this replica may not write now; checked before every write, once
        the write has its slot (a write queued behind others must not go out after leadership ended)."""
        self.writes: Counter[str] = Counter()
        self._on_write = on_write

    def _count(self, kind: str) -> None:
        if self.fence is not None:
            self.fence()
        self.writes[kind] += 1
        if self._on_write is not None:
            self._on_write(kind)

    @property
    def total_writes(self) -> int:
        return sum(self.writes.values())

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The workload as the apiserver has it now (None: gone). A read, not counted as a write."""
        try:
            result: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return result

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch status. With ``resource_version``, only onto that version of the object: a writer whose
        copy is stale (another replica wrote since) is refused with 409 instead of overwriting a newer step."""
        body: dict[str, Any] = {"status": patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        async with self._slots:
            self._count("status")
            result: dict[str, Any] = await self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # accepted by the client, not in its stubs
            )
            return result

    async def patch_cluster_status(self, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the status of a cluster-scoped object of this API group (a ServerlessTarget)."""
        async with self._slots:
            self._count("status")
            result: dict[str, Any] = await self.custom.patch_cluster_custom_object_status(
                GROUP,
                VERSION,
                plural,
                name,
                {"status": status},
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            )
            return result

    async def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        """Replace the finalizer list, guarded by resourceVersion (a concurrent change gives 409, retried later)."""
        async with self._slots:
            self._count("finalizers")
            body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
            result: dict[str, Any] = await self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]
            )
            return result

    async def post_event(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        reason: str,
        message: str,
        warning: bool = False,
        now: datetime | None = None,
    ) -> None:
        """Post a core/v1 Event about a workload. Failure to post is logged, never fatal."""
        stamp = now or datetime.now(UTC)
        event = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(generate_name=f"{name}.", namespace=namespace),
            involved_object=k8s.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind=KIND, name=name, namespace=namespace, uid=uid
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            source=k8s.V1EventSource(component=self.component, host=self.instance),
            first_timestamp=stamp,
            last_timestamp=stamp,
            count=1,
            reporting_component=self.component,
            reporting_instance=self.instance,
        )
        async with self._slots:
            self._count("event")
            try:
                await self.core.create_namespaced_event(namespace, event)
            except ApiException as err:
                log.warning("could not post event %s on %s/%s: HTTP %s", reason, namespace, name, err.status)
