"""Other MCP clients' configs and MCP registry `server.json` -> MCPServer documents. Pure.

Formats (docs/gitops.md, "Importing from other clients", has the mapping table):
- claude-desktop, claude-code: `{"mcpServers": {name: {type?, command, args, env, url, headers}}}`;
  their `${VAR}` and `${VAR:-default}` are jackfield's own forms and stay.
- vscode: `{"servers": {...}, "inputs": [...]}`; `${input:ID}` -> `${ID}` (upper snake),
  `${env:NAME}` -> `${NAME}`, `${workspaceFolder}` -> `.` with `cwd: .` (the config dir).
- cursor: `{"mcpServers": {...}}` with VS Code's `${env:NAME}`-style variables.
- registry: one server, from a package (npm, pypi, oci, nuget) or a remote.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jackfield.core.importing import (
    Imported,
    ImportRefused,
    argv_values,
    env_name,
    env_value,
    header_value,
    url_value,
)

Format = Literal["claude-desktop", "claude-code", "vscode", "cursor", "registry"]
FORMATS: tuple[Format, ...] = ("claude-desktop", "claude-code", "vscode", "cursor", "registry")

_TRANSPORTS = {
    "stdio": "stdio",
    "sse": "sse",
    "http": "http",
    "streamable-http": "http",
    "streamablehttp": "http",
    "ws": "websocket",
    "websocket": "websocket",
}
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_STDIO_FIELDS = ("command", "args", "env", "cwd")
# `transport`, `serverUrl` and `disabled` are other clients' spellings, read from any file
_COMMON_KEYS = {
    *("type", "command", "args", "env", "cwd", "url", "headers", "description"),
    *("transport", "serverUrl", "disabled"),
}


def convert(
    source: Format,
    config: object,
    *,
    package: int | None = None,
    remote: int | None = None,
) -> Imported:
    """The documents for a parsed file of format `source`. `package`/`remote` pick a registry
    entry's package or remote by index (default: the rule in `_registry`).

    Raises:
        ImportRefused: `config` is not of that format, or holds something jackfield cannot
            express (an unknown transport, a VS Code `${command:...}`, no runnable package).
    """
    if not isinstance(config, Mapping):
        raise ImportRefused(f"expected a JSON object ({_SHAPE[source]})")
    if source == "registry":
        return _registry(config, package, remote)
    if package is not None or remote is not None:
        raise ImportRefused("--package and --remote are for 'import registry' only")
    return _clients(source, config)


_SHAPE: dict[Format, str] = {
    "claude-desktop": "with 'mcpServers'",
    "claude-code": "a .mcp.json with 'mcpServers'",
    "vscode": "a VS Code mcp.json with 'servers'",
    "cursor": "a Cursor mcp.json with 'mcpServers'",
    "registry": "an MCP registry server.json",
}


# --- clients: Claude Desktop, Claude Code, VS Code, Cursor ------------------------------------


@dataclass(frozen=True)
class _Dialect:
    servers_key: str
    extra_keys: frozenset[str]
    """Keys of this client that jackfield has no equivalent for: named in a warning."""
    editor_variables: bool
    """`${env:X}`, `${workspaceFolder}`, ... (VS Code, Cursor) rather than `${X}` (Claude)."""


_DIALECTS: dict[str, _Dialect] = {
    "claude-desktop": _Dialect("mcpServers", frozenset(), False),
    "claude-code": _Dialect("mcpServers", frozenset({"headersHelper", "oauth"}), False),
    "vscode": _Dialect("servers", frozenset({"envFile", "dev", "sandbox", "gallery"}), True),
    "cursor": _Dialect("mcpServers", frozenset({"envFile", "auth"}), True),
}


def _clients(source: Format, config: Mapping[str, Any]) -> Imported:
    dialect = _DIALECTS[source]
    if source == "vscode" and "servers" not in config and isinstance(config.get("mcp"), Mapping):
        config = config["mcp"]  # the "mcp" object of a VS Code settings.json
    servers = config.get(dialect.servers_key)
    if not isinstance(servers, Mapping):
        other = "servers" if dialect.servers_key == "mcpServers" else "mcpServers"
        hint = ""
        if isinstance(config.get(other), Mapping):
            client = "VS Code" if other == "servers" else "Claude or Cursor"
            hint = f" (it has '{other}': is it a {client} file?)"
        elif "packages" in config or "remotes" in config:
            hint = " (it looks like a registry server.json: use 'import registry')"
        raise ImportRefused(f"no '{dialect.servers_key}' object{hint}")
    inputs = _vscode_inputs(config.get("inputs")) if source == "vscode" else {}
    out = Imported()
    for raw_name, entry in servers.items():
        if not isinstance(entry, Mapping):
            raise ImportRefused(f"{dialect.servers_key}.{raw_name}: not an object")
        _client_server(str(raw_name), entry, dialect, inputs, out)
    if not out.files:
        raise ImportRefused(f"'{dialect.servers_key}' is empty: nothing to import")
    return out


@dataclass(frozen=True)
class _Input:
    """A VS Code input: its variable, and a default when the input is not a password."""

    var: str
    default: str | None


def _vscode_inputs(raw: object) -> dict[str, _Input]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ImportRefused("'inputs' is not a list")
    found: dict[str, _Input] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            raise ImportRefused(f"inputs[{i}]: not an object with an 'id'")
        default = item.get("default")
        secret = item.get("password") is True
        found[item["id"]] = _Input(
            env_name(item["id"]), None if secret or not isinstance(default, str) else default
        )
    return found


def _client_server(
    raw_name: str,
    entry: Mapping[str, Any],
    dialect: _Dialect,
    inputs: Mapping[str, _Input],
    out: Imported,
) -> None:
    where = f"{dialect.servers_key}.{raw_name}"
    for key in entry:
        if key in _COMMON_KEYS:
            continue
        if key == "envFile":
            out.warn(
                f"{where}: envFile is not imported; set its variables in jackfield's"
                " environment and refer to them as ${NAME} in env"
            )
        elif key in dialect.extra_keys:
            out.warn(f"{where}: '{key}' has no jackfield equivalent; left out")
        else:
            out.warn(f"{where}: unknown key '{key}'; left out")
    expand = _Variables(where, inputs, out) if dialect.editor_variables else _keep
    name = env_name(raw_name)
    spec: dict[str, Any] = {}
    if isinstance(entry.get("description"), str) and entry["description"]:
        spec["description"] = entry["description"]
    if entry.get("disabled") is True:
        spec["enabled"] = False
    kind = str(entry.get("type") or entry.get("transport") or "").lower()
    transport = _TRANSPORTS.get(kind) if kind else None
    if kind and transport is None:
        raise ImportRefused(f"{where}: unknown type {kind!r} (stdio, http or sse)")
    url = entry.get("url", entry.get("serverUrl"))
    if "command" in entry and transport in (None, "stdio"):
        command = entry["command"]
        if not isinstance(command, str) or not command:
            raise ImportRefused(f"{where}: 'command' is not a string")
        spec["transport"] = "stdio"
        spec["command"] = expand(command, "command")
        args = [expand(str(a), "args") for a in _list(entry.get("args"), f"{where}.args")]
        if args:
            spec["args"] = argv_values(name, args, out)
        env = {
            str(k): env_value(str(k), expand(_scalar(v), "env"), out)
            for k, v in _object(entry.get("env"), f"{where}.env").items()
        }
        if env:
            spec["env"] = env
        if isinstance(entry.get("cwd"), str) and entry["cwd"]:
            spec["cwd"] = expand(entry["cwd"], "cwd")
        if isinstance(expand, _Variables) and expand.workspace and "cwd" not in spec:
            spec["cwd"] = "."
    elif url is not None and transport != "stdio":
        if not isinstance(url, str):
            raise ImportRefused(f"{where}: 'url' is not a string")
        url = expand(url, "url")
        if transport is None:  # as the clients guess it
            transport = (
                "websocket"
                if url.startswith(("ws://", "wss://"))
                else ("sse" if url.rstrip("/").endswith("/sse") else "http")
            )
        spec["transport"] = transport
        spec["url"] = url_value(name, url, out)
        headers = {
            str(k): header_value(name, str(k), expand(_scalar(v), "headers"), out)
            for k, v in _object(entry.get("headers"), f"{where}.headers").items()
        }
        if headers:
            spec["headers"] = headers
    else:
        need = {"stdio": "'command'", None: "'command' or 'url'"}.get(transport, "'url'")
        raise ImportRefused(f"{where}: has no {need}")
    out.add(raw_name, spec)


def _keep(text: str, field: str) -> str:
    return text


class _Variables:
    """VS Code's and Cursor's `${...}` in one server's values, as jackfield references."""

    def __init__(self, where: str, inputs: Mapping[str, _Input], out: Imported) -> None:
        self.where = where
        self.inputs = inputs
        self.out = out
        self.workspace = False
        """`${workspaceFolder}` was used in a stdio field: the server runs in the config dir."""

    def __call__(self, text: str, field: str) -> str:
        return _VARIABLE.sub(lambda m: self._one(m[1], field), text)

    def _one(self, inner: str, field: str) -> str:
        kind, colon, arg = inner.partition(":")
        if colon and kind == "env" and arg:
            return f"${{{arg}}}"
        if colon and kind == "input" and arg:
            found = self.inputs.get(arg)
            if found is None:
                self.out.warn(f"{self.where}: ${{input:{arg}}} is not declared in 'inputs'")
                return self.out.need(env_name(arg))
            if found.default is not None and not re.search(r"[}$]", found.default):
                return f"${{{found.var}:-{found.default}}}"
            return self.out.need(found.var)
        if inner == "userHome":
            return "${HOME}"
        if inner in ("pathSeparator", "/"):
            return "/"
        if inner in ("workspaceFolder", "workspaceRoot") and field in _STDIO_FIELDS:
            self.workspace = True
            self.out.warn(
                f"{self.where}: ${{{inner}}} became '.', the config dir (the server runs with"
                " cwd '.'); change it if the project is elsewhere"
            )
            return "."
        raise ImportRefused(f"{self.where}: ${{{inner}}} in {field} has no jackfield equivalent")


