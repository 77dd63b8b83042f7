"""The one canonical JSON text of a value, and the `sha256:` digests built from it. Pure.

Revisions, spec hashes, agent-view and instruction revisions are all `sha256(canonical(...))`,
so equal content gives equal hashes whatever the key order or formatting of the files.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
