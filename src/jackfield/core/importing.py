"""Claude Desktop / `.mcp.json` `mcpServers` -> jackfield MCPServer documents. Pure.

Literal secrets in the input (env values whose names look secret, credential headers) become
`${VAR}` references; the caller prints which variables to set, never their values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from jackfield.spec.models import API_VERSION

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|AUTH|CREDENTIAL|COOKIE)", re.I)
_CREDENTIAL_HEADERS = {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"}
_TRANSPORTS = {
    "sse": "sse",
    "http": "http",
    "streamable-http": "http",
    "streamablehttp": "http",
    "ws": "websocket",
    "websocket": "websocket",
}


@dataclass
class Imported:
    files: dict[str, str] = field(default_factory=dict)
    """File name (`<name>.yaml`) -> YAML text."""
    variables: list[str] = field(default_factory=list)
    """Environment variables the new files refer to (to be set by the user)."""
    problems: list[str] = field(default_factory=list)


def dns_name(name: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "server"


def env_name(*parts: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", "_".join(parts).upper()).strip("_")


def _secret_ref(value: str, var: str, variables: list[str]) -> str:
    if "${" in value:  # already a reference
        return value
    if var not in variables:
        variables.append(var)
    return f"${{{var}}}"


def _header_value(server: str, key: str, value: str, variables: list[str]) -> str:
    if key.lower() not in _CREDENTIAL_HEADERS:
        return value
    var = env_name(server, "TOKEN" if key.lower().endswith("authorization") else key)
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() in ("bearer", "basic", "token"):
        return f"{scheme} {_secret_ref(rest, var, variables)}"
    return _secret_ref(value, var, variables)


def convert(config: Mapping[str, Any]) -> Imported:
    """Convert a parsed `{"mcpServers": {...}}` object (or the bare inner mapping)."""
    out = Imported()
    servers = config.get("mcpServers", config.get("servers", config))
    if not isinstance(servers, Mapping):
        out.problems.append("no 'mcpServers' object found")
        return out
    for raw_name, entry in servers.items():
        name = dns_name(str(raw_name))
        if not isinstance(entry, Mapping):
            out.problems.append(f"{raw_name}: entry is not an object; skipped")
            continue
        spec: dict[str, Any] = {}
        if entry.get("description"):
            spec["description"] = str(entry["description"])
        if entry.get("disabled") is True:
            spec["enabled"] = False
        if "command" in entry:
            spec["transport"] = "stdio"
            spec["command"] = str(entry["command"])
            if entry.get("args"):
                spec["args"] = [str(a) for a in entry["args"]]
            env = {
                str(k): (
                    _secret_ref(str(v), env_name(str(k)), out.variables)
                    if _SECRET_NAME.search(str(k))
                    else str(v)
                )
                for k, v in (entry.get("env") or {}).items()
            }
            if env:
                spec["env"] = env
            if entry.get("cwd"):
                spec["cwd"] = str(entry["cwd"])
        elif "url" in entry or "serverUrl" in entry:
            url = str(entry.get("url") or entry.get("serverUrl"))
            kind = str(entry.get("type") or entry.get("transport") or "").lower()
            transport = _TRANSPORTS.get(kind)
            if transport is None:
                transport = (
                    "websocket"
                    if url.startswith(("ws://", "wss://"))
                    else ("sse" if url.rstrip("/").endswith("/sse") else "http")
                )
            spec["transport"] = transport
            spec["url"] = url
            headers = {
                str(k): _header_value(name, str(k), str(v), out.variables)
                for k, v in (entry.get("headers") or {}).items()
            }
            if headers:
                spec["headers"] = headers
        else:
            out.problems.append(f"{raw_name}: neither 'command' nor 'url'; skipped")
            continue
        document = {
            "apiVersion": API_VERSION,
            "kind": "MCPServer",
            "metadata": {"name": name},
            "spec": spec,
        }
        text = "# yaml-language-server: $schema=../schemas/server.schema.json\n" + yaml.safe_dump(
            document, sort_keys=False, allow_unicode=True
        )
        file_name = f"{name}.yaml"
        if file_name in out.files:
            out.problems.append(f"{raw_name}: name {name!r} already used; skipped")
            continue
        out.files[file_name] = text
    return out
