"""One retry policy for every cloud call: what is worth retrying, how long to back off, what to surface.

Each cloud call is wrapped by :func:`call_with_retry`. A failure is first *classified* into the target error tree
(``base.py``): throttling (429), 5xx, timeouts and connection failures are ``RetryableTargetError`` and are retried
here with exponential backoff and full jitter, a few times within a deadline, then raised so the workload's status
shows it and the next reconcile tries again (a condition, never a tight loop). Permission, quota, invalid requests and
other 4xx are ``PermanentTargetError`` and are raised at once, with the cloud's own message. Messages pass through
:func:`~inference_placement.targets.credentials.redact`, so a credential echoed by an error never reaches status.

The clients' own retries are switched off (botocore ``total_max_attempts=1``, ``retry=None`` on gapic calls) so that
there is exactly one policy and a test can count the attempts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import tenacity

from inference_placement.targets.base import (
    InvalidLocationError,
    PermanentTargetError,
    RetryableTargetError,
    TargetError,
)
from inference_placement.targets.credentials import redact, scrub_error

__all__ = [
    "RetriedCalls",
    "AWS_RETRYABLE_CODES",
    "RetryPolicy",
    "StillInProgressError",
    "aws_error_code",
    "call_with_retry",
    "classify_aws_error",
    "classify_google_error",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_MESSAGE_CHARS: Final = 500
_GOOGLE_URL_PREFIX: Final = re.compile(r"^(?:GET|POST|PATCH|PUT|DELETE) \S+: ")

AWS_RETRYABLE_CODES: Final = frozenset(
    {
        "TooManyRequestsException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ResourceConflictException",  # "An update is in progress for resource": finishes on its own
        "ResourceNotReadyException",
        "ServiceException",
        "ServiceUnavailableException",
        "InternalFailure",
        "EC2ThrottledException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)
"""AWS error codes that a later identical call can get past (on top of every 5xx)."""

_AWS_CREDENTIAL_CODES: Final = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one cloud call is retried before the failure goes back to the controller."""

    max_attempts: int = 5
    """Attempts per call, the first included."""
    initial_backoff_seconds: float = 0.5
    """Scale of the first backoff; each later one may be up to twice as long (full jitter)."""
    max_backoff_seconds: float = 8.0
    """Longest single backoff."""
    deadline_seconds: float = 45.0
    """No new attempt starts after this much time spent on one call."""


class StillInProgressError(RetryableTargetError):
    """The cloud accepted the request and is still working on it (operation or waiter timed out).

    Retrying the call now cannot help; the next reconcile observes the resource again.
    """


def _clip(message: str) -> str:
    message = " ".join(redact(message).split())
    return message if len(message) <= _MAX_MESSAGE_CHARS else message[: _MAX_MESSAGE_CHARS - 3] + "..."


def classify_google_error(exc: BaseException) -> TargetError:
    """Map an exception from google-cloud-run / google-auth onto the target error tree."""
    # Imported here: only this module and cloudrun.py touch google.*, and the Lambda path must not need it.
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, TargetError):
        return exc
    if isinstance(exc, gexc.GoogleAPICallError):
        code = exc.code if isinstance(exc.code, int) else None
        text = _GOOGLE_URL_PREFIX.sub("", exc.message or "")  # "POST http://host/v2/...: " adds nothing
        message = _clip(f"Cloud Run API {code or ''} {type(exc).__name__}: {text}".replace("  ", " "))
        if code is None or code == 429 or code >= 500 or code == 408 or isinstance(exc, gexc.Aborted):
            return RetryableTargetError(message, status_code=code, retry_after_seconds=_google_retry_after(exc))
        return PermanentTargetError(message, status_code=code)
    if isinstance(exc, gexc.RetryError):
        return RetryableTargetError(_clip(f"Cloud Run API: {exc.message}"))
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return PermanentTargetError(
            "no Google credentials: configure workload identity / Application Default Credentials, "
            "or name a Secret with a service-account key in the operator's configuration"
        )
    if isinstance(exc, auth_exc.RefreshError):
        # The token endpoint's answer is left out on purpose: it may quote the assertion it was sent.
        return PermanentTargetError("Google credentials were rejected while fetching an access token")
    if isinstance(exc, auth_exc.TransportError):
        return RetryableTargetError("could not reach the Google token endpoint")
    if isinstance(exc, FutureTimeoutError | TimeoutError):
        return StillInProgressError("Cloud Run operation still running; will check again")
    return _transport_or_unknown(exc, "Cloud Run API")


def _seconds(value: Any) -> float | None:
    """A ``Retry-After`` value in seconds (an HTTP date is not worth parsing here: treated as absent)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 <= seconds < 86400 else None


def _google_retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        return _seconds(headers.get("Retry-After"))
    except AttributeError:
        return None


def _aws_retry_after(exc: BaseException) -> float | None:
    """Lambda's throttling answers carry ``retryAfterSeconds`` in the body and/or a ``Retry-After`` header."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None
    body_value = _seconds(response.get("retryAfterSeconds"))
    if body_value is not None:
        return body_value
    meta = response.get("ResponseMetadata")
    headers = meta.get("HTTPHeaders") if isinstance(meta, Mapping) else None
    return _seconds(headers.get("retry-after")) if isinstance(headers, Mapping) else None


