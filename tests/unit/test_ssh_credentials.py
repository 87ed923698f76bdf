"""Reading SSH credentials from a Secret's data (jobnet.ssh.pool.SshCredentials.from_secret_data):
our keys and Kubernetes' ``kubernetes.io/ssh-auth`` type; every malformed Secret is a clear error
naming the key, never the value."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jobnet.ssh import SshCredentials

KNOWN_HOSTS = b"vm1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
PRIVATE_KEY = Ed25519PrivateKey.generate().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
)
BINARY = b"\x89PNG\r\n\x1a\n\xff\xfe-secret-bytes"


@pytest.mark.parametrize("key", ["privateKey", "ssh-privatekey"])
def test_a_private_key_under_our_key_or_the_ssh_auth_key(key: str) -> None:
    credentials = SshCredentials.from_secret_data({key: PRIVATE_KEY, "knownHosts": KNOWN_HOSTS})
    assert credentials.private_key == PRIVATE_KEY.decode() and credentials.private_key_source == key
    assert credentials.private_key_object() is not None
    assert len(credentials.host_keys().keys()) == 1


def test_text_values_are_accepted_as_they_are() -> None:
    credentials = SshCredentials.from_secret_data({"password": "pw", "knownHosts": KNOWN_HOSTS.decode()})
    assert credentials.password == "pw" and credentials.private_key is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"privateKey": BINARY, "knownHosts": KNOWN_HOSTS}, "key 'privateKey' is not UTF-8 text"),
        ({"ssh-privatekey": PRIVATE_KEY, "knownHosts": BINARY}, "key 'knownHosts' is not UTF-8 text"),
        ({"password": BINARY, "knownHosts": KNOWN_HOSTS}, "key 'password' is not UTF-8 text"),
        (
            {"ssh-privatekey": b"-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-bytes\n", "knownHosts": KNOWN_HOSTS},
            "key 'ssh-privatekey' is not a readable ed25519, ECDSA or RSA private key",
        ),
        ({"privateKey": PRIVATE_KEY, "knownHosts": b"secret-bytes here\n"}, "key 'knownHosts' line 1 is not a valid"),
        ({"privateKey": PRIVATE_KEY}, "need knownHosts"),
        ({"knownHosts": KNOWN_HOSTS}, "need privateKey (or ssh-privatekey) or password"),
        (
            {"privateKey": PRIVATE_KEY, "ssh-privatekey": PRIVATE_KEY, "knownHosts": KNOWN_HOSTS},
            "keys ['privateKey', 'ssh-privatekey'] both hold a private key",
        ),
        ({"ssh-publickey": b"secret-bytes", "knownHosts": KNOWN_HOSTS}, "unknown keys ['ssh-publickey']"),
    ],
)
def test_a_malformed_secret_names_the_key_never_the_value(data: dict[str, bytes], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        SshCredentials.from_secret_data(data)
    assert message in str(raised.value)
    assert "secret-bytes" not in str(raised.value) and "PRIVATE KEY" not in str(raised.value)
