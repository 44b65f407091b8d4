"""Will the image start on a serverless target? What the spec (and, where given, the image's OCI config) says.

Pure: a spec, optionally the image's OCI image config (``crane config IMAGE``, ``skopeo inspect --config
docker://IMAGE``: ``architecture``, ``os``, ``config.Entrypoint/Cmd/Env/Labels``) in, the problems out. Each problem
names the target, the field at fault and what is missing. Only what is certain is a problem (a refusal), never a
guess: the operator refuses the target (feasibility), says so in ``PackagingValid=False`` (reason
``PackagingInvalid``) and in ``explain``, and calls no cloud API for it.

**Lambda** (the Lambda target deploys container-image functions, ``PackageType=Image``, reached through a Function
URL, ``docs/lambda.md``): the AWS Lambda Web Adapter turns the Function URL's events into HTTP for the model server.

* ``spec.lambda.webAdapter: layer`` cannot work: Lambda does not attach layers to container-image functions; the
  adapter must be in the image at ``/opt/extensions/lambda-adapter`` (``webAdapter: image``, the default).
* The adapter forwards to ``AWS_LWA_PORT`` (the operator sets it to ``spec.model.port``): a different value in
  ``spec.model.env`` sends every request to a port the model server (health-checked on ``model.port`` everywhere)
  does not listen on. The server runs as a non-root user, so a port below 1024 cannot be bound; 9001 is the
  Lambda Runtime API's (``127.0.0.1:9001``), where the adapter itself polls.
* ``AWS_LWA_READINESS_CHECK_PATH`` (set to ``model.healthPath``) must be a path; ``AWS_LWA_INVOKE_MODE`` must match
  the Function URL's invoke mode, which the operator creates ``BUFFERED``.
* From the OCI config: ``os`` must be linux and ``architecture`` the function's (``spec.lambda.architecture``:
  x86_64 is ``amd64``, arm64 is ``arm64``); an image must start something (Entrypoint or Cmd); the entrypoint of an
  AWS Lambda base image (``/lambda-entrypoint.sh``) starts the runtime interface client, not the model server, so
  with the adapter the image must override it (the adapter's documentation).

**Cloud Run** (container contract): the ingress container must listen on ``0.0.0.0:$PORT``, which Cloud Run sets to
the container port (the operator's ``model.port``, health-checked there); executables must be linux/amd64 (a
multi-arch image must include linux/amd64): from the OCI config ``os``/``architecture``, and Entrypoint or Cmd.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from inference_placement.api.spec import (
    InferenceWorkloadSpec,
    LambdaArchitecture,
    LambdaWebAdapter,
    TargetName,
)

__all__ = [
    "ADAPTER_EXTENSION_PATH",
    "AWS_BASE_IMAGE_ENTRYPOINT",
    "FUNCTION_URL_INVOKE_MODE",
    "LAMBDA_LOWEST_USER_PORT",
    "LAMBDA_RUNTIME_API_PORT",
    "ImageConfig",
    "ImageConfigError",
    "PackagingProblem",
    "lambda_adapter_env",
    "packaging_problems",
    "parse_image_config",
]

ADAPTER_EXTENSION_PATH: Final = "/opt/extensions/lambda-adapter"
"""Where Lambda starts the Web Adapter from in a container image (an extension)."""
AWS_BASE_IMAGE_ENTRYPOINT: Final = "/lambda-entrypoint.sh"
"""The entrypoint of AWS's Lambda base images: it runs the runtime interface client with a handler."""
LAMBDA_RUNTIME_API_PORT: Final = 9001
"""The Lambda Runtime API listens on 127.0.0.1:9001 in every execution environment."""
LAMBDA_LOWEST_USER_PORT: Final = 1024
"""Lambda runs the function as a non-root user: ports below this cannot be bound."""
FUNCTION_URL_INVOKE_MODE: Final = "buffered"
"""The invoke mode of the Function URL the Lambda target creates (``BUFFERED``, Lambda's default)."""

_OCI_ARCHITECTURE: Final = {LambdaArchitecture.X86_64: "amd64", LambdaArchitecture.ARM64: "arm64"}
_CLOUD_RUN_ARCHITECTURE: Final = "amd64"


