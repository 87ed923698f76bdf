"""The operator's own API client takes a kubeconfig's client certificate as files or as inline data."""

from __future__ import annotations

import base64
import ssl
import subprocess
from pathlib import Path

import kopf
import pytest

from jobnet.kube.client import _ssl_context

SERVER = "https://127.0.0.1:6443"


@pytest.fixture
def client_certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-subj", "/CN=jobnet-operator", "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_certificate_and_key_files_are_loaded(client_certificate: tuple[Path, Path]) -> None:
    cert, key = client_certificate
    info = kopf.ConnectionInfo(server=SERVER, certificate_path=str(cert), private_key_path=str(key))
    assert isinstance(_ssl_context(info), ssl.SSLContext)


def test_inline_certificate_and_key_data_are_loaded(client_certificate: tuple[Path, Path]) -> None:
    cert, key = client_certificate
    info = kopf.ConnectionInfo(
        server=SERVER,
        certificate_data=base64.b64encode(cert.read_bytes()).decode(),
        private_key_data=base64.b64encode(key.read_bytes()).decode(),
    )
    assert isinstance(_ssl_context(info), ssl.SSLContext)


def test_a_key_that_does_not_match_the_certificate_is_refused(
    client_certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, _ = client_certificate
    other_key = tmp_path / "other.key"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", str(other_key)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    info = kopf.ConnectionInfo(
        server=SERVER, certificate_path=str(cert), private_key_data=base64.b64encode(other_key.read_bytes()).decode()
    )
    with pytest.raises(ssl.SSLError):
        _ssl_context(info)


def test_plain_http_and_insecure_connections_use_no_tls_context() -> None:
    assert _ssl_context(kopf.ConnectionInfo(server="http://127.0.0.1:8080")) is False
    assert _ssl_context(kopf.ConnectionInfo(server=SERVER, insecure=True)) is False
