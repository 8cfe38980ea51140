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
