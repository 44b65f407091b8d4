"""The Prometheus source against an authenticating Prometheus, as a managed one is (Grafana Mimir / Cloud, Cortex,
Google Managed Prometheus' frontend, Prometheus behind an auth proxy).

- A real Prometheus with ``--web.config.file``: TLS with our own CA, basic auth users (bcrypt). The source sends the
  password read from its file and trusts the CA file; a wrong password or no CA fails the fetch with a one-line
  reason; a rotated password (file and web config both changed) works without a new source.
- A bearer token and a tenant header (``X-Scope-OrgID``): the devtools switch in front of the real Prometheus
  demands them, as a managed Prometheus' gateway does (Prometheus itself checks no bearer token).
No mock of Prometheus: every answer that counts comes from the real server over backfilled data.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import ctypes.util
import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inference_placement.api.workload import WorkloadKey
from inference_placement.devtools.prometheus import PrometheusServer, Switch, backfill, start_prometheus
from inference_placement.metrics.prometheus import PrometheusAuth, PrometheusSource
from inference_placement.metrics.promql import MODEL_SERVER_TEMPLATES
from inference_placement.metrics.source import MetricsSnapshot
from tests.plugins.prometheus import READY_TIMEOUT_SECONDS, OpenMetricsBuilder, PrometheusBinaries

START = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC).timestamp()
MINUTES = 20
NOW = dt.datetime.fromtimestamp(START + MINUTES * 60, dt.UTC)
KEY = WorkloadKey("auth", "model")
PER_MINUTE = 120.0  # 2 requests per second


def _bcrypt(password: str) -> str:
    """A bcrypt hash for Prometheus' ``basic_auth_users``, from the system's libcrypt (libxcrypt: ``$2b$``)."""
    name = ctypes.util.find_library("crypt")
    if name is None:
        pytest.skip("libcrypt not found (bcrypt hashes for Prometheus' web config)")
    lib = ctypes.CDLL(name)
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt.restype = ctypes.c_char_p
    salt = lib.crypt_gensalt(b"$2b$", 5, None, 0)
    hashed = lib.crypt(password.encode(), salt)
    assert hashed and hashed.startswith(b"$2b$"), "libcrypt without bcrypt"
    return str(hashed.decode())


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _pki(directory: Path) -> Pki:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test prometheus CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


def _backfilled(binaries: PrometheusBinaries, directory: Path) -> None:
    om = OpenMetricsBuilder(sample_interval_seconds=15)
    labels = {"namespace": KEY.namespace, "workload": KEY.name, "code": "200"}
    om.counter_from_minute_counts("model_requests_total", labels, START, [PER_MINUTE] * MINUTES)
    source = directory / "backfill.om"
    source.write_text(om.render())
    backfill(binaries.promtool, source, directory / "tsdb", timeout_seconds=120)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _fetch(url: str, auth: PrometheusAuth | None = None, source: PrometheusSource | None = None) -> MetricsSnapshot:
    source = source or PrometheusSource(url, templates=MODEL_SERVER_TEMPLATES, auth=auth, range_seconds=600)
    return asyncio.run(source.fetch([KEY], NOW))


def _assert_window(snapshot: MetricsSnapshot) -> None:
    assert snapshot.problem is None, snapshot.problem
    window = snapshot.windows[KEY]
    assert window.rps and abs(window.rps[-1] - PER_MINUTE / 60) < 0.05, window.rps


@dataclass
class SecuredPrometheus:
    server: PrometheusServer
    pki: Pki
    web_config: Path
    password_file: Path


@pytest.fixture
def secured_prometheus(prometheus_binaries: PrometheusBinaries, tmp_path: Path) -> Iterator[SecuredPrometheus]:
    pki = _pki(tmp_path)
    _backfilled(prometheus_binaries, tmp_path)
    web = {
        "tls_server_config": {"cert_file": str(pki.cert_file), "key_file": str(pki.key_file)},
        "basic_auth_users": {"operator": _bcrypt("first-password")},
    }
    try:
        server = start_prometheus(
            prometheus_binaries.prometheus,
            tmp_path,
            ready_timeout_seconds=READY_TIMEOUT_SECONDS,
            web_config=web,
            ready_headers=_basic("operator", "first-password"),
            ready_context=ssl.create_default_context(cafile=str(pki.ca_file)),
        )
    except RuntimeError as err:
        raise AssertionError(str(err)) from None
    password_file = tmp_path / "password"
    password_file.write_text("first-password\n")  # a Secret's trailing newline is stripped
    try:
        yield SecuredPrometheus(server, pki, tmp_path / "web.yml", password_file)
    finally:
        server.stop()


def test_basic_auth_and_a_private_ca_against_a_real_prometheus(secured_prometheus: SecuredPrometheus) -> None:
    prom = secured_prometheus
    assert prom.server.url.startswith("https://")
    auth = PrometheusAuth(
        basic_auth_username="operator", basic_auth_password_file=prom.password_file, ca_file=prom.pki.ca_file
    )
    source = PrometheusSource(prom.server.url, templates=MODEL_SERVER_TEMPLATES, auth=auth, range_seconds=600)
    _assert_window(_fetch(prom.server.url, source=source))

    # rotation: the Secret (password file) and the server's users change; the same source follows
    web = yaml.safe_load(prom.web_config.read_text())
    web["basic_auth_users"] = {"operator": _bcrypt("second-password")}
    prom.web_config.write_text(yaml.safe_dump(web))
    refused = _fetch(prom.server.url, source=source)
    assert refused.problem is not None and "401" in refused.problem, refused.problem
    assert "first-password" not in refused.problem
    prom.password_file.write_text("second-password")
    _assert_window(_fetch(prom.server.url, source=source))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param("no-credentials", "401", id="no-credentials"),
        pytest.param("wrong-password", "401", id="wrong-password"),
        pytest.param("system-trust-store", "TLS", id="ca-not-trusted"),
        pytest.param("missing-password-file", "unreadable", id="missing-password-file"),
    ],
)
def test_a_refused_or_untrusted_connection_is_a_one_line_problem(
    secured_prometheus: SecuredPrometheus, tmp_path: Path, case: str, expected: str
) -> None:
    prom = secured_prometheus
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    auth = {
        "no-credentials": PrometheusAuth(ca_file=prom.pki.ca_file),
        "wrong-password": PrometheusAuth(
            basic_auth_username="operator", basic_auth_password_file=wrong, ca_file=prom.pki.ca_file
        ),
        "system-trust-store": PrometheusAuth(
            basic_auth_username="operator", basic_auth_password_file=prom.password_file
        ),
        "missing-password-file": PrometheusAuth(
            basic_auth_username="operator", basic_auth_password_file=tmp_path / "absent", ca_file=prom.pki.ca_file
        ),
    }[case]
    snapshot = _fetch(prom.server.url, auth)
    assert snapshot.problem is not None and expected in snapshot.problem, snapshot.problem
    assert "\n" not in snapshot.problem and "not-the-password" not in snapshot.problem
    assert not snapshot.windows


def test_bearer_token_and_tenant_header_through_a_gateway(
    prometheus_binaries: PrometheusBinaries, tmp_path: Path
) -> None:
    """The switch in front of the real Prometheus demands ``Authorization: Bearer`` and ``X-Scope-OrgID``, as a
    managed Prometheus' gateway does; the token file is read again for every query (a projected token rotates)."""
    _backfilled(prometheus_binaries, tmp_path)
    try:
        server = start_prometheus(prometheus_binaries.prometheus, tmp_path, ready_timeout_seconds=READY_TIMEOUT_SECONDS)
    except RuntimeError as err:
        raise AssertionError(str(err)) from None
    gateway = Switch([server.url], required_headers={"Authorization": "Bearer token-1", "X-Scope-OrgID": "tenant-a"})
    try:
        token = tmp_path / "token"
        token.write_text("token-1\n")
        auth = PrometheusAuth(bearer_token_file=token, headers={"X-Scope-OrgID": "tenant-a"})
        source = PrometheusSource(gateway.url, templates=MODEL_SERVER_TEMPLATES, auth=auth, range_seconds=600)
        _assert_window(_fetch(gateway.url, source=source))
        assert gateway.refused == 0

        other_tenant = PrometheusAuth(bearer_token_file=token, headers={"X-Scope-OrgID": "tenant-b"})
        refused = _fetch(gateway.url, other_tenant)
        assert refused.problem is not None and "401" in refused.problem, refused.problem

        gateway.required_headers["Authorization"] = "Bearer token-2"  # the issuer rotated the token
        assert "401" in str(_fetch(gateway.url, source=source).problem)
        token.write_text("token-2")  # ... and the kubelet updated the projected file
        _assert_window(_fetch(gateway.url, source=source))
        assert "token-2" not in str(refused.problem)
    finally:
        gateway.close()
        server.stop()


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"basic_auth_username": "u"}, id="username-without-password"),
        pytest.param(
            {"bearer_token_file": Path("/t"), "basic_auth_username": "u", "basic_auth_password_file": Path("/p")},
            id="bearer-and-basic",
        ),
        pytest.param({"bearer_token_file": Path("/t"), "headers": {"Authorization": "x"}}, id="two-authorizations"),
        pytest.param({"headers": {"Bad Name": "x"}}, id="header-name"),
        pytest.param({"headers": {"X-A": "a\r\nInjected: 1"}}, id="header-injection"),
    ],
)
def test_inconsistent_auth_is_refused_up_front(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PrometheusAuth(**kwargs)  # type: ignore[arg-type]
