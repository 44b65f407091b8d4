"""The workload a log line is about, as structured fields on the line, whichever module writes it.

While the fleet reconciles a workload it runs inside :func:`workload_context` (a ``contextvars`` variable, so each
concurrent reconcile task has its own); :class:`WorkloadLogFilter`, installed on the root logger's handlers, puts
that workload on every record written meanwhile -- by the reconciler, a target, the migration or the Kubernetes
writer -- as kopf's object reference (``record.k8s_ref``). kopf's formatters print it: in JSON as
``"object": {"apiVersion", "kind", "namespace", "name"}``, the same field kopf's own per-object lines carry, and in
plain text as a ``[namespace/name]`` prefix. A line about a workload written outside a reconcile passes
``extra=workload_fields(key)``.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from inference_placement.api.workload import GROUP, KIND, VERSION, WorkloadKey

__all__ = ["WorkloadLogFilter", "current_workload", "install_workload_logging", "workload_context", "workload_fields"]

_current: contextvars.ContextVar[WorkloadKey | None] = contextvars.ContextVar(
    "inference_placement_workload", default=None
)


def current_workload() -> WorkloadKey | None:
    """The workload the running task works on (None outside a reconcile)."""
    return _current.get()


@contextmanager
def workload_context(key: WorkloadKey) -> Iterator[None]:
    """Every log line written inside (in this task, and tasks it starts) names ``key``."""
    token = _current.set(key)
    try:
        yield
    finally:
        _current.reset(token)


def _reference(key: WorkloadKey) -> dict[str, str]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "namespace": key.namespace, "name": key.name}


def workload_fields(key: WorkloadKey) -> dict[str, Any]:
    """``extra=`` for a line about ``key`` written outside :func:`workload_context`."""
    return {"k8s_ref": _reference(key)}


class WorkloadLogFilter(logging.Filter):
    """Adds the current workload (if any, and if the record names no object yet) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "k8s_ref"):
            key = _current.get()
            if key is not None:
                record.k8s_ref = _reference(key)
        return True


def install_workload_logging() -> WorkloadLogFilter:
    """Install the filter on the root logger's handlers (where every module's records end up); idempotent."""
    root = logging.getLogger()
    for handler in root.handlers:
        for existing in handler.filters:
            if isinstance(existing, WorkloadLogFilter):
                return existing
    workload_filter = WorkloadLogFilter()
    for handler in root.handlers:
        handler.addFilter(workload_filter)
    return workload_filter
