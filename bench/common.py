"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of seconds; 0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Row:
    """One measured line: a benchmark, a case, a subject, its samples (seconds)."""

    bench: str
    case: str
    subject: str
    samples: list[float] = field(default_factory=list)
    unit: str = "ms"
    note: str = ""

    def p(self, q: float) -> float:
        return percentile(self.samples, q)

    def scaled(self, seconds: float) -> float:
        return seconds * 1000 if self.unit == "ms" else seconds

    def cells(self) -> list[str]:
        if self.unit in ("MB", "req/s", "x"):
            value = statistics.median(self.samples) if self.samples else 0.0
            return [f"{value:.1f} {self.unit}", "", ""]
        return [f"{self.scaled(self.p(q)):.2f}" for q in (50, 95, 99)]


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def ratio(a: float, b: float) -> str:
    """a / b as text, guarding b == 0."""
    return f"{a / b:.1f}x" if b > 0 else "n/a"
