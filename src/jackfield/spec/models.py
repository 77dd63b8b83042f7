"""The config language: `Agent`, `MCPServer` and `Prompt` documents (apiVersion jackfield/v1).

Models hold the text exactly as written: `${VAR}` references stay unexpanded here, so a model can
be stored, hashed and shown without leaking a secret. Expansion lives in `core.expansion`.
YAML keys are camelCase (`allowInterruptions`); Python attributes are snake_case.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

API_VERSION = "jackfield/v1"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
Name = Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]
Glob = Annotated[str, StringConstraints(min_length=1)]
Seconds = Annotated[float, Field(gt=0, le=3600)]

_HTTP_URL = re.compile(r"^https?://[^\s/]+", re.IGNORECASE)
_WS_URL = re.compile(r"^wss?://[^\s/]+", re.IGNORECASE)


class FieldError(ValueError):
    """A rule about a whole object that is best shown at one of its fields.

    `field` is a YAML key of the object, or a dotted path of keys below it (`fallback.mode`).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
    )


class Metadata(_Model):
    """Identity of a document."""

    name: Name = Field(description="Lowercase DNS label (a-z, 0-9, '-'), unique per kind.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Free-form labels, matched by nothing yet; shown in status.",
    )


# --- Agent ----------------------------------------------------------------------------------


class LLMSpec(_Model):
    """The model that drives the conversation."""

    mode: Literal["realtime", "pipeline"] = Field(
        "realtime",
        description="realtime: one speech-to-speech model. pipeline: STT -> LLM -> TTS.",
    )
    model: str = Field("gpt-4o-realtime-preview", min_length=1, description="Model name.")
    voice: str | None = Field("alloy", description="Voice of the realtime model or of the TTS.")
    temperature: float | None = Field(0.8, ge=0, le=2, description="Sampling temperature.")
    stt: str | None = Field(
        None, description="pipeline only: speech-to-text model (plugin default)."
    )
    tts: str | None = Field(
        None, description="pipeline only: text-to-speech model (plugin default)."
    )

    @model_validator(mode="after")
    def _pipeline_only_fields(self) -> LLMSpec:
        if self.mode == "realtime" and (self.stt or self.tts):
            raise FieldError(
                "stt" if self.stt else "tts", "stt and tts apply to mode: pipeline only"
            )
        return self


class TurnSpec(_Model):
    """When the user's turn ends and whether they can interrupt the agent."""

    allow_interruptions: bool = Field(True, description="The user may talk over the agent.")
    min_interruption_duration: float = Field(
        0.5, ge=0, le=10, description="Seconds of speech before it counts as an interruption."
    )
    min_endpointing_delay: float = Field(
        0.5, ge=0, le=30, description="Seconds of silence before the turn may end."
    )
    max_endpointing_delay: float = Field(
        6.0, ge=0, le=60, description="Seconds of silence after which the turn always ends."
    )
    detection: Literal["serverVad", "semanticVad"] = Field(
        "serverVad",
        description="realtime only: how the Realtime API ends the turn. serverVad: after"
        " minEndpointingDelay of silence. semanticVad: when its model judges the user done.",
    )
    eagerness: Literal["auto", "low", "medium", "high"] = Field(
        "auto",
        description="semanticVad only: how soon the model answers; low waits longest (at most"
        " 8 s), high least (2 s); auto is medium (4 s).",
    )

    @model_validator(mode="after")
    def _delays_ordered(self) -> TurnSpec:
        if self.min_endpointing_delay > self.max_endpointing_delay:
            raise FieldError(
                "minEndpointingDelay", "minEndpointingDelay must not exceed maxEndpointingDelay"
            )
        return self


class DispatchSpec(_Model):
    """Which LiveKit rooms get this agent."""

    mode: Literal["automatic", "explicit"] = Field(
        "automatic",
        description="automatic: LiveKit dispatches the agent to every new room. explicit: only"
        " to rooms whose dispatch names it (AgentDispatch API, SIP dispatch rule, token).",
    )
    agent_name: str | None = Field(
        None,
        min_length=1,
        description="explicit only: the name dispatches use; default metadata.name.",
    )

    @model_validator(mode="after")
    def _name_needs_explicit(self) -> DispatchSpec:
        if self.mode == "automatic" and self.agent_name is not None:
            raise FieldError(
                "agentName",
                "agentName applies to dispatch mode: explicit only (automatic dispatch"
                " sends the agent to every new room, by no name)",
            )
        return self


