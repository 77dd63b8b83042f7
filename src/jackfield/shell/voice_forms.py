"""A server's questions during a call (MCP elicitation), asked by voice.

An upstream `elicitation/create` travels through the hub to the job that made the call
(`HubLink.elicit`). A caller cannot open a link or see a form, so:

- **URL mode** is declined, and the agent says why (the caller cannot open a web page).
- **Form mode** whose schema is not flat (`core.voice.voice_form_problem`) is declined likewise.
- Otherwise the agent says the server's message (naming the fields when the message only
  introduces them), waits up to the call's `answer_timeout` for the caller, and turns what was
  said into the fields with a text model call forced to one function whose parameters are the
  requested schema (`form_filler`). The fields are checked against the schema
  (`core.voice.checked_fields`); a problem is asked about once more, then the answer is cancel.
  Silence is cancel; a plain refusal ("no", "cancel", "never mind") is decline. On realtime the
  same text model fills the form: a realtime model cannot make a side call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import mcp_types
from livekit.agents import llm
from livekit.agents.llm import function_tool

from jackfield.core.voice import checked_fields, refuses, spoken_form, voice_form_problem
from jackfield.shell.caller import Caller
from jackfield.spec.models import AgentVoiceSpec

log = logging.getLogger(__name__)

FILL_TOOL = "fill_form"
FILL_PROMPT = (
    "A phone caller was asked a question for a form. Record what they answered by calling"
    f" {FILL_TOOL}. Use only what the caller said; leave out the fields they did not answer."
    "\nThe question was: "
)
NO_LINKS = "That needs a web page, and I can't open links on a phone call, so I'll skip it."
NO_FORM = "That needs a form I can't fill in by voice ({problem}), so I'll skip it."
NO_FILLER = "I can't take answers for forms right now, so I'll skip it."
ASK_AGAIN = "Sorry, {problem}. "

FillForm = Callable[[str, Mapping[str, Any], str], Awaitable[dict[str, Any]]]
"""(the server's message, the form's schema, what the caller said) -> the fields the model read."""


class VoiceForms:
    """Answers a server's questions by asking the caller (`HubLink.elicit`)."""

    def __init__(self, caller: Caller, fill: FillForm | None) -> None:
        self.caller = caller
        self.fill = fill

    async def elicit(self, params: mcp_types.ElicitRequestParams) -> mcp_types.ElicitResult:
        running = self.caller.current()
        tool = running.tool if running is not None else ""
        timeout = (
            running.voice.answer_timeout
            if running is not None
            else float(AgentVoiceSpec().answer_timeout or 15.0)
        )
        session = self.caller.session
        if session is None:
            return self._answered("decline", params, tool, reason="no caller")
        if isinstance(params, mcp_types.ElicitRequestURLParams):
            self.caller.say(session, NO_LINKS, kind="notice", tool=tool)
            return self._answered("decline", params, tool, reason="url mode")
        schema = dict(params.requested_schema)
        if (problem := voice_form_problem(schema)) is not None:
            self.caller.say(session, NO_FORM.format(problem=problem), kind="notice", tool=tool)
            return self._answered("decline", params, tool, reason=problem)
        if self.fill is None:
            self.caller.say(session, NO_FILLER, kind="notice", tool=tool)
            return self._answered("decline", params, tool, reason="no form filler")
        handle = running.handle if running is not None else None
        question = spoken_form(params.message, schema)
        asked = question
        for _ in range(2):
            heard = await self.caller.ask(session, asked, timeout=timeout, kind="elicitation",
                                          tool=tool, handle=handle)  # fmt: skip
            if heard is None:
                return self._answered("cancel", params, tool, reason="timeout")
            if refuses(heard):
                return self._answered("decline", params, tool, reason="refused")
            values, problems = checked_fields(schema, await self._fields(params, heard))
            if not problems:
                return self._answered("accept", params, tool, content=values)
            asked = ASK_AGAIN.format(problem=problems[0]) + question
        return self._answered("cancel", params, tool, reason="unclear")

    async def _fields(
        self, params: mcp_types.ElicitRequestFormParams, heard: str
    ) -> dict[str, Any]:
        assert self.fill is not None
        try:
            return await self.fill(params.message, params.requested_schema, heard)
        except Exception as e:  # a failed model call is an unclear answer, asked once more
            log.warning("filling a form from the caller's answer failed: %s", e)
            return {}

    def _answered(
        self,
        action: str,
        params: mcp_types.ElicitRequestParams,
        tool: str,
        *,
        content: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> mcp_types.ElicitResult:
        report: dict[str, Any] = {"tool": tool, "mode": params.mode, "action": action,
                                  "at": time.monotonic()}  # fmt: skip
        if content is not None:
            report["content"] = content
        if reason is not None:
            report["reason"] = reason
        self.caller.notify({"elicitation": report})
        if action == "accept":
            return mcp_types.ElicitResult(action="accept", content=content)
        return mcp_types.ElicitResult(action="decline" if action == "decline" else "cancel")


def form_filler(model: Callable[[], llm.LLM[Any]]) -> FillForm:
    """Fill a form from the caller's words with one text model call (`model()` gives the
    model), forced to call FILL_TOOL whose parameters are the form's schema."""

    async def never_run(raw_arguments: dict[str, Any]) -> None:
        return None

    async def fill(message: str, schema: Mapping[str, Any], said: str) -> dict[str, Any]:
        tool = function_tool(never_run, raw_schema={
            "name": FILL_TOOL, "description": "Record the caller's answers.",
            "parameters": dict(schema),
        })  # fmt: skip
        chat = llm.ChatContext.empty()
        chat.add_message(role="system", content=FILL_PROMPT + " ".join(message.split()))
        chat.add_message(role="user", content=said)
        forced: llm.ToolChoice = {"type": "function", "function": {"name": FILL_TOOL}}
        response = await model().chat(chat_ctx=chat, tools=[tool], tool_choice=forced).collect()
        for call in response.tool_calls:
            if call.name == FILL_TOOL:
                fields = json.loads(call.arguments or "{}")
                return fields if isinstance(fields, dict) else {}
        return {}

    return fill
