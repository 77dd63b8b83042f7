"""Bytes -> validated documents, or every error with its file:line:column. Pure: no I/O.

PyYAML composes each document into a node tree that keeps source marks; we record the mark of
every key and value by its path (('spec', 'tools', 'include', 0)), construct plain data, and
validate it with the spec models. A pydantic error's `loc` is such a path, so it maps back to
the line and column of the key or value it is about.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel

from jackfield.core.positions import Mark, Path, Positions
from jackfield.core.reference_checks import check_references
from jackfield.core.turns import ineffective_fields
from jackfield.errors import ConfigError
from jackfield.spec.models import (
    API_VERSION,
    DOCUMENT_KINDS,
    AgentDocument,
    Document,
    FieldError,
    MCPServerDocument,
    PromptDocument,
)

MAX_FILE_BYTES = 1024 * 1024
"""A config file larger than this is refused unread: configs are small, and YAML is not fast."""

MAX_NODES = 100_000
"""Nodes walked per document, aliases counted each time they are used (stops billion-laughs)."""

MAX_SNAPSHOT_NODES = 500_000
"""Nodes walked for the whole snapshot: every document of every file, counted as MAX_NODES is.
A per-document cap alone lets many documents each just under it cost minutes (10,000 prompt
documents are 150,000 nodes)."""

MAX_DEPTH = 64

_CHECK_EVERY = 1024
"""Nodes between two looks at the caller's deadline (a look costs a clock read)."""


@dataclass(frozen=True)
class SourceFile:
    """A config file as read: its path relative to the config dir (posix) and its bytes."""

    path: str
    data: bytes


def too_large(path: str, size: int) -> ConfigError:
    """The error for a file of `size` bytes (its size on disk, not what was read of it)."""
    return ConfigError(path, 1, 1, f"file is {size} bytes; the limit is {MAX_FILE_BYTES}")


class _TooLarge(Exception):
    def __init__(self, mark: yaml.Mark) -> None:
        self.mark = mark


class _OverBudget(Exception):
    """The snapshot's budget (`Budget`) ran out; unlike _TooLarge, not the file's own fault."""

    def __init__(self, mark: yaml.Mark | None) -> None:
        self.mark = mark


class Budget:
    """What loading one snapshot may cost, shared by all its files and documents: nodes walked
    (MAX_SNAPSHOT_NODES) and, when the caller gives `expired`, time. The core reads no clock:
    `expired` is the caller's, looked at every _CHECK_EVERY nodes and between documents."""

    def __init__(
        self,
        nodes: int = MAX_SNAPSHOT_NODES,
        expired: Callable[[], bool] | None = None,
        seconds: float | None = None,
    ) -> None:
        """`seconds`: the time budget behind `expired`, for the message only."""
        self.nodes = nodes
        self.spent = 0
        self.expired = expired
        self.seconds = seconds
        self.out_of_time = False
        self._next_check = _CHECK_EVERY

    @property
    def exhausted(self) -> bool:
        return self.spent > self.nodes or self.out_of_time

    def check_time(self) -> bool:
        """True (and remembered) once the caller's deadline has passed."""
        if not self.out_of_time and self.expired is not None and self.expired():
            self.out_of_time = True
        return self.out_of_time

    def spend(self, mark: yaml.Mark) -> None:
        """Count one node.

        Raises:
            _OverBudget: the snapshot's nodes or time ran out (at `mark`).
        """
        self.spent += 1
        if self.spent > self.nodes:
            raise _OverBudget(mark)
        if self.spent >= self._next_check:
            self._next_check = self.spent + _CHECK_EVERY
            if self.check_time():
                raise _OverBudget(mark)

    def message(self) -> str:
        if self.out_of_time:
            took = f"{self.seconds:g} s" if self.seconds is not None else "its time budget"
            return (
                f"reading the config took longer than {took}; the pass is refused and the last"
                " good state keeps serving"
            )
        return (
            f"the config is too large: all files together pass {self.nodes} nodes after alias"
            " expansion (this file ran out of the budget here)"
        )


@dataclass(frozen=True)
class LoadedDocument:
    """A valid document, where it stands, and its warnings (fields that have no effect)."""

    document: Document
    path: str
    line: int
    positions: Positions
    warnings: tuple[ConfigError, ...] = ()