class VoiceSpec(_Model):
    """How a tool call sounds while it runs: the filler, then progress lines (docs/voice.md)."""

    filler: str | None = Field(
        None,
        description='Said once a call runs past fillerAfter; "" for none. Agent default:'
        ' "One moment."',
    )
    filler_after: float | None = Field(
        None, ge=0, le=60, description="Seconds a call runs before the filler (agent default 1.5)."
    )
    progress_every: float | None = Field(
        None,
        gt=0,
        le=600,
        description="At most one progress line per this many seconds (agent default 5).",
    )
    progress: Literal["speak", "silent"] | None = Field(
        None,
        description="speak: progress notices of the server become spoken lines (agent"
        " default); silent: they are counted only.",
    )
    answer_timeout: float | None = Field(
        None,
        gt=0,
        le=300,
        description="Seconds the caller has to answer a confirmation or a server's question"
        " (agent default 15); silence past it cancels.",
    )


class AgentVoiceSpec(VoiceSpec):
    """The agent's defaults for how tool calls sound; each server may set its own."""

    filler: str | None = Field("One moment.", description='Said once a call runs past'
                               ' fillerAfter; "" for none.')  # fmt: skip
    filler_after: float | None = Field(1.5, ge=0, le=60, description="Seconds before the filler.")
    progress_every: float | None = Field(
        5.0, gt=0, le=600, description="At most one progress line per this many seconds."
    )
    progress: Literal["speak", "silent"] | None = Field(
        "speak", description="speak: progress notices become spoken lines; silent: counted only."
    )
    answer_timeout: float | None = Field(
        15.0,
        gt=0,
        le=300,
        description="Seconds the caller has to answer a confirmation or a server's question.",
    )


Confirm = Literal["never", "destructive", "always"]
"""never: call on the LLM's word. destructive: ask first when the tool's annotations say
destructiveHint: true (an untrusted hint the config overrides). always: ask before every call."""
Cancel = Literal["onInterrupt", "never"]


class AgentSpec(_Model):
    """The voice agent: what it is told, how it speaks, which servers' tools it gets."""

    instructions: str = Field(min_length=1, description="System instructions of the agent.")
    greeting: str | None = Field(
        None, description="What the agent is asked to say first; no greeting when absent."
    )
    llm: LLMSpec = Field(default_factory=LLMSpec, description="The model.")
    fallback: LLMSpec | None = Field(
        None,
        description="llm.mode realtime only: the pipeline (mode: pipeline) used when realtime"
        " cannot start or fails.",
    )
    turn: TurnSpec = Field(default_factory=TurnSpec, description="Turn-taking.")
    servers: list[Glob] = Field(
        default_factory=lambda: ["*"],
        description="Glob selectors on MCPServer names whose tools the agent gets.",
    )
    dispatch: DispatchSpec = Field(
        default_factory=DispatchSpec, description="How LiveKit sends the agent to rooms."
    )
    voice: AgentVoiceSpec = Field(
        default_factory=AgentVoiceSpec,
        description="Defaults for how tool calls sound (filler, progress, answer timeout);"
        " a server's own voice settings win.",
    )
    confirm: Confirm = Field(
        "destructive",
        description="Default for servers that set none: ask the caller before a call (never,"
        " destructive, always).",
    )

    @model_validator(mode="after")
    def _fallback_is_a_pipeline(self) -> AgentSpec:
        if self.fallback is not None and self.fallback.mode != "pipeline":
            raise FieldError(
                "fallback.mode",
                "fallback.mode must be pipeline: the fallback is the STT -> LLM -> TTS"
                " pipeline used when realtime cannot start or fails",
            )
        return self


class AgentDocument(_Model):
    """`kind: Agent`, only in agent.yaml."""

    api_version: Literal["jackfield/v1"] = Field(description="Always jackfield/v1.")
    kind: Literal["Agent"]
    metadata: Metadata
    spec: AgentSpec


# --- MCPServer ------------------------------------------------------------------------------


class CallLimits(_Model):
    """Governance of tool calls; every field is optional (no limit)."""

    max_concurrent_calls: int | None = Field(
        None, ge=1, le=1000, description="Calls in flight at once; more queue."
    )
    max_queued: int | None = Field(
        None,
        ge=0,
        le=10000,
        description="Calls waiting beyond maxConcurrentCalls; more fail fast with 'busy' (16).",
    )
    calls_per_minute: float | None = Field(
        None, gt=0, le=100000, description="Token bucket: sustained rate, burst of one minute."
    )
    cache_ttl: float | None = Field(
        None,
        ge=0,
        le=86400,
        description="Seconds identical calls to a cacheable tool return the cached result.",
    )


