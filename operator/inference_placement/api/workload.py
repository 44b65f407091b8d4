"""The InferenceWorkload resource: identity constants and the typed view of a whole object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from inference_placement.api.spec import InferenceWorkloadSpec
from inference_placement.api.status import InferenceWorkloadStatus

__all__ = [
    "CATEGORY",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAME",
    "SINGULAR",
    "VERSION",
    "API_VERSION",
    "InferenceWorkload",
    "ObjectMeta",
    "WorkloadKey",
]

GROUP: Final = "placement.inference.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "InferenceWorkload"
PLURAL: Final = "inferenceworkloads"
SINGULAR: Final = "inferenceworkload"
SHORT_NAME: Final = "iw"
CATEGORY: Final = "inference"


@dataclass(frozen=True, slots=True)
class WorkloadKey:
    """Which workload: the key the fleet, the metrics source, the router and the pinger index workloads by."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    resource_version: str = Field(default="", alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")
    finalizers: list[str] = Field(default_factory=list)


class InferenceWorkload(BaseModel):
    """A whole InferenceWorkload object as read from the apiserver (spec validated, status parsed)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: ObjectMeta
    spec: InferenceWorkloadSpec
    status: InferenceWorkloadStatus = Field(default_factory=InferenceWorkloadStatus)

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"
