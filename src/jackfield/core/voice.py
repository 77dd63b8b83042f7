"""How a tool call sounds to a caller who cannot see a screen. Pure.

The hub decides, per exposed tool, how its calls behave on a voice line (`ToolVoice`, sent to
jobs in the tool's `_meta` under VOICE_META): the filler and progress pacing, whether to ask the
caller first, whether talking over the call cancels it. The job (shell/agent.py) carries it
out with the helpers here: progress lines, the confirmation question and how to read its
answer, which elicitation schemas can be asked by voice, and results turned into text the LLM
can say. docs/voice.md has the whole picture.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from jackfield.spec.models import AgentSpec, MCPServerSpec

VOICE_META = "jackfield/voice"
"""Key of a hub tool's `_meta` that holds its ToolVoice (JSON)."""
CONFIRMATION_META = "jackfield/confirmation"
"""Key of a call's `_meta` (job -> hub) that holds the question asked and the answer heard."""

Answer = Literal["yes", "no", "unclear"]
Progress = Literal["speak", "silent"]


@dataclass(frozen=True)
class ToolVoice:
    """How calls of one exposed tool behave on a voice line."""

    title: str
    """What the confirmation question calls the tool."""
    filler: str
    """Said once a call runs past `filler_after` seconds; "" for none."""
    filler_after: float
    progress_every: float
    progress: Progress
    answer_timeout: float
    confirm: bool
    """Ask the caller before each call, and call only on a clear yes."""
    cancel_on_interrupt: bool
    """The caller talking over the call (or hanging up) cancels it upstream."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, *, name: str) -> ToolVoice:
        """The hub's `_meta` entry, or the agent defaults when a hub sent none."""
        default = tool_voice(AgentSpec(instructions="-"), None, name, None, None)
        if not isinstance(data, Mapping):
            return default
        known = {k: data[k] for k in asdict(default) if k in data}
        try:
            return cls(**{**asdict(default), **known})
        except TypeError:
            return default


def _words(name: str) -> str:
    return " ".join(re.sub(r"([a-z])([A-Z])", r"\1 \2", name).replace("_", " ").replace(
        "-", " ").split()).lower()  # fmt: skip


def tool_title(upstream: str, annotations: Mapping[str, Any] | None, title: str | None) -> str:
    """What a question calls the tool: its title, else its annotations' title, else its name
    in words."""
    shown = title or (annotations or {}).get("title")
    return str(shown) if shown else _words(upstream)


def tool_voice(
    agent: AgentSpec,
    server: MCPServerSpec | None,
    upstream: str,
    annotations: Mapping[str, Any] | None,
    title: str | None,
) -> ToolVoice:
    """The server's voice settings over the agent's; the tool's override over the server's
    `confirm`; annotations (untrusted hints) only where the config says nothing."""
    hints = annotations or {}
    mine = server.voice if server is not None else None
    default = agent.voice

    def pick(field: str) -> Any:
        value = getattr(mine, field) if mine is not None else None
        return value if value is not None else getattr(default, field)

    override = server.tools.override(upstream) if server is not None else None
    confirm = (override.confirm if override is not None else None) or (
        server.confirm if server is not None else None
    ) or agent.confirm  # fmt: skip
    asks = confirm == "always" or (
        confirm == "destructive" and hints.get("destructiveHint") is True
        and hints.get("readOnlyHint") is not True
    )  # fmt: skip
    cancel = override.cancel if override is not None else None
    cancels = cancel == "onInterrupt" if cancel is not None else hints.get("readOnlyHint") is True
    return ToolVoice(
        title=tool_title(upstream, annotations, title),
        filler=str(pick("filler") or ""),
        filler_after=float(pick("filler_after")),
        progress_every=float(pick("progress_every")),
        progress=pick("progress"),
        answer_timeout=float(pick("answer_timeout")),
        confirm=asks,
        cancel_on_interrupt=cancels,
    )


# --- progress -----------------------------------------------------------------------------------


def progress_line(progress: float, total: float | None, message: str | None) -> str:
    """One short spoken line for a progress notice: the server's message when it has one, else
    its numbers in words a caller would use."""
    if message and message.strip():
        text = " ".join(message.split())
        return text if len(text) <= 160 else text[:157] + "..."
    if total is None or total <= 0:
        return "Still working on it."
    share = max(0.0, min(1.0, progress / total))
    if share >= 0.95:
        return "Almost done."
    if share >= 0.7:
        return "Most of the way there."
    if share >= 0.4:
        return "About halfway there."
    if share >= 0.15:
        return "Making progress."
    return "Just getting started."


@dataclass(frozen=True)
class Pacing:
    """What has been said during one call, for `next_line`. Times are monotonic seconds."""

    started: float
    filler_at: float | None = None
    """When the filler was said (None: not yet, or the tool has none)."""
    spoken_at: float | None = None
    """When the last progress line was said."""
    spoken: int = 0
    """Progress notices already covered by a spoken line."""


