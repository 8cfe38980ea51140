"""The workload: ~1 KB activities in the DjangoLDP backlink shape (SPEC §10)."""

from __future__ import annotations

import json
from typing import Any

SIZE = 1024
CONTENT_TYPE = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'


def activity(i: int, run: str = "r") -> dict[str, Any]:
    """Activity number ``i``: unique id and object, padded to about ``SIZE`` bytes of JSON."""
    circle = f"https://bench.example/circles/{i}/"
    body = {
        "@context": ["https://www.w3.org/ns/activitystreams",
                     {"hd": "https://cdn.startinblox.com/owl#",
                      "foaf": "http://xmlns.com/foaf/0.1/"}],
        "id": f"https://bench.example/activities/{run}/{i}",
        "type": "Create",
        "actor": {"type": "Service", "name": "Backlinks Service"},
        "object": {"@type": "hd:circle", "@id": circle,
                   "owner": {"@id": f"https://remote.example/users/{i}/",
                             "@type": "foaf:user"}},
        "summary": f"{circle} was created",
        "content": "",
    }
    body["content"] = "x" * max(0, SIZE - len(json.dumps(body)))
    return body


def body(i: int = 0, run: str = "r") -> bytes:
    return json.dumps(activity(i, run)).encode()


#: The keyId of the signed run's deliveries (nginx answers without checking it).
BENCH_KEY_ID = "http://bench.example/actor#main-key"


def bench_key_pem() -> str:
    """A fresh RSA-2048 private key in PEM, as a site's SIGNING_KEY holds it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()
