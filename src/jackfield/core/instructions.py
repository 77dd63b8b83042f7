"""The agent's effective instructions and the servers whose tools it gets. Pure.

Order is stable so the revision only moves when the text does: the agent's own instructions,
then Prompt documents by (order, name), then the `prompt` of each Ready server by name.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from fnmatch import fnmatchcase

from jackfield.core.desired import Snapshot
from jackfield.core.hashing import sha256


def selects(globs: Iterable[str], server: str) -> bool:
    """Whether the agent's `servers` selectors pick this server."""
    return any(fnmatchcase(server, g) for g in globs)


def compose(snapshot: Snapshot, ready: Collection[str]) -> str:
    agent = snapshot.agent.document.spec
    parts = [agent.instructions.strip()]
    prompts = sorted(snapshot.prompts.values(), key=lambda p: (p.document.spec.order, p.name))
    parts.extend(p.document.spec.text.strip() for p in prompts)
    for name in sorted(snapshot.servers):
        spec = snapshot.servers[name].document.spec
        if spec.prompt and name in ready and selects(agent.servers, name):
            parts.append(spec.prompt.strip())
    return "\n\n".join(p for p in parts if p)


def revision(text: str) -> str:
    return sha256(text)
