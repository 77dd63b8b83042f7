"""The error vocabulary. The class of an error decides what happens next.

- ConfigError: the files are wrong. The snapshot is refused (Stalled), no retry until they change.
  The same shape carries a warning (a valid field that has no effect), which refuses nothing.
- PermanentError: a server can never work as configured (Failed), no retry until its spec changes.
- TemporaryError: worth retrying after a delay (Backoff). ConnectionLost and SessionExpired are
  the supervisor's: a connection that ended, and an HTTP session the server forgot (delay 0).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ConfigError:
    """One problem in the config files (or warning), with the position it points at (1-based)."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.path,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }


class ConfigInvalid(Exception):
    """The config snapshot has errors; carries every one of them, not just the first."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = sorted(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class PermanentError(Exception):
    """Retrying cannot fix this (command not found, 401/403, invalid URL)."""


class TemporaryError(Exception):
    """Retrying may fix this; `delay` is a hint in seconds, None for the default backoff."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class ConnectionLost(TemporaryError):
    """An MCP connection ended, or could not be made; the message says how, in one line."""


class SessionExpired(ConnectionLost):
    """The HTTP server forgot our session (a 404 for it): reconnect at once, without a backoff."""

    def __init__(self, message: str = "the HTTP session expired") -> None:
        super().__init__(message, delay=0.0)


class StoreUnavailable(TemporaryError):
    """The database cannot be reached or used; the cause is chained. jackfield serves from
    memory meanwhile (`shell.persistence` says why in status and /readyz)."""
