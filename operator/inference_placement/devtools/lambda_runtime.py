"""The Lambda data path on loopback, built from AWS's own runtime pieces (docs/lambda.md):

    Envoy (aws_request_signing, service lambda) --HTTP--> Function URL stand-in (``devtools.function_url``)
      --Invoke--> aws-lambda-rie (Runtime Interface Emulator) --Runtime API--> lambda-adapter (Web Adapter)
      --HTTP--> the model server (``e2e/model_server.py``)

The emulator and the adapter are built and cached by ``e2e/lambda-runtime.sh`` (``find_lambda_runtime`` only
looks; ``build_lambda_runtime`` builds when needed). One emulator is one execution environment: it runs the adapter
as the function's bootstrap (on Lambda the adapter is an extension in ``/opt/extensions``, a host path the emulator
does not let us move; as the bootstrap it registers and polls exactly the same APIs) with ``AWS_LWA_PORT`` and
``AWS_LWA_READINESS_CHECK_PATH`` set as the Lambda target sets them on the function.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inference_placement.devtools.function_url import RIE_INVOKE_PATH, function_url_event, http_response
from inference_placement.devtools.local_stack import start_model_server
from inference_placement.devtools.processes import Processes, free_port, wait_http

__all__ = [
    "LambdaRuntime",
    "LocalFunction",
    "build_lambda_runtime",
    "find_lambda_runtime",
    "initialize_environment",
    "start_execution_environment",
    "start_function_url",
    "start_local_function",
]


@dataclass(frozen=True)
class LambdaRuntime:
    """The built binaries: the Runtime Interface Emulator and the Lambda Web Adapter."""

    rie: Path
    adapter: Path


def _script(root: Path) -> Path:
    return root / "e2e" / "lambda-runtime.sh"


def _parse(output: str) -> LambdaRuntime:
    paths = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    runtime = LambdaRuntime(Path(paths["aws-lambda-rie"]), Path(paths["lambda-adapter"]))
    for binary in (runtime.rie, runtime.adapter):
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"{binary} is not an executable")
    return runtime


def find_lambda_runtime(root: Path) -> LambdaRuntime | None:
    """The cached binaries, or None when ``e2e/lambda-runtime.sh`` has not built them (nothing is built here)."""
    script = _script(root)
    if subprocess.run(["bash", str(script), "--check"], check=False).returncode != 0:
        return None
    return _parse(subprocess.run(["bash", str(script)], check=True, capture_output=True, text=True).stdout)


def build_lambda_runtime(root: Path) -> LambdaRuntime:
    """The binaries, built first when the cache lacks them (minutes on a cold machine: see the script)."""
    done = subprocess.run(["bash", str(_script(root))], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"e2e/lambda-runtime.sh failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return _parse(done.stdout)


def start_execution_environment(
    procs: Processes,
    runtime: LambdaRuntime,
    work: Path,
    name: str,
    *,
    app_port: int,
    readiness_path: str,
    extra_env: Mapping[str, str] | None = None,
    bootstrap: Path | None = None,
    initialize: bool = True,
) -> str:
    """One execution environment: the emulator on loopback running the adapter, which forwards to the web app on
    ``app_port``. Returns the environment's Invoke URL (``.../2015-03-31/functions/function/invocations``).

    ``bootstrap``: what the emulator runs instead of the adapter itself (a script that starts the web app and then
    runs the adapter, as an image's entrypoint starts its server beside the adapter extension on Lambda), so the
    environment's Init phase includes the app's start and model load. ``initialize=False`` leaves the Init phase to
    the first invocation, as on Lambda after a scale-from-zero: that invocation pays the cold start."""
    invoke_port, runtime_api_port = free_port(), free_port()
    env = {
        **os.environ,
        "AWS_LWA_PORT": str(app_port),
        "AWS_LWA_READINESS_CHECK_PATH": readiness_path,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        **(extra_env or {}),
    }
    args = [
        str(runtime.rie),
        "--runtime-api-address",
        f"127.0.0.1:{runtime_api_port}",
        "--runtime-interface-emulator-address",
        f"127.0.0.1:{invoke_port}",
        str(bootstrap or runtime.adapter),
    ]
    process = procs.start(f"rie-{name}", args, work / f"rie-{name}.log", env)
    base = f"http://127.0.0.1:{invoke_port}"
    wait_http(f"{base}/", 30, process=process)  # any answer: the emulator listens (it starts the adapter lazily)
    if initialize:
        initialize_environment(base + RIE_INVOKE_PATH, readiness_path)
    return base + RIE_INVOKE_PATH


def initialize_environment(invoke_url: str, readiness_path: str, *, attempts: int = 5) -> None:
    """Initialize one execution environment before it takes traffic, as Lambda does (its extensions registered,
    then the runtime started, before an invocation is routed to it): invoke it with a Function URL event for
    ``readiness_path`` until it answers (2xx-4xx, as the adapter's readiness check counts).

    The emulator initializes lazily, at the first invocation, and there the adapter, run as the bootstrap rather
    than from ``/opt/extensions``, races its own extension registration against its runtime's first ``next``:
    on a loaded machine the registration loses (``ErrRegistrationServiceOff``, "extension registration failure")
    and that first invocation answers nothing, which the front end would turn into a failed request. On Lambda the
    extension registers before the runtime starts, so the race does not exist there; the environment's later
    invocations are served either way."""
    last = "no attempt"
    for _ in range(attempts):
        event = function_url_event(
            "GET",
            readiness_path,
            "",
            [("host", "init.lambda-url.localhost"), ("user-agent", "inference-placement-init")],
            b"",
            domain="init.lambda-url.localhost",
            account_id="000000000000",
            source_ip="127.0.0.1",
            request_id=str(uuid.uuid4()),
            now=time.time(),
        )
        request = urllib.request.Request(invoke_url, data=json.dumps(event).encode(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status = http_response(response.read()).status
        except OSError as err:
            last = str(err)
        else:
            if status < 500:
                return
            last = f"HTTP {status}"
        time.sleep(0.5)
    raise RuntimeError(f"the execution environment at {invoke_url} did not answer {readiness_path}: {last}")


def start_function_url(
    procs: Processes,
    work: Path,
    name: str,
    invoke_urls: Sequence[str],
    *,
    region: str,
    access_keys: Mapping[str, str] | None,
) -> str:
    """The Function URL front end's stand-in (``devtools.function_url``) on loopback; returns its URL.
    ``access_keys`` (id -> secret) it accepts SigV4 signatures from; None = ``AuthType NONE``."""
    port = free_port()
    args = [sys.executable, "-m", "inference_placement.devtools.function_url", "--port", str(port)]
    args += ["--region", region]
    for url in invoke_urls:
        args += ["--invoke-url", url]
    if access_keys is None:
        args.append("--no-auth")
    else:
        args += [arg for key, secret in access_keys.items() for arg in ("--access-key", f"{key}={secret}")]
    process = procs.start(f"function-url-{name}", args, work / f"function-url-{name}.log", dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/", 30, process=process)
    return url


@dataclass(frozen=True)
class LocalFunction:
    """One function's data plane on loopback: the model server behind the adapter in several execution environments
    (one emulator each), and the Function URL front end's stand-in in front of them."""

    url: str
    """The stand-in (the operator's ``router.lambdaUrlEndpoint``; requests keep the Function URL's Host)."""
    model_url: str
    """The model server behind the adapter."""


def start_local_function(
    procs: Processes,
    runtime: LambdaRuntime,
    root: Path,
    work: Path,
    served_by: str,
    *,
    region: str,
    access_keys: Mapping[str, str],
    environments: int = 2,
    service_seconds: float = 0.02,
) -> LocalFunction:
    """The model server (``e2e/model_server.py`` under ``root``, answering ``x-served-by: SERVED_BY`` after
    ``service_seconds``), ``environments`` emulators running the adapter in front of it, and the Function URL
    stand-in accepting SigV4 signatures from ``access_keys`` (id -> secret: the router's credentials)."""
    model_url = start_model_server(procs, root, work, served_by, service_seconds=service_seconds)
    port = int(model_url.rsplit(":", 1)[1])
    invoke_urls = [
        start_execution_environment(
            procs, runtime, work, f"{served_by}-env{i}", app_port=port, readiness_path="/healthz"
        )
        for i in range(environments)
    ]
    url = start_function_url(procs, work, served_by, invoke_urls, region=region, access_keys=access_keys)
    return LocalFunction(url, model_url)
