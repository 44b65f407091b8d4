"""Security checks: no secret value in logs, Events, status or metrics; the image runs as a non-root user; cloud
resources the operator creates carry its ownership tags.

The session-wide scan lives in ``tests/plugins/secret_scan.py``: every operator run of the session is registered
with it (log, ``/metrics``, the Events and InferenceWorkloads of its namespace) and scanned at session end for the
canary credentials every test uses; a finding fails the run. Here: proof that the scanner finds planted canaries,
then the real operator given canary credentials in a Secret directory, at DEBUG level (botocore prints signed
request headers), placing a Lambda workload and failing another, with everything it wrote scanned at once.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.plugins.cloud import FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_SECRET_ACCESS_KEY, MotoAws
from tests.plugins.cluster import REPO_ROOT, KubeCluster
from tests.plugins.operator import OperatorProcess, load_example, wait_for
from tests.plugins.secret_scan import CANARIES, SCAN, SecretScan, register_secret, scan_text

# Credentials the operator reads from a mounted Secret directory (distinct from the environment's canaries, so a
# finding says which path leaked).
SECRET_DIR_KEYS = {
    "aws_access_key_id": "CANARYDIRAKIDZ3M8PLACEMENT",
    "aws_secret_access_key": "canary/DirSecretKeyZ3m8+inferencePlacement",
    "aws_session_token": "canaryDirSessionTokenZ3m8inferencePlacement",
}


# ----------------------------------------------------------------------------------------------- the scanner


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda s: s, id="raw"),
        pytest.param(lambda s: base64.b64encode(s.encode()).decode(), id="base64"),
        pytest.param(lambda s: base64.b64encode(b"{'k': '" + s.encode() + b"'}").decode(), id="base64-inside"),
        pytest.param(lambda s: urllib.parse.quote(s, safe=""), id="url-encoded"),
        pytest.param(lambda s: json.dumps({"message": f'said "{s}"'}), id="json"),
    ],
)
def test_the_scanner_finds_a_planted_canary_in_a_log_file(encode: Callable[[str], str], tmp_path: Path) -> None:
    scan = SecretScan()  # a private one: a planted canary in the session's scan would fail the whole run
    secret = CANARIES[1]
    log = tmp_path / "operator.log"
    log.write_text(f"INFO all good\nDEBUG request headers: {encode(secret)} trailing\nINFO done\n")
    scan.add_file(log, "planted log")
    findings = scan.findings()
    assert len(findings) >= 1 and findings[0].source.startswith("planted log")
    report = "\n".join(str(f) for f in findings)
    assert secret not in report and "<SECRET>" in report, "a finding must not repeat the secret it found"


def test_the_scanner_finds_registered_secrets_in_snapshots_and_ignores_clean_text() -> None:
    scan = SecretScan()
    minted = "ya29.minted-token-for-this-test-only"
    scan.add_secret(minted)
    scan.add_text("clean events", json.dumps({"items": [{"message": "cloudrun: permission denied"}]}))
    assert scan.findings() == []
    scan.add_text("an Event", json.dumps({"message": f"Caller with Authorization: Bearer {minted} lacks access"}))
    [finding] = scan.findings()
    assert finding.source == "an Event" and finding.encoding == "raw"
    with pytest.raises(ValueError, match="at least"):
        scan.add_secret("short")
    assert scan_text("nothing here", CANARIES, "x") == []


def test_the_session_scan_is_armed_with_the_canaries_every_test_uses(pytestconfig: pytest.Config) -> None:
    assert set(CANARIES) <= SCAN.secrets
    assert {FAKE_AWS_ACCESS_KEY_ID, FAKE_AWS_SECRET_ACCESS_KEY} <= set(CANARIES)
    assert pytestconfig.pluginmanager.has_plugin("tests.plugins.secret_scan")
    # Not shaped like a real key: the operator's pattern redaction would hide it, and the scan would prove less.
    from inference_placement.targets.credentials import redact

    for canary in (*CANARIES, *SECRET_DIR_KEYS.values()):
        assert redact(canary) == canary


# ----------------------------------------------------------------------------------------------- the image


def _final_stage(dockerfile: str) -> list[str]:
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.strip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def test_the_image_runs_as_a_numeric_non_root_user_matching_the_chart() -> None:
    stage = _final_stage((REPO_ROOT / "Dockerfile").read_text())
    users = [line.split(None, 1)[1] for line in stage if line.upper().startswith("USER ")]
    assert users, "the final stage sets no USER: the image would run as root"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"USER {users[-1]}: numeric, so runAsNonRoot can verify it without /etc/passwd"
    uid, gid = int(match.group(1)), int(match.group(2) or match.group(1))
    assert uid != 0 and gid != 0
    values = yaml.safe_load((REPO_ROOT / "charts" / "inference-placement" / "values.yaml").read_text())
    pod = values["podSecurityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid, "the chart runs the image's own user"


# ----------------------------------------------------------------------------------------------- the operator


def _get(cluster: KubeCluster, ns: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "iw", name, "-n", ns, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _lambda_workload(ns: str, name: str, role_arn: str, region: str) -> dict[str, Any]:
    doc = load_example(REPO_ROOT / "examples" / "sentiment-bursty.yaml", ns)
    doc["metadata"]["name"] = name
    doc["spec"]["placement"] = {"allowedTargets": ["lambda"]}
    doc["spec"]["lambda"].pop("targetRef")  # the deprecated inline role (the operator here allows it)
    doc["spec"]["lambda"]["roleArn"] = role_arn
    doc["spec"]["lambda"]["region"] = region
    return doc


@pytest.mark.cluster
def test_operator_with_credential_secrets_leaks_nothing_to_logs_events_status_or_metrics(
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    moto_aws: MotoAws,
    tmp_path: Path,
) -> None:
    for value in SECRET_DIR_KEYS.values():
        register_secret(value)  # the session-end scan looks for them in every artifact too
    secret_dir = tmp_path / "aws-credentials"  # a Secret mounted as a directory: one file per key
    secret_dir.mkdir()
    for key, value in SECRET_DIR_KEYS.items():
        (secret_dir / key).write_text(value)
    op = operator_factory(
        namespace,
        "--verbose",  # DEBUG: botocore logs every signed request's headers
        "--set",
        f"lambda.endpoint={moto_aws.endpoint_url}",
        "--set",
        f"lambda.credentialsDir={secret_dir}",
    )
    good = _lambda_workload(namespace, "to-lambda", moto_aws.role_arn, moto_aws.region)
    crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(good))
    obj = wait_for(
        lambda: (o := _get(crd_installed, namespace, "to-lambda")) and (o.get("status") or {}).get("placement") and o,
        timeout=90,
        what="placement on lambda",
    )

    # Ownership: the function the operator created carries its tags, tying it to this workload.
    client = boto3.client(
        "lambda",
        region_name=moto_aws.region,
        endpoint_url=moto_aws.endpoint_url,
        aws_access_key_id=FAKE_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_AWS_SECRET_ACCESS_KEY,
    )
    [function] = client.list_functions()["Functions"]
    tags = client.list_tags(Resource=function["FunctionArn"])["Tags"]
    assert tags.get("app.kubernetes.io/managed-by") == "inference-placement", tags
    assert tags.get("placement.inference.dev/owner-uid") == obj["metadata"]["uid"], tags

    # Everything the operator wrote, scanned now (the session-end scan repeats it with the log's last lines).
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert "inference_placement" in metrics
    events = crd_installed.kubectl("get", "events", "--all-namespaces", "-o", "json").stdout
    workloads = crd_installed.kubectl("get", "inferenceworkloads", "--all-namespaces", "-o", "json").stdout
    logs = op.logs()
    assert "botocore" in logs and "Authorization" in logs, "DEBUG logging of signed requests did not happen"
    secrets = set(CANARIES) | set(SECRET_DIR_KEYS.values())
    findings = [
        *scan_text(logs, secrets, "operator log"),
        *scan_text(metrics, secrets, "operator /metrics"),
        *scan_text(events, secrets, "Events (all namespaces)"),
        *scan_text(workloads, secrets, "InferenceWorkloads (all namespaces)"),
    ]
    assert not findings, "\n".join(str(f) for f in findings)
    assert json.loads(events)["items"], "nothing to scan: no Events at all"

    # The finalizer needs the operator: delete while it runs, and leave no cloud resource behind.
    crd_installed.kubectl("delete", "iw", "to-lambda", "-n", namespace, "--timeout=60s")
    assert client.list_functions()["Functions"] == []
    assert op.alive(), logs[-3000:]


@pytest.mark.cluster
def test_a_target_that_fails_on_first_create_still_gets_a_status_and_an_event(
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    moto_aws: MotoAws,
) -> None:
    op = operator_factory(namespace, "--set", f"lambda.endpoint={moto_aws.endpoint_url}")
    bad = _lambda_workload(namespace, "bad-role", "arn:aws:iam::123456789012:role/does-not-exist", moto_aws.region)
    crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad))
    try:
        wait_for(
            lambda: ((_get(crd_installed, namespace, "bad-role") or {}).get("status") or {}).get("conditions"),
            timeout=12,
            what="a status on the workload whose Lambda create failed",
        )
        assert "Traceback" not in op.logs()
    finally:
        crd_installed.kubectl("delete", "iw", "bad-role", "-n", namespace, "--wait=false", check=False)
        crd_installed.kubectl(
            "patch",
            "iw",
            "bad-role",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":[]}}',
            check=False,
        )


def test_no_secret_reached_anything_this_session_registered_so_far() -> None:
    """The session scan up to this point (the same check runs over everything at session end)."""
    findings = SCAN.findings()
    assert not findings, "\n".join(str(f) for f in findings[:50])