class _Loader(yaml.SafeLoader):
    """SafeLoader that looks at the deadline while composing (a 1 MiB document is ~10^5 nodes)."""

    def __init__(self, stream: str, budget: Budget) -> None:
        super().__init__(stream)
        self.budget = budget
        self.composed = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.composed += 1
        if self.composed % _CHECK_EVERY == 0 and self.budget.check_time():
            raise _OverBudget(self.get_mark())
        node: yaml.Node | None = super().compose_node(parent, index)
        return node


def _mark(m: yaml.Mark, node: yaml.Node | None = None) -> Mark:
    shift: int | None = 0
    span = None
    if isinstance(node, yaml.ScalarNode):
        single = node.end_mark is None or node.end_mark.line == m.line
        shift = (1 if node.style in ("'", '"') else 0) if single else None
        if not single and node.end_mark is not None:
            span = (m.index, node.end_mark.index)
    return Mark(m.line + 1, m.column + 1, shift, span)


class _Walker:
    """Records marks and enforces the size/depth budget before anything is constructed: the
    document's own (MAX_NODES, MAX_DEPTH) and the snapshot's (`Budget`)."""

    def __init__(
        self, positions: Positions, errors: list[tuple[Mark, str]], snapshot: Budget
    ) -> None:
        self.positions = positions
        self.errors = errors
        self.budget = MAX_NODES
        self.snapshot = snapshot
        self.marks: dict[int, Mark] = {}
        """By node id: an alias walks the same node again, its mark is computed once."""

    def walk(self, node: yaml.Node, path: Path, depth: int = 0) -> None:
        self.budget -= 1
        if self.budget < 0 or depth > MAX_DEPTH:
            raise _TooLarge(node.start_mark)
        self.snapshot.spend(node.start_mark)
        mark = self.marks.get(id(node))
        if mark is None:
            mark = self.marks[id(node)] = _mark(node.start_mark, node)
        self.positions.values.setdefault(path, mark)
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Mark] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merged = (
                        value_node.value
                        if isinstance(value_node, yaml.SequenceNode)
                        else [value_node]
                    )
                    for source in merged:
                        if isinstance(source, yaml.MappingNode):
                            self.walk_pairs(source, path, depth, explicit=False, seen=seen)
                    continue
                self.walk_pair(key_node, value_node, path, depth, explicit=True, seen=seen)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, (*path, index), depth + 1)

    def walk_pairs(
        self,
        node: yaml.MappingNode,
        path: Path,
        depth: int,
        *,
        explicit: bool,
        seen: dict[Any, Mark],
    ) -> None:
        for key_node, value_node in node.value:
            self.walk_pair(key_node, value_node, path, depth, explicit=explicit, seen=seen)

    def walk_pair(
        self,
        key_node: yaml.Node,
        value_node: yaml.Node,
        path: Path,
        depth: int,
        *,
        explicit: bool,
        seen: dict[Any, Mark],
    ) -> None:
        self.budget -= 1
        self.snapshot.spend(key_node.start_mark)
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        mark = _mark(key_node.start_mark)
        if key is None:
            self.errors.append((mark, "a mapping key must be a plain string"))
            return
        if key in seen:
            if explicit:
                first = seen[key]
                self.errors.append(
                    (mark, f"duplicate key {key!r} (first at line {first.line}:{first.column})")
                )
            return
        seen[key] = mark
        self.positions.keys[(*path, key)] = mark
        self.walk(value_node, (*path, key), depth + 1)


def _decode(source: SourceFile) -> tuple[str | None, ConfigError | None]:
    if len(source.data) > MAX_FILE_BYTES:
        return None, too_large(source.path, len(source.data))
    try:
        return source.data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        before = source.data[: e.start]
        line = before.count(b"\n") + 1
        column = e.start - (before.rfind(b"\n") + 1) + 1
        return None, ConfigError(source.path, line, column, "file is not valid UTF-8 text")


_OPENERS = {
    "while parsing a flow sequence": "this '[' is never closed",
    "while parsing a flow mapping": "this '{' is never closed",
    "while scanning a quoted scalar": "this quote is never closed",
    "while scanning a simple key": "this key is not followed by ':'",
}
"""Contexts whose mark is where the mistake was made: a bracket or quote opened there runs on
until the parser gives up (often at the end of the file), so the problem's mark is far from it."""


