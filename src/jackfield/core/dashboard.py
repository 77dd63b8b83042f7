"""The HTML dashboard at `GET /`: one self-contained page rendered from a `Status`. Pure.

No scripts and no external assets (the status server sends a CSP that forbids both); the page
reloads itself with `<meta http-equiv=refresh>`. Every value from the status is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from html import escape
from typing import Any

from jackfield.core.status import (
    Condition,
    ConfigStatus,
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

CSS = """
:root{--fg:#1b1f24;--muted:#59636e;--bg:#f6f8fa;--card:#fff;--line:#d1d9e0;
--ok:#1a7f37;--warn:#d4a72c;--bad:#cf222e;--off:#818b98;--code:#eff2f5}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;
--card:#151b23;--line:#3d444d;--code:#212830}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1200px;margin:0 auto;padding:16px}
header{display:flex;flex-wrap:wrap;align-items:center;gap:8px 16px;margin-bottom:12px}
h1{font-size:22px;margin:0}
h2{font-size:16px;margin:20px 0 8px}
h3{font-size:16px;margin:0;overflow-wrap:anywhere}
code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
background:var(--code);border-radius:4px}
code{padding:1px 4px;overflow-wrap:anywhere}
pre{margin:6px 0 0;padding:6px 8px;white-space:pre-wrap;overflow-wrap:anywhere;
max-height:12em;overflow:auto}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:13px;
font-weight:600;color:#fff;white-space:nowrap}
.ok{background:var(--ok)}.warn{background:var(--warn);color:#1b1f24}
.bad{background:var(--bad)}.off{background:var(--off)}
.panel{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 12px;margin:0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;min-width:0;overflow-wrap:anywhere}
.grid{display:grid;gap:12px;align-items:start;grid-template-columns:repeat(auto-fill,minmax(min(100%,340px),1fr))}
.card-head{display:flex;justify-content:space-between;align-items:center;gap:8px;
margin-bottom:8px}
ul.tools{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:4px}
ul.errors{margin:0;padding-left:20px}ul.errors li{overflow-wrap:anywhere}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:4px 8px 4px 0;border-bottom:1px solid var(--line);
vertical-align:top;overflow-wrap:anywhere}
th{color:var(--muted);font-weight:500}
.muted{color:var(--muted)}
.err{color:var(--bad)}
footer{margin-top:20px;font-size:13px;color:var(--muted)}
@media (max-width:600px){main{padding:10px}.cond-time,thead{display:none}
table,tbody,tr,td{display:block}tr{padding:6px 0;border-bottom:1px solid var(--line)}
td{display:inline;border:0;padding:0 6px 0 0}td.cond-msg{display:block}}
"""


def render(status: Status, *, refresh_seconds: int = 5) -> str:
    """The dashboard page; `refresh_seconds` 0 turns the self-reload off."""
    refresh = (
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">'
        if refresh_seconds > 0
        else ""
    )
    ready = (
        '<span class="badge ok" id="overall">Ready</span>'
        if status.ready
        else '<span class="badge bad" id="overall">Not ready</span>'
    )
    servers = sorted(status.servers, key=lambda s: s.name)
    body = "".join(
        [
            f"<header><h1>jackfield</h1>{ready}"
            f'<span class="muted">{_count(servers)}</span></header>',
            _config(status.config),
            _errors(status.config.errors),
            _errors(status.config.warnings, "Config warnings", "muted"),
            f'<h2>Servers</h2><div class="grid">{"".join(_server(s) for s in servers)}</div>'
            if servers
            else '<h2>Servers</h2><p class="muted">No servers configured.</p>',
            _components(status),
            '<footer>Read-only view of <a href="status">/status</a>'
            + (f"; reloads every {int(refresh_seconds)} s" if refresh_seconds > 0 else "")
            + ".</footer>",
        ]
    )
    title = "jackfield: " + ("ready" if status.ready else "not ready")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{refresh}<title>{_e(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


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


def _rev(revision: str | None) -> str:
    if revision is None:
        return '<span class="muted">none</span>'
    return f'<code title="{_e(revision)}">{_e(short_revision(revision))}</code>'


def _count(servers: list[ServerStatus]) -> str:
    ready = sum(1 for s in servers if s.state == "Ready")
    return f"{ready}/{len(servers)} servers ready"


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


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
        '<h2>Config</h2><div class="panel">'
        + _facts(rows)
        + (_conditions(config.conditions) if config.conditions else "")
        + "</div>"
    )


def _conditions(conditions: tuple[Condition, ...]) -> str:
    rows = "".join(
        f"<tr><td>{_e(c.type)}</td>"
        f'<td><span class="badge {_condition_class(c)}">{_e(c.status)}</span></td>'
        f'<td>{_e(c.reason)}</td><td class="cond-msg">{_e(c.message)}</td>'
        f'<td class="cond-time">{_when(c.last_transition)}</td></tr>'
        for c in conditions
    )
    return (
        "<h2>Conditions</h2><table><thead><tr><th>Type</th><th>Status</th><th>Reason</th>"
        f'<th>Message</th><th class="cond-time">Since</th></tr></thead><tbody>{rows}</tbody>'
        "</table>"
    )


def _condition_class(c: Condition) -> str:
    if c.status == "Unknown":
        return "off"
    healthy = (c.type == "Ready") == (c.status == "True")
    return "ok" if healthy else ("warn" if c.type == "Reconciling" else "bad")


def _errors(
    errors: tuple[dict[str, Any], ...], title: str = "Config errors", style: str = "err"
) -> str:
    if not errors:
        return ""
    items = "".join(
        f"<li><code>{_e(e.get('file', '?'))}:{_e(e.get('line', '?'))}:{_e(e.get('column', '?'))}"
        f'</code> <span class="{style}">{_e(e.get("message", ""))}</span></li>'
        for e in errors
    )
    return f'<h2>{title}</h2><div class="panel"><ul class="errors">{items}</ul></div>'


def _server(s: ServerStatus) -> str:
    badge = BADGE.get(s.state, "off")
    tools = (
        '<ul class="tools">' + "".join(f"<li><code>{_e(t)}</code></li>" for t in s.tools) + "</ul>"
        if s.tools
        else '<span class="muted">none</span>'
    )
    rows = [
        ("Transport", _e(s.transport)),
        ("Since", _when(s.since)),
        (f"Tools ({len(s.tools)})", tools),
        ("Restarts", _e(s.restarts)),
    ]
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
        f'<details><summary class="muted">stderr</summary><pre>{_e(s.stderr_tail)}</pre></details>'
        if s.stderr_tail
        else ""
    )
    return (
        f'<section class="panel server" id="server-{_e(s.name)}">'
        f'<div class="card-head"><h3>{_e(s.name)}</h3>'
        f'<span class="badge {badge}">{_e(s.state)}</span></div>'
        f"{description}{_facts(rows)}{stderr}</section>"
    )


def _auth(auth: dict[str, Any]) -> str:
    """The kind, the token's expiry and the last outcome; never a token (status has none)."""
    parts = [_e(auth["kind"])]
    if auth.get("expires_at"):
        parts.append(f"token expires {_e(auth['expires_at'])}")
    outcome = auth.get("last_outcome")
    if outcome and outcome != "ok":
        parts.append(f'<span class="err">{_e(outcome)}</span>')
    elif outcome == "ok":
        parts.append(f"{_e(auth.get('refreshes', 0))} token(s), last refresh ok")
    return "; ".join(parts)