class ToolOverride(CallLimits):
    """Per-tool settings, keyed by the server's own tool name or a glob on it."""

    cacheable: bool = Field(
        False, description="Results may be cached (the tool has no side effects)."
    )
    confirm: Confirm | None = Field(
        None,
        description="Ask the caller first: never, destructive, always (the server's wins"
        " when unset).",
    )
    cancel: Cancel | None = Field(
        None,
        description="onInterrupt: the caller talking over the call cancels it upstream;"
        " never: it runs to the end. Default: onInterrupt for tools annotated readOnlyHint,"
        " never for the others.",
    )


class ToolsSpec(_Model):
    """Which of the server's tools are exposed, and under what names."""

    include: list[Glob] = Field(
        default_factory=lambda: ["*"], description="Globs on the server's own tool names."
    )
    exclude: list[Glob] = Field(default_factory=list, description="Globs removed after include.")
    prefix: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]*$",
        max_length=32,
        description='Prepended to every tool name; default "<metadata.name>_", "" for none.',
    )
    overrides: dict[str, ToolOverride] = Field(
        default_factory=dict,
        description="Per-tool limits, caching, confirmation and cancelling, by upstream tool"
        " name or glob: an exact name wins, else the first glob that matches.",
    )

    def override(self, tool: str) -> ToolOverride | None:
        """The override of one upstream tool: its exact key, else the first matching glob."""
        exact = self.overrides.get(tool)
        if exact is not None:
            return exact
        return next((o for glob, o in self.overrides.items() if fnmatchcase(tool, glob)), None)

    arguments: dict[str, str | dict[str, str]] = Field(
        default_factory=dict,
        description="Hidden arguments: set by the config in every call, removed from the"
        " schema the LLM sees; what the LLM sends for one is overridden. A string value is an"
        " argument of every tool; a mapping under a tool name or glob holds arguments of the"
        " tools it matches (exact name, else the first glob; over the shared ones)."
        " ${caller.identity} and the other context names expand per call (docs/config.md).",
    )

    def arguments_for(self, tool: str) -> dict[str, str]:
        """The hidden arguments of one upstream tool, unexpanded: the ones every tool gets,
        then those of its exact key, else of the first glob that matches it."""
        shared = {k: v for k, v in self.arguments.items() if isinstance(v, str)}
        keyed = {k: v for k, v in self.arguments.items() if isinstance(v, dict)}
        own = keyed.get(tool)
        if own is None:
            own = next((v for glob, v in keyed.items() if fnmatchcase(tool, glob)), {})
        return {**shared, **own}

    def hidden_names(self) -> list[str]:
        """Every hidden argument's name, over every tool pattern."""
        names: set[str] = set()
        for key, value in self.arguments.items():
            names.update(value if isinstance(value, dict) else (key,))
        return sorted(names)


class CallerSelector(_Model):
    """One entry of `access.callers`: a caller matches when every field given matches."""

    identity: Glob | None = Field(None, description="Glob on the caller's identity.")
    attributes: dict[str, Glob] = Field(
        default_factory=dict,
        description="Globs on the caller's attributes; an attribute the caller lacks never"
        " matches.",
    )
    room: Glob | None = Field(None, description="Glob on the room's name.")

    @model_validator(mode="after")
    def _something_to_match(self) -> CallerSelector:
        if self.identity is None and not self.attributes and self.room is None:
            raise FieldError(
                "identity", "a caller selector needs identity, attributes or room to match"
            )
        return self


class AccessSpec(_Model):
    """Who may use a server's tools. Sessions whose caller matches no selector do not see
    its tools (nor its prompt), and a call from one is refused."""

    callers: list[CallerSelector] = Field(
        min_length=1,
        description="Selectors on the caller context; any one that matches admits the"
        " caller (set enabled: false to hide a server from everyone).",
    )


class TimeoutsSpec(_Model):
    """Deadlines, in seconds."""

    connect: Seconds = Field(10.0, description="Start and handshake.")
    call: Seconds = Field(30.0, description="One tool call; the upstream call is cancelled after.")