def _yaml_error(path: str, e: yaml.YAMLError, text: str) -> ConfigError:
    problem_mark = getattr(e, "problem_mark", None)
    context_mark = getattr(e, "context_mark", None)
    mark = problem_mark or context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    if isinstance(e, yaml.reader.ReaderError):
        before = text[: e.position]
        line, column = before.count("\n") + 1, e.position - (before.rfind("\n") + 1) + 1
        return ConfigError(path, line, column, f"character {e.character:#x} is not allowed in YAML")
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    opener = _OPENERS.get(context) if isinstance(context, str) else None
    if opener is not None and context_mark is not None:
        at = (
            f" at {problem_mark.line + 1}:{problem_mark.column + 1}"
            if problem_mark is not None
            else ""
        )
        return ConfigError(
            path,
            context_mark.line + 1,
            context_mark.column + 1,
            f"YAML syntax error: {opener} ({problem}{at})",
        )
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    return ConfigError(path, line, column, message)


def _documents(
    source: SourceFile, errors: list[ConfigError], budget: Budget
) -> Iterator[tuple[Any, Positions, int, str]]:
    """Each non-empty document of a file: (data, positions, first line, the file's text)."""
    text, error = _decode(source)
    if error is not None:
        errors.append(error)
        return
    assert text is not None
    loader: _Loader | None = None
    try:
        loader = _Loader(text, budget)
        while loader.check_node():
            if budget.check_time():
                raise _OverBudget(loader.get_mark())
            node = loader.get_node()
            if node is None:
                continue
            positions = Positions()
            problems: list[tuple[Mark, str]] = []
            _Walker(positions, problems, budget).walk(node, ())
            errors.extend(ConfigError(source.path, m.line, m.column, msg) for m, msg in problems)
            data = loader.construct_document(node)
            if data is None:
                continue
            yield data, positions, node.start_mark.line + 1, text
    except _TooLarge as e:
        errors.append(
            ConfigError(
                source.path,
                e.mark.line + 1,
                e.mark.column + 1,
                f"document too large or too deeply nested (limits: {MAX_NODES} nodes after"
                f" alias expansion, depth {MAX_DEPTH})",
            )
        )
    except _OverBudget as e:
        line, column = (e.mark.line + 1, e.mark.column + 1) if e.mark is not None else (1, 1)
        errors.append(ConfigError(source.path, line, column, budget.message()))
    except yaml.YAMLError as e:
        errors.append(_yaml_error(source.path, e, text))
    except RecursionError:
        errors.append(ConfigError(source.path, 1, 1, "document nested too deeply"))
    finally:
        if loader is not None:
            loader.dispose()


