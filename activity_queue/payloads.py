"""What a JSON payload must be to be stored and sent, for ``enqueue()`` and the inbox alike.

What we would not take at the inbox we do not send: the same depth limit, and the
same refusal of strings a database cannot store (NUL characters and lone
surrogates, which PostgreSQL's ``jsonb`` rejects).
"""

from __future__ import annotations

import re

#: Containers (objects and arrays; the activity itself is level 1) nested deeper than this
#: are refused. Nothing we exchange comes near it (a backlink is three levels: the
#: activity, its ``object``, a link in it), and it keeps the checks and ``json.dumps`` far
#: from Python's recursion limit.
MAX_DEPTH = 32

NUL = "contains a NUL character"
SURROGATE = "contains an unpaired surrogate"

#: In JSON text as ``json.dumps`` writes it (ASCII only, lower-case hex), an escaped backslash
#: (matched first, so that the six characters ``\u0000`` in a string are not taken for a NUL),
#: a surrogate pair (a character beyond U+FFFF), or the escape of a NUL or of a lone surrogate.
_ESCAPES = re.compile(r"\\\\|\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}"
                      r"|\\u(0000|d[89a-f][0-9a-f]{2})")


def string_problem(value: str) -> str | None:
    """Why a string cannot be stored in PostgreSQL's ``jsonb`` (NUL, lone surrogate), or None."""
    if "\x00" in value:
        return NUL
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE
    return None


def dumped_problem(text: str) -> str | None:
    """Why JSON text made by ``json.dumps`` (with ``ensure_ascii``, the default) holds what
    PostgreSQL's ``jsonb`` refuses (a NUL or a lone surrogate, with where), or None.

    The same rule as the inbox's, read off the text instead of the values, so that
    ``enqueue()`` pays a substring search, not a walk over the activity: the escapes are
    only parsed in the rare text that holds a ``\\u0000`` or ``\\ud…`` at all.
    """
    if "\\u0000" not in text and "\\ud" not in text:
        return None
    for match in _ESCAPES.finditer(text):
        escape = match.group(1)
        if escape is not None:
            start, end = match.span()
            where = text[max(0, start - 40):end]
            return f"{NUL if escape == '0000' else SURROGATE} (…{where})"
    return None
