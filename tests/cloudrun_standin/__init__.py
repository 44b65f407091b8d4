"""Local stand-in for the Cloud Run Admin API v2 (tests and the demo). Run: ``python -m tests.cloudrun_standin``."""

from tests.cloudrun_standin.server import CloudRunStandin, Fault, RecordedRequest, validate_service

__all__ = ["CloudRunStandin", "Fault", "RecordedRequest", "validate_service"]
