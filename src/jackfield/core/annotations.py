"""GitHub Actions workflow commands (`::error file=...,line=...,col=...::message`). Pure.

Escaped as the Actions toolkit's `issueCommand` escapes them: in the message `%`, CR and LF; in
a property also `:` and `,`, which would otherwise end the value.
"""

from __future__ import annotations

from typing import Literal

Level = Literal["error", "warning", "notice"]


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(
    level: Level,
    message: str,
    *,
    file: str | None = None,
    line: int | None = None,
    col: int | None = None,
    title: str | None = None,
) -> str:
    """One workflow command line; properties that are None (or a position below 1) are left out,
    so GitHub shows the annotation on the run rather than a wrong line."""
    props: list[tuple[str, str]] = []
    if file:
        props.append(("file", file))
        if line is not None and line >= 1:
            props.append(("line", str(line)))
            if col is not None and col >= 1:
                props.append(("col", str(col)))
    if title:
        props.append(("title", title))
    head = ",".join(f"{k}={escape_property(v)}" for k, v in props)
    return f"::{level}{' ' + head if head else ''}::{escape_data(message)}"