def line_due(voice: ToolVoice, pacing: Pacing, notices: int) -> float | None:
    """When `next_line` may next have something to say; None: not before a new notice."""
    if pacing.filler_at is None and voice.filler:
        return pacing.started + voice.filler_after
    if voice.progress != "speak" or notices <= pacing.spoken:
        return None
    since = pacing.spoken_at if pacing.spoken_at is not None else pacing.filler_at
    return pacing.started + voice.filler_after if since is None else since + voice.progress_every


def next_line(
    voice: ToolVoice, pacing: Pacing, notices: Sequence[str], now: float
) -> tuple[str, Pacing] | None:
    """The line to say now, if any, and the pacing after it: the filler once the call has run
    `filler_after` seconds; then the newest unspoken progress line, at most one per
    `progress_every` seconds, never before the filler's own `progress_every` has passed."""
    due = line_due(voice, pacing, len(notices))
    if due is None or now < due:
        return None
    if pacing.filler_at is None and voice.filler:
        return voice.filler, replace(pacing, filler_at=now)
    return notices[-1], replace(pacing, spoken_at=now, spoken=len(notices))


# --- confirmation -------------------------------------------------------------------------------

_YES = {
    "yes", "yeah", "yep", "yup", "sure", "ok", "okay", "correct", "right", "confirm",
    "confirmed", "affirmative", "absolutely", "definitely", "please",
}  # fmt: skip
_YES_PHRASES = ("go ahead", "do it", "go for it", "that's right", "that is right", "sounds good")
_NO = {
    "no", "nope", "nah", "don't", "dont", "stop", "cancel", "wait", "never", "negative",
    "not", "hold",
}  # fmt: skip
_NO_PHRASES = ("do not", "hold on", "never mind", "nevermind")
_MAX_ARGUMENTS_SPOKEN = 3
_MAX_NAMED = 3
"""Fields of a form, images or links named in one spoken line."""
_MAX_VALUE_CHARS = 40


def _spoken_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def confirmation_question(title: str, arguments: Mapping[str, Any]) -> str:
    """One short sentence naming the action and its first arguments."""
    shown = [(k, v) for k, v in arguments.items() if v not in (None, "", [], {})]
    parts = [f"{_words(k)} {_spoken_value(v)}" for k, v in shown[:_MAX_ARGUMENTS_SPOKEN]]
    detail = f" with {', '.join(parts)}" if parts else ""
    return f"Should I {title[:1].lower()}{title[1:]}{detail}? Please say yes or no."


def answer_of(text: str) -> Answer:
    """A clear yes, a no, or neither. Any no-word makes it a no: "yes, wait" is not a yes."""
    said = " ".join(re.findall(r"[a-z']+", text.lower()))
    words = set(said.split())
    if words & _NO or any(p in said for p in _NO_PHRASES):
        return "no"
    if words & _YES or any(p in said for p in _YES_PHRASES):
        return "yes"
    return "unclear"


# --- elicitation --------------------------------------------------------------------------------

_FLAT = {"string", "number", "integer", "boolean"}


def voice_form_problem(schema: Mapping[str, Any]) -> str | None:
    """Why a form elicitation cannot be asked by voice (None: it can). Voice takes a flat object
    of booleans, enums, strings and numbers, as the MCP spec's form mode defines it."""
    if schema.get("type") != "object":
        return "the form is not an object"
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return "the form has no fields"
    for name, field in properties.items():
        if not isinstance(field, Mapping):
            return f"field {name} has no schema"
        kind = field.get("type")
        if kind == "array":  # a multi-select enum is still flat in the spec's sense
            items = field.get("items")
            if isinstance(items, Mapping) and ("enum" in items or "anyOf" in items):
                continue
            return f"field {name} is a list"
        if kind not in _FLAT and "enum" not in field and "oneOf" not in field:
            return f"field {name} is not a plain value"
    return None


def _number(value: Any, integer: bool) -> int | float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if integer:
        return int(number) if number.is_integer() else None
    return number


def _choices(field: Mapping[str, Any]) -> list[Any] | None:
    if "enum" in field:
        return list(field["enum"])
    options = field.get("oneOf") or field.get("anyOf")
    if isinstance(options, list):
        return [o.get("const") for o in options if isinstance(o, Mapping) and "const" in o]
    return None


