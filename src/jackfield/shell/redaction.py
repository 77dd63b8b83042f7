"""The process-wide secret registry: every expanded `${VAR}` value and token, and `redact`.

Logs (`shell/logs.py`), audit rows and status text pass through `redact`, so a value registered
here is replaced by `********` wherever jackfield shows or keeps text.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

MASK = "********"
MIN_SECRET_LENGTH = 4
"""Shorter values would mask ordinary words and digits; they are not secrets worth the noise."""

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str]) -> None:
    """Add values to the process-wide redaction set (values shorter than 4 are ignored)."""
    global _secrets, _pattern
    with _lock:
        merged = _secrets | {v for v in values if len(v) >= MIN_SECRET_LENGTH}
        if merged == _secrets:
            return
        # Longest first, so a secret containing another is masked whole.
        alternatives = sorted(merged, key=lambda v: (-len(v), v))
        _secrets, _pattern = merged, re.compile("|".join(map(re.escape, alternatives)))


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `********`."""
    pattern = _pattern
    return text if pattern is None else pattern.sub(MASK, text)


def pattern() -> re.Pattern[str] | None:
    """The current alternation of every registered secret (None: none yet)."""
    return _pattern
