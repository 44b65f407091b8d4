"""Pytest fixture for the Lambda data path's real runtime pieces (docs/lambda.md).

``lambda_runtime`` (session)
    ``LambdaRuntime``: the AWS Lambda Runtime Interface Emulator and the AWS Lambda Web Adapter that
    ``e2e/lambda-runtime.sh`` built and cached (``make test`` builds them in a step of its own). Missing: the test
    FAILS when ``CI=true`` (a missing component must not pass as skipped there), is skipped otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference_placement.devtools.lambda_runtime import LambdaRuntime, LocalFunction, find_lambda_runtime
from inference_placement.devtools.lambda_runtime import start_local_function as start_function
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


def start_local_function(
    procs: Processes,
    runtime: LambdaRuntime,
    work: Path,
    served_by: str,
    *,
    region: str,
    environments: int = 2,
) -> LocalFunction:
    """``devtools.lambda_runtime.start_local_function`` from this checkout, its stand-in accepting the signatures of
    the router's test credentials (``FAKE_AWS_ENV``)."""
    keys = {FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"]: FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]}
    return start_function(
        procs, runtime, REPO_ROOT, work, served_by, region=region, access_keys=keys, environments=environments
    )
