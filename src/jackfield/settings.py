"""Settings: flags > environment (`JACKFIELD_*`) > `.env` > defaults. The only module that
reads the process environment; everything else gets what it needs passed in."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="JACKFIELD_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- config and state
    config_dir: Path = Field(Path("."), description="Holds agent.yaml and servers.d/.")
    database_url: str = Field(
        "sqlite:///./.jackfield/state.db",
        description="SQLAlchemy URL; SQLite by default, postgresql+psycopg://... for PostgreSQL.",
    )
    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Names this replica's live-state rows in a shared database.",
    )

    # --- reconcile
    allow_empty: bool = Field(
        False, description="Accept a snapshot without servers replacing one with servers."
    )
    resync_interval: float = Field(60.0, gt=0, description="Seconds between safety-net rescans.")
    parse_budget: float = Field(
        30.0,
        gt=0,
        description="Seconds a reconcile pass may spend reading and parsing the config dir;"
        " past it the pass is refused (Stalled) and retried on the next trigger.",
    )
    debounce_ms: int = Field(30, ge=1, le=5000, description="File-event debounce, milliseconds.")
    force_polling: bool = Field(False, description="Poll the config dir instead of inotify.")

    # --- servers
    status_host: str = Field("127.0.0.1", description="Status server bind address.")
    status_port: int = Field(8080, ge=0, le=65535, description="Status server port (0: any).")
    status_token: SecretStr | None = Field(
        None, description="Bearer token for the status server (not for /healthz, /readyz)."
    )
    status_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated Host names the status server answers besides loopback ones"
        " (checked only when it is bound to loopback; guards against DNS rebinding).",
    )
    hub_host: str = Field("127.0.0.1", description="Tool hub bind address.")
    hub_port: int = Field(8765, ge=0, le=65535, description="Tool hub port (0: any).")
    hub_token: SecretStr | None = Field(
        None, description="Bearer token of the hub; generated at start when unset."
    )
    hub_max_sessions: int = Field(
        256, ge=1, description="Hub sessions open at once; a new one beyond is refused (503)."
    )
    hub_session_idle: float = Field(
        300.0, gt=0, description="Seconds a hub session with no request and no open stream is kept."
    )

    # --- LiveKit (standard names, no prefix)
    livekit_url: str | None = Field(None, validation_alias=AliasChoices("LIVEKIT_URL"))
    livekit_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("LIVEKIT_API_KEY")
    )
    livekit_api_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("LIVEKIT_API_SECRET")
    )
    openai_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(
        None, validation_alias=AliasChoices("OPENAI_BASE_URL"),
        description="An OpenAI-compatible API for the agent's models (default: OpenAI's).",
    )  # fmt: skip

    # --- agent worker
    realtime_base_url: str | None = Field(
        None, description="Base URL of the Realtime API when it differs from OPENAI_BASE_URL."
    )
    agent_unregistered: bool = Field(
        False,
        description="Run the worker without registering with LiveKit: jobs come only from"
        " `simulate` (local runs, the console, tests).",
    )
    agent_idle_processes: int | None = Field(
        None, ge=0, le=64, description="Warm job processes kept ready (LiveKit's default)."
    )
    livekit_max_retry: int = Field(
        16, ge=0, le=1000, description="Connection attempts to LiveKit before the worker fails."
    )

    # --- stdio server processes
    process_tree: Literal["auto", "cgroup", "subreaper"] = Field(
        "auto",
        description="How each stdio server's descendants are held, also those that leave its"
        " process group: a cgroup v2 per server process when ours is writable (auto), else a"
        " subreaper shim per server process (about 10 MB each).",
    )
    max_session_processes: int = Field(
        32, ge=1, description="`scope: session` connections open at once (all servers and"
        " sessions); a call that would open one more is refused in words.",
    )  # fmt: skip
    session_process_idle: float = Field(
        300.0, gt=0, description="Seconds a `scope: session` connection may go unused before it"
        " is closed (the session's next call opens it again).",
    )  # fmt: skip

    # --- process
    shutdown_grace: float = Field(
        20.0, gt=0, description="Seconds SIGTERM waits for live tool calls before closing."
    )
    audit_retention_days: float = Field(
        7.0, gt=0, description="Days of tool-call audit rows kept in the store."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="auto: text on a terminal, JSON otherwise."
    )

    @field_validator("status_allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return (
            tuple(h.strip() for h in value.split(",") if h.strip())
            if isinstance(value, str)
            else value
        )


def environment() -> dict[str, str]:
    """The process environment, for `${VAR}` expansion in the config."""
    return dict(os.environ)


def agent_reason(settings: Settings, wanted: bool) -> str | None:
    """Why the agent is off, or None when it can run."""
    if not wanted:
        return "disabled with --no-agent"
    if settings.agent_unregistered:
        return None
    missing = [
        name
        for name, value in (
            ("LIVEKIT_URL", settings.livekit_url),
            ("LIVEKIT_API_KEY", settings.livekit_api_key),
            ("LIVEKIT_API_SECRET", settings.livekit_api_secret),
        )
        if not value
    ]
    if missing:
        return f"{', '.join(missing)} not set"
    return None
