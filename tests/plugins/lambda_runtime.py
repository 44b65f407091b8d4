"""Pytest fixture for the Lambda data path's real runtime pieces (docs/lambda.md).

``lambda_runtime`` (session)
    ``LambdaRuntime``: the AWS Lambda Runtime Interface Emulator and the AWS Lambda Web Adapter that
    ``e2e/lambda-runtime.sh`` built and cached (``make test`` builds them in a step of its own). Missing: the test
    FAILS when ``CI=true`` (a missing component must not pass as skipped there), is skipped otherwise.
"""

from __future__ import annotations

import os

import pytest

from inference_placement.devtools.lambda_runtime import LambdaRuntime, find_lambda_runtime
from tests.plugins.cluster import REPO_ROOT

__all__ = ["lambda_runtime"]


@pytest.fixture(scope="session")
def lambda_runtime() -> LambdaRuntime:
    runtime = find_lambda_runtime(REPO_ROOT)
    if runtime is None:
        message = "the Lambda runtime pieces are not built: run `bash e2e/lambda-runtime.sh` (make test does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return runtime
