"""Logging: one stderr handler on the root logger, JSON lines or text, secrets masked.

Every value registered with `register_secrets` (`shell/redaction.py`: the expanded `${VAR}`
values, tokens) is replaced by `********` in the final message, in exception text and in stack
text, whatever logger emitted the record, in every encoded form too (httpx logs a URL's query
percent-encoded on every request).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from jackfield.shell.redaction import MASK, active, redact, register_secrets

__all__ = ["MASK", "RedactingFilter", "configure_logging", "redact", "register_secrets"]


class RedactingFilter(logging.Filter):
    """Masks registered secrets in the formatted message (so in its args too) and in tracebacks.

    Attach it to a handler: logger-level filters do not see records propagated from children.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not active():
            return True
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and exc when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


QUIET_BELOW_DEBUG = ("watchfiles",)
"""Third-party loggers that speak at INFO about routine work."""

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at emit time (test capture, a reopened stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Install the jackfield handler on the root logger, replacing a previous one.

    `fmt` is "json", "text", or "auto" (JSON unless stderr is a terminal).

    Raises:
        ValueError: an unknown `fmt` or `level`.
    """
    if fmt not in ("auto", "json", "text"):
        raise ValueError(f"unknown log format {fmt!r}; use auto, json or text")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = _StderrHandler()
    handler.set_name("jackfield")
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "jackfield"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # watchfiles says "N changes detected" at INFO for every batch; our watcher reports what
    # matters (a pass and its outcome), so its chatter is for DEBUG only
    quiet = logging.WARNING if numeric > logging.DEBUG else logging.NOTSET
    for name in QUIET_BELOW_DEBUG:
        logging.getLogger(name).setLevel(quiet)
