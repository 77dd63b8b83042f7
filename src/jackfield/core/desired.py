"""Files -> one desired snapshot: every document valid, names unique, hashed. Pure.

The revision is the sha256 of the normalised documents (not of the bytes), so a comment, a
reformat, or moving a document to another file does not change it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from jackfield.core.hashing import canonical, sha256
from jackfield.core.loading import Budget, LoadedDocument, SourceFile, kind_allowed, load_file
from jackfield.errors import ConfigError, ConfigInvalid
from jackfield.spec.models import AgentDocument, Document, MCPServerDocument, PromptDocument

D = TypeVar("D", AgentDocument, MCPServerDocument, PromptDocument)

AGENT_FILE = "agent.yaml"


def normalised(document: Document) -> dict[str, Any]:
    """What identifies a document's content: kind, name, labels and spec, defaults filled in."""
    return {
        "kind": document.kind,
        "name": document.metadata.name,
        "labels": document.metadata.labels,
        "spec": document.spec.model_dump(mode="json", by_alias=True),
    }


@dataclass(frozen=True)
class Placed(Generic[D]):
    """A valid document, where it was declared, and the hash of its content."""

    document: D
    path: str
    line: int
    spec_hash: str

    @property
    def name(self) -> str:
        return self.document.metadata.name

    @property
    def kind(self) -> str:
        return self.document.kind


@dataclass(frozen=True)
class Snapshot:
    """Exactly one valid state of the config files."""

    agent: Placed[AgentDocument]
    servers: Mapping[str, Placed[MCPServerDocument]]
    prompts: Mapping[str, Placed[PromptDocument]]
    revision: str
    warnings: tuple[ConfigError, ...] = ()
    """Fields that are valid but have no effect (`core.turns.ineffective_fields`); sorted."""

    def objects(self) -> Iterable[Placed[Any]]:
        yield self.agent
        yield from self.servers.values()
        yield from self.prompts.values()


def _place(loaded: LoadedDocument) -> Placed[Any]:
    return Placed(
        loaded.document, loaded.path, loaded.line, sha256(canonical(normalised(loaded.document)))
    )


ParseCache = MutableMapping[tuple[str, bytes], tuple[list[ConfigError], list[Any], int]]
"""(path, sha256 of the bytes) -> what loading that file gave: its errors, its documents, and
the nodes it cost of the snapshot's `Budget`."""


def _load(
    source: SourceFile,
    env: Mapping[str, str],
    cache: ParseCache | None,
    key: tuple[str, bytes] | None,
    budget: Budget,
) -> Any:
    hit = cache.get(key) if cache is not None and key is not None else None
    # a cached file still counts against the snapshot's budget; one that no longer fits is
    # parsed again, so the error stands where a fresh parse puts it (the cache changes nothing)
    if hit is not None and budget.spent + hit[2] <= budget.nodes:
        budget.spent += hit[2]
        return hit[0], hit[1]
    before = budget.spent
    loaded, errors = load_file(source, env, budget)
    result = (errors, [(item, _place(item)) for item in loaded])
    if cache is not None and key is not None and not budget.exhausted:
        cache[key] = (*result, budget.spent - before)  # cut short by the budget: not kept
    return result


def build_snapshot(
    files: Sequence[SourceFile],
    env: Mapping[str, str],
    read_errors: Sequence[ConfigError] = (),
    cache: ParseCache | None = None,
    digests: Mapping[str, bytes] | None = None,
    budget: Budget | None = None,
) -> Snapshot:
    """Validate every file and assemble the snapshot; warnings never refuse it.

    `cache`, owned by the caller and kept across passes (with the same `env`), spares parsing
    the files whose bytes did not change: a one-file edit then costs one file, not all of them.
    Entries of files no longer present are dropped. `digests` (sha256 of each file's bytes, by
    path) spares hashing a file the caller has hashed already. `budget` bounds what all the
    files together may cost (nodes, and time if the caller gives a deadline); a fresh one when
    None. Once it runs out the remaining files are not loaded: the snapshot is refused.

    Raises:
        ConfigInvalid: with every error of every file (read errors included), sorted.
    """
    errors: list[ConfigError] = list(read_errors)
    warnings: list[ConfigError] = []
    agents: list[Placed[AgentDocument]] = []
    by_kind: dict[str, dict[str, Placed[Any]]] = {"MCPServer": {}, "Prompt": {}}
    used: set[tuple[str, bytes]] = set()
    budget = budget if budget is not None else Budget()
    for source in sorted(files, key=lambda f: f.path):
        key = None
        if cache is not None:
            known = digests.get(source.path) if digests is not None else None
            key = (source.path, known or hashlib.sha256(source.data).digest())
            used.add(key)
        if budget.exhausted:
            continue  # its error is in the file that ran out
        file_errors, documents = _load(source, env, cache, key, budget)
        errors += file_errors
        for item, placed in documents:
            misplaced = kind_allowed(item.path, item.document)
            if misplaced:
                errors.append(ConfigError(item.path, item.line, 1, misplaced))
                continue
            if isinstance(item.document, AgentDocument):
                agents.append(placed)
                warnings += item.warnings
                continue
            table = by_kind[item.document.kind]
            first = table.get(placed.name)
            if first is not None:
                mark = item.positions.of(("metadata", "name"))
                errors.append(
                    ConfigError(
                        item.path,
                        mark.line,
                        mark.column,
                        f"duplicate {placed.kind} name {placed.name!r};"
                        f" first declared at {first.path}:{first.line}",
                    )
                )
                continue
            table[placed.name] = placed
    if cache is not None:
        for stale in set(cache) - used:
            del cache[stale]
    # an error about the whole dir (".") or agent.yaml says why there is no Agent already
    if not agents and not budget.exhausted and not any(e.path in (AGENT_FILE, ".") for e in errors):
        errors.append(ConfigError(AGENT_FILE, 1, 1, "no Agent document: agent.yaml is required"))
    for extra in agents[1:]:
        errors.append(ConfigError(extra.path, extra.line, 1, "only one Agent document is allowed"))
    if errors:
        raise ConfigInvalid(errors)
    servers = dict(sorted(by_kind["MCPServer"].items()))
    prompts = dict(sorted(by_kind["Prompt"].items()))
    everything = [agents[0], *servers.values(), *prompts.values()]
    revision = sha256(canonical([normalised(p.document) for p in everything]))
    return Snapshot(agents[0], servers, prompts, revision, tuple(sorted(warnings)))