# --- model errors -----------------------------------------------------------------------------


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that owns the keys at `loc` (walking aliases), or None."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        by_alias = {(f.alias or n): f for n, f in current.model_fields.items()}
        info = by_alias.get(part)
        if info is None:
            return None
        current = _unwrap(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(models[0]) if len(models) == 1 else None
    if origin in (list, tuple):
        return _unwrap(typing.get_args(annotation)[0])
    return annotation


def _suggest(model: type[BaseModel], loc: Sequence[str | int], key: str) -> str:
    owner = _model_at(model, loc)
    if owner is None:
        return ""
    allowed = [(f.alias or n) for n, f in owner.model_fields.items()]
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if not close:
        close = [a for a in allowed if a.lower() == key.lower().replace("_", "")]
    return f"; did you mean {close[0]!r}?" if close else f"; allowed keys: {', '.join(allowed)}"


def _describe(err: Mapping[str, Any], model: type[BaseModel]) -> tuple[Path, bool, str]:
    """(path the error is about, whether it is about the key, message)."""
    loc: Path = tuple(p for p in err["loc"] if isinstance(p, (str, int)))
    where = ".".join(str(p) for p in loc) or "document"
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        return (
            loc,
            True,
            f"unknown key {key!r} in {'.'.join(map(str, loc[:-1])) or 'document'}"
            + (_suggest(model, loc[:-1], key)),
        )
    if kind == "missing":
        return loc, True, f"missing required key {where!r}"
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return (*loc, *cause.field.split(".")), True, str(cause)
    message = err["msg"].removeprefix("Value error, ")
    if kind == "model_type":  # "...or instance of AccessSpec": the Python class is no help
        message = message.split(" or instance of ", 1)[0]
    if kind == "too_short" and loc == ("spec", "access", "callers"):
        message = "list at least one caller selector (to hide a server from everyone, set"
        message += " enabled: false)"
    if kind == "string_type" and isinstance(err.get("input"), (bool, int, float)):
        message += " (quote the value to keep it as text)"
    return loc, False, f"{where}: {message}"


_ARGUMENTS: Path = ("spec", "tools", "arguments")
ARGUMENTS_SHAPE = (
    "tools.arguments values are strings (an argument of every tool) or mappings of argument"
    " names to strings (under a tool name or glob)"
)


def _one_per_argument(errors: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pydantic's errors, with those about one `tools.arguments` entry made one.

    An entry is a string or a mapping (a union), and pydantic reports a bad one against each
    choice, naming the choice in the path (`arguments.x.str`, `arguments.x.dict[str,str]`):
    the errors inside a mapping are kept (the entry is meant as one), without the choice;
    otherwise the entry fails both ways and is one error that says what an entry is.
    """
    depth = len(_ARGUMENTS) + 1
    out: list[Mapping[str, Any]] = []
    entries: dict[Path, Mapping[str, Any]] = {}
    inside: set[Path] = set()
    for err in errors:
        loc = tuple(err["loc"])
        if loc[: len(_ARGUMENTS)] != _ARGUMENTS or len(loc) <= depth or loc[depth] == "[key]":
            out.append(err)
        elif len(loc) > depth + 1:
            inside.add(loc[:depth])
            out.append({**err, "loc": (*loc[:depth], *loc[depth + 1 :])})
        else:
            entries.setdefault(loc[:depth], err)
    for loc, err in entries.items():
        if loc not in inside:
            hint = isinstance(err.get("input"), (bool, int, float))
            message = ARGUMENTS_SHAPE + (" (quote the value to keep it as text)" if hint else "")
            out.append({"type": "arguments_shape", "loc": loc, "msg": message})
    return out


def _validate(
    data: Any, positions: Positions, source: SourceFile, line: int, errors: list[ConfigError]
) -> Document | None:
    def error_at(path: Path, message: str, *, key: bool = False) -> None:
        mark = positions.of(path, key=key)
        errors.append(ConfigError(source.path, mark.line, mark.column, message))

    if not isinstance(data, dict):
        errors.append(
            ConfigError(
                source.path,
                line,
                1,
                "a document must be a mapping of apiVersion, kind, metadata, spec",
            )
        )
        return None
    if data.get("apiVersion") != API_VERSION:
        error_at(
            ("apiVersion",), f"apiVersion must be {API_VERSION!r}", key="apiVersion" not in data
        )
        return None
    kind = data.get("kind")
    model = DOCUMENT_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        hint = difflib.get_close_matches(str(kind), DOCUMENT_KINDS, n=1)
        error_at(
            ("kind",),
            f"unknown kind {kind!r}; expected one of {', '.join(DOCUMENT_KINDS)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else ""),
            key="kind" not in data,
        )
        return None
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        for err in _one_per_argument(e.errors(include_url=False)):
            path, about_key, message = _describe(err, model)
            error_at(path, message, key=about_key)
        return None


def load_file(
    source: SourceFile, env: Mapping[str, str], budget: Budget | None = None
) -> tuple[list[LoadedDocument], list[ConfigError]]:
    """Every document of one file, validated, with every error found in it.

    `budget` is shared by every file of a snapshot (a fresh one when None); once it is
    `exhausted` the file's errors say so and its documents are cut short.
    """
    errors: list[ConfigError] = []
    loaded: list[LoadedDocument] = []
    budget = budget if budget is not None else Budget()
    for data, positions, line, text in _documents(source, errors, budget):
        check_references(data, positions, source.path, env, errors, text)
        document = _validate(data, positions, source, line, errors)
        if document is not None:
            warnings = _warnings(document, positions, source.path)
            loaded.append(LoadedDocument(document, source.path, line, positions, warnings))
    return loaded, errors


def _warnings(document: Document, positions: Positions, path: str) -> tuple[ConfigError, ...]:
    """Each field set that has no effect in the agent's mode, at its key."""
    if not isinstance(document, AgentDocument):
        return ()
    marks = [
        (positions.of(key, key=True), message) for key, message in ineffective_fields(document.spec)
    ]
    return tuple(ConfigError(path, m.line, m.column, message) for m, message in marks)


def kind_allowed(path: str, document: Document) -> str | None:
    """Why a document may not stand in this file, or None if it may."""
    in_agent_file = path.rsplit("/", 1)[-1] in ("agent.yaml", "agent.yml") and "/" not in path
    if isinstance(document, AgentDocument) and not in_agent_file:
        return "kind Agent belongs in agent.yaml"
    if isinstance(document, (MCPServerDocument, PromptDocument)) and in_agent_file:
        return f"kind {document.kind} belongs in servers.d/"
    return None