class LimitsSpec(CallLimits):
    """Bounds on what a server may send back, and on calls to all its tools."""

    max_output_bytes: int = Field(
        16384,
        ge=256,
        le=10 * 1024 * 1024,
        description="Tool results beyond this are cut head+tail with a marker.",
    )


class OAuthSpec(_Model):
    """An OAuth 2 client that gets its own access tokens, unattended (docs/config.md "Auth")."""

    grant: Literal["client_credentials", "refresh_token"] = Field(
        "client_credentials",
        description="client_credentials: the client's own credentials buy each token."
        " refresh_token: a token a person authorized once ahead of time (refreshToken) buys"
        " them; a rotated refresh token is kept in memory.",
    )
    client_id: str = Field(min_length=1, description="The OAuth client ID; ${VAR} expands.")
    client_secret: str | None = Field(
        None,
        description="The client secret (${VAR} or ${file:/path}); needed for"
        " client_credentials, optional for a public client's refresh_token.",
    )
    refresh_token: str | None = Field(
        None, description="refresh_token only: the refresh token (${VAR} or ${file:/path})."
    )
    token_url: str | None = Field(
        None,
        description="The token endpoint; discovered from the server when absent (its 401,"
        " protected resource metadata RFC 9728, then authorization server metadata RFC 8414).",
    )
    issuer: str | None = Field(
        None,
        description="Pins the authorization server the credentials may be sent to: discovery"
        " that leads to any other issuer fails.",
    )
    scopes: list[Annotated[str, StringConstraints(min_length=1, pattern=r"^\S+$")]] = Field(
        default_factory=list, description="Scopes to ask for; none: the server's default."
    )
    resource: str | None = Field(
        None,
        description="The resource indicator (RFC 8707) sent with token requests; default the"
        " resource the server's metadata names, else its URL.",
    )
    audience: str | None = Field(
        None, description="An `audience` parameter for the token request (Auth0 and others)."
    )
    auth_method: Literal["client_secret_basic", "client_secret_post"] = Field(
        "client_secret_basic", description="How the client secret goes to the token endpoint."
    )
    refresh_before: Seconds = Field(
        60.0,
        description="Seconds before a token expires that it is replaced (at most half its"
        " lifetime, for short-lived tokens).",
    )

    @model_validator(mode="after")
    def _grant_has_its_credentials(self) -> OAuthSpec:
        if self.grant == "client_credentials" and self.client_secret is None:
            raise FieldError("clientSecret", "grant client_credentials needs 'clientSecret'")
        if self.grant == "refresh_token" and self.refresh_token is None:
            raise FieldError("refreshToken", "grant refresh_token needs 'refreshToken'")
        if self.grant == "client_credentials" and self.refresh_token is not None:
            raise FieldError("refreshToken", "'refreshToken' applies to grant refresh_token only")
        for name in ("token_url", "issuer"):
            url = getattr(self, name)
            if url is not None and not url.startswith("${") and not _HTTP_URL.match(url):
                raise FieldError(to_camel(name), f"'{to_camel(name)}' must be an http(s) URL")
        return self


class AuthSpec(_Model):
    """How jackfield authenticates to a remote server: exactly one of bearer and oauth."""

    bearer: str | None = Field(
        None,
        min_length=1,
        description="A static token sent as `Authorization: Bearer ...`; ${VAR} or"
        " ${file:/path} (re-read when the file changes).",
    )
    oauth: OAuthSpec | None = Field(None, description="Tokens got and refreshed by jackfield.")

    @model_validator(mode="after")
    def _one_kind(self) -> AuthSpec:
        if (self.bearer is None) == (self.oauth is None):
            raise FieldError(
                "oauth" if self.oauth is not None else "bearer",
                "auth takes exactly one of 'bearer' and 'oauth'",
            )
        return self

    @property
    def kind(self) -> str:
        if self.oauth is not None:
            return f"oauth:{self.oauth.grant}"
        return "bearer"


Transport = Literal["stdio", "http", "sse", "websocket"]
_STDIO_ONLY = ("command", "args", "env", "cwd")
_REMOTE_ONLY = ("url", "headers", "auth")


