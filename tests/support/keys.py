"""Test keys (RSA keys are slow to make, so each is made once per process), and the
activity the signature tests sign."""

from __future__ import annotations

import json
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


#: The ActivityStreams media type, as a signed fetch's Accept names it.
LD = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
ACTIVITY = {
    "@context": "https://www.w3.org/ns/activitystreams", "type": "Create",
    "actor": {"type": "Service", "name": "Backlinks Service"},
    "object": {"@type": "hd:circle", "@id": "https://a.example/circles/9/"},
}
BODY = json.dumps(ACTIVITY).encode()
