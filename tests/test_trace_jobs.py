"""A LiveKit turn, the hub and the upstream request share one trace (issue #20), shown in real
processes: `jackfield run` with its worker (tests/job_host.py) launches a real job process
whose AgentSession runs on the scripted chat model (tests/support/openai_stub.py: `call TOOL
{json}`). Only the OTEL_* variables of the `jackfield run` process say where spans go; the job
gets them from its parent (JobConfig), not from its forkserver's environment.

    job:       function_tool (LiveKit) -> tools/call traced_lookup (CLIENT, HubLink)
    jackfield: tools/call traced_lookup (SERVER) -> jackfield.call -> tools/call lookup (CLIENT)
    upstream:  receives the last one's traceparent
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jackfield.shell.text_link import TextLink
from tests.support.jobs import JOB_HOST, JOB_START, PIPELINE_AGENT, TURN, job_host_env, tool_calls
from tests.support.openai_stub import OpenAIStub
from tests.support.process import jackfield_run, plain_config, write_config
from tests.test_trace_calls import (
    SECRET_ENV,
    SECRET_HIDDEN,
    SECRETS,
    Receiver,
    assert_no_secret,
    one,
    receiving,
    recorded,
    traced_yaml,
)

pytestmark = pytest.mark.timeout(240)

CLIENT, SERVER = Receiver.SPAN_KIND["CLIENT"], Receiver.SPAN_KIND["SERVER"]


async def test_a_job_turns_tool_call_and_the_hub_and_the_upstream_share_one_trace(
    tmp_path: Path,
) -> None:
    record = tmp_path / "traced.jsonl"
    root = plain_config(tmp_path / "config", {"traced": traced_yaml(record)})
    write_config(root, {"agent.yaml": PIPELINE_AGENT})
    async with OpenAIStub() as openai, TextLink() as link, receiving() as receiver:
        env = {**SECRETS, **receiver.environment(), **job_host_env(link, openai)}
        with jackfield_run(tmp_path / "work", root, env=env, command=JOB_HOST) as jackfield:
            end = await link.next_job(timeout=JOB_START)
            await end.until("agent", timeout=TURN)  # greeted
            turn = await end.turn('call traced_lookup {"query": "kettles"}', timeout=TURN)
            [call] = tool_calls(turn)
            assert not call["is_error"] and call["output"] == "found kettles (key)", call

            job = await receiver.until(
                lambda s: one(s, "tools/call traced_lookup", kind=CLIENT), "the job's span"
            )
            tool = await receiver.until(
                lambda s: one(s, "function_tool", span_id=job.parent_id), "LiveKit's span"
            )
            hub = await receiver.until(
                lambda s: one(s, "tools/call traced_lookup", kind=SERVER), "the hub's span"
            )
            manager = await receiver.until(
                lambda s: one(s, "jackfield.call traced_lookup"), "the manager's span"
            )
            upstream = await receiver.until(
                lambda s: one(s, "tools/call lookup", kind=CLIENT), "the upstream span"
            )
            assert await asyncio.to_thread(jackfield.stop) == 0
    assert tool.trace_id == job.trace_id == hub.trace_id == manager.trace_id == upstream.trace_id
    assert (hub.parent_id, manager.parent_id, upstream.parent_id) == (
        job.span_id,
        hub.span_id,
        manager.span_id,
    )
    [got] = [r["meta"] for r in recorded(record) if r["tool"] == "lookup"]
    assert got["traceparent"].split("-")[1:3] == [upstream.trace_id, upstream.span_id]
    # each process says who it is; LiveKit's spans come from the job's own provider
    assert (tool.service, job.service) == ("jackfield-job", "jackfield-job")
    assert {hub.service, manager.service, upstream.service} == {"jackfield"}
    assert tool.scope == "livekit-agents"
    assert job.attributes["mcp.session.id"] and job.attributes["network.transport"] == "tcp"
    # LiveKit records the call's arguments unless told not to: it was (allow_pii=False)
    job_spans = [s for s in receiver.spans if s.service == "jackfield-job"]
    assert "kettles" not in repr([s.attributes for s in job_spans])
    assert_no_secret(receiver.spans)
    assert SECRET_ENV not in repr(receiver.spans) and SECRET_HIDDEN not in repr(receiver.spans)
