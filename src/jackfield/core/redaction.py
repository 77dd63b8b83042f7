"""Every form a secret takes in text, and one compiled pattern that masks them all. Pure.

A secret leaks in more shapes than its raw value: percent-encoded in a URL (an HTTP client's
request log line), base64 in a Basic auth header or inside a larger encoded blob, JSON-escaped
in a body, a Python repr in a debug log line, and cut into lines (a PEM key printed to stderr,
which is kept line by line). `redactor(secrets)` compiles one alternation of all of them,
longest first, so masking a text is a single regex pass whatever the number of secrets.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

MASK = "********"
MIN_SECRET_LENGTH = 4
"""Shorter values would mask ordinary words and digits; they are not secrets worth the noise."""
MIN_LINE_LENGTH = 8
"""A line of a multi-line secret at least this long is masked on its own too (text kept line
by line never holds the whole value); shorter lines (`-----`, a brace) are too common."""
AUDIT_MAX_CHARS = 8192
"""Arguments or a result longer than this are cut in an audit row (the cut is marked)."""

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
"""Characters no percent-encoder encodes (RFC 3986 2.3)."""
_ESCAPES = {"\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}
"""Control characters JSON and Python escape as a backslash and a letter."""
_QUOTABLE = frozenset("\"'/")
"""Characters JSON or Python repr may write behind a backslash."""
MAX_ESCAPE_DEPTH = 16
"""Backslashes before an escape: text escaped up to four times over (JSON in a Python repr
in JSON in a log line: 1, 3, 7, 15 backslashes before a quote) is still recognised."""
_BACKSLASHES = rf"\\\\{{0,{MAX_ESCAPE_DEPTH - 1}}}"
"""One to MAX_ESCAPE_DEPTH backslashes, written to begin with a literal (see `_alternation`)."""


def _hex(value: int, width: int) -> str:
    """`value` in hex as a pattern matching upper and lower case digits."""
    return "".join(f"[{d}{d.lower()}]" if d.isalpha() else d for d in f"{value:0{width}X}")


def _char(c: str) -> dict[str, int]:
    """The ways `c` is written, raw, percent-encoded (any case, `+` for a space), or escaped
    by JSON or Python's repr of a str or bytes (`\\"`, `\\n`, `\\u00e9`, `\\xc3\\xa9`, nested
    escapes too): each as a pattern that begins with a literal character, with its longest
    match."""
    depth, encoded = MAX_ESCAPE_DEPTH, c.encode()
    options = {_BACKSLASHES: depth} if c == "\\" else {re.escape(c): 1}
    if c in _QUOTABLE:
        options[_BACKSLASHES + re.escape(c)] = depth + 1
    if c not in _UNRESERVED:
        options["".join("%" + _hex(b, 2) for b in encoded)] = 3 * len(encoded)
    if c == " ":
        options[r"\+"] = 1
    if c in _ESCAPES:
        options[_BACKSLASHES + _ESCAPES[c]] = depth + 1
    if c == "\n":
        options[r"\r\n"] = 2
    if ord(c) < 0x20 or ord(c) > 0x7E:
        units = c.encode("utf-16-be")
        codes = [int.from_bytes(units[i : i + 2], "big") for i in range(0, len(units), 2)]
        u = "".join(_BACKSLASHES + "u" + _hex(code, 4) for code in codes)  # JSON, str repr
        x = "".join(_BACKSLASHES + "x" + _hex(b, 2) for b in encoded)  # bytes repr
        options[u], options[x] = (depth + 5) * len(codes), (depth + 3) * len(encoded)
        if ord(c) < 0x100:  # str repr of a Latin-1 control character
            options[_BACKSLASHES + "x" + _hex(ord(c), 2)] = depth + 3
    return options


def _unit(options: dict[str, int]) -> str:
    return next(iter(options)) if len(options) == 1 else "(?:" + "|".join(options) + ")"


def _base64_forms(secret: str) -> set[str]:
    """The base64 (standard and URL-safe) texts that give `secret` away: its whole encoding
    with and without padding, and, for each of the three alignments it can have inside a
    larger encoded payload, the characters that depend on its bytes alone."""
    data = secret.encode()
    whole = base64.b64encode(data).decode()
    texts = {whole, whole.rstrip("=")}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data + b"\0\0").decode()
        first = -(-8 * offset // 6)  # the first character made of the secret's bits only
        end = 8 * (offset + len(data)) // 6  # ... and one past the last
        texts.add(encoded[first:end])
    return texts | {t.translate(str.maketrans("+/", "-_")) for t in texts}


def lines_of(secret: str) -> set[str]:
    """The lines of a multi-line secret long enough to be masked on their own."""
    if "\n" not in secret:
        return set()
    return {s for line in secret.splitlines() if len(s := line.strip()) >= MIN_LINE_LENGTH}


Form = tuple[tuple[str, ...], int, int]
"""One form of a secret: its pattern as one unit a character, its shortest and longest match."""


@lru_cache(maxsize=4096)
def forms(secret: str) -> tuple[Form, ...]:
    """Every form of `secret` (those shorter than MIN_SECRET_LENGTH left out). Each way of
    writing its first character is a form of its own, so that every form begins with a
    literal character (see `_alternation`)."""
    if len(secret) < MIN_SECRET_LENGTH:
        return ()
    chars = [_char(c) for c in secret]
    rest = tuple(_unit(options) for options in chars[1:])
    longest = sum(max(options.values()) for options in chars)
    found = [((first, *rest), len(secret), longest) for first in chars[0]]
    found += [(tuple(map(re.escape, t)), len(t), len(t)) for t in _base64_forms(secret)]
    return tuple(f for f in found if f[1] >= MIN_SECRET_LENGTH)


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    end: bool = False
    depth: int = 0
    """The most units below this node: siblings are tried deepest first."""


def _alternation(found: Iterable[Form]) -> str:
    """One pattern for all forms, as a trie: a regex alternation is tried branch by branch at
    every position, so hundreds of flat branches cost hundreds of checks a character; shared
    prefixes merged, a position costs about one check per distinct first character. And as
    every branch begins with a literal, `re` skips at C speed every position whose character
    begins none. Where one form is a prefix of another, the longer is tried first."""
    root = _Node()
    for units, _, _ in found:
        node = root
        for i, unit in enumerate(units):
            node.depth = max(node.depth, len(units) - i)
            node = node.children.setdefault(unit, _Node())
        node.end = True

    def emit(node: _Node) -> str:
        parts = []
        for unit, child in sorted(node.children.items(), key=lambda c: (-c[1].depth, c[0])):
            chain = [unit]
            while len(child.children) == 1 and not child.end:  # a run without branches
                ((unit, child),) = child.children.items()
                chain.append(unit)
            parts.append("".join(chain) + emit(child))
        if not parts:
            return ""
        if len(parts) == 1 and not node.end:
            return parts[0]
        return "(?:" + "|".join(parts) + (")?" if node.end else ")")

    return emit(root)


@dataclass(frozen=True)
class Redactor:
    """Masks a fixed set of secrets in every form; `longest` bounds the length of a match."""

    pattern: re.Pattern[str] | None
    longest: int = 0

    def __call__(self, text: str) -> str:
        return text if self.pattern is None else self.pattern.sub(MASK, text)

    def clipped(self, text: str, limit: int = AUDIT_MAX_CHARS) -> str:
        """`text` masked and cut after `limit` characters, the cut marked with how much went.

        The cut never splits a secret: a match that straddles it is kept whole (and masked).
        """
        if len(text) <= limit:
            return self(text)
        cut = limit
        if self.pattern is not None:
            for match in self.pattern.finditer(text, 0, limit + self.longest):
                if match.start() < limit < match.end():
                    cut = match.end()
        return f"{self(text[:cut])}...[{len(text) - cut} more characters cut]"


@lru_cache(maxsize=64)
def redactor(secrets: frozenset[str]) -> Redactor:
    """The Redactor of `secrets` (values shorter than MIN_SECRET_LENGTH are ignored), and of
    each long line of a multi-line one."""
    values = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
    values |= {line for s in values for line in lines_of(s)}
    found = {f for s in values for f in forms(s)}
    if not found:
        return Redactor(None)
    return Redactor(re.compile(_alternation(found)), max(n for _, _, n in found))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every form of every secret in `secrets` replaced by MASK."""
    if not text:
        return text
    return redactor(secrets if isinstance(secrets, frozenset) else frozenset(secrets))(text)


def mask_tree(value: Any, mask: Callable[[str], str]) -> Any:
    """A JSON-like value with `mask` applied to every string in it, keys included, and to every
    number's text: a number that holds a secret becomes the masked string."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {mask(str(k)): mask_tree(v, mask) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_tree(v, mask) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = json.dumps(value)
        masked = mask(text)
        return value if masked == text else masked
    return value
