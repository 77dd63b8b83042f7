"""The process-wide secret registry: every expanded `${VAR}` value and token, and `redact`.

Logs (`shell/logs.py`), audit rows and status text pass through `redact`, so a value registered
here is replaced by `********` wherever jackfield shows or keeps text, in every form
core/redaction.py knows (raw, percent-encoded, base64, JSON-escaped, line by line).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from jackfield.core import redaction as core
from jackfield.core.limits import redacted_json
from jackfield.core.redaction import AUDIT_MAX_CHARS, MASK, MIN_SECRET_LENGTH, Redactor, mask_tree

__all__ = [
    "AUDIT_MAX_CHARS", "MASK", "MIN_SECRET_LENGTH", "Redactor", "active", "audit_arguments",
    "audit_result", "redact", "redact_tree", "redactor", "register_secrets",
]  # fmt: skip

_lock = threading.Lock()
_state: tuple[frozenset[str], Redactor | None] = (frozenset(), Redactor(None))
"""The registered secrets and their Redactor, None until the next use compiles it (servers
register one by one while a snapshot is applied: compiling at each step would cost the sum of
them all). One tuple, so a reader never sees the secrets of one and the pattern of another."""


def register_secrets(values: Iterable[str]) -> None:
    """Add values to the process-wide redaction set (values shorter than 4 are ignored)."""
    global _state
    with _lock:
        registered = _state[0]
        merged = registered | {v for v in values if len(v) >= MIN_SECRET_LENGTH}
        if merged != registered:
            _state = (merged, None)


def active() -> bool:
    """Whether any secret is registered (nothing to mask otherwise)."""
    return bool(_state[0])


def redactor(extra: frozenset[str] = frozenset()) -> Redactor:
    """The registered secrets' Redactor, with `extra` (a server's own) added if they are not
    registered yet."""
    global _state
    registered, current = _state
    if current is None:
        with _lock:
            registered, current = _state
            if current is None:
                current = core.redactor(registered)
                _state = (registered, current)
    return current if extra <= registered else core.redactor(registered | extra)


def redact(text: str, extra: frozenset[str] = frozenset()) -> str:
    """`text` with every registered secret (and every one of `extra`) masked."""
    return redactor(extra)(text) if text else text


def redact_tree(value: Any, extra: frozenset[str] = frozenset()) -> Any:
    """A JSON-like value (upstream `serverInfo`, capabilities) with every string in it, keys
    included, masked."""
    mask = redactor(extra)
    return value if mask.pattern is None else mask_tree(value, mask)


def audit_arguments(arguments: Mapping[str, Any], extra: frozenset[str] = frozenset()) -> str:
    """Call arguments for an `audit: full` row: JSON, masked, at most AUDIT_MAX_CHARS (and
    the cut marked). Arguments that fit are walked string by string, so the row stays JSON."""
    mask = redactor(extra)
    encoded = json.dumps(arguments, sort_keys=True, default=str)
    if len(encoded) <= AUDIT_MAX_CHARS:
        return redacted_json(arguments, mask)
    return mask.clipped(encoded, AUDIT_MAX_CHARS)


def audit_result(text: str, extra: frozenset[str] = frozenset()) -> str:
    """A result's text for an `audit: full` row: masked, at most AUDIT_MAX_CHARS."""
    return redactor(extra).clipped(text, AUDIT_MAX_CHARS)
