"""``python -m tests.cloudrun_standin --port N``: serve the Cloud Run Admin API v2 stand-in on loopback.

Prints one JSON line (``{"url": ..., "token_uri": ...}``) once it listens, then serves until SIGINT/SIGTERM.
Faults can be armed at start (``--fail-next K --fail-status 429``) or at any time over HTTP:
``POST /standin/faults {"status": 500, "count": 2, "methods": ["POST"], "afterEffect": false}``,
``DELETE /standin/faults``, ``POST /standin/fail-next-deploy``, ``GET /standin/requests``,
``GET /standin/services``, ``POST /standin/reset``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence

from tests.cloudrun_standin.server import CloudRunStandin


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cloudrun_standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one, printed at start)")
    parser.add_argument("--service-url", help="URL services report, e.g. http://127.0.0.1:9000 ({service} filled in)")
    parser.add_argument("--reconcile-seconds", type=float, default=0.5, help="time an operation takes (default 0.5)")
    parser.add_argument(
        "--fail-next", type=int, default=0, metavar="K", help="answer the next K API requests with --fail-status"
    )
    parser.add_argument("--fail-status", type=int, default=500, help="status of the armed faults (429, 500, 403, ...)")
    parser.add_argument("--fail-message", help="message of the armed faults (default: a realistic one per status)")
    parser.add_argument("--require-token", action="store_true", help="reject requests without the token from /token")
    parser.add_argument("--access-token", help="token /token hands out (default: random)")
    args = parser.parse_args(argv)

    try:
        standin = CloudRunStandin(
            args.host,
            args.port,
            service_url=args.service_url,
            reconcile_seconds=args.reconcile_seconds,
            require_token=args.require_token,
            access_token=args.access_token,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.fail_next:
        standin.inject_faults(args.fail_status, args.fail_next, message=args.fail_message)
    standin.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(json.dumps({"url": standin.url, "token_uri": standin.token_uri}), flush=True)
    try:
        stop.wait()
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
