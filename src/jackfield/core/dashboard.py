"""The HTML dashboard at `GET /`, rendered from a `Status` and an `ActivityView`. Pure.

The page is complete without JavaScript (first paint, and the fallback: a `<noscript>` meta
refresh reloads it). It is cut into parts, each an element with an id inside one of three
containers (`top`, `cards`, `bottom`); the status server serves the parts that changed as JSON
(`live_document`) and the page's script (served from the same origin, no inline script) swaps
them in, so one renderer draws both the first paint and every update. Every value is escaped;
charts are inline SVG drawn here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any

from jackfield.core.activity import (
    EMPTY,
    ActivityView,
    Call,
    Pass,
    ServerActivity,
    Transition,
    when,
)
from jackfield.core.status import (
    Condition,
    ConfigStatus,
    HistoryEntry,
    ServerState,
    ServerStatus,
    Status,
    VoiceStatus,
    rfc3339,
)

BADGE: dict[ServerState, str] = {
    "Ready": "ok",
    "Connecting": "warn",
    "Pending": "warn",
    "Degraded": "warn",
    "Backoff": "bad",
    "Failed": "bad",
    "Disabled": "off",
}
"""State → colour class: ok green, warn yellow, bad red, off grey."""
STATE_CLASS: dict[str, str] = dict(BADGE.items())
PASS_BADGE = {"applied": "ok", "noop": "off", "failed": "bad", "rejected": "warn"}
CALL_BADGE = {"ok": "ok", "cancelled": "off", "declined": "off"}
"""Call outcome → colour class; rejected:* is warn, every other outcome bad."""
CONTAINERS = ("top", "cards", "bottom")
SCRIPT_PATH = "dashboard.js"
PARTS_PATH = "dashboard.json"
MAX_TOOLS_SHOWN = 8
"""A card lists this many tools; more are folded (100 servers with 30 tools each stay legible)."""
PASSES_LISTED = 5

CSS = """
:root{--fg:#1b1f24;--muted:#59636e;--bg:#f6f8fa;--card:#fff;--line:#d1d9e0;
--ok:#1a7f37;--warn:#d4a72c;--bad:#cf222e;--off:#818b98;--code:#eff2f5;--p50:#0969da}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;
--card:#151b23;--line:#3d444d;--code:#212830;--p50:#4493f8}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1240px;margin:0 auto;padding:16px}
header{display:flex;flex-wrap:wrap;align-items:center;gap:8px 16px;margin-bottom:8px}
h1{font-size:22px;margin:0}
h2{font-size:16px;margin:20px 0 8px}
h3{font-size:16px;margin:0;overflow-wrap:anywhere}
h4{font-size:13px;margin:10px 0 4px;color:var(--muted);font-weight:500}
code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
background:var(--code);border-radius:4px}
code{padding:1px 4px;overflow-wrap:anywhere}
pre{margin:6px 0 0;padding:6px 8px;white-space:pre-wrap;overflow-wrap:anywhere;
max-height:12em;overflow:auto}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:13px;
font-weight:600;color:#fff;white-space:nowrap}
.ok{background:var(--ok)}.warn{background:var(--warn);color:#1b1f24}
.bad{background:var(--bad)}.off{background:var(--off)}
.panel{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px;
min-width:0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 12px;margin:0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;min-width:0;overflow-wrap:anywhere}
.grid{display:grid;gap:12px;align-items:start;
grid-template-columns:repeat(auto-fill,minmax(min(100%,360px),1fr))}
#cards:empty::before{content:"No servers configured.";color:var(--muted)}
.card-head{display:flex;justify-content:space-between;align-items:center;gap:8px;
margin-bottom:6px}
.tiles{display:grid;gap:8px;grid-template-columns:repeat(auto-fit,minmax(140px,1fr))}
.tile{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.tile b{display:block;font-size:20px;font-weight:600;white-space:nowrap}
.tile>span{color:var(--muted);font-size:13px}
.overview{display:grid;gap:12px;align-items:start;
grid-template-columns:repeat(auto-fit,minmax(min(100%,520px),1fr))}
.overview h2{margin-top:12px}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:8px;margin:6px 0 8px}
.chart{min-width:0}.chart span{font-size:12px;color:var(--muted);white-space:nowrap}
svg{display:block;width:100%}
svg.spark{height:28px;border-bottom:1px solid var(--line)}
svg.strip{height:10px;border-radius:3px;background:var(--code)}
svg.passes{height:14px}
.f-ok{fill:var(--ok)}.f-warn{fill:var(--warn)}.f-bad{fill:var(--bad)}.f-off{fill:var(--off)}
.l-p50{stroke:var(--p50);fill:none;stroke-width:1.5}
.l-p95{stroke:var(--warn);fill:none;stroke-width:1.5}
.axis{display:flex;justify-content:space-between;font-size:11px;color:var(--muted)}
ul.tools{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:4px}
ul.errors{margin:0;padding-left:20px}ul.errors li{overflow-wrap:anywhere}
.scroll{overflow-x:auto}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:4px 10px 4px 0;border-bottom:1px solid var(--line);
vertical-align:top;overflow-wrap:break-word}
th{color:var(--muted);font-weight:500;white-space:nowrap}
td.nw,td code{white-space:nowrap}td.num{text-align:right;white-space:nowrap}
table.calls{min-width:720px;font-size:14px}
.muted{color:var(--muted)}
.err{color:var(--bad)}
#live{font-size:13px}
footer{margin-top:20px;font-size:13px;color:var(--muted)}
@media (max-width:600px){main{padding:10px}.charts{grid-template-columns:1fr}
.tiles{grid-template-columns:repeat(3,1fr)}.tile{padding:6px 8px}.tile b{font-size:17px}
.wide{display:none}
table.reflow thead,table.reflow .cond-time{display:none}
table.reflow,table.reflow tbody,table.reflow tr,table.reflow td{display:block}
table.reflow tr{padding:6px 0;border-bottom:1px solid var(--line)}
table.reflow td{display:inline;border:0;padding:0 6px 0 0}table.reflow td.cond-msg{display:block}}
"""


@dataclass(frozen=True)
class Part:
    """One swappable element: its id, the container it sits in, its HTML (root has the id)."""

    id: str
    container: str
    html: str

    @property
    def digest(self) -> str:
        return hashlib.blake2b(self.html.encode(), digest_size=8).hexdigest()


def render(
    status: Status,
    activity: ActivityView = EMPTY,
    *,
    refresh_seconds: int = 5,
    live: bool = True,
) -> str:
    """The whole page. Without JavaScript it reloads every `refresh_seconds` (0: never);
    `live` links the script that keeps it current without reloading."""
    return page(parts(status, activity), status, refresh_seconds=refresh_seconds, live=live)


def page(
    all_parts: Sequence[Part],
    status: Status,
    *,
    refresh_seconds: int = 5,
    live: bool = True,
    since: str = "",
) -> str:
    """The page around `all_parts` (see `parts`); `since` is the Versions token they are of
    (the script's first update then fetches only what changed after)."""
    refresh = (
        f'<noscript><meta http-equiv="refresh" content="{int(refresh_seconds)}"></noscript>'
        if refresh_seconds > 0
        else ""
    )
    script = f'<script src="{SCRIPT_PATH}" defer></script>' if live else ""
    boxes = {c: "".join(p.html for p in all_parts if p.container == c) for c in CONTAINERS}
    note = "static page" + (f", reloads every {int(refresh_seconds)} s" if refresh_seconds else "")
    footer = (
        '<footer>Read-only view of <a href="status">/status</a> and'
        ' <a href="status/activity">/status/activity</a>; times are UTC.</footer>'
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{refresh}<title>{_e(title(status))}</title><style>{CSS}</style>{script}</head>"
        f'<body><main id="dash" data-since="{_e(since)}"><header><h1>jackfield</h1>'
        f'<span id="live" class="muted">{note}</span></header>'
        f'<div id="top">{boxes["top"]}</div>'
        f'<h2>Servers</h2><div class="grid" id="cards">{boxes["cards"]}</div>'
        f'<div id="bottom">{boxes["bottom"]}</div>{footer}</main></body></html>'
    )


def title(status: Status) -> str:
    return "jackfield: " + ("ready" if status.ready else "not ready")


def parts(status: Status, activity: ActivityView = EMPTY) -> list[Part]:
    """The page's parts in document order."""
    servers = sorted(status.servers, key=lambda s: s.name)
    config = status.config
    out = [Part("p-summary", "top", _summary(status, servers, activity))]
    if config.errors:
        out.append(Part("p-errors", "top", _errors("p-errors", config.errors)))
    if config.warnings:
        out.append(
            Part("p-warnings", "top", _errors("p-warnings", config.warnings, "Config warnings"))
        )
    out.append(Part("p-overview", "top", _overview(config, activity)))
    for s in servers:
        out.append(Part(f"server-{s.name}", "cards", _server(s, activity)))
    out.append(Part("p-calls", "bottom", _calls(activity.calls)))
    out.append(Part("p-components", "bottom", _components(status)))
    return out


@dataclass
class Versions:
    """Which parts a page already has. Every part whose HTML changes, and every change of the
    list of parts, takes the next sequence number; a page that has seen up to `seq` gets only
    the parts numbered after it. `epoch` tells pages of an earlier process apart (their numbers
    mean nothing here: they get everything)."""

    epoch: str
    seq: int = 0
    _parts: dict[str, tuple[str, int]] = field(default_factory=dict)
    _layout: tuple[tuple[str, str], ...] = ()
    _layout_seq: int = 0

    def update(self, current: Sequence[Part]) -> None:
        known: dict[str, tuple[str, int]] = {}
        for p in current:
            digest = p.digest
            old = self._parts.get(p.id)
            if old is not None and old[0] == digest:
                known[p.id] = old
            else:
                self.seq += 1
                known[p.id] = (digest, self.seq)
        self._parts = known
        layout = tuple((p.container, p.id) for p in current)
        if layout != self._layout:
            self.seq += 1
            self._layout, self._layout_seq = layout, self.seq

    def since(self, token: str | None) -> int:
        """The sequence number a page's `since` token (`epoch.seq`) stands for; 0 if foreign."""
        epoch, _, number = (token or "").partition(".")
        if epoch != self.epoch or not number.isdigit() or int(number) > self.seq:
            return 0
        return int(number)

    @property
    def token(self) -> str:
        return f"{self.epoch}.{self.seq}"

    def document(self, current: Sequence[Part], status: Status, since: int) -> dict[str, Any]:
        """What a page that has seen up to `since` needs: the layout (the ids in each
        container, in order) and the HTML of every part changed after `since`. Call `update`
        with the same parts first."""
        return {
            "since": self.token,
            "title": title(status),
            "ready": status.ready,
            "layout": {c: [p.id for p in current if p.container == c] for c in CONTAINERS},
            "html": {p.id: p.html for p in current if self._parts[p.id][1] > since},
        }


def short_revision(revision: str | None) -> str:
    """`sha256:` and the first 12 hex digits; other forms cut to 19 characters."""
    if revision is None:
        return "none"
    algo, sep, digest = revision.partition(":")
    return f"{algo}:{digest[:12]}" if sep else revision[:19]


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _when(at: datetime | None) -> str:
    text = rfc3339(at)
    if text is None:
        return '<span class="muted">never</span>'
    return f'<time datetime="{_e(text)}">{_e(text)}</time>'


def _day(at: datetime) -> str:
    """YYYY-MM-DD HH:MM UTC, the full time as its datetime and tooltip."""
    full = _e(rfc3339(at))
    return f'<time datetime="{full}" title="{full}">{at.astimezone(UTC):%Y-%m-%d %H:%M}</time>'


def _clock(at: float) -> str:
    """HH:MM:SS UTC, the full time as its datetime and tooltip."""
    full = when(at)
    short = datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")
    return f'<time datetime="{full}" title="{full}">{short}</time>'


def _rev(revision: str | None) -> str:
    if revision is None:
        return '<span class="muted">none</span>'
    return f'<code title="{_e(revision)}">{_e(short_revision(revision))}</code>'


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _rate(errors: int, calls: int) -> str:
    return f"{100 * errors / calls:.1f}%" if calls else "–"


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _tile(value: str, label: str) -> str:
    return f'<div class="tile"><b>{value}</b><span>{label}</span></div>'


def _summary(status: Status, servers: list[ServerStatus], activity: ActivityView) -> str:
    ready = (
        '<span class="badge ok" id="overall">Ready</span>'
        if status.ready
        else '<span class="badge bad" id="overall">Not ready</span>'
    )
    up = sum(1 for s in servers if s.state == "Ready")
    windows = list(activity.servers.values())
    last_minute = sum(w.calls[-1] for w in windows if w.calls)
    calls = sum(w.total_calls for w in windows)
    errors = sum(w.total_errors for w in windows)
    tiles = [
        _tile(ready, "overall"),
        _tile(f"{up}/{len(servers)}", "servers ready"),
        _tile(_e(last_minute), "calls this min"),
        _tile(_e(calls), f"calls in {activity.window_minutes} min"),
        _tile(_rate(errors, calls), "error rate"),
        _tile(_e(status.hub.sessions), "hub sessions"),
        _tile(_e(status.agent.sessions), "agent sessions"),
    ]
    return f'<section id="p-summary" class="tiles">{"".join(tiles)}</section>'


def _overview(config: ConfigStatus, activity: ActivityView) -> str:
    """The config and the reconcile passes side by side (stacked on narrow screens)."""
    return (
        f'<div id="p-overview" class="overview">{_config(config)}'
        f'<section><h2>Reconcile passes</h2><div class="panel">'
        f"{_passes(activity.passes, config.history)}</div></section></div>"
    )


def _config(config: ConfigStatus) -> str:
    rows = [("Applied revision", _rev(config.applied_revision))]
    if config.attempted_revision != config.applied_revision:
        rows.append(("Attempted revision", _rev(config.attempted_revision)))
    commit = (
        f'<code title="{_e(config.git_commit)}">{_e(config.git_commit[:12])}</code>'
        if config.git_commit
        else '<span class="muted">none</span>'
    )
    rows += [
        ("Git commit", commit),
        ("Applied at", _when(config.applied_at)),
        ("Generation", _e(config.observed_generation)),
    ]
    return (
        '<section><h2>Config</h2><div class="panel">'
        + _facts(rows)
        + (_conditions(config.conditions) if config.conditions else "")
        + "</div></section>"
    )


def _conditions(conditions: tuple[Condition, ...]) -> str:
    rows = "".join(
        f'<tr><td class="nw">{_e(c.type)}</td>'
        f'<td class="nw"><span class="badge {_condition_class(c)}">{_e(c.status)}</span></td>'
        f'<td class="nw">{_e(c.reason)}</td><td class="cond-msg">{_e(c.message)}</td>'
        f'<td class="cond-time nw">{_day(c.last_transition)}</td></tr>'
        for c in conditions
    )
    return (
        '<h4>Conditions</h4><div class="scroll"><table class="reflow conditions"><thead><tr>'
        "<th>Type</th><th>Status</th><th>Reason</th><th>Message</th>"
        f'<th class="cond-time">Since</th></tr></thead><tbody>{rows}</tbody></table></div>'
    )


def _condition_class(c: Condition) -> str:
    if c.status == "Unknown":
        return "off"
    healthy = (c.type == "Ready") == (c.status == "True")
    return "ok" if healthy else ("warn" if c.type == "Reconciling" else "bad")


@dataclass(frozen=True)
class _PassRow:
    at: float
    outcome: str
    revision: str
    changes: int
    errors: int
    seconds: float | None


def _pass_rows(passes: tuple[Pass, ...], history: tuple[HistoryEntry, ...]) -> list[_PassRow]:
    """The passes this process saw (newest first), else the status's history (it survives a
    restart, through the store)."""
    if passes:
        return [_PassRow(p.at, p.outcome, p.revision, p.changes, p.errors, p.seconds)
                for p in passes]  # fmt: skip
    return [_PassRow(h.at.timestamp(), h.outcome, h.revision, h.changes, h.errors, None)
            for h in history]  # fmt: skip


def _passes(passes: tuple[Pass, ...], history: tuple[HistoryEntry, ...]) -> str:
    rows = _pass_rows(passes, history)
    if not rows:
        return '<p class="muted">No pass yet.</p>'
    width = 10
    cells = "".join(
        f'<rect x="{i * width}" y="0" width="{width - 2}" height="14" rx="2"'
        f' class="f-{PASS_BADGE.get(r.outcome, "bad")}"><title>{_e(r.outcome)} at'
        f" {when(r.at)}: {_e(r.changes)} change(s), {_e(r.errors)} error(s)</title></rect>"
        for i, r in enumerate(reversed(rows))
    )
    strip = (
        f'<svg class="passes" viewBox="0 0 {len(rows) * width} 14" preserveAspectRatio="xMinYMid'
        f' meet" role="img" aria-label="reconcile passes, oldest to newest">{cells}</svg>'
    )
    table = "".join(
        f'<tr><td class="nw">{_clock(r.at)}</td>'
        f'<td class="nw"><span class="badge {PASS_BADGE.get(r.outcome, "bad")}">'
        f'{_e(r.outcome)}</span></td><td class="wide">{_rev(r.revision)}</td>'
        f'<td class="num">{_e(r.changes)}</td><td class="num">{_e(r.errors)}</td>'
        f'<td class="num wide">{_ms(r.seconds)}</td></tr>'
        for r in rows[:PASSES_LISTED]
    )
    return (
        f"<h4>Last {len(rows)}, oldest left</h4>{strip}<h4>Newest</h4>"
        '<div class="scroll"><table class="passes-table"><thead><tr><th>Time</th>'
        '<th>Outcome</th><th class="wide">Revision</th><th>Changes</th><th>Errors</th>'
        '<th class="wide">Took</th></tr>'
        f"</thead><tbody>{table}</tbody></table></div>"
    )


def _errors(
    id_: str,
    errors: tuple[dict[str, Any], ...],
    title_: str = "Config errors",
    style: str = "err",
) -> str:
    items = "".join(
        f"<li><code>{_e(e.get('file', '?'))}:{_e(e.get('line', '?'))}:{_e(e.get('column', '?'))}"
        f'</code> <span class="{style}">{_e(e.get("message", ""))}</span></li>'
        for e in errors
    )
    return (
        f'<section id="{id_}"><h2>{title_}</h2><div class="panel"><ul class="errors">{items}'
        "</ul></div></section>"
    )


def _server(s: ServerStatus, activity: ActivityView) -> str:
    badge = BADGE.get(s.state, "off")
    window = activity.servers.get(s.name)
    tools = _tools(s.name, s.tools)
    rows = [
        ("Transport", _e(s.transport)),
        ("Since", _when(s.since)),
        (f"Tools ({len(s.tools)})", tools),
        ("Restarts", _e(s.restarts)),
    ]
    if window is not None and window.total_calls:
        rows.append(
            (
                "Errors",
                f"{_e(window.total_errors)} of {_e(window.total_calls)} calls"
                f" ({_rate(window.total_errors, window.total_calls)})",
            )
        )
    if s.next_retry_at is not None:
        rows.append(("Next retry", _when(s.next_retry_at)))
    if s.last_error:
        rows.append(("Last error", f'<span class="err">{_e(s.last_error)}</span>'))
    if s.conflicts:
        rows.append(("Conflicts", "<br>".join(_e(c) for c in s.conflicts)))
    if s.withheld:
        rows.append(("Withheld", "<br>".join(_e(w) for w in s.withheld)))
    if s.voice.any:
        rows.append(("Voice", _voice(s.voice)))
    auth = s.extra.get("auth")
    if auth is not None:
        rows.append(("Auth", _auth(auth)))
    description = f'<p class="muted">{_e(s.description)}</p>' if s.description else ""
    stderr = (
        f'<details id="stderr-{_e(s.name)}"><summary class="muted">stderr</summary>'
        f"<pre>{_e(s.stderr_tail)}</pre></details>"
        if s.stderr_tail
        else ""
    )
    return (
        f'<section class="panel server" id="server-{_e(s.name)}">'
        f'<div class="card-head"><h3>{_e(s.name)}</h3>'
        f'<span class="badge {badge}">{_e(s.state)}</span></div>'
        f"{description}{_timeline(s, window, activity)}{_charts(window, activity)}"
        f"{_facts(rows)}{stderr}</section>"
    )


def _tools(name: str, tools: tuple[str, ...]) -> str:
    if not tools:
        return '<span class="muted">none</span>'
    items = "".join(f"<li><code>{_e(t)}</code></li>" for t in tools[:MAX_TOOLS_SHOWN])
    shown = f'<ul class="tools">{items}</ul>'
    if len(tools) <= MAX_TOOLS_SHOWN:
        return shown
    rest = "".join(f"<li><code>{_e(t)}</code></li>" for t in tools[MAX_TOOLS_SHOWN:])
    return (
        f'{shown}<details id="tools-{_e(name)}"><summary class="muted">'
        f"{len(tools) - MAX_TOOLS_SHOWN} more</summary>"
        f'<ul class="tools">{rest}</ul></details>'
    )


TIMELINE_UNITS = 300
"""The state strip's width in SVG units: over 30 minutes one unit is 6 s, so the strip's
geometry (and the card's HTML) changes at most every 6 s while nothing happens."""


def _timeline(s: ServerStatus, window: ServerActivity | None, activity: ActivityView) -> str:
    """The server's states over the window as coloured segments (the oldest left); before the
    first transition seen the strip is empty."""
    span = activity.window_minutes * 60
    end = activity.now
    start = end - span
    transitions = list(window.transitions) if window is not None else []
    if not transitions:
        transitions = [Transition(s.since.timestamp(), s.state)]
    units = TIMELINE_UNITS
    rects = []
    for i, t in enumerate(transitions):
        until = transitions[i + 1].at if i + 1 < len(transitions) else end
        if until < start:
            continue
        x0 = max(0, round((max(t.at, start) - start) / span * units))
        x1 = min(units, round((until - start) / span * units))
        width = max(1, x1 - x0)
        state_class = STATE_CLASS.get(t.state, "off")
        rects.append(
            f'<rect x="{x0}" y="0" width="{width}" height="10" class="f-{state_class}">'
            f"<title>{_e(t.state)} from {when(t.at)}</title></rect>"
        )
    changes = sum(1 for t in transitions if t.at >= start)
    return (
        f'<svg class="strip" viewBox="0 0 {units} 10" preserveAspectRatio="none" role="img"'
        f' aria-label="state over the last {activity.window_minutes} minutes">{"".join(rects)}'
        f'</svg><div class="axis"><span>−{activity.window_minutes} min</span>'
        f"<span>{changes} transition(s)</span><span>now</span></div>"
    )


SPARK_W = 120
SPARK_H = 28
"""Sparklines' SVG units: 30 minutes of 4 units each, 28 high."""


def _charts(window: ServerActivity | None, activity: ActivityView) -> str:
    if window is None or not window.total_calls:
        return f'<p class="muted">No calls in the last {activity.window_minutes} min.</p>'
    step = SPARK_W / len(window.calls)
    top = max(window.calls) or 1
    ok_bars, error_bars = [], []
    for i, (calls, errors) in enumerate(zip(window.calls, window.errors, strict=True)):
        if not calls:
            continue
        x = f"{i * step + 0.5:g}"
        h_all = calls / top * SPARK_H
        h_err = errors / top * SPARK_H
        if calls > errors:
            ok_bars.append(f"M{x} {SPARK_H - h_all:.1f}h{step - 1:g}V{SPARK_H - h_err:.1f}H{x}Z")
        if errors:
            error_bars.append(f"M{x} {SPARK_H - h_err:.1f}h{step - 1:g}V{SPARK_H}H{x}Z")
    calls_svg = (
        f'<svg class="spark" viewBox="0 0 {SPARK_W} {SPARK_H}" preserveAspectRatio="none"'
        f' role="img" aria-label="calls per minute">'
        f'<path class="f-ok" d="{"".join(ok_bars)}"/>'
        + (f'<path class="f-bad" d="{"".join(error_bars)}"/>' if error_bars else "")
        + "</svg>"
    )
    peak = max((v for v in window.p95 if v is not None), default=0.0) or 1.0

    def line(values: tuple[float | None, ...], css: str) -> str:
        d, pen = [], "M"
        for i, v in enumerate(values):
            if v is None:
                pen = "M"
                continue
            d.append(f"{pen}{i * step + step / 2:g} {SPARK_H - 1 - v / peak * (SPARK_H - 2):.1f}")
            pen = "L"
        return f'<path class="{css}" d="{"".join(d)}" vector-effect="non-scaling-stroke"/>'

    latency_svg = (
        f'<svg class="spark" viewBox="0 0 {SPARK_W} {SPARK_H}" preserveAspectRatio="none"'
        f' role="img" aria-label="latency p50 and p95 per minute">'
        f"{line(window.p95, 'l-p95')}{line(window.p50, 'l-p50')}</svg>"
    )
    return (
        '<div class="charts">'
        f'<div class="chart"><span>calls/min · now {_e(window.calls[-1])}'
        f" · peak {_e(top)}</span>{calls_svg}</div>"
        f'<div class="chart"><span>p50 {_ms(window.window_p50)} · p95 {_ms(window.window_p95)}'
        f"</span>{latency_svg}</div></div>"
    )


def _calls(calls: tuple[Call, ...]) -> str:
    if not calls:
        body = '<p class="muted">No tool calls since jackfield started.</p>'
    else:
        rows = "".join(
            f'<tr><td class="nw">{_clock(c.at)}</td><td>{_e(c.server)}</td>'
            f"<td><code>{_e(c.tool)}</code></td>"
            f'<td class="nw"><span class="badge {_call_class(c.outcome)}">{_e(c.outcome)}'
            f'</span></td><td class="num">{_ms(c.seconds)}</td>'
            f"<td>{_session(c.session)}</td><td>{_e(c.caller or '')}</td></tr>"
            for c in calls
        )
        body = (
            '<div class="panel scroll"><table class="calls"><thead><tr><th>Time</th>'
            "<th>Server</th><th>Tool</th><th>Outcome</th><th>Took</th><th>Session</th>"
            f"<th>Caller</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    return f'<section id="p-calls"><h2>Recent tool calls (last {len(calls)})</h2>{body}</section>'


def _call_class(outcome: str) -> str:
    if outcome.startswith("rejected:"):
        return "warn"
    return CALL_BADGE.get(outcome, "bad")


def _session(session: str | None) -> str:
    """The first 8 characters: enough to tell sessions apart, not enough to join one."""
    if not session:
        return '<span class="muted">–</span>'
    return f'<code title="session">{_e(session[:8])}</code>'


def _auth(auth: dict[str, Any]) -> str:
    """The kind, the token's expiry and the last outcome; never a token (status has none)."""
    parts_ = [_e(auth["kind"])]
    if auth.get("expires_at"):
        parts_.append(f"token expires {_e(auth['expires_at'])}")
    outcome = auth.get("last_outcome")
    if outcome and outcome != "ok":
        parts_.append(f'<span class="err">{_e(outcome)}</span>')
    elif outcome == "ok":
        parts_.append(f"{_e(auth.get('refreshes', 0))} token(s), last refresh ok")
    return "; ".join(parts_)


def _voice(v: VoiceStatus) -> str:
    """One line of what the voice features saw; the kinds that saw nothing are left out."""
    shown = []
    if v.progress:
        shown.append(f"progress {_e(v.progress)}")
    if v.cancellations:
        shown.append(f"cancelled {_e(v.cancellations)}")
    for label, seen in (("confirmed", v.confirmations), ("asked", v.elicitations)):
        counts = ", ".join(f"{_e(k)} {_e(n)}" for k, n in seen.items() if n)
        if counts:
            shown.append(f"{label}: {counts}")
    if v.sampling_refusals:
        shown.append(f"sampling refused {_e(v.sampling_refusals)}")
    return '<span class="voice">' + "; ".join(shown) + "</span>"


WORKER_BADGE = {"Registered": "ok", "Unregistered": "ok", "Connecting": "warn",
                "Starting": "warn", "Draining": "warn", "Stopped": "off"}  # fmt: skip


def _by_revision(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{_rev(r)} {_e(n)}" for r, n in sorted(counts.items()) if n)


def _components(status: Status) -> str:
    agent = status.agent
    agent_text = (
        f'<span class="badge ok">Enabled</span> {_e(agent.sessions)} session(s)'
        if agent.enabled
        else '<span class="badge off">Disabled</span>'
    )
    if agent.reason:
        agent_text += f' <span class="muted">{_e(agent.reason)}</span>'
    if agent.instructions_revision:
        agent_text += f" instructions {_rev(agent.instructions_revision)}"
    if agent.fallbacks:
        counts = ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(agent.fallbacks.items()))
        agent_text += f' <span class="muted">fallbacks: {counts}</span>'
    if agent.realtime_cooldown_until is not None:
        agent_text += (
            f' <span class="badge warn">Realtime paused</span> until'
            f" {_when(agent.realtime_cooldown_until)}"
        )
    if agent.rejected_updates:
        agent_text += f' <span class="muted">{_e(agent.rejected_updates)} update(s) refused'
        if agent.last_rejected_update:
            agent_text += f": {_e(agent.last_rejected_update)}"
        agent_text += "</span>"
    hub = status.hub
    hub_text = (
        f"<code>{_e(hub.url)}</code>" if hub.url else '<span class="muted">not serving</span>'
    ) + f" {_e(hub.tools)} tool(s), {_e(hub.sessions)} session(s)"
    if hub.max_sessions is not None:
        hub_text += f" of {_e(hub.max_sessions)}"
    if hub.refused_sessions:
        hub_text += f' <span class="err">{_e(hub.refused_sessions)} refused</span>'
    watcher = status.watcher
    watcher_badge = {"Watching": "ok", "Polling": "warn", "Starting": "warn"}.get(
        watcher.state, "bad"
    )
    watcher_text = (
        f'<span class="badge {watcher_badge}">{_e(watcher.state)}</span>'
        f" last event {_when(watcher.last_event_at)}"
    )
    if watcher.message:
        watcher_text += f' <span class="muted">{_e(watcher.message)}</span>'
    rows = [("Agent", agent_text)]
    if agent.sessions_by_revision and any(agent.sessions_by_revision.values()):
        rows.append(("Sessions by revision", _by_revision(agent.sessions_by_revision)))
    if agent.worker is not None:
        state = str(agent.worker.get("state"))
        badge = WORKER_BADGE.get(state, "bad")
        worker_text = f'<span class="badge {badge}">{_e(state)}</span>'
        if agent.worker.get("agent_name"):
            worker_text += f" agent <code>{_e(agent.worker['agent_name'])}</code>"
        worker_text += f" {_e(agent.worker.get('jobs', 0))} job(s)"
        if agent.worker.get("since"):
            worker_text += f' <span class="muted">since {_e(agent.worker["since"])}</span>'
        if agent.worker.get("reason"):
            worker_text += f' <span class="muted">{_e(agent.worker["reason"])}</span>'
        if agent.worker.get("restart_needed"):
            worker_text += f' <span class="err">{_e(agent.worker["restart_needed"])}</span>'
        rows.append(("LiveKit worker", worker_text))
    rows += [("Hub", hub_text), ("Watcher", watcher_text)]
    if status.store:
        state = str(status.store.get("state", "Unknown"))
        store_text = f'<span class="badge {"ok" if state == "Ok" else "bad"}">{_e(state)}</span>'
        if status.store.get("message"):
            store_text += f' <span class="muted">{_e(status.store["message"])}</span>'
        rows.append(("Store", store_text))
    return (
        '<section id="p-components"><h2>Agent, worker and components</h2><div class="panel">'
        + _facts(rows)
        + "</div></section>"
    )