def checked_fields(
    schema: Mapping[str, Any], values: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The values that fit the form (coerced where the meaning is plain: "3" for a number, "yes"
    for a boolean) and the problems: missing required fields, values that do not fit."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = [str(r) for r in schema.get("required") or ()]
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in values.items():
        field = properties.get(name)
        if not isinstance(field, Mapping) or value is None:
            continue
        kind = field.get("type")
        choices = _choices(field)
        if kind == "boolean":
            fitted: Any = value if isinstance(value, bool) else {
                "yes": True, "no": False}.get(answer_of(str(value)))  # fmt: skip
        elif kind in ("number", "integer"):
            fitted = _number(value, kind == "integer")
            low, high = field.get("minimum"), field.get("maximum")
            if fitted is not None and ((low is not None and fitted < low) or (
                    high is not None and fitted > high)):  # fmt: skip
                fitted = None
        elif kind == "array":
            items = field.get("items") or {}
            allowed = _choices(items) if isinstance(items, Mapping) else None
            listed = value if isinstance(value, list) else [value]
            fitted = listed if allowed is None or all(v in allowed for v in listed) else None
        else:
            fitted = value if isinstance(value, str) else str(value)
            if choices is None:
                low, high = field.get("minLength"), field.get("maxLength")
                if (low is not None and len(fitted) < low) or (
                        high is not None and len(fitted) > high):  # fmt: skip
                    fitted = None
        if choices is not None and kind != "array" and fitted not in choices:
            fitted = None
        if fitted is None:
            problems.append(f"{name}: {_spoken_value(value)} does not fit")
        else:
            out[name] = fitted
    problems += [f"{name} is missing" for name in required if values.get(name) is None]
    return out, problems


_REFUSING = {"no", "nope", "nah", "cancel", "stop", "never", "nevermind", "skip", "decline",
             "don't", "dont", "forget"}  # fmt: skip
_ALSO_IN_A_REFUSAL = {"thanks", "thank", "you", "it", "that", "please", "i", "mind", "just",
                      "rather", "not", "want", "to", "won't", "the", "this"}  # fmt: skip


def refuses(text: str) -> bool:
    """A plain refusal ("no thanks", "never mind", "cancel that"), not an answer with a no in
    it ("I do not want the newsletter")."""
    words = re.findall(r"[a-z']+", text.lower())
    return bool(words) and bool(set(words) & _REFUSING) and all(
        w in _REFUSING or w in _ALSO_IN_A_REFUSAL for w in words)  # fmt: skip


def spoken_form(message: str, schema: Mapping[str, Any]) -> str:
    """The server's message, with the fields named when it only introduces them."""
    text = " ".join(message.split())
    if not text.endswith(":"):
        return text
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = [str(r) for r in schema.get("required") or () if r in properties]
    names = required or list(properties)
    labels = [_field_label(str(n), properties[n]) for n in names[:_MAX_NAMED]]
    return f"{text} {'; '.join(labels)}."


def _field_label(name: str, field: Any) -> str:
    if isinstance(field, Mapping):
        for key in ("description", "title"):
            value = field.get(key)
            if isinstance(value, str) and value.strip():
                return " ".join(value.split())
    return name


# --- results ------------------------------------------------------------------------------------


def _plural(count: int, one: str) -> str:
    numbers = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    return f"{numbers.get(count, str(count))} {one}{'' if count == 1 else 's'}"


def speakable_result(content: Sequence[Mapping[str, Any]], structured: Any = None) -> str:
    """A tool result as text the LLM can say: text as it is; images, audio and resources named
    in a few words; structured content as compact JSON when there is no text at all."""
    texts = [str(c.get("text", "")) for c in content if c.get("type") == "text"]
    lines = [t for t in texts if t.strip()]
    images = [c for c in content if c.get("type") == "image"]
    audio = [c for c in content if c.get("type") == "audio"]
    links = [c for c in content if c.get("type") in ("resource_link", "resource")]
    for kind, items in (("an image", images), ("an audio clip", audio)):
        labels = [label for label in map(_label, items[:_MAX_NAMED]) if label]
        named = f": {'; '.join(labels)}" if labels else ""
        if items:
            lines.append((kind if len(items) == 1 else _plural(len(items), kind.split()[-1]))
                         + named)  # fmt: skip
    if links:
        named = "; ".join(_label(c) or "untitled" for c in links[:_MAX_NAMED])
        more = f" and {len(links) - _MAX_NAMED} more" if len(links) > _MAX_NAMED else ""
        lines.append(f"{_plural(len(links), 'link')}: {named}{more}")
    if not lines and structured is not None:
        lines.append(json.dumps(structured, separators=(", ", ": "), default=str)[:2000])
    return "\n".join(lines)


def _label(item: Mapping[str, Any]) -> str | None:
    """A content item's name for the ear: its title, name, alt text or description, else the
    last part of its URI; None when it has none (a MIME type is nothing to say)."""
    resource = item.get("resource") if isinstance(item.get("resource"), Mapping) else {}
    meta = item.get("annotations") if isinstance(item.get("annotations"), Mapping) else {}
    for source in (item, resource, meta):
        assert isinstance(source, Mapping)
        for key in ("title", "name", "alt", "description"):
            if isinstance(source.get(key), str) and source[key].strip():
                return " ".join(str(source[key]).split())[:80]
    uri = item.get("uri") or (resource or {}).get("uri")
    if isinstance(uri, str):
        return uri.rsplit("/", 1)[-1][:80] or uri[:80]
    return None