def _list(raw: object, where: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ImportRefused(f"{where}: not a list")
    return raw


def _object(raw: object, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ImportRefused(f"{where}: not an object")
    return raw


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- the MCP registry's server.json (schema 2025-09-29 / 2025-12-11) --------------------------

_RUNNABLE = ("npm", "pypi", "oci", "nuget")


def _registry(doc: Mapping[str, Any], package: int | None, remote: int | None) -> Imported:
    """One server from a registry entry. Without `package`/`remote`: the first package that
    jackfield can start (npm, pypi, oci, nuget, over stdio), else the first remote."""
    if isinstance(doc.get("server"), Mapping) and "name" not in doc:
        doc = doc["server"]  # the registry API's answer wraps the entry
    if _snake_case(doc):
        raise ImportRefused(
            "this server.json uses the draft snake_case schema (before 2025-09-29);"
            " the registry's current schema uses camelCase (registryType, transport, ...)"
        )
    full_name = doc.get("name")
    if not isinstance(full_name, str) or "/" not in full_name:
        raise ImportRefused("no 'name' like 'io.github.owner/server': not a registry server.json")
    packages = _list(doc.get("packages"), "packages")
    remotes = _list(doc.get("remotes"), "remotes")
    if package is not None and remote is not None:
        raise ImportRefused("give --package or --remote, not both")
    out = Imported()
    short = full_name.rsplit("/", 1)[1]
    server = env_name(short)
    if package is not None:
        label = f"packages[{package}]"
        spec = _package(_pick(packages, package, "packages"), server, out)
    elif remote is not None:
        label = f"remotes[{remote}]"
        spec = _remote(_pick(remotes, remote, "remotes"), server, out)
    else:
        reasons = [_unrunnable(p) for p in packages]
        first = next((i for i, r in enumerate(reasons) if r is None), None)
        if first is not None:
            label, spec = f"packages[{first}]", _package(packages[first], server, out)
        elif remotes:
            label, spec = "remotes[0]", _remote(_pick(remotes, 0, "remotes"), server, out)
        else:
            why = "; ".join(f"packages[{i}]: {r}" for i, r in enumerate(reasons))
            raise ImportRefused(f"nothing jackfield can run: {why or 'no packages or remotes'}")
    description = doc.get("description") or doc.get("title")
    if isinstance(description, str) and description:
        spec = {"description": description, **spec}
    others = [f"packages[{i}]" for i in range(len(packages))] + [
        f"remotes[{i}]" for i in range(len(remotes))
    ]
    if len(others) > 1:
        rest = ", ".join(o for o in others if o != label)
        out.warn(f"imported {label}; also in the file: {rest} (--package N / --remote N)")
    version = doc.get("version")
    out.add(short, spec, comment=f"from {full_name} {version or ''}".rstrip() + f", {label}")
    return out


def _snake_case(doc: Mapping[str, Any]) -> bool:
    """The draft schema's keys (`registry_type`, `transport_type`, `version_detail`)."""
    entries = [*_list(doc.get("packages"), "packages"), *_list(doc.get("remotes"), "remotes")]
    return "version_detail" in doc or any(
        isinstance(e, Mapping) and ("registry_type" in e or "transport_type" in e) for e in entries
    )


def _pick(items: list[Any], index: int, what: str) -> Mapping[str, Any]:
    if not 0 <= index < len(items):
        raise ImportRefused(f"there is no {what}[{index}] (the file has {len(items)})")
    item = items[index]
    if not isinstance(item, Mapping):
        raise ImportRefused(f"{what}[{index}]: not an object")
    return item


def _unrunnable(pkg: object) -> str | None:
    """Why jackfield cannot start this package itself, or None."""
    if not isinstance(pkg, Mapping):
        return "not an object"
    kind = pkg.get("registryType")
    if kind not in _RUNNABLE:
        return f"registryType {kind!r} is not one of {', '.join(_RUNNABLE)}"
    transport = _object(pkg.get("transport"), "transport").get("type", "stdio")
    if transport != "stdio":
        return f"transport {transport!r}: jackfield starts stdio servers only"
    if not isinstance(pkg.get("identifier"), str) or not pkg["identifier"]:
        return "no 'identifier'"
    return None


def _package(pkg: Mapping[str, Any], server: str, out: Imported) -> dict[str, Any]:
    why = _unrunnable(pkg)
    if why is not None:
        raise ImportRefused(f"this package cannot be imported: {why}")
    kind, ident, hint = pkg["registryType"], pkg["identifier"], pkg.get("runtimeHint")
    version = pkg.get("version") if isinstance(pkg.get("version"), str) else None
    runtime = _arguments(pkg.get("runtimeArguments"), server, out)
    package_args = _arguments(pkg.get("packageArguments"), server, out)
    env: dict[str, str] = {}
    for i, item in enumerate(_list(pkg.get("environmentVariables"), "environmentVariables")):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ImportRefused(f"environmentVariables[{i}]: not an object with a 'name'")
        value = _input(item, item["name"], server, out)
        if value is None:
            out.warn(f"optional {item['name']} is not set; add it to env if needed")
        else:
            env[item["name"]] = env_value(item["name"], value, out)
    if kind == "npm":
        command = hint or "npx"
        yes = ["-y"] if command == "npx" and not {"-y", "--yes"} & set(runtime) else []
        args = [*yes, *runtime, f"{ident}@{version}" if version else ident, *package_args]
    elif kind == "pypi":
        command = hint or "uvx"
        args = [*runtime, f"{ident}=={version}" if version else ident, *package_args]
    elif kind == "oci":
        command = hint or "docker"
        tagged = ":" in ident.rsplit("/", 1)[-1] or "@" in ident
        image = ident if tagged or not version else f"{ident}:{version}"
        # docker hands the container only the variables named with -e
        forward = [a for name in env for a in ("-e", name)]
        args = ["run", "-i", "--rm", *forward, *runtime, image, *package_args]
    else:  # nuget
        command = hint or "dnx"
        tail = ["--", *package_args] if package_args else []
        args = [*runtime, f"{ident}@{version}" if version else ident, "--yes", *tail]
    spec: dict[str, Any] = {"transport": "stdio", "command": command, "args": args}
    if env:
        spec["env"] = env
    return spec


def _remote(remote: Mapping[str, Any], server: str, out: Imported) -> dict[str, Any]:
    kind = remote.get("type")
    transport = {"streamable-http": "http", "sse": "sse"}.get(str(kind))
    if transport is None:
        raise ImportRefused(f"remote type {kind!r} is not streamable-http or sse")
    url = remote.get("url")
    if not isinstance(url, str) or not url:
        raise ImportRefused("the remote has no 'url'")
    url = _template(url, _object(remote.get("variables"), "variables"), server, out)
    spec: dict[str, Any] = {"transport": transport, "url": url_value(server, url, out)}
    headers: dict[str, str] = {}
    for i, item in enumerate(_list(remote.get("headers"), "headers")):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ImportRefused(f"headers[{i}]: not an object with a 'name'")
        var = env_name(server, item["name"])
        value = _input(item, var, server, out)
        if value is None:
            continue
        headers[item["name"]] = header_value(server, item["name"], value, out)
        if value == f"${{{var}}}" and item["name"].lower() == "authorization":
            out.warn(f"{var} is the whole Authorization header value ('Bearer ...' included)")
    if headers:
        spec["headers"] = headers
    return spec


def _arguments(raw: object, server: str, out: Imported) -> list[str]:
    argv: list[str] = []
    for i, arg in enumerate(_list(raw, "arguments")):
        if not isinstance(arg, Mapping) or arg.get("type") not in ("positional", "named"):
            raise ImportRefused(f"argument {i}: not a positional or named argument")
        if arg["type"] == "positional":
            var = env_name(server, str(arg.get("valueHint") or f"arg{i}"))
            value = _input(arg, var, server, out)
            argv += [] if value is None else [value]
            continue
        flag = arg.get("name")
        if not isinstance(flag, str) or not flag:
            raise ImportRefused(f"argument {i}: a named argument without 'name'")
        if arg.get("format") == "boolean" and "value" not in arg:
            argv += [flag] if arg.get("default") == "true" else []
            continue
        var = env_name(server, str(arg.get("valueHint") or flag.lstrip("-")))
        value = _input(arg, var, server, out)
        argv += [] if value is None else [flag, value]
    return argv


def _input(item: Mapping[str, Any], var: str, server: str, out: Imported) -> str | None:
    """A registry Input's text: its `value` ({variables} filled in), else `${var}` when it is a
    secret or required, else `${var:-default}`; None for an optional input with nothing."""
    secret = item.get("isSecret") is True
    value, default = item.get("value"), item.get("default")
    if isinstance(value, str):
        if secret and "{" not in value:  # a literal secret never goes into a file
            return out.need(var)
        return _template(value, _object(item.get("variables"), "variables"), server, out)
    if secret or (item.get("isRequired") is True and not isinstance(default, str)):
        return out.need(var)
    if isinstance(default, str):
        return default if re.search(r"[}$]", default) else f"${{{var}:-{default}}}"
    return None


def _template(text: str, variables: Mapping[str, Any], server: str, out: Imported) -> str:
    """`{name}` -> the variable's text (`${SERVER_NAME}` or its default); an unknown name stays
    as written, as the registry's schema says."""

    def one(m: re.Match[str]) -> str:
        found = variables.get(m[1])
        if not isinstance(found, Mapping):
            return m[0]
        var = env_name(server, m[1])
        return _input({**found, "isRequired": True}, var, server, out) or out.need(var)

    return re.sub(r"\{([A-Za-z0-9_.-]+)\}", one, text)
