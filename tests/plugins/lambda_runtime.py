"""Pytest fixture for the Lambda data path's real runtime pieces (docs/lambda.md).

``lambda_runtime`` (session)
    ``LambdaRuntime``: the AWS Lambda Runtime Interface Emulator and the AWS Lambda Web Adapter that
    ``e2e/lambda-runtime.sh`` built and cached (``make test`` builds them in a step of its own). Missing: the test
    FAILS when ``CI=true`` (a missing component must not pass as skipped there), is skipped otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference_placement.devtools.lambda_runtime import (
    LambdaRuntime,
    find_lambda_runtime,
    start_execution_environment,
    start_function_url,
)
from inference_placement.devtools.local_stack import start_model_server
from inference_placement.devtools.processes import Processes
from tests.plugins.cluster import REPO_ROOT
from tests.plugins.envoy import FAKE_AWS_ENV

__all__ = ["LocalFunction", "lambda_runtime", "start_local_function"]


@pytest.fixture(scope="session")
def lambda_runtime() -> LambdaRuntime:
    runtime = find_lambda_runtime(REPO_ROOT)
    if runtime is None:
        message = "the Lambda runtime pieces are not built: run `bash e2e/lambda-runtime.sh` (make test does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return runtime


@dataclass(frozen=True)
class LocalFunction:
    """One function's data plane on loopback: the model server behind the adapter in ``environments`` execution
    environments (one emulator each), and the Function URL front end's stand-in in front of them."""

    url: str
    """The stand-in (the operator's ``router.lambdaUrlEndpoint``; requests keep the Function URL's Host)."""
    model_url: str
    """The model server behind the adapter."""


def start_local_function(
    procs: Processes,
    runtime: LambdaRuntime,
    work: Path,
    served_by: str,
    *,
    region: str,
    environments: int = 2,
) -> LocalFunction:
    """The model server (answering ``x-served-by: SERVED_BY``), ``environments`` emulators running the adapter in
    front of it, and the stand-in accepting the signatures of the router's test credentials (``FAKE_AWS_ENV``)."""
    model_url = start_model_server(procs, REPO_ROOT, work, served_by)
    port = int(model_url.rsplit(":", 1)[1])
    invoke_urls = [
        start_execution_environment(
            procs, runtime, work, f"{served_by}-env{i}", app_port=port, readiness_path="/healthz"
        )
        for i in range(environments)
    ]
    keys = {FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"]: FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]}
    url = start_function_url(procs, work, served_by, invoke_urls, region=region, access_keys=keys)
    return LocalFunction(url, model_url)