class ImageConfigError(ValueError):
    """An OCI image config that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config (``application/vnd.oci.image.config.v1+json``) that decide where it starts."""

    architecture: str = ""
    os: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageConfigError(f"{where} must be a list of strings")
    return tuple(value)


def parse_image_config(raw: Any) -> ImageConfig:
    """An :class:`ImageConfig` from a parsed OCI image config (or Docker's ``docker inspect`` entry, which has the
    same ``Architecture``/``Os``/``Config`` keys capitalised)."""
    if not isinstance(raw, Mapping):
        raise ImageConfigError(f"an OCI image config is a JSON object, not {type(raw).__name__}")
    config = raw.get("config", raw.get("Config")) or {}
    if not isinstance(config, Mapping):
        raise ImageConfigError("config must be an object")
    env: dict[str, str] = {}
    for entry in _strings(config.get("Env"), "config.Env"):
        name, _, value = entry.partition("=")
        env[name] = value
    labels = config.get("Labels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise ImageConfigError("config.Labels must map strings to strings")
    ports = config.get("ExposedPorts") or {}
    if not isinstance(ports, Mapping):
        raise ImageConfigError("config.ExposedPorts must be an object")
    return ImageConfig(
        architecture=str(raw.get("architecture", raw.get("Architecture", "")) or ""),
        os=str(raw.get("os", raw.get("Os", "")) or ""),
        entrypoint=_strings(config.get("Entrypoint"), "config.Entrypoint"),
        cmd=_strings(config.get("Cmd"), "config.Cmd"),
        env=env,
        labels=dict(labels),
        exposed_ports=tuple(str(p) for p in ports),
    )


@dataclass(frozen=True)
class PackagingProblem:
    """One reason the image will not start on ``target``: the field at fault (as written in YAML, under ``spec.``,
    or ``image`` for the image's own config) and what is missing."""

    target: TargetName
    field: str
    message: str

    def __str__(self) -> str:
        where = self.field if self.field.startswith("image") else f"spec.{self.field}"
        return f"{self.target.value}: {where}: {self.message}"


def lambda_adapter_env(spec: InferenceWorkloadSpec) -> dict[str, str]:
    """The Web Adapter settings the Lambda target puts in the function's environment: the model's own env wins,
    then ``AWS_LWA_PORT`` = ``model.port`` and ``AWS_LWA_READINESS_CHECK_PATH`` = ``model.healthPath`` (none when
    the image has no adapter)."""
    if spec.lambda_.web_adapter is LambdaWebAdapter.NONE:
        return {}
    own = {e.name: e.value for e in spec.model.env}
    return {
        "AWS_LWA_PORT": own.get("AWS_LWA_PORT", str(spec.model.port)),
        "AWS_LWA_READINESS_CHECK_PATH": own.get("AWS_LWA_READINESS_CHECK_PATH", spec.model.health_path),
        **({"AWS_LWA_INVOKE_MODE": own["AWS_LWA_INVOKE_MODE"]} if "AWS_LWA_INVOKE_MODE" in own else {}),
    }


def _env_field(spec: InferenceWorkloadSpec, name: str) -> str:
    index = next((i for i, e in enumerate(spec.model.env) if e.name == name), None)
    return f"model.env[{index}]" if index is not None else "model.port"


def _lambda_problems(spec: InferenceWorkloadSpec, image: ImageConfig | None) -> list[PackagingProblem]:
    lam = spec.lambda_
    out: list[PackagingProblem] = []

    def problem(where: str, message: str) -> None:
        out.append(PackagingProblem(TargetName.LAMBDA, where, message))

    if lam.web_adapter is LambdaWebAdapter.LAYER:
        problem(
            "lambda.webAdapter",
            "Lambda attaches no layers to container-image functions (the operator deploys PackageType Image): copy "
            f"the adapter into the image at {ADAPTER_EXTENSION_PATH} (COPY --from=public.ecr.aws/awsguru/"
            f"aws-lambda-adapter:<version> /lambda-adapter {ADAPTER_EXTENSION_PATH}) and set webAdapter: image",
        )
    if lam.web_adapter is not LambdaWebAdapter.NONE:
        env = lambda_adapter_env(spec)
        port_text = env["AWS_LWA_PORT"]
        where = _env_field(spec, "AWS_LWA_PORT")
        port = int(port_text) if port_text.isdigit() else None
        if port is None:
            problem(where, f"AWS_LWA_PORT {port_text!r} is not a port number")
        elif port != spec.model.port:
            problem(
                where,
                f"AWS_LWA_PORT {port} sends every request to a port the model server does not listen on (model.port "
                f"{spec.model.port}, where it is health-checked): remove it or make the two equal",
            )
        elif port < LAMBDA_LOWEST_USER_PORT:
            problem(where, f"port {port}: Lambda runs the server as a non-root user, which cannot bind below 1024")
        elif port == LAMBDA_RUNTIME_API_PORT:
            problem(where, "port 9001 is the Lambda Runtime API's (127.0.0.1:9001), where the adapter itself polls")
        path = env["AWS_LWA_READINESS_CHECK_PATH"]
        if not path.startswith("/"):
            problem(
                _env_field(spec, "AWS_LWA_READINESS_CHECK_PATH"),
                f"AWS_LWA_READINESS_CHECK_PATH {path!r} must be an HTTP path starting with /",
            )
        mode = env.get("AWS_LWA_INVOKE_MODE")
        if mode is not None and mode.lower() != FUNCTION_URL_INVOKE_MODE:
            problem(
                _env_field(spec, "AWS_LWA_INVOKE_MODE"),
                f"AWS_LWA_INVOKE_MODE {mode!r} must match the Function URL's invoke mode, which is BUFFERED",
            )
    if image is None:
        return out
    wanted = _OCI_ARCHITECTURE[lam.architecture]
    if image.os and image.os != "linux":
        problem("image.os", f"{image.os}: Lambda runs linux images only")
    if image.architecture and image.architecture != wanted:
        problem(
            "lambda.architecture",
            f"the function is {lam.architecture.value} but the image is {image.architecture}: build the image for "
            f"linux/{wanted} or set lambda.architecture to the image's",
        )
    if not image.entrypoint and not image.cmd:
        problem("image.config", "neither Entrypoint nor Cmd: nothing would start the model server")
    elif image.entrypoint[:1] == (AWS_BASE_IMAGE_ENTRYPOINT,) and lam.web_adapter is not LambdaWebAdapter.NONE:
        problem(
            "image.config.Entrypoint",
            f"{AWS_BASE_IMAGE_ENTRYPOINT} (an AWS Lambda base image) starts the runtime interface client, not the "
            "model server: override ENTRYPOINT to start the server (the adapter runs beside it as an extension)",
        )
    return out


def _cloudrun_problems(image: ImageConfig | None) -> list[PackagingProblem]:
    if image is None:
        return []
    out: list[PackagingProblem] = []
    if image.os and image.os != "linux":
        out.append(PackagingProblem(TargetName.CLOUDRUN, "image.os", f"{image.os}: Cloud Run runs linux images only"))
    if image.architecture and image.architecture != _CLOUD_RUN_ARCHITECTURE:
        out.append(
            PackagingProblem(
                TargetName.CLOUDRUN,
                "image.architecture",
                f"{image.architecture}: Cloud Run runs linux/amd64 executables only (a multi-arch image must include "
                "linux/amd64)",
            )
        )
    if not image.entrypoint and not image.cmd:
        out.append(
            PackagingProblem(
                TargetName.CLOUDRUN, "image.config", "neither Entrypoint nor Cmd: nothing would start the model server"
            )
        )
    return out


def packaging_problems(
    spec: InferenceWorkloadSpec, image: ImageConfig | None = None, *, targets: Iterable[TargetName] | None = None
) -> list[PackagingProblem]:
    """Why the image cannot start on each serverless target the spec allows (empty: nothing known against it).

    ``image``: the image's OCI config when the caller has it (``explain --image-config``); the controller has only
    the spec and pulls nothing. ``targets``: check these instead of the allowed ones (a target about to deploy)."""
    allowed = set(spec.placement.allowed_targets if targets is None else targets)
    out: list[PackagingProblem] = []
    if TargetName.LAMBDA in allowed:
        out += _lambda_problems(spec, image)
    if TargetName.CLOUDRUN in allowed:
        out += _cloudrun_problems(image)
    return out
