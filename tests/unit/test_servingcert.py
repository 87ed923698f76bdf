"""The webhook's serving certificate (jobnet.core.servingcert): issue, check, rotate; no I/O."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from jobnet.core.servingcert import ServingMaterial, certificate_problem, issue, rotated_bundle

NAMES = ["hook.jobnet-system.svc", "hook", "127.0.0.1"]
NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
YEAR = datetime.timedelta(days=365)
MONTH = datetime.timedelta(days=30)
MATERIAL = issue(NAMES, NOW, YEAR)
OTHER = issue(NAMES, NOW, YEAR)


def test_issue_makes_a_ca_and_a_serving_certificate_it_signed() -> None:
    (ca,) = x509.load_pem_x509_certificates(MATERIAL.ca_bundle)
    served = x509.load_pem_x509_certificate(MATERIAL.certificate)
    served.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert served.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ExtendedKeyUsageOID.SERVER_AUTH in served.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["hook.jobnet-system.svc", "hook"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert served.not_valid_after_utc == NOW + YEAR
    assert "PRIVATE" not in repr(MATERIAL) and b"PRIVATE KEY" in MATERIAL.private_key


@pytest.mark.parametrize(
    ("material", "names", "now", "problem"),
    [
        (MATERIAL, NAMES, NOW, None),
        (MATERIAL, NAMES[:1], NOW + YEAR - MONTH - datetime.timedelta(seconds=1), None),
        (None, NAMES, NOW, "there is no certificate yet"),
        (MATERIAL, NAMES, NOW + YEAR - MONTH, "the certificate expires at 2027-12-01T00:00:00Z"),
        (MATERIAL, [*NAMES, "hook.other.svc"], NOW, "the certificate does not cover hook.other.svc"),
        (dataclasses.replace(MATERIAL, private_key=OTHER.private_key), NAMES, NOW, "key does not belong"),
        (dataclasses.replace(MATERIAL, ca_bundle=OTHER.ca_bundle), NAMES, NOW, "not signed by a CA of the bundle"),
        (dataclasses.replace(MATERIAL, certificate=b"junk"), NAMES, NOW, "unreadable"),
        (MATERIAL, NAMES, NOW - datetime.timedelta(hours=1), "not valid before"),
    ],
)
def test_certificate_problem(
    material: ServingMaterial | None, names: list[str], now: datetime.datetime, problem: str | None
) -> None:
    found = certificate_problem(material, names, now, MONTH)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_a_rotated_bundle_keeps_the_previous_ca_until_it_expires() -> None:
    rotated = rotated_bundle(OTHER, MATERIAL.ca_bundle, NOW)
    authorities = x509.load_pem_x509_certificates(rotated.ca_bundle)
    assert authorities == [
        *x509.load_pem_x509_certificates(OTHER.ca_bundle),
        *x509.load_pem_x509_certificates(MATERIAL.ca_bundle),
    ]
    assert certificate_problem(rotated, NAMES, NOW, MONTH) is None
    # Rotating again drops what expired and never repeats a CA.
    later = issue(NAMES, NOW + YEAR, YEAR)
    again = rotated_bundle(later, rotated_bundle(later, rotated.ca_bundle, NOW + YEAR).ca_bundle, NOW + YEAR)
    assert x509.load_pem_x509_certificates(again.ca_bundle) == x509.load_pem_x509_certificates(later.ca_bundle)
    assert rotated_bundle(OTHER, b"junk", NOW).ca_bundle == OTHER.ca_bundle


def test_material_from_secret_data_needs_every_key() -> None:
    assert ServingMaterial.from_secret_data(MATERIAL.secret_data()) == MATERIAL
    assert ServingMaterial.from_secret_data({**MATERIAL.secret_data(), "tls.key": b""}) is None
    assert ServingMaterial.from_secret_data({}) is None
