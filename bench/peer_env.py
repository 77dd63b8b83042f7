"""The peers' own environments, and the entry points that run inside them (bench.peers).

A peer is an aggregating MCP proxy a user might pick instead of jackfield. Each is installed in
a venv of its own under ~/.cache/jackfield-bench/ (`ensure`: `python -m venv` + `pip install`,
once; later runs only check a marker), so no peer ever becomes a dependency of jackfield and
mcp-proxy can keep its mcp 1.x. This module imports only the standard library at the top: the
peer venvs' interpreters run it as a script.

    <venv>/bin/python bench/peer_env.py fastmcp SPEC.json   # a FastMCP composition, over HTTP
    python -m bench.peer_env wide CATALOG.json              # 20 tools, over stdio

SPEC.json: {"servers": {"<name>": {"command": ..., "args": [...], "cwd": ...}}}. The FastMCP
entry binds port 0 and prints `LISTENING <port>` once it accepts requests, like
tests/servers/echo.py.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jackfield-bench"
WIDE_TOOLS = 20
"""Tools of the `wide` server: echo.py's 8 and numbered echoes up to 20."""


@dataclass(frozen=True)
class Peer:
    name: str
    requirement: str
    """What `pip install` gets: pinned, so every run measures the same release."""

    @property
    def version(self) -> str:
        return self.requirement.split("==", 1)[1]

    @property
    def venv(self) -> Path:
        return CACHE / self.requirement.replace("==", "-")

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def bin(self, script: str) -> Path:
        return self.venv / "bin" / script


FASTMCP = Peer("FastMCP", "fastmcp==4.2.3")
MCP_PROXY = Peer("mcp-proxy", "mcp-proxy==0.13.0")
"""0.13 requires mcp<2, which jackfield's mcp>=2.2 rules out in one environment."""


def ensure(peer: Peer) -> Path:
    """The peer's venv python, creating the venv first when it is missing or incomplete.

    Raises:
        subprocess.CalledProcessError: venv creation or the install failed (no network, ...).
    """
    marker = peer.venv / ".installed"
    if marker.exists() and marker.read_text() == peer.requirement and peer.python.exists():
        return peer.python
    print(f"installing {peer.requirement} into {peer.venv} (once)", file=sys.stderr, flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(peer.venv)], check=True)
    quiet = ["-q", "--disable-pip-version-check", "--no-input"]
    subprocess.run([str(peer.python), "-m", "pip", "install", *quiet, peer.requirement],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    marker.write_text(peer.requirement)
    return peer.python


# --- inside the FastMCP venv -------------------------------------------------------------------


def fastmcp_main(spec_path: str) -> None:
    """Serve a FastMCP server that mounts one proxy per stdio server (namespace: the server's
    name) over streamable HTTP at /mcp, the composition FastMCP's docs describe.

    variant "connected" (the default): each backend is a `StatefulProxyClient` connected before
    `create_proxy`, so one session per backend serves every request (what FastMCP's own
    multi-server MCPConfig router does inside); "fresh": `create_proxy(StdioTransport)`, a new
    client (and MCP handshake) per request on the kept-alive process; "config":
    `create_proxy(MCPConfig)`, which builds that router, with new processes, per request.
    """
    fastmcp: Any = importlib.import_module("fastmcp")
    server_mod: Any = importlib.import_module("fastmcp.server")
    proxy_mod: Any = importlib.import_module("fastmcp.server.providers.proxy")
    transports: Any = importlib.import_module("fastmcp.client.transports")
    uvicorn: Any = importlib.import_module("uvicorn")
    anyio: Any = importlib.import_module("anyio")
    spec = json.loads(Path(spec_path).read_text())
    servers: dict[str, dict[str, Any]] = spec["servers"]
    variant = spec.get("variant", "connected")

    async def serve() -> None:
        if variant == "config":
            main = server_mod.create_proxy({"mcpServers": servers}, name="bench-fastmcp")
        else:
            main = fastmcp.FastMCP("bench-fastmcp")
            targets = {
                name: transports.StdioTransport(
                    command=server["command"], args=server["args"], cwd=server.get("cwd")
                )
                for name, server in servers.items()
            }
            if variant == "connected":
                targets = {
                    name: proxy_mod.StatefulProxyClient(transport=transport, mode="legacy")
                    for name, transport in targets.items()
                }
                async with anyio.create_task_group() as tg:  # connected before create_proxy
                    for client in targets.values():
                        tg.start_soon(client.__aenter__)  # left open: ends with the process
            for name, target in targets.items():
                main.mount(server_mod.create_proxy(target, name=name), namespace=name)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        app = main.http_app(path="/mcp")
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            while not server.started:
                await anyio.sleep(0.01)
            print(f"LISTENING {sock.getsockname()[1]}", flush=True)

    anyio.run(serve)


# --- the catalog phase's servers ----------------------------------------------------------------


def wide_main(catalog_path: str) -> None:
    """A stdio MCP server (newline-delimited JSON-RPC) that answers `tools/list` with the tools in
    CATALOG.json (bench.peers writes tests/servers/echo.py's own listing there, widened to
    WIDE_TOOLS) and `tools/call` by echoing `text`. Standard library only: it starts in tens of
    milliseconds where echo.py takes most of a CPU second, so sixty of them cost the catalog
    phase nothing, and each answers a listing faster than the SDK would."""
    tools = json.loads(Path(catalog_path).read_text())
    for line in sys.stdin:
        message = json.loads(line)
        if "id" not in message:
            continue  # a notification
        method, params = message.get("method"), message.get("params") or {}
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        if method == "initialize":
            reply["result"] = {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "wide", "version": "1.0"},
            }
        elif method == "tools/list":
            reply["result"] = {"tools": tools}
        elif method == "tools/call":
            text = str(params.get("arguments", {}).get("text", ""))
            reply["result"] = {
                "content": [{"type": "text", "text": text}],
                "structuredContent": {"result": text},
                "isError": False,
            }
        elif method == "ping":
            reply["result"] = {}
        else:
            reply["error"] = {"code": -32601, "message": f"Method not found: {method}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "fastmcp" and len(sys.argv) == 3:
        fastmcp_main(sys.argv[2])
    elif role == "wide" and len(sys.argv) == 3:
        wide_main(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} fastmcp SPEC.json | wide CATALOG.json")
