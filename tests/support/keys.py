"""Test keys: RSA keys are slow to make, so each is made once per process."""

from __future__ import annotations

from functools import lru_cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@lru_cache(maxsize=8)
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    """The ``n``-th RSA-2048 test key: the same ``n`` gives the same key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key) -> str:
    """``key`` as unencrypted PKCS#8 PEM text, as ``SIGNING_KEY`` takes it."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()
