"""AWS Lambda target: one container-image function per workload, through ``boto3``.

What ``ensure`` keeps in place, each step only when it differs from what exists:

* the function: ``PackageType=Image`` from the model image (ECR), memory (up to 10,240 MB), timeout, environment,
  execution role, and tags tying it to the workload's uid; waiters until it is ``Active`` / ``Successful``;
* a published version behind the alias ``live`` (re-published only when the code or configuration changed):
  provisioned concurrency needs a version or alias, and the function URL points at the alias so its traffic
  lands on the warm instances;
* reserved concurrency: the bill cap (the tighter of ``spec.lambda.reservedConcurrency`` and the budget-derived
  ``DesiredTarget.max_replicas``), removed when neither is set;
* provisioned concurrency on the alias when the SLO needs warm instances (``max(spec, DesiredTarget.replicas)``);
* a function URL on the alias with ``AuthType=AWS_IAM``: the endpoint (the router signs its calls).

The Lambda Web Adapter variables ``AWS_LWA_PORT`` and ``AWS_LWA_READINESS_CHECK_PATH`` are set from the model's
port and health path (unless the workload sets them, or declares ``spec.lambda.webAdapter: none``), so an HTTP model
server image packaged with the adapter runs unchanged and is health-checked on its own path. The function's
architecture is ``spec.lambda.architecture``. A spec whose packaging cannot start on Lambda
(``policy.packaging``) is refused before any call.

The function is found again by its deterministic name and adopted only when its owner tag is the workload's uid;
one with another owner is never modified (``NotOwnedError``). Credentials: the default chain (IRSA, environment,
profile) or an access key from a Secret (``from_secret``). The sync client runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError

from inference_placement.api.spec import TargetName
from inference_placement.api.workload import InferenceWorkload
from inference_placement.policy.packaging import lambda_adapter_env, packaging_problems
from inference_placement.targets import naming
from inference_placement.targets.base import (
    BlockingTarget,
    DesiredTarget,
    InvalidLocationError,
    NotOwnedError,
    PermanentTargetError,
    RetryableTargetError,
    TargetState,
    held_while_moving,
)
from inference_placement.targets.credentials import (
    AwsStaticCredentials,
    SecretData,
    aws_credentials_from_secret,
    aws_session,
)
from inference_placement.targets.retry import (
    RetriedCalls,
    RetryPolicy,
    StillInProgressError,
    aws_error_code,
    classify_aws_error,
)

__all__ = [
    "ALIAS_NAME",
    "FunctionConfig",
    "LAMBDA_MAX_MEMORY_MB",
    "LambdaTarget",
    "config_differences",
    "function_config",
    "LAMBDA_MIN_MEMORY_MB",
    "URL_AUTH_TYPE",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

ALIAS_NAME: Final = "live"
LAMBDA_MAX_MEMORY_MB: Final = 10240
LAMBDA_MIN_MEMORY_MB: Final = 128
URL_AUTH_TYPE: Final = "AWS_IAM"
_RESERVED_ENV: Final = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
_NOT_FOUND_CODES: Final = frozenset({"ResourceNotFoundException", "ProvisionedConcurrencyConfigNotFoundException"})


@dataclass(frozen=True)
class FunctionConfig:
    """What the workload asks of its Lambda function."""

    image_uri: str
    role_arn: str
    memory_mb: int
    timeout_seconds: int
    environment: dict[str, str]
    description: str
    tags: dict[str, str]
    reserved_concurrency: int | None
    """Bill cap; None = no reservation (the account's unreserved pool)."""
    provisioned_concurrency: int
    """Warm instances on the alias; 0 = none."""
    region: str = field(default="us-east-1")
    architecture: str = field(default="x86_64")
    """``x86_64`` or ``arm64`` (the function's ``Architectures``)."""


def _owner_of(workload: InferenceWorkload) -> naming.Owner:
    if not workload.metadata.uid:
        raise PermanentTargetError("metadata.uid is empty: cloud resources cannot be tagged with their owner")
    return naming.Owner(workload.metadata.uid, workload.metadata.namespace, workload.metadata.name)


def function_config(
    workload: InferenceWorkload, desired: DesiredTarget, *, default_role_arn: str | None = None
) -> FunctionConfig:
    """The function configuration for a workload; ``PermanentTargetError`` when Lambda cannot host it."""
    spec = workload.spec
    model, lam = spec.model, spec.lambda_
    if spec.accelerator.needs_gpu:
        raise PermanentTargetError(f"AWS Lambda has no GPUs; the workload needs {spec.accelerator.type.value}")
    memory_mb = lam.memory_mb if lam.memory_mb is not None else math.ceil(model.memory_mib)
    if memory_mb > LAMBDA_MAX_MEMORY_MB:
        raise PermanentTargetError(
            f"the model needs {model.memory} ({memory_mb} MB); Lambda functions have at most {LAMBDA_MAX_MEMORY_MB} MB"
        )
    problems = packaging_problems(spec, targets=[TargetName.LAMBDA])
    if problems:
        raise PermanentTargetError("; ".join(str(p) for p in problems))
    role_arn = lam.role_arn or default_role_arn
    if not role_arn:
        raise PermanentTargetError("spec.lambda.roleArn is not set and the operator has no default execution role")
    environment = {e.name: e.value for e in model.env if e.name not in _RESERVED_ENV}
    environment.update(lambda_adapter_env(spec))
    caps = [c for c in (lam.reserved_concurrency, desired.max_replicas) if c is not None]
    reserved = min(caps) if caps else None
    provisioned = max(lam.provisioned_concurrency, desired.replicas)
    if reserved is not None:
        provisioned = min(provisioned, reserved)
    return FunctionConfig(
        image_uri=lam.image_uri or model.image,
        role_arn=role_arn,
        memory_mb=max(memory_mb, LAMBDA_MIN_MEMORY_MB),
        timeout_seconds=lam.timeout_seconds,
        environment=environment,
        description=f"inference-placement: {workload.key}",
        tags=naming.lambda_tags(_owner_of(workload)),
        reserved_concurrency=reserved,
        provisioned_concurrency=provisioned,
        region=lam.region,
        architecture=lam.architecture.value,
    )


def config_differences(want: FunctionConfig, function: Mapping[str, Any]) -> list[str]:
    """Managed fields where a ``GetFunction`` answer differs from ``want`` (empty = in sync)."""
    config = function.get("Configuration", {})
    have = {
        "image": function.get("Code", {}).get("ImageUri"),
        "role": config.get("Role"),
        "memory": config.get("MemorySize"),
        "timeout": config.get("Timeout"),
        "environment": config.get("Environment", {}).get("Variables", {}),
        "description": config.get("Description", ""),
        "architecture": (config.get("Architectures") or ["x86_64"])[0],
    }
    wanted = {
        "image": want.image_uri,
        "role": want.role_arn,
        "memory": want.memory_mb,
        "timeout": want.timeout_seconds,
        "environment": want.environment,
        "description": want.description,
        "architecture": want.architecture,
    }
    return [key for key, value in wanted.items() if have[key] != value]


def _code_sha(function: Mapping[str, Any] | None) -> str | None:
    sha = (function or {}).get("Configuration", {}).get("CodeSha256")
    return str(sha) if sha else None


def _known_lambda_region(session: Any, region: str) -> bool:
    """``region`` is one botocore's endpoint data lists for Lambda in some partition (a newer region than the pinned
    botocore needs a newer operator image: said in the error)."""
    for partition in session.get_available_partitions():
        if region in session.get_available_regions("lambda", partition_name=partition):
            return True
    return False


def _is_not_found(exc: BaseException) -> bool:
    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return aws_error_code(exc) in _NOT_FOUND_CODES or status == 404


class LambdaTarget(BlockingTarget, RetriedCalls):
    """Places workloads on AWS Lambda (one container-image function per workload).

    Args:
        session: a ``boto3.session.Session``; None = the default chain (IRSA, environment, profile), or the
            static key in ``credentials``.
        credentials: an access key read from a Secret (see ``from_secret``); ignored when ``session`` is given.
        endpoint_url: Lambda endpoint override, e.g. ``http://127.0.0.1:PORT`` for moto's server.
        default_region: region for ``list_owned`` when none are given.
        default_role_arn: execution role when ``spec.lambda.roleArn`` is unset.
        client_factory: ``region -> lambda client``; overrides session/endpoint (tests wrap clients with it).
        retry_policy: backoff for throttling and 5xx on each call.
        redact_values: secret strings scrubbed from every error message (the static key's parts always are).
        waiter_delay_seconds / waiter_timeout_seconds: polling of the Active/Successful waiters; after the
            timeout the function is reported not ready and the next reconcile looks again.
        alias_name: alias that carries provisioned concurrency and the function URL.
    """

    classify_error = staticmethod(classify_aws_error)

    name: TargetName = TargetName.LAMBDA

    def __init__(
        self,
        *,
        session: boto3.session.Session | None = None,
        credentials: AwsStaticCredentials | None = None,
        endpoint_url: str | None = None,
        default_region: str = "us-east-1",
        default_role_arn: str | None = None,
        client_factory: Callable[[str], Any] | None = None,
        retry_policy: RetryPolicy | None = None,
        waiter_delay_seconds: float = 2.0,
        waiter_timeout_seconds: float = 120.0,
        alias_name: str = ALIAS_NAME,
        connect_timeout_seconds: float = 5.0,
        read_timeout_seconds: float = 30.0,
        redact_values: Sequence[str] = (),
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._secret_values = tuple(redact_values) + (
            (
                credentials.access_key_id,
                credentials.secret_access_key.get_secret_value(),
                credentials.session_token.get_secret_value() if credentials.session_token else "",
            )
            if credentials is not None
            else ()
        )
        self.endpoint_url = endpoint_url
        self.default_region = default_region
        self.default_role_arn = default_role_arn
        self._client_factory = client_factory
        self.retry_policy = retry_policy or RetryPolicy()
        self.waiter_delay_seconds = waiter_delay_seconds
        self.waiter_timeout_seconds = waiter_timeout_seconds
        self.alias_name = alias_name
        self._client_config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},  # one retry policy: ours (retry.py)
            connect_timeout=connect_timeout_seconds,
            read_timeout=read_timeout_seconds,
            user_agent_extra="inference-placement",
        )
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_secret(cls, secret_data: SecretData, **kwargs: Any) -> LambdaTarget:
        """A target using the access key in a Secret's decoded ``data`` (see ``credentials.py``)."""
        return cls(credentials=aws_credentials_from_secret(secret_data), **kwargs)

    def client(self, region: str) -> Any:
        """The Lambda client for ``region`` (one per region, created on first use; clients are thread-safe).

        A region botocore refuses, or one where its endpoint data knows no Lambda, is ``InvalidLocationError``
        naming ``spec.lambda.region``: every failure here lands in the target error tree, never escapes it."""
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                if self._client_factory is not None:
                    client = self._client_factory(region)
                else:
                    try:
                        session = self._session or aws_session(region=region, credentials=self._credentials)
                        if not _known_lambda_region(session, region):
                            raise InvalidLocationError(
                                f"spec.lambda.region: {region!r} is not a region AWS Lambda is offered in "
                                "(botocore's endpoint data)"
                            )
                        client = session.client(
                            "lambda", region_name=region, endpoint_url=self.endpoint_url, config=self._client_config
                        )
                    except Exception as exc:
                        raise self._classify(exc) from exc
                self._clients[region] = client
            return client

    @staticmethod
    def function_name(workload: InferenceWorkload) -> str:
        return naming.lambda_function_name(workload.metadata.namespace, workload.metadata.name)

    # -------------------------------------------------------------------------------- Target interface

    async def list_owned(
        self, *, regions: Sequence[str] | None = None, owner_uid: str | None = None
    ) -> list[naming.OwnedResource]:
        """Every Lambda function this operator owns in ``regions`` (by ownership tag), optionally only those of
        one workload uid: for leak checks and a garbage sweep."""
        return await asyncio.to_thread(self.list_owned_sync, regions=regions, owner_uid=owner_uid)

    # -------------------------------------------------------------------------------- sync implementation

    def ensure_sync(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        """Blocking ``ensure`` (run it in a worker thread). After a region edit the function recorded in the old
        region is reported (it serves) until the one in the new region is ready (``held_while_moving``); the old
        one is retired by the orphan sweep once the record moved, or by the finalizer."""
        state = self._ensure_here(workload, desired)
        moving = self._regions_of(workload)[0] != workload.spec.lambda_.region
        targets = workload.status.targets
        return held_while_moving(targets.lambda_ if targets is not None else None, moving, state)

    def _ensure_here(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        owner = _owner_of(workload)
        want = function_config(workload, desired, default_role_arn=self.default_role_arn)
        client = self.client(want.region)
        name = self.function_name(workload)
        function = self._get_function(client, name)
        if function is None:
            log.info("creating Lambda function %s in %s for %s", name, want.region, workload.key)
            self._call("create Lambda function", self._create, client, name, want)
            function = self._get_function(client, name)
            if function is None:
                raise RetryableTargetError(f"Lambda function {name} not found right after create")
        self._check_owner(client, function, owner, name)
        try:
            self._settle(client, name, function)
            updated = self._ensure_function(client, name, want, function, workload.key)
            if not updated and function.get("Configuration", {}).get("State") == "Failed":
                # Retrying cannot revive it; the next change of the spec (an update) may. Report why.
                state = self.observe_sync(workload)
                if state is not None:
                    return state
            self._ensure_alias(client, name, want)
        except StillInProgressError as err:
            state = self.observe_sync(workload)
            if state is None:
                raise
            return TargetState(state.name, state.endpoint, False, state.replicas, err.message)
        self._ensure_reserved_concurrency(client, name, want)
        self._ensure_provisioned_concurrency(client, name, want)
        self._ensure_url(client, name)
        state = self.observe_sync(workload)
        if state is None:
            raise RetryableTargetError(f"Lambda function {name} vanished during ensure")
        return state

    def observe_sync(self, workload: InferenceWorkload) -> TargetState | None:
        """Blocking ``observe``."""
        owner = _owner_of(workload)
        client = self.client(workload.spec.lambda_.region)
        name = self.function_name(workload)
        function = self._get_function(client, name)
        if function is None:
            return None
        self._check_owner(client, function, owner, name)
        config = function.get("Configuration", {})
        arn = str(config.get("FunctionArn", name))
        alias = self._get_optional("get Lambda alias", client.get_alias, FunctionName=name, Name=self.alias_name)
        url = None
        provisioned = None
        if alias is not None:
            url = self._get_optional(
                "get Lambda function URL", client.get_function_url_config, FunctionName=name, Qualifier=self.alias_name
            )
            provisioned = self._get_optional(
                "get Lambda provisioned concurrency",
                client.get_provisioned_concurrency_config,
                FunctionName=name,
                Qualifier=self.alias_name,
            )
        state, update = config.get("State"), config.get("LastUpdateStatus")
        problems: list[str] = []
        if state != "Active":
            problems.append(f"function {str(state).lower()}: {config.get('StateReason') or 'not active yet'}")
        if update not in (None, "Successful"):
            problems.append(f"last update {str(update).lower()}: {config.get('LastUpdateStatusReason') or ''}".strip())
        if alias is None:
            problems.append(f"alias {self.alias_name} not published yet")
        if alias is not None and url is None:
            problems.append("no function URL yet")
        replicas: int | None = None
        if provisioned is not None:
            replicas = int(provisioned.get("AvailableProvisionedConcurrentExecutions", 0))
            status = provisioned.get("Status")
            if status != "READY":
                requested = provisioned.get("RequestedProvisionedConcurrentExecutions")
                reason = provisioned.get("StatusReason") or f"{replicas}/{requested} warm"
                problems.append(f"provisioned concurrency {str(status).lower()}: {reason}")
        return TargetState(
            name=f"{arn}:{self.alias_name}" if alias is not None else arn,
            endpoint=url.get("FunctionUrl") if url else None,
            ready=not problems,
            replicas=replicas,
            message="; ".join(problems) or None,
        )

    def retire_sync(self, workload: InferenceWorkload) -> bool:
        """Blocking ``retire``: True once no function of this workload exists, in the region recorded when it was
        created (``status.targets.lambda.name``, its ARN) and in the one the spec names now: a region edit never
        orphans the function made in the old one. None can exist in a region that is not one."""
        owner = _owner_of(workload)
        name = self.function_name(workload)
        gone = True
        for region in self._regions_of(workload):
            try:
                client = self.client(region)
            except InvalidLocationError as err:
                log.info("nothing to retire for %s in %s: %s", workload.key, region, err.message)
                continue
            gone = self._retire_in(client, name, owner, str(workload.key)) and gone
        return gone

    def _regions_of(self, workload: InferenceWorkload) -> list[str]:
        """The recorded function's region first (the identity it was created with), then the spec's."""
        recorded = workload.status.targets.lambda_ if workload.status.targets is not None else None
        regions = []
        if recorded is not None and recorded.name:
            parts = recorded.name.split(":")
            # only this workload's own function counts (a patched status cannot widen what is deleted)
            if (
                len(parts) >= 7
                and parts[:3] == ["arn", parts[1], "lambda"]
                and parts[6] == self.function_name(workload)
            ):
                regions.append(parts[3])
        regions.append(workload.spec.lambda_.region)
        return list(dict.fromkeys(regions))

    def _retire_in(self, client: Any, name: str, owner: naming.Owner, who: str) -> bool:
        function = self._get_function(client, name)
        if function is None:
            return True
        if not self._owned_by(client, function, owner):
            log.warning("not deleting Lambda function %s: it is not owned by %s", name, who)
            return True
        log.info("deleting Lambda function %s of %s", name, who)
        # Deleting the unqualified function removes every version, alias, URL and concurrency setting with it.
        self._call("delete Lambda function", self._ignore_not_found, client.delete_function, FunctionName=name)
        return self._get_function(client, name) is None

    def retire_owned_sync(self, resource: naming.OwnedResource) -> bool:
        """Delete a function ``list_owned`` reported (the sweep: its workload is gone), after checking its owner
        tag once more; True once it is gone."""
        return self._retire_in(self.client(resource.location), resource.name, resource.owner, "a deleted workload")

    async def retire_owned(self, resource: naming.OwnedResource) -> bool:
        return await asyncio.to_thread(self.retire_owned_sync, resource)

    def list_owned_sync(
        self, *, regions: Sequence[str] | None = None, owner_uid: str | None = None
    ) -> list[naming.OwnedResource]:
        """Blocking ``list_owned``."""
        owned: list[naming.OwnedResource] = []
        for region in regions or (self.default_region,):
            client = self.client(region)
            for function in self._call("list Lambda functions", self._list_functions, client):
                name = function["FunctionName"]
                if not name.startswith(naming.NAME_PREFIX):
                    continue
                tags = self._call("list Lambda tags", client.list_tags, Resource=function["FunctionArn"])
                owner = naming.owner_from_lambda_tags(tags.get("Tags", {}))
                if owner is None or (owner_uid is not None and owner.uid != owner_uid):
                    continue
                owned.append(naming.OwnedResource(name, region, owner))
        return owned

    # -------------------------------------------------------------------------------- steps of ensure

    def _settle(self, client: Any, name: str, function: Mapping[str, Any]) -> None:
        """Wait until the function can take changes (created ``Pending``, or an update ``InProgress``)."""
        config = function.get("Configuration", {})
        if config.get("State") == "Pending":
            self._wait(client, "function_active_v2", name)
        if config.get("LastUpdateStatus") == "InProgress":
            self._wait(client, "function_updated_v2", name)

    def _ensure_function(
        self, client: Any, name: str, want: FunctionConfig, function: Mapping[str, Any], key: str
    ) -> bool:
        """Update code and configuration where they differ; True when anything was updated."""
        changed = config_differences(want, function)
        code = {"image", "architecture"}  # the architecture is changed with the code (UpdateFunctionCode)
        if code & set(changed):
            log.info("updating Lambda function %s code for %s", name, key)
            self._call(
                "update Lambda code",
                client.update_function_code,
                FunctionName=name,
                ImageUri=want.image_uri,
                Architectures=[want.architecture],
            )
            self._wait(client, "function_updated_v2", name)
        if set(changed) - code:
            log.info("updating Lambda function %s for %s: %s differ", name, key, ", ".join(sorted(set(changed) - code)))
            self._call(
                "update Lambda configuration",
                client.update_function_configuration,
                FunctionName=name,
                Role=want.role_arn,
                MemorySize=want.memory_mb,
                Timeout=want.timeout_seconds,
                Environment={"Variables": want.environment},
                Description=want.description,
            )
            self._wait(client, "function_updated_v2", name)
        tags = function.get("Tags") or {}
        missing = {k: v for k, v in want.tags.items() if tags.get(k) != v}
        if missing:
            arn = function.get("Configuration", {}).get("FunctionArn")
            self._call("tag Lambda function", client.tag_resource, Resource=arn, Tags=missing)
        return bool(changed)

    def _ensure_alias(self, client: Any, name: str, want: FunctionConfig) -> None:
        """Point the alias at a published version matching ``want`` (publishing one only when needed)."""
        alias = self._get_optional("get Lambda alias", client.get_alias, FunctionName=name, Name=self.alias_name)
        if alias is not None:
            published = self._get_optional(
                "get Lambda version", client.get_function, FunctionName=name, Qualifier=alias["FunctionVersion"]
            )
            latest = self._get_function(client, name) or {}
            same_code = _code_sha(published) == _code_sha(latest)  # the image digest: a new tag may keep the URI
            if published is not None and same_code and not config_differences(want, published):
                return
        # Lambda returns the latest version instead of a new one when nothing changed since it was published.
        version = self._call("publish Lambda version", client.publish_version, FunctionName=name)["Version"]
        published_state = self._call(
            "get Lambda version", client.get_function_configuration, FunctionName=name, Qualifier=version
        ).get("State")
        if published_state not in (None, "Active"):
            self._wait(client, "published_version_active", name, qualifier=version)
        if alias is None:
            log.info("creating alias %s -> version %s of Lambda function %s", self.alias_name, version, name)
            self._call(
                "create Lambda alias",
                self._create_or_update_alias,
                client,
                name,
                version,
            )
        elif alias["FunctionVersion"] != version:
            log.info("moving alias %s of Lambda function %s to version %s", self.alias_name, name, version)
            self._call(
                "update Lambda alias",
                client.update_alias,
                FunctionName=name,
                Name=self.alias_name,
                FunctionVersion=version,
            )

    def _create_or_update_alias(self, client: Any, name: str, version: str) -> None:
        try:
            client.create_alias(FunctionName=name, Name=self.alias_name, FunctionVersion=version)
        except ClientError as exc:
            if aws_error_code(exc) != "ResourceConflictException":
                raise
            client.update_alias(FunctionName=name, Name=self.alias_name, FunctionVersion=version)

    def _ensure_reserved_concurrency(self, client: Any, name: str, want: FunctionConfig) -> None:
        current = self._call("get Lambda reserved concurrency", client.get_function_concurrency, FunctionName=name)
        have = current.get("ReservedConcurrentExecutions")
        if have == want.reserved_concurrency:
            return
        if want.reserved_concurrency is None:
            log.info("removing reserved concurrency (%s) of Lambda function %s", have, name)
            self._call("delete Lambda reserved concurrency", client.delete_function_concurrency, FunctionName=name)
        else:
            log.info("reserved concurrency of Lambda function %s: %s -> %s", name, have, want.reserved_concurrency)
            self._call(
                "put Lambda reserved concurrency",
                client.put_function_concurrency,
                FunctionName=name,
                ReservedConcurrentExecutions=want.reserved_concurrency,
            )

    def _ensure_provisioned_concurrency(self, client: Any, name: str, want: FunctionConfig) -> None:
        current = self._get_optional(
            "get Lambda provisioned concurrency",
            client.get_provisioned_concurrency_config,
            FunctionName=name,
            Qualifier=self.alias_name,
        )
        have = current.get("RequestedProvisionedConcurrentExecutions") if current else None
        if want.provisioned_concurrency == 0:
            if current is not None:
                log.info("removing provisioned concurrency (%s) of Lambda function %s", have, name)
                self._call(
                    "delete Lambda provisioned concurrency",
                    self._ignore_not_found,
                    client.delete_provisioned_concurrency_config,
                    FunctionName=name,
                    Qualifier=self.alias_name,
                )
            return
        if have == want.provisioned_concurrency:
            return
        log.info("provisioned concurrency of Lambda function %s: %s -> %s", name, have, want.provisioned_concurrency)
        self._call(
            "put Lambda provisioned concurrency",
            client.put_provisioned_concurrency_config,
            FunctionName=name,
            Qualifier=self.alias_name,
            ProvisionedConcurrentExecutions=want.provisioned_concurrency,
        )

    def _ensure_url(self, client: Any, name: str) -> None:
        current = self._get_optional(
            "get Lambda function URL", client.get_function_url_config, FunctionName=name, Qualifier=self.alias_name
        )
        if current is None:
            log.info("creating function URL (%s) for Lambda function %s:%s", URL_AUTH_TYPE, name, self.alias_name)
            self._call(
                "create Lambda function URL",
                self._create_url,
                client,
                name,
            )
        elif current.get("AuthType") != URL_AUTH_TYPE:
            self._call(
                "update Lambda function URL",
                client.update_function_url_config,
                FunctionName=name,
                Qualifier=self.alias_name,
                AuthType=URL_AUTH_TYPE,
            )

    def _create_url(self, client: Any, name: str) -> None:
        try:
            client.create_function_url_config(FunctionName=name, Qualifier=self.alias_name, AuthType=URL_AUTH_TYPE)
        except ClientError as exc:
            if aws_error_code(exc) != "ResourceConflictException":  # created by an attempt whose answer got lost
                raise

    # -------------------------------------------------------------------------------- helpers

    @staticmethod
    def _ignore_not_found(fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise

    def _get_optional(self, describe: str, fn: Callable[..., Any], **kwargs: Any) -> dict[str, Any] | None:
        """``fn(**kwargs)``, or None when the resource does not exist (404)."""
        result = self._call(describe, self._ignore_not_found, fn, **kwargs)
        return dict(result) if result is not None else None

    def _get_function(self, client: Any, name: str) -> dict[str, Any] | None:
        return self._get_optional("get Lambda function", client.get_function, FunctionName=name)

    def _create(self, client: Any, name: str, want: FunctionConfig) -> bool:
        """Create the function; False when it already exists (an earlier attempt's answer got lost)."""
        try:
            client.create_function(
                FunctionName=name,
                PackageType="Image",
                Code={"ImageUri": want.image_uri},
                Architectures=[want.architecture],
                Role=want.role_arn,
                MemorySize=want.memory_mb,
                Timeout=want.timeout_seconds,
                Environment={"Variables": want.environment},
                Description=want.description,
                Tags=want.tags,
                Publish=False,
            )
        except ClientError as exc:
            if aws_error_code(exc) == "ResourceConflictException":
                return False
            raise
        return True

    def _list_functions(self, client: Any) -> list[dict[str, Any]]:
        functions: list[dict[str, Any]] = []
        for page in client.get_paginator("list_functions").paginate():
            functions.extend(page.get("Functions", []))
        return functions

    def _wait(self, client: Any, waiter_name: str, name: str, *, qualifier: str | None = None) -> None:
        """A botocore waiter, bounded by ``waiter_timeout_seconds``; its outcomes mapped to target errors."""
        delay = self.waiter_delay_seconds
        kwargs: dict[str, Any] = {
            "FunctionName": name,
            "WaiterConfig": {"Delay": delay, "MaxAttempts": max(1, math.ceil(self.waiter_timeout_seconds / delay))},
        }
        if qualifier is not None:
            kwargs["Qualifier"] = qualifier

        def wait() -> None:
            try:
                client.get_waiter(waiter_name).wait(**kwargs)
            except WaiterError as exc:
                last = exc.last_response or {}
                if "Error" in last:
                    raise ClientError(last, "GetFunction") from exc
                reason = str(exc.kwargs.get("reason", ""))
                if "Max attempts exceeded" in reason:
                    raise StillInProgressError(
                        f"Lambda function {name} still changing after {self.waiter_timeout_seconds:g}s"
                    ) from exc
                config = last.get("Configuration", last)
                detail = config.get("StateReason") or config.get("LastUpdateStatusReason") or reason
                raise PermanentTargetError(f"Lambda function {name} failed: {detail}") from exc

        self._call(f"wait for Lambda {waiter_name}", wait)

    def _tags(self, client: Any, function: Mapping[str, Any]) -> Mapping[str, str]:
        tags = function.get("Tags")
        if tags is None:
            arn = function.get("Configuration", {}).get("FunctionArn")
            tags = self._call("list Lambda tags", client.list_tags, Resource=arn).get("Tags", {})
        return dict(tags)

    def _owned_by(self, client: Any, function: Mapping[str, Any], owner: naming.Owner) -> bool:
        found = naming.owner_from_lambda_tags(self._tags(client, function))
        return found is not None and found.uid == owner.uid

    def _check_owner(self, client: Any, function: Mapping[str, Any], owner: naming.Owner, name: str) -> None:
        if self._owned_by(client, function, owner):
            return
        found = naming.owner_from_lambda_tags(self._tags(client, function))
        whose = (
            f"it belongs to workload {found.namespace}/{found.name} (uid {found.uid})"
            if found is not None
            else "it was not created by inference-placement"
        )
        raise NotOwnedError(
            f"Lambda function {name} already exists and {whose}; it is left untouched "
            "(delete it or rename the workload)",
            status_code=409,
        )