class MCPServerSpec(_Model):
    """One MCP server. Mirrors the SDK's StdioServerParameters and HTTP client parameters."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    description: str = Field("", description="What the server is for; shown in status.")
    enabled: bool = Field(True, description="false keeps it declared but not connected.")
    transport: Transport = Field(
        "stdio", description="stdio | http (streamable HTTP) | sse | websocket."
    )
    command: str | None = Field(None, min_length=1, description="stdio: the executable (argv[0]).")
    args: list[str] = Field(
        default_factory=list, description="stdio: arguments, never a shell string."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="stdio: environment over a minimal safe one; ${VAR} expands, and is secret.",
    )
    cwd: str | None = Field(
        None, description="stdio: working directory, relative to the config dir."
    )
    url: str | None = Field(None, description="http/sse/websocket: the endpoint.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="http/sse/websocket: request headers; ${VAR} expands."
    )
    auth: AuthSpec | None = Field(
        None,
        description="http/sse/websocket: a bearer token or an OAuth client (instead of an"
        " Authorization header).",
    )
    tools: ToolsSpec = Field(default_factory=ToolsSpec, description="Tool filter and naming.")
    prompt: str | None = Field(
        None, description="Appended to the agent's instructions while this server is Ready."
    )
    scope: Literal["shared", "session"] = Field(
        "shared", description="shared: one connection for all sessions; session: one per session."
    )
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec, description="Deadlines.")
    limits: LimitsSpec = Field(default_factory=LimitsSpec, description="Output and call bounds.")
    voice: VoiceSpec = Field(
        default_factory=VoiceSpec,
        description="How this server's calls sound (filler, progress); unset fields come from"
        " the agent.",
    )
    confirm: Confirm | None = Field(
        None,
        description="Ask the caller before a call: never, destructive, always; default"
        " the agent's confirm. tools.overrides may set it per tool.",
    )
    access: AccessSpec | None = Field(
        None, description="Who may use this server's tools; everyone when absent."
    )
    audit: Literal["metadata", "full"] = Field(
        "metadata",
        description="metadata: audit rows hold a hash of the arguments; full: the arguments and"
        " results too (secret values redacted).",
    )

    @model_validator(mode="after")
    def _fields_fit_transport(self) -> MCPServerSpec:
        given = self.model_fields_set
        if self.transport == "stdio":
            if self.command is None:
                raise FieldError("transport", "transport stdio needs 'command'")
            if any(c.isspace() for c in self.command.strip()) and not self.args:
                raise FieldError(
                    "command",
                    "'command' is one executable, not a shell line: put its arguments in 'args'",
                )
            wrong = [f for f in _REMOTE_ONLY if f in given]
        else:
            if self.url is None:
                raise FieldError("transport", f"transport {self.transport} needs 'url'")
            pattern = _WS_URL if self.transport == "websocket" else _HTTP_URL
            scheme = "ws:// or wss://" if self.transport == "websocket" else "http:// or https://"
            if not self.url.startswith("${") and not pattern.match(self.url):
                raise FieldError(
                    "url", f"'url' must start with {scheme} for transport {self.transport}"
                )
            wrong = [f for f in _STDIO_ONLY if f in given]
            if self.auth is not None and any(h.lower() == "authorization" for h in self.headers):
                raise FieldError(
                    "auth",
                    "auth and an Authorization header both set the same header: keep one"
                    " (auth.bearer is the header's shorthand)",
                )
        if wrong:
            raise FieldError(
                to_camel(wrong[0]),
                f"{', '.join(map(repr, wrong))} does not apply to transport {self.transport}",
            )
        return self


class MCPServerDocument(_Model):
    """`kind: MCPServer`, in servers.d/."""

    api_version: Literal["jackfield/v1"] = Field(description="Always jackfield/v1.")
    kind: Literal["MCPServer"]
    metadata: Metadata
    spec: MCPServerSpec


# --- Prompt ---------------------------------------------------------------------------------


class PromptSpec(_Model):
    """A fragment appended to the agent's instructions."""

    text: str = Field(min_length=1, description="The text.")
    order: int = Field(0, description="Fragments are appended in (order, name) order.")


class PromptDocument(_Model):
    """`kind: Prompt`, in servers.d/."""

    api_version: Literal["jackfield/v1"] = Field(description="Always jackfield/v1.")
    kind: Literal["Prompt"]
    metadata: Metadata
    spec: PromptSpec


Document = AgentDocument | MCPServerDocument | PromptDocument
DOCUMENT_KINDS: dict[str, type[AgentDocument] | type[MCPServerDocument] | type[PromptDocument]] = {
    "Agent": AgentDocument,
    "MCPServer": MCPServerDocument,
    "Prompt": PromptDocument,
}
