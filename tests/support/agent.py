"""The one fake: a scripted `livekit.agents.llm.LLM` that drives a real AgentSession.

Script, read from the last user message:
  `call TOOL {json}`  -> emits one tool call (then speaks the tool's output when it returns)
  anything else       -> says "ok"
Every turn records what the model was given (instructions and tool names and schemas), so
tests assert on what the LLM saw, not on logs.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from livekit.agents import APIConnectOptions, llm
from livekit.agents.llm.tool_context import RawFunctionTool
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr


@dataclass(frozen=True)
class Turn:
    instructions: str
    tools: tuple[str, ...]
    schemas: dict[str, Any]
    said: str


class ScriptedLLM(llm.LLM[Any]):
    def __init__(self) -> None:
        super().__init__()
        self.turns: list[Turn] = []
        self._ids = itertools.count(1)

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _Stream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)

    @property
    def last(self) -> Turn:
        return self.turns[-1]


def _instructions(chat_ctx: llm.ChatContext) -> str:
    return "\n".join(
        m.text_content or "" for m in chat_ctx.messages() if m.role in ("system", "developer")
    )


def _schemas(tools: list[llm.Tool]) -> dict[str, Any]:
    return {t.id: t.info.raw_schema for t in tools if isinstance(t, RawFunctionTool)}


class _Stream(llm.LLMStream):
    def __init__(
        self,
        scripted: ScriptedLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(scripted, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self.scripted = scripted

    async def _run(self) -> None:
        items = self._chat_ctx.items
        last = items[-1] if items else None
        chunk_id = f"chunk-{next(self.scripted._ids)}"
        tool_call: llm.FunctionToolCall | None = None
        said = "ok"
        if isinstance(last, llm.FunctionCallOutput):
            said = f"{'error' if last.is_error else 'result'}: {last.output}"
        elif isinstance(last, llm.ChatMessage) and (last.text_content or "").startswith("call "):
            _, name, *rest = (last.text_content or "").split(" ", 2)
            arguments = rest[0] if rest else "{}"
            json.loads(arguments)  # the script must be valid
            tool_call = llm.FunctionToolCall(
                name=name, arguments=arguments, call_id=f"call-{next(self.scripted._ids)}"
            )
            said = ""
        self.scripted.turns.append(
            Turn(
                instructions=_instructions(self._chat_ctx),
                tools=tuple(sorted(t.id for t in self._tools)),
                schemas=_schemas(self._tools),
                said=said,
            )
        )
        delta = llm.ChoiceDelta(
            role="assistant", content=said or None, tool_calls=[tool_call] if tool_call else []
        )
        self._event_ch.send_nowait(llm.ChatChunk(id=chunk_id, delta=delta))
