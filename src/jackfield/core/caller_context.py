"""Who a session is for: the LiveKit caller, the room, the dispatch metadata. Pure.

A job knows its caller (the participant its session is linked to), its room and the metadata of
its dispatch; the hub knows none of it. The job sends it with every hub request, in
CONTEXT_HEADER, and the hub keeps it per hub session: only holders of the hub token can set it,
and nothing an LLM says reaches it. Three things read it (docs/config.md, "Caller context"):

- `${caller.identity}` and the other CONTEXT_NAMES expand in `scope: session` servers' env,
  headers, args and url when that session's connection opens (identity-scoped servers);
- `tools.arguments` values expand per call (hidden arguments: fixed by the config, removed from
  the schema the LLM sees, whatever the LLM sends for them is overridden);
- `access.callers` selectors decide which sessions see a server's tools at all.

Every value of a context is a secret wherever it is expanded; the audit trail alone keeps the
caller's identity and room, which is what it is for.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from jackfield.core.expansion import expand
from jackfield.spec.models import AccessSpec, CallerSelector

CONTEXT_HEADER = "x-jackfield-context"
"""A job's caller context, as base64url JSON (`CallerContext.to_header`)."""
MAX_CONTEXT_BYTES = 8192
"""Bytes of the header at most: a context beyond is refused whole (and the job logs why)."""
FIXED_NAMES = ("caller.identity", "caller.name", "room.name", "job.metadata")
KEYED_NAMES = ("caller.attributes.", "job.metadata.")
"""Followed by a key: one attribute of the caller; one field of a JSON-object metadata."""
CONTEXT_NAMES = (*FIXED_NAMES, *(f"{prefix}<key>" for prefix in KEYED_NAMES))
NOT_SHARED = (
    "is the caller's, and a shared server has one connection for every caller: use it in a"
    " scope: session server, or in tools.arguments"
)
"""Why a context name cannot stand in a shared server's connection (the loader's message)."""
NOT_IN_PROMPTS = (
    "is not expanded in instructions and prompts (they are the same for every caller): use it"
    " in a scope: session server's connection, or in tools.arguments"
)


@dataclass(frozen=True)
class CallerContext:
    """One session's context. Every field may be missing: a session before its caller joined
    (or any MCP client but jackfield's own jobs) has none of them."""

    identity: str | None = None
    name: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    room: str | None = None
    metadata: str | None = None
    """The job's dispatch metadata, as LiveKit gives it (often JSON)."""

    @classmethod
    def of(cls, participant: Any, *, room: str | None, metadata: str | None) -> CallerContext:
        """The context of a job linked to `participant` (a LiveKit RemoteParticipant, or None
        before one joined). Anything not a string is left out: a fake job's mock room has
        mocks where a room has strings."""
        attributes = getattr(participant, "attributes", None)
        return cls(
            identity=_text(getattr(participant, "identity", None)),
            name=_text(getattr(participant, "name", None)),
            attributes=(
                {k: v for k, v in attributes.items() if isinstance(k, str) and isinstance(v, str)}
                if isinstance(attributes, Mapping)
                else {}
            ),
            room=_text(room),
            metadata=_text(metadata),
        )

    def values(self) -> dict[str, str]:
        """The context by name, as `${...}` sees it; a missing field has no name here."""
        found = {
            "caller.identity": self.identity,
            "caller.name": self.name,
            "room.name": self.room,
            "job.metadata": self.metadata,
        }
        out = {k: v for k, v in found.items() if v is not None}
        out.update({f"caller.attributes.{k}": v for k, v in self.attributes.items()})
        out.update({f"job.metadata.{k}": v for k, v in _metadata_fields(self.metadata).items()})
        return out

    def to_json(self) -> dict[str, Any]:
        return {"identity": self.identity, "name": self.name, "attributes": dict(self.attributes),
                "room": self.room, "metadata": self.metadata}  # fmt: skip

    def to_header(self) -> str:
        """The context as CONTEXT_HEADER's value.

        Raises:
            ValueError: it would be over MAX_CONTEXT_BYTES.
        """
        encoded = base64.urlsafe_b64encode(json.dumps(self.to_json()).encode()).decode()
        if len(encoded) > MAX_CONTEXT_BYTES:
            raise ValueError(
                f"the caller context is {len(encoded)} bytes encoded, over {MAX_CONTEXT_BYTES}"
                " (the participant's attributes or the job's metadata are too large)"
            )
        return encoded

    @classmethod
    def from_header(cls, value: str) -> CallerContext:
        """The context a job sent.

        Raises:
            ValueError: not one `to_header` makes (too large, not base64url JSON, wrong types).
        """
        if len(value) > MAX_CONTEXT_BYTES:
            raise ValueError(f"the caller context is over {MAX_CONTEXT_BYTES} bytes")
        try:
            data = json.loads(base64.urlsafe_b64decode(value.encode("ascii")))
        except (ValueError, binascii.Error, UnicodeError) as e:
            raise ValueError(f"the caller context is not base64url JSON ({e})") from e
        if not isinstance(data, dict):
            raise ValueError("the caller context is not a JSON object")
        attributes = data.get("attributes") or {}
        texts = [data.get(k) for k in ("identity", "name", "room", "metadata")]
        if not all(t is None or isinstance(t, str) for t in texts) or not (
            isinstance(attributes, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items())
        ):
            raise ValueError("the caller context holds a value that is not a string")
        identity, name, room, metadata = texts
        return cls(identity, name, attributes, room, metadata)