def _voice(v: VoiceStatus) -> str:
    """One line of what the voice features saw; the kinds that saw nothing are left out."""
    parts = []
    if v.progress:
        parts.append(f"progress {_e(v.progress)}")
    if v.cancellations:
        parts.append(f"cancelled {_e(v.cancellations)}")
    for label, seen in (("confirmed", v.confirmations), ("asked", v.elicitations)):
        counts = ", ".join(f"{_e(k)} {_e(n)}" for k, n in seen.items() if n)
        if counts:
            parts.append(f"{label}: {counts}")
    if v.sampling_refusals:
        parts.append(f"sampling refused {_e(v.sampling_refusals)}")
    return '<span class="voice">' + "; ".join(parts) + "</span>"


WORKER_BADGE = {"Registered": "ok", "Unregistered": "ok", "Connecting": "warn",
                "Starting": "warn", "Draining": "warn", "Stopped": "off"}  # fmt: skip


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
    hub = status.hub
    hub_text = (
        f"<code>{_e(hub.url)}</code>" if hub.url else '<span class="muted">not serving</span>'
    ) + f" {_e(hub.tools)} tool(s), {_e(hub.sessions)} session(s)"
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
    if agent.worker is not None:
        state = str(agent.worker.get("state"))
        badge = WORKER_BADGE.get(state, "bad")
        worker_text = f'<span class="badge {badge}">{_e(state)}</span>'
        if agent.worker.get("agent_name"):
            worker_text += f" agent <code>{_e(agent.worker['agent_name'])}</code>"
        worker_text += f" {_e(agent.worker.get('jobs', 0))} job(s)"
        if agent.worker.get("reason"):
            worker_text += f' <span class="muted">{_e(agent.worker["reason"])}</span>'
        rows.append(("LiveKit worker", worker_text))
    rows += [("Hub", hub_text), ("Watcher", watcher_text)]
    if status.store:
        state = str(status.store.get("state", "Unknown"))
        store_text = f'<span class="badge {"ok" if state == "Ok" else "bad"}">{_e(state)}</span>'
        if status.store.get("message"):
            store_text += f' <span class="muted">{_e(status.store["message"])}</span>'
        rows.append(("Store", store_text))
    return '<h2>Components</h2><div class="panel">' + _facts(rows) + "</div>"
