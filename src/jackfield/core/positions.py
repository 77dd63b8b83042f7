"""Where each key and value of a YAML document stands in its file. Pure.

The loader records a Mark for every key and value by its path (`('spec', 'tools', 'include',
0)`); errors about a path, or about a spot inside a value (a `${` in a string), are reported at
the line and column these give.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based
    shift: int | None  # where the scalar's text starts relative to column; None if multi-line
    span: tuple[int, int] | None = None
    """A multi-line scalar's source, as offsets into the file's text: a `${` inside it is found
    there (`locate`), since its line and column cannot be computed from the value."""


@dataclass
class Positions:
    """Where each key and value of one document stands in its file."""

    keys: dict[Path, Mark] = field(default_factory=dict)
    values: dict[Path, Mark] = field(default_factory=dict)

    def of(self, path: Path, *, key: bool = False) -> Mark:
        """The mark of a path, or of its nearest ancestor that is in the file."""
        for n in range(len(path), -1, -1):
            prefix = path[:n]
            table = self.keys if key or n < len(path) else self.values
            if prefix in table:
                return table[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return Mark(1, 1, None)


def locate(mark: Mark, value: str, offset: int, text: str) -> tuple[int, int]:
    """The line and column of `value[offset]` (a `${`), `value` being the scalar at `mark`.

    On one line it is the scalar's column plus its quote plus the offset. A multi-line scalar
    (a `|` block, say) is searched in its source for the same reference, the same number of
    times over; where its source does not hold it as the value does (folded, escaped), the
    scalar's own position is the answer.
    """
    if mark.shift is not None:
        return mark.line, mark.column + mark.shift + offset
    close = value.find("}", offset)
    token = value[offset : close + 1] if close >= 0 else value[offset : offset + 2]
    if mark.span is None or not text:
        return mark.line, mark.column
    source = text[mark.span[0] : mark.span[1]]
    before = value.count(token, 0, offset)
    if "\n" in token or source.count(token) != value.count(token):
        return mark.line, mark.column
    start, end = mark.span
    at = start - 1
    for _ in range(before + 1):
        at = text.find(token, at + 1, end)
    lines = text.count("\n", start, at)  # within the scalar: a file of many stays linear
    if not lines:
        return mark.line, mark.column + at - start
    return mark.line + lines, at - text.rfind("\n", start, at)
