"""`jackfield console` as a user runs it: a subprocess reading stdin, with real MCP servers and
the real OpenAI plugin pointed at the OpenAI-compatible stub (tests/support/openai_stub.py)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.live import echo_server
from tests.support.openai_stub import OpenAIStub
from tests.support.process import HUB_TOKEN, JACKFIELD, jackfield_run, plain_config

pytestmark = pytest.mark.timeout(90)


def console_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "JACKFIELD_"))}
    env["PYTHONPATH"] = str(REPO)
    return {**env, **extra}


async def console(
    config_dir: Path | None,
    cwd: Path,
    env: dict[str, str],
    stdin: str,
    timeout: float = 60.0,
    *args: str,
) -> tuple[int, str, str]:
    where = [str(config_dir)] if config_dir is not None else []
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jackfield.cli", "console", *where, *args,
        cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_console_without_an_openai_key_says_so_and_exits_2(
    config_dir: Path, tmp_path: Path
) -> None:
    code, out, err = await console(config_dir, tmp_path, console_env(), "hello\n", timeout=30)
    assert code == 2
    assert "jackfield console needs OPENAI_API_KEY" in err
    assert out == ""


async def test_console_chats_shows_tool_calls_and_quits_at_end_of_input(
    config_dir: Path, tmp_path: Path
) -> None:
    (config_dir / "servers.d" / "echo.yaml").write_text(echo_server("echo", "--tools", "echo"))
    async with OpenAIStub() as stub:
        env = console_env(OPENAI_API_KEY="test", OPENAI_BASE_URL=stub.base_url)
        lines = 'call echo_echo {"text": "hi from the console"}\nhello there\n'
        code, out, err = await console(config_dir, tmp_path, env, lines)
    assert code == 0, err
    shown = out.splitlines()
    assert shown[0].startswith("jackfield console: gpt-4o-mini, 1 tool(s) live."), out
    tool_line = '  [tool] echo_echo {"text":"hi from the console"} -> ok: hi from the console'
    assert tool_line in shown, out
    assert "agent> The tool said: hi from the console" in shown, out
    assert "agent> You said: hello there" in shown, out
    assert shown.index(tool_line) < shown.index("agent> The tool said: hi from the console")
    assert {"echo_echo"} == set(stub.tools_seen)
    assert all(r["model"] == "gpt-4o-mini" for r in stub.requests)


async def test_console_greets_stops_at_quit_and_uses_the_agents_pipeline_model(
    config_dir: Path, tmp_path: Path
) -> None:
    (config_dir / "agent.yaml").write_text(
        "apiVersion: jackfield/v1\nkind: Agent\nmetadata: {name: assistant}\n"
        "spec:\n  instructions: You are a test agent.\n"
        "  llm: {mode: pipeline, model: gpt-4.1-mini}\n  greeting: Greet the caller.\n"
    )
    async with OpenAIStub() as stub:
        env = console_env(OPENAI_API_KEY="test", OPENAI_BASE_URL=stub.base_url)
        code, out, err = await console(config_dir, tmp_path, env, "first\n/quit\nnever sent\n")
    assert code == 0, err
    replies = [line for line in out.splitlines() if line.startswith("agent> ")]
    assert len(replies) == 2, out
    assert "Greet the caller." in replies[0]
    assert replies[1] == "agent> You said: first"
    assert "never sent" not in out
    assert [r["model"] for r in stub.requests] == ["gpt-4.1-mini", "gpt-4.1-mini"]
    assert "You are a test agent." in str(stub.requests[0]["messages"][0])


async def test_console_against_a_running_jackfield_run_prints_the_tool_call_and_the_reply(
    tmp_path: Path,
) -> None:
    """`jackfield run ../config` from another directory serves the console's job, and keeps
    serving new jobs the last good snapshot while a servers.d file is broken."""
    plain_config(tmp_path / "config", {"echo": echo_server("echo", "--tools", "echo")})
    command = [str(JACKFIELD), "run", "../config", "--no-agent"]
    env = {"JACKFIELD_CONFIG_DIR": "."}  # the working directory holds no config
    with jackfield_run(tmp_path / "work", tmp_path / "config", env=env, command=command) as jf:
        jf.servers_ready("echo")
        async with OpenAIStub() as stub:
            chat = console_env(OPENAI_API_KEY="test", OPENAI_BASE_URL=stub.base_url,
                               JACKFIELD_HUB_TOKEN=HUB_TOKEN)  # fmt: skip
            line = 'call echo_echo {"text": "through the deployment"}\n'
            for attempt in ("healthy", "with a broken file"):
                code, out, err = await console(
                    None, tmp_path, chat, line, 60.0, "--hub-url", jf.hub_url
                )
                assert code == 0, f"{attempt}: {err}"
                shown = out.splitlines()
                assert (
                    '  [tool] echo_echo {"text":"through the deployment"}'
                    " -> ok: through the deployment"
                ) in shown, f"{attempt}: {out}"
                assert "agent> The tool said: through the deployment" in shown, out
                (tmp_path / "config" / "servers.d" / "broken.yaml").write_text("kind: [\n")
                jf.until(lambda s: s["config"]["errors"], what="the broken file is refused")
        assert jf.stop() == 0
