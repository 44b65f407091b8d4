"""A loopback stand-in for AWS's Lambda Function URL front end, the one piece of the Lambda data path with no local
equivalent (docs/lambda.md).

What it stands in for, exactly: the HTTPS endpoint ``https://<url-id>.lambda-url.<region>.on.aws`` that AWS runs in
front of a function whose URL has ``AuthType AWS_IAM``. Like it, this server

* refuses a request without a valid SigV4 signature for service ``lambda`` (403 ``{"Message": "Forbidden"}``):
  the ``Authorization`` header is recomputed with botocore's signer from the signed headers and the secret of the
  access key it names, ``x-amz-content-sha256`` must be the SHA-256 of the body (Lambda does not take
  ``UNSIGNED-PAYLOAD``), the scope's region must be the function's, and ``x-amz-date`` within 5 minutes of now;
* turns the HTTP request into the documented Function URL event, payload format 2.0 (``version``, ``routeKey``,
  ``rawPath``, ``rawQueryString``, ``cookies``, ``headers`` lower-cased with repeated values joined by commas,
  ``queryStringParameters``, ``requestContext`` with ``http.method``/``path``/``protocol``/``sourceIp``/
  ``userAgent``, ``domainName``, ``domainPrefix``, ``requestId``, ``time``/``timeEpoch``, ``body`` and
  ``isBase64Encoded``);
* invokes the function synchronously (here: the AWS Lambda Runtime Interface Emulator's
  ``POST /2015-03-31/functions/function/invocations``, the Invoke API of one function);
* turns the function's answer back into HTTP: a JSON object with ``statusCode`` gives status, ``headers``,
  ``cookies`` (``Set-Cookie``) and ``body`` (base64-decoded when ``isBase64Encoded``); any other answer is a 200
  ``application/json`` whose body is the answer (AWS's inference for format 2.0); a function error
  (``X-Amz-Function-Error``) is a 502.

What it does not do: TLS, IAM policy evaluation (``lambda:InvokeFunctionUrl``/``InvokeFunction``), CORS, response
streaming, throttling and payload limits beyond a 6 MB request cap. Run it as
``python -m inference_placement.devtools.function_url --invoke-url URL --port P --access-key ID=SECRET``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import calendar
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

__all__ = [
    "FunctionUrlFrontEnd",
    "HttpAnswer",
    "MAX_CLOCK_SKEW_SECONDS",
    "MAX_REQUEST_BYTES",
    "RIE_INVOKE_PATH",
    "check_signature",
    "function_url_event",
    "http_response",
    "main",
]

RIE_INVOKE_PATH: Final = "/2015-03-31/functions/function/invocations"
MAX_REQUEST_BYTES: Final = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit
MAX_CLOCK_SKEW_SECONDS: Final = 300.0  # AWS refuses a SigV4 request signed more than 5 minutes from its clock
_AUTH: Final = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
_TEXT_TYPES: Final = ("text/", "application/json", "application/xml", "application/javascript", "+json", "+xml")
# Headers AWS's front end answers for itself (a function cannot set them through the payload).
_HOP_BY_HOP: Final = frozenset({"connection", "content-length", "transfer-encoding", "keep-alive", "date"})


def _is_text(content_type: str | None) -> bool:
    kind = (content_type or "").lower()
    return any(marker in kind for marker in _TEXT_TYPES)


def check_signature(
    method: str,
    host: str,
    path_qs: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    region: str,
    *,
    now: float | None = None,
) -> str | None:
    """Why the request's SigV4 signature (service ``lambda``) is not valid; None = it is.

    ``headers`` are the received headers (case-insensitive lookups done here); the signature is recomputed over
    exactly the headers the request says it signed. ``now`` (epoch seconds) checks ``x-amz-date`` is within AWS's
    five minutes of it (None: not checked)."""
    lower = {k.lower(): v for k, v in headers.items()}
    match = _AUTH.match(lower.get("authorization", ""))
    if match is None:
        return "no AWS4-HMAC-SHA256 Authorization header"
    if match["service"] != "lambda":
        return f"signed for service {match['service']!r}, not 'lambda'"
    if match["region"] != region:
        return f"signed for region {match['region']!r}, not the function's {region!r}"
    secret = secrets.get(match["key"])
    if secret is None:
        return f"unknown access key {match['key']!r}"
    amz_date = lower.get("x-amz-date", "")
    if not amz_date.startswith(match["date"]):
        return "x-amz-date does not match the credential scope's date"
    if now is not None:
        try:
            signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return f"x-amz-date {amz_date!r} is not YYYYMMDDTHHMMSSZ"
        if abs(now - signed_at) > MAX_CLOCK_SKEW_SECONDS:
            return "signature expired: x-amz-date is more than 5 minutes from now"
    content_sha = lower.get("x-amz-content-sha256")
    if content_sha != hashlib.sha256(body).hexdigest():
        return "x-amz-content-sha256 is not the SHA-256 of the body"
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "host and x-amz-date must be signed"
    missing = [h for h in signed if h != "host" and h not in lower]
    if missing:
        return f"signed headers missing from the request: {missing}"
    request = AWSRequest(
        method=method,
        url=f"https://{host}{path_qs}",
        data=body,
        headers={h: (host if h == "host" else lower[h]) for h in signed},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(match["key"], secret, lower.get("x-amz-security-token")), "lambda", region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["signature"]):
        return "signature does not match"
    return None


def function_url_event(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    domain: str,
    account_id: str,
    source_ip: str,
    request_id: str,
    now: float,
) -> dict[str, Any]:
    """The Function URL event (payload format 2.0) AWS builds from one HTTP request."""
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    as_text = _is_text(joined.get("content-type"))
    if as_text:
        try:
            text: str | None = body.decode()
        except UnicodeDecodeError:
            text = None
    else:
        text = None
    encoded = bool(body) and text is None
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": joined,
        "requestContext": {
            "accountId": account_id,
            "apiId": domain.split(".", 1)[0],
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if body:
        event["body"] = base64.b64encode(body).decode() if encoded else text
    return event


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def http_response(payload: bytes) -> HttpAnswer:
    """The HTTP response AWS's front end makes of a function's answer (payload format 2.0)."""
    try:
        answer = json.loads(payload) if payload else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict) or "statusCode" not in answer:
        # "If your function returns valid JSON and doesn't return a statusCode", the answer is the body
        return HttpAnswer(200, [("content-type", "application/json")], payload)
    headers = [(str(k), str(v)) for k, v in (answer.get("headers") or {}).items() if k.lower() not in _HOP_BY_HOP]
    headers += [("set-cookie", str(c)) for c in answer.get("cookies") or []]
    raw = answer.get("body")
    if raw is None:
        body = b""
    elif answer.get("isBase64Encoded"):
        body = base64.b64decode(str(raw))
    else:
        body = (raw if isinstance(raw, str) else json.dumps(raw)).encode()
    return HttpAnswer(int(answer["statusCode"]), headers, body)


class FunctionUrlFrontEnd:
    """One function's URL front end on loopback: SigV4 check, event 2.0, invoke, response back to HTTP.

    ``invoke_urls`` are the function's execution environments, each a synchronous Invoke endpoint (one RIE each:
    ``http://127.0.0.1:PORT`` + ``RIE_INVOKE_PATH``). An environment serves one invocation at a time, as on Lambda;
    a request waits for a free one (Lambda would start another environment: give as many as the test's
    concurrency). ``secrets`` maps access key ids to their secrets (None = no signature check, ``AuthType NONE``)."""

    def __init__(
        self,
        invoke_urls: Sequence[str],
        *,
        region: str,
        secrets: Mapping[str, str] | None,
        account_id: str = "123456789012",
        timeout_seconds: float = 900.0,
    ) -> None:
        if not invoke_urls:
            raise ValueError("a function URL needs at least one execution environment")
        self.invoke_urls = tuple(invoke_urls)
        self._free: asyncio.Queue[str] | None = None
        self.region = region
        self.secrets = secrets
        self.account_id = account_id
        self.timeout_seconds = timeout_seconds
        self.invocations = 0
        self.refused = 0
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        host = request.headers.get("host", "").split(":", 1)[0] or f"local.lambda-url.{self.region}.on.aws"
        raw_path, raw_query = request.rel_url.raw_path, request.rel_url.raw_query_string
        if self.secrets is not None:
            path_qs = raw_path + (f"?{raw_query}" if raw_query else "")
            why = check_signature(
                request.method, host, path_qs, request.headers, body, self.secrets, self.region, now=time.time()
            )
            if why is not None:
                self.refused += 1
                return web.json_response({"Message": "Forbidden"}, status=403, headers={"x-standin-reason": why})
        event = function_url_event(
            request.method,
            raw_path,
            raw_query,
            list(request.headers.items()),
            body,
            domain=host,
            account_id=self.account_id,
            source_ip=request.remote or "127.0.0.1",
            request_id=str(uuid.uuid4()),
            now=time.time(),
        )
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        if self._free is None:
            self._free = asyncio.Queue()
            for url in self.invoke_urls:
                self._free.put_nowait(url)
        self.invocations += 1
        environment = await self._free.get()
        try:
            async with self._session.post(environment, data=json.dumps(event).encode()) as invoked:
                payload = await invoked.read()
                failed = invoked.status != 200 or "x-amz-function-error" in invoked.headers
        except (TimeoutError, aiohttp.ClientError) as err:
            return web.json_response({"Message": f"function unreachable: {err}"}, status=502)
        finally:
            self._free.put_nowait(environment)
        if failed:
            return web.json_response({"Message": "Internal Server Error"}, status=502)
        answer = http_response(payload)
        response = web.Response(status=answer.status, body=answer.body)
        for name, value in answer.headers:
            response.headers.add(name, value)
        return response


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--invoke-url", action="append", required=True, help="an execution environment's Invoke URL (an RIE's; repeat)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--access-key", action="append", default=[], help="ID=SECRET accepted for SigV4 (repeat)")
    parser.add_argument("--no-auth", action="store_true", help="AuthType NONE: accept unsigned requests")
    args = parser.parse_args(argv)
    secrets = None if args.no_auth else dict(pair.split("=", 1) for pair in args.access_key)
    front = FunctionUrlFrontEnd(args.invoke_url, region=args.region, secrets=secrets)
    web.run_app(front.app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
