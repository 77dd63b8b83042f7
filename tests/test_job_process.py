"""The LiveKit worker inside `jackfield run`, as a process: its health in /status and /readyz,
and SIGTERM while a job's tool call runs (drain, then exit)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import pytest

from jackfield.shell.text_link import TextLink
from tests.support.jobs import (
    JOB_HOST,
    JOB_START,
    PIPELINE_AGENT,
    TURN,
    job_host_env,
    said,
    tool_calls,
)
from tests.support.openai_stub import OpenAIStub
from tests.support.process import (
    assert_clean_exit,
    echo_yaml,
    free_port,
    jackfield_run,
    plain_config,
    write_config,
)

pytestmark = pytest.mark.timeout(180)


def test_job_worker_pointed_at_a_closed_port_ends_failed_and_readyz_is_503(
    tmp_path: Path,
) -> None:
    root = plain_config(tmp_path / "config", {"echo": echo_yaml("echo")})
    write_config(root, {"agent.yaml": PIPELINE_AGENT + "  dispatch: {mode: explicit}\n"})
    env = {
        "LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}", "LIVEKIT_API_KEY": "key",
        "LIVEKIT_API_SECRET": "secret-0123456789", "JACKFIELD_LIVEKIT_MAX_RETRY": "0",
        "JACKFIELD_AGENT_IDLE_PROCESSES": "0",
    }  # fmt: skip
    with jackfield_run(tmp_path / "work", root, env=env, command=[
        str(Path(sys.executable).parent / "jackfield"), "run"
    ]) as jf:  # fmt: skip
        status = jf.until(
            lambda s: (s["agent"]["worker"] or {}).get("state") == "Failed",
            what="the worker gives up on LiveKit",
        )
        assert status["agent"]["enabled"] is True
        assert status["agent"]["worker"]["agent_name"] == "assistant", "explicit dispatch"
        assert "failed to connect to livekit" in status["agent"]["worker"]["reason"]
        assert "secret-0123456789" not in json.dumps(status) + jf.log_path.read_text()
        body = jf.wait_readyz(503)
        assert "agent worker failed" in body
        assert jf.metric('jackfield_agent_worker_state{state="Failed"}') == 1.0
        assert jf.stop() == 0


async def test_job_sigterm_during_a_slow_tool_call_lets_it_finish_then_exits_0(
    tmp_path: Path,
) -> None:
    root = plain_config(tmp_path / "config", {"echo": echo_yaml("echo")})
    write_config(root, {"agent.yaml": PIPELINE_AGENT})
    async with OpenAIStub() as openai, TextLink() as link:
        env = job_host_env(link, openai)
        with jackfield_run(tmp_path / "work", root, env=env, command=JOB_HOST) as jf:
            end = await link.next_job(timeout=JOB_START)
            await end.until("agent", timeout=TURN)  # greeted
            jf.wait_ready()
            slow = asyncio.ensure_future(end.turn('call echo_slow {"seconds": 1.5}', timeout=TURN))
            requests = len(openai.requests)
            while len(openai.requests) == requests:  # the LLM asked for the call
                await asyncio.sleep(0.02)
            children = jf.children()
            assert len(children) >= 2, "the job process and the echo server"
            jf.send(signal.SIGTERM)
            sent = time.monotonic()
            turn = await slow
            [call] = tool_calls(turn)
            assert not call["is_error"] and call["output"].startswith("slept 1.5"), call
            assert said(turn)[-1] == f"The tool said: {call['output']}"  # after any filler
            assert jf.readyz()[0] == 503, "readiness failed at once"
            hung_up = time.monotonic()
            await end.aclose()  # the caller hangs up: the job ends and the drain completes
            code = await asyncio.to_thread(jf.wait_exit, 30)
            assert time.monotonic() - sent < 10, "within JACKFIELD_SHUTDOWN_GRACE"
            assert time.monotonic() - hung_up < 8, "no 15 s stall at the end of a job"
            assert_clean_exit(jf, code, children)