ANONYMOUS = CallerContext()
"""The context of a session that sent none."""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _metadata_fields(metadata: str | None) -> dict[str, str]:
    """`job.metadata.<key>`: the fields of a JSON-object metadata, strings as they are, other
    values as JSON."""
    if not metadata:
        return {}
    try:
        data = json.loads(metadata)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}


def name_problem(name: str) -> str | None:
    """Why `name` (a dotted `${...}` name) names nothing in a context, or None if it does."""
    if name in FIXED_NAMES:
        return None
    for prefix in KEYED_NAMES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return None
    return f"unknown context name {name!r}: known are {', '.join(CONTEXT_NAMES)}"


# --- who may use a server -----------------------------------------------------------------------


def admits(access: AccessSpec | None, context: CallerContext) -> bool:
    """Whether a server with this `access` (None: no restriction) serves `context`: any one
    selector of `access.callers` whose every field matches (globs, case-sensitive)."""
    return access is None or any(_admits(s, context) for s in access.callers)


def hidden_servers(
    access: Mapping[str, AccessSpec | None], context: CallerContext
) -> frozenset[str]:
    """The servers (by name, with their `access`) whose access does not admit `context`: their
    tools are not that session's, nor their prompts."""
    return frozenset(name for name, spec in access.items() if not admits(spec, context))


def _admits(selector: CallerSelector, context: CallerContext) -> bool:
    if selector.identity is not None and not _matches(context.identity, selector.identity):
        return False
    if selector.room is not None and not _matches(context.room, selector.room):
        return False
    return all(_matches(context.attributes.get(k), g) for k, g in selector.attributes.items())


def _matches(value: str | None, glob: str) -> bool:
    return value is not None and fnmatchcase(value, glob)


# --- hidden arguments ---------------------------------------------------------------------------


class MissingContext(Exception):
    """A value needs a name of the caller context that this session has no value for."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def without_hidden(schema: Mapping[str, Any], hidden: Collection[str]) -> dict[str, Any]:
    """A tool's input schema as the LLM sees it: the hidden arguments are not in it."""
    if not hidden:
        return dict(schema)
    out = dict(schema)
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        out["properties"] = {k: v for k, v in properties.items() if k not in hidden}
    required = schema.get("required")
    if isinstance(required, list):
        kept = [r for r in required if r not in hidden]
        if kept:
            out["required"] = kept
        else:
            out.pop("required")
    return out


def with_hidden(
    arguments: Mapping[str, Any],
    templates: Mapping[str, str],
    env: Mapping[str, str],
    context: CallerContext,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The arguments of one call with the hidden ones set from the config, and the names of
    those the LLM had sent a value of its own for (overridden).

    Raises:
        MissingContext: a value names a context field this session does not have (no default).
    """
    values = context.values()
    filled = dict(arguments)
    overridden = tuple(sorted(k for k in templates if k in arguments))
    for key, template in templates.items():
        try:
            filled[key] = expand(template, env, values)
        except KeyError as e:
            raise MissingContext(str(e.args[0])) from None
    return filled, overridden