def aws_error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (``"ResourceNotFoundException"``), else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None
    error = response.get("Error")
    if not isinstance(error, Mapping):
        return None
    code = error.get("Code")
    return str(code) if code else None


def _aws_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None
    meta = response.get("ResponseMetadata")
    status = meta.get("HTTPStatusCode") if isinstance(meta, Mapping) else None
    return status if isinstance(status, int) else None


def classify_aws_error(exc: BaseException) -> TargetError:
    """Map an exception from boto3/botocore onto the target error tree."""
    from botocore import exceptions as bexc

    if isinstance(exc, TargetError):
        return exc
    if isinstance(exc, bexc.ClientError):
        code = aws_error_code(exc) or "Unknown"
        status = _aws_status(exc)
        error = exc.response.get("Error", {})
        raw_message = str(error.get("Message") or error.get("message") or "")
        if raw_message.lstrip().startswith("<"):  # an HTML error page, not an AWS error document
            raw_message = ""
        message = _clip(f"AWS Lambda {status or ''} {code}: {raw_message}".rstrip(": ").replace("  ", " "))
        if code in AWS_RETRYABLE_CODES or (status is not None and (status >= 500 or status == 429)):
            return RetryableTargetError(message, status_code=status, retry_after_seconds=_aws_retry_after(exc))
        if code in _AWS_CREDENTIAL_CODES:
            # The cloud's text is left out: rejections of a credential tend to quote it.
            return PermanentTargetError(
                _clip(f"AWS Lambda {status or ''} {code}: the AWS credentials were rejected"), status_code=status
            )
        return PermanentTargetError(message, status_code=status)
    if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
        return PermanentTargetError(
            "no AWS credentials: configure IRSA / the default credential chain, "
            "or name a Secret with an access key in the operator's configuration"
        )
    if isinstance(exc, bexc.InvalidRegionError):
        region = str(getattr(exc, "kwargs", {}).get("region_name", ""))[:64]
        return InvalidLocationError(f"spec.lambda.region: {region!r} is not an AWS region name")
    if isinstance(exc, bexc.NoRegionError):
        return PermanentTargetError("no AWS region: set spec.lambda.region or the operator's default region")
    if isinstance(exc, bexc.ParamValidationError):
        return PermanentTargetError(_clip(f"AWS Lambda request rejected by the client: {exc}"))
    if isinstance(
        exc,
        bexc.EndpointConnectionError
        | bexc.ConnectionClosedError
        | bexc.ReadTimeoutError
        | bexc.ConnectTimeoutError
        | bexc.HTTPClientError,
    ):
        return RetryableTargetError(_clip(f"AWS Lambda unreachable: {type(exc).__name__}"))
    return _transport_or_unknown(exc, "AWS Lambda")


def _transport_or_unknown(exc: BaseException, api: str) -> TargetError:
    import requests

    if isinstance(exc, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
        return RetryableTargetError(f"{api} unreachable: {type(exc).__name__}")
    # Unknown failures are not retried in a loop: surface them (type only, the text may be anything).
    return PermanentTargetError(f"{api}: unexpected {type(exc).__name__}")


def _retry_in_call(exc: BaseException) -> bool:
    return isinstance(exc, RetryableTargetError) and not isinstance(exc, StillInProgressError)


def call_with_retry(
    policy: RetryPolicy,
    describe: str,
    classify: Callable[[BaseException], TargetError],
    fn: Callable[..., T],
    *args: Any,
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)``; failures classified, retryable ones retried with backoff and jitter.

    Raises the classified ``TargetError`` (``raise ... from`` the cloud's exception). Blocking: run it in a
    worker thread (the targets' async methods do).
    """

    def attempt() -> T:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise classify(exc) from exc

    def before_sleep(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        reason = error.message if isinstance(error, TargetError) else type(error).__name__
        log.warning("%s: attempt %d failed (%s); retrying in %.2fs", describe, state.attempt_number, reason, wait)

    jittered = tenacity.wait_random_exponential(
        multiplier=policy.initial_backoff_seconds, max=policy.max_backoff_seconds
    )

    def backoff(state: tenacity.RetryCallState) -> float:
        """Exponential with full jitter, but never sooner than the cloud's ``Retry-After`` (within the deadline)."""
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        asked = error.retry_after_seconds if isinstance(error, TargetError) else None
        delay = jittered(state)
        return max(delay, min(asked, policy.deadline_seconds)) if asked is not None else delay

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.max_attempts) | tenacity.stop_after_delay(policy.deadline_seconds),
        wait=backoff,
        retry=tenacity.retry_if_exception(_retry_in_call),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except RetryableTargetError as err:
        attempts = int(retrying.statistics.get("attempt_number", 1))
        if _retry_in_call(err) and attempts > 1:
            err.message = f"{err.message} (gave up after {attempts} attempts)"
            err.args = (err.message,)
        raise


class RetriedCalls:
    """Blocking cloud calls of a target: each through ``call_with_retry`` with the target's ``retry_policy``, its
    failures classified by ``classify_error`` into the target error tree and scrubbed of the target's secrets."""

    retry_policy: RetryPolicy
    _secret_values: tuple[str, ...]

    @staticmethod
    def classify_error(exc: BaseException) -> TargetError:
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> TargetError:
        return scrub_error(self.classify_error(exc), self._secret_values)

    def _call(self, describe: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return call_with_retry(self.retry_policy, describe, self._classify, fn, *args, **kwargs)
