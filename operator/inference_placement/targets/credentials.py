"""Where the cloud clients get their credentials, and how credentials are kept out of logs, Events and status.

Two sources per cloud, chosen by the operator's configuration:

* the ambient identity (no Secret configured): Google Application Default Credentials (GKE workload identity,
  ``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server) and the AWS default chain (IRSA's web-identity token
  file, environment, shared config, instance profile); nothing is read here, the client libraries resolve it;
* a Kubernetes Secret named in the configuration, whose *decoded* ``data`` is passed in (the controller reads the
  Secret; :func:`decode_secret_data` turns the apiserver's base64 ``data`` into bytes).

Nothing here logs a credential, and the values are kept in objects whose ``repr`` hides them. :func:`redact` and
:class:`SecretRedactingFilter` scrub credential-shaped text (access keys, bearer tokens, signatures, private keys,
and any secret value registered with the filter) from error messages and log records: the operator installs the
filter on its log handler, because at DEBUG level botocore itself prints request headers (session tokens).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pydantic import SecretStr

from inference_placement.targets.base import PermanentTargetError, TargetError

if TYPE_CHECKING:
    import boto3
    from google.auth.credentials import Credentials as GoogleCredentials

__all__ = [
    "AWS_SECRET_KEYS",
    "AwsStaticCredentials",
    "GCP_SCOPES",
    "GCP_SECRET_KEYS",
    "SecretRedactingFilter",
    "aws_credentials_from_secret",
    "aws_session",
    "decode_secret_data",
    "google_anonymous_credentials",
    "google_credentials_from_secret",
    "redact",
    "scrub_error",
    "secret_values",
    "SecretData",
]

GCP_SCOPES: Final = ("https://www.googleapis.com/auth/cloud-platform",)
GCP_SECRET_KEYS: Final = ("service-account.json", "credentials.json", "key.json")
"""Keys of a Secret holding a Google service-account key (JSON), in the order they are tried."""
AWS_SECRET_KEYS: Final = {
    "access_key_id": ("aws_access_key_id", "AWS_ACCESS_KEY_ID", "accessKeyId"),
    "secret_access_key": ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "secretAccessKey"),
    "session_token": ("aws_session_token", "AWS_SESSION_TOKEN", "sessionToken"),
}
"""Accepted keys of a Secret holding an AWS access key (the first present wins)."""

SecretData = Mapping[str, bytes | str]

_REDACTED: Final = "***"
_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S), _REDACTED),
    (re.compile(r"(?i)(\"private_key(?:_id)?\"\s*:\s*\")[^\"]*"), r"\1" + _REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b"), _REDACTED),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer " + _REDACTED),
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), _REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), _REDACTED),  # JWTs
    (re.compile(r"(?i)(signature=)[0-9a-f]{16,}"), r"\1" + _REDACTED),
    (
        re.compile(
            r"(?i)(authorization['\"]?\s*[:=]\s*(?-i:b)?['\"]?)((?:bearer|basic|aws4-hmac-sha256)\s+)?[^\s'\",}]+"
        ),
        r"\1\2" + _REDACTED,
    ),
    (
        re.compile(
            r"(?i)((?:x-amz-security-token|x-goog-iam-authorization-token|aws_secret_access_key|aws_session_token"
            r"|access_token|refresh_token|id_token|client_secret|password)['\"]?\s*[:=]\s*(?-i:b)?['\"]?)[^\s'\",}]+"
        ),
        r"\1" + _REDACTED,
    ),
)
_MIN_SECRET_CHARS: Final = 6
_STANDARD_RECORD_FIELDS: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credential-shaped substrings and the given secret values replaced by ``***``."""
    for value in sorted({s for s in secrets if len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(value, _REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub_error(error: TargetError, secrets: Iterable[str] = ()) -> TargetError:
    """``error`` with its message redacted (in place; returned for chaining)."""
    cleaned = redact(error.message, secrets)
    if cleaned != error.message:
        error.message = cleaned
        error.args = (cleaned,)
    return error


class SecretRedactingFilter(logging.Filter):
    """A logging filter (install it on handlers) that scrubs credentials from every record before it is written.

    Pattern-based redaction covers what the cloud libraries print at DEBUG (``Authorization`` and
    ``X-Amz-Security-Token`` headers, bearer tokens, signatures); :meth:`add_secrets` adds the exact values
    read from the operator's credential Secrets.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set(secrets)

    def add_secrets(self, values: Iterable[str]) -> None:
        self._secrets.update(v for v in values if v)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self._secrets)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        for key, value in list(vars(record).items()):
            # ``extra=`` payloads, e.g. google-auth's httpRequest (with request headers) at DEBUG.
            if key not in _STANDARD_RECORD_FIELDS and isinstance(value, dict | list | tuple | str):
                text = json.dumps(value, default=str) if not isinstance(value, str) else value
                redacted = redact(text, self._secrets)
                if redacted != text:
                    setattr(record, key, redacted)
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text, self._secrets)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        return True


def decode_secret_data(data: Mapping[str, str] | None) -> dict[str, bytes]:
    """A Secret's ``data`` as the apiserver returns it (base64 values) decoded to bytes."""
    decoded: dict[str, bytes] = {}
    for key, value in (data or {}).items():
        try:
            decoded[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PermanentTargetError(f"Secret key {key!r} is not valid base64") from exc
    return decoded


def _text(value: bytes | str) -> str:
    return value.decode("utf-8").strip() if isinstance(value, bytes) else value.strip()


def _first(data: SecretData, keys: Iterable[str]) -> str | None:
    for key in keys:
        if key in data and _text(data[key]):
            return _text(data[key])
    return None


def secret_values(data: SecretData) -> list[str]:
    """Every value in a credential Secret (and the secret fields of a service-account key), for redaction."""
    values: list[str] = []
    for raw in data.values():
        try:
            text = _text(raw)
        except UnicodeDecodeError:
            continue
        values.append(text)
        try:
            parsed = json.loads(text)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            values.extend(str(parsed[k]) for k in ("private_key", "private_key_id") if parsed.get(k))
    return [v for v in values if v]


# ----------------------------------------------------------------------------------------------- Google


def google_credentials_from_secret(data: SecretData, *, key: str | None = None) -> GoogleCredentials:
    """Service-account credentials from a Secret holding a JSON key (``service-account.json`` by default)."""
    from google.oauth2 import service_account

    keys = (key,) if key else GCP_SECRET_KEYS
    raw = _first(data, keys)
    if raw is None:
        raise PermanentTargetError(f"credential Secret has none of the keys {', '.join(keys)}")
    try:
        info = json.loads(raw)
    except ValueError as exc:
        raise PermanentTargetError("credential Secret: the service-account key is not valid JSON") from exc
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise PermanentTargetError("credential Secret: expected a service-account key (type service_account)")
    try:
        credentials: GoogleCredentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=list(GCP_SCOPES)
        )
    except (ValueError, KeyError) as exc:
        # The library's message may quote the key material: never pass it on.
        raise PermanentTargetError("credential Secret: the service-account key could not be loaded") from exc
    return credentials


def google_anonymous_credentials() -> GoogleCredentials:
    """No credentials at all: for the local Cloud Run stand-in only."""
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()  # type: ignore[no-untyped-call]


# ----------------------------------------------------------------------------------------------- AWS


@dataclass(frozen=True)
class AwsStaticCredentials:
    """An AWS access key read from a Secret. ``repr`` never shows the secret parts."""

    access_key_id: str = field(repr=False)
    secret_access_key: SecretStr
    session_token: SecretStr | None = None

    def __repr__(self) -> str:
        return f"AwsStaticCredentials(access_key_id='{self.access_key_id[:4]}***', secret_access_key='***')"


def aws_credentials_from_secret(data: SecretData) -> AwsStaticCredentials:
    """The access key in a Secret (``aws_access_key_id`` / ``aws_secret_access_key`` / optional session token)."""
    access_key_id = _first(data, AWS_SECRET_KEYS["access_key_id"])
    secret_access_key = _first(data, AWS_SECRET_KEYS["secret_access_key"])
    if not access_key_id or not secret_access_key:
        raise PermanentTargetError("credential Secret needs aws_access_key_id and aws_secret_access_key")
    token = _first(data, AWS_SECRET_KEYS["session_token"])
    return AwsStaticCredentials(
        access_key_id=access_key_id,
        secret_access_key=SecretStr(secret_access_key),
        session_token=SecretStr(token) if token else None,
    )


def aws_session(*, region: str | None = None, credentials: AwsStaticCredentials | None = None) -> boto3.session.Session:
    """A boto3 session: the default chain (IRSA, environment, profile) unless static credentials are given."""
    import boto3

    kwargs: dict[str, Any] = {"region_name": region}
    if credentials is not None:
        kwargs.update(
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key.get_secret_value(),
            aws_session_token=credentials.session_token.get_secret_value() if credentials.session_token else None,
        )
    return boto3.session.Session(**kwargs)
