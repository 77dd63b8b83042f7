"""What an upstream server asks the hub's client during a call, and how the answer comes back.

An upstream's questions (elicitation, form or URL mode) are forwarded as they came:

- to a **handshake-era** client as an `elicitation/create` request on the call's own stream
  (`channel_of`), its progress notices with `report_progress`;
- to a **2026-07-28** client, which takes no server requests, as an `input_required` result:
  the call runs in a task of its own (`_Call`), each round answers with the questions asked
  meanwhile, and the client's next round (its `request_state`) brings the answers back
  (`Rounds`). A round that does not come back within ROUND_TTL cancels the call.

A client that declared no elicitation (or not the URL mode asked for) gets a decline with the
reason in `_meta[REASON_META]`, which the upstream server receives.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import mcp_types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata

from jackfield.shell.call_channel import CallChannel
from jackfield.shell.servers import error_result

log = logging.getLogger(__name__)

StartCall = Callable[[CallChannel], Coroutine[Any, Any, mcp_types.CallToolResult]]
"""Starts the call with the channel its progress and questions go to."""

REASON_META = "jackfield/reason"
"""Key of a declined ElicitResult's `_meta`: why the hub declined for its client."""
NO_ELICITATION = "the client of this call declared no elicitation, so it cannot be asked"
NO_URL_ELICITATION = "the client of this call declared no URL elicitation"
NO_BACK_CHANNEL = "the client of this call is on a connection that carries no server requests"
NO_ANSWER = "the client answered the call's next round without an answer to this question"
ROUND_TTL = 300.0
"""Seconds a 2026-07-28 client has to send the next round of a call that asked it something;
after that the call is cancelled (nobody could collect its result)."""
EXPIRED_ROUND = (
    "This call waited too long for its answer and was stopped; please call the tool again."
)


def declined(reason: str) -> mcp_types.ElicitResult:
    return mcp_types.ElicitResult(action="decline", _meta={REASON_META: reason})


async def forward_question(
    ctx: ServerRequestContext[Any], params: mcp_types.ElicitRequestParams
) -> mcp_types.ElicitResult | mcp_types.ErrorData:
    """An upstream's question, as it came, to the client of the call (`ctx`), on the call's
    own request (streamable HTTP: its response stream); the client's answer, or a decline
    saying why it cannot be asked."""
    session = ctx.session
    reason = can_ask(session.client_capabilities, params)
    if reason is not None:
        return declined(reason)
    if not session.can_send_request or ctx.request_id is None:
        return declined(NO_BACK_CHANNEL)
    if isinstance(params, mcp_types.ElicitRequestURLParams) and params.elicitation_id is None:
        # a 2026-07-28 upstream's URL question has no id; a handshake-era client needs one
        params = params.model_copy(update={"elicitation_id": f"jackfield-{secrets.token_hex(8)}"})
    try:
        return await session.send_request(
            mcp_types.ElicitRequest(params=params), mcp_types.ElicitResult,
            metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
        )  # fmt: skip
    except MCPError as e:  # the client refused: the server hears its words
        return e.error


def can_ask(
    declared: mcp_types.ClientCapabilities | None, params: mcp_types.ElicitRequestParams
) -> str | None:
    """Why a client with these capabilities cannot be asked this question (None: it can)."""
    elicitation = declared.elicitation if declared is not None else None
    if elicitation is None:
        return NO_ELICITATION
    if isinstance(params, mcp_types.ElicitRequestURLParams) and elicitation.url is None:
        return NO_URL_ELICITATION
    return None


class _Call:
    """One 2026-07-28 client's call across its `input_required` rounds: the call runs in a
    task of its own; the upstream's questions wait for the round that brings their answers.
    Progress goes to whichever round is being served (between rounds there is none to take
    it)."""

    def __init__(
        self,
        first: ServerRequestContext[Any],
        start: StartCall,
    ) -> None:
        self.declared = first.session.client_capabilities
        self.timer: asyncio.TimerHandle | None = None
        """Armed while the call waits for the client's next round (ROUND_TTL)."""
        self._serving: ServerRequestContext[Any] | None = None
        self._ids = itertools.count(1)
        self._unasked: dict[str, mcp_types.ElicitRequestParams] = {}
        self._waiting: dict[str, asyncio.Future[mcp_types.ElicitResult | mcp_types.ErrorData]] = {}
        self._wake = asyncio.Event()
        self.task = asyncio.create_task(
            start(CallChannel(progress=self._progress, elicit=self._ask))
        )

    async def _progress(self, progress: float, total: float | None, message: str | None) -> None:
        if self._serving is not None:
            await self._serving.session.report_progress(progress, total, message)

    async def _ask(
        self, params: mcp_types.ElicitRequestParams
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        reason = can_ask(self.declared, params)
        if reason is not None:
            return declined(reason)
        key = f"elicit-{next(self._ids)}"
        answer: asyncio.Future[mcp_types.ElicitResult | mcp_types.ErrorData]
        answer = asyncio.get_running_loop().create_future()
        self._waiting[key] = answer
        self._unasked[key] = params
        self._wake.set()
        try:
            return await answer
        finally:
            self._waiting.pop(key, None)
            self._unasked.pop(key, None)

    def answer(self, responses: Mapping[str, Any]) -> None:
        """The client's answers, from its next round, to the questions it was asked."""
        for key, waiting in list(self._waiting.items()):
            if key in self._unasked or waiting.done():
                continue
            response = responses.get(key)
            waiting.set_result(response if isinstance(response, mcp_types.ElicitResult) else
                               mcp_types.ErrorData(code=mcp_types.INVALID_PARAMS,
                                                   message=NO_ANSWER))  # fmt: skip

    async def next(
        self, ctx: ServerRequestContext[Any]
    ) -> mcp_types.CallToolResult | dict[str, mcp_types.InputRequest]:
        """Serve one round: the call's result, or the questions to ask before the next."""
        self._serving = ctx
        try:
            while not self._unasked and not self.task.done():
                self._wake.clear()
                woken = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({self.task, woken}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
        finally:
            self._serving = None
        if self._unasked:
            asked = {key: mcp_types.ElicitRequest(params=params)
                     for key, params in self._unasked.items()}  # fmt: skip
            self._unasked.clear()
            return dict(asked)
        return self.task.result()


def channel_of(ctx: ServerRequestContext[Any]) -> CallChannel:
    """A handshake-era client's call: the upstream's progress and questions go to it on the
    call's own request."""
    session = ctx.session

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        await session.report_progress(progress, total, message)  # no token: a no-op

    async def elicit(
        params: mcp_types.ElicitRequestParams,
    ) -> mcp_types.ElicitResult | mcp_types.ErrorData:
        return await forward_question(ctx, params)

    return CallChannel(progress=progress, elicit=elicit)


class Rounds:
    """The 2026-07-28 calls waiting for their client's next round, by `request_state`."""

    def __init__(self) -> None:
        self._waiting: dict[str, _Call] = {}

    async def serve(
        self,
        ctx: ServerRequestContext[Any],
        params: mcp_types.CallToolRequestParams,
        start: StartCall,
    ) -> mcp_types.CallToolResult | mcp_types.InputRequiredResult:
        """One round: the first starts the call; while the upstream asks questions, each
        round answers with them (`input_required`) and the next brings the client's answers
        back, until the call's result."""
        if params.request_state is not None:
            call = self._waiting.pop(params.request_state, None)
            if call is None:
                return error_result(EXPIRED_ROUND)
            if call.timer is not None:
                call.timer.cancel()
            call.answer(params.input_responses or {})
        else:
            call = _Call(ctx, start)
        try:
            outcome = await call.next(ctx)
        except BaseException:  # the client cancelled this round: the call goes too
            call.task.cancel()
            raise
        if isinstance(outcome, mcp_types.CallToolResult):
            return outcome
        token = secrets.token_urlsafe(24)
        self._waiting[token] = call
        call.timer = asyncio.get_running_loop().call_later(ROUND_TTL, self._expire, token)
        return mcp_types.InputRequiredResult(input_requests=outcome, request_state=token)

    def _expire(self, token: str) -> None:
        call = self._waiting.pop(token, None)
        if call is not None:
            log.info("a call's questions were not answered within %g s: cancelled", ROUND_TTL)
            call.task.cancel()

    async def stop(self) -> None:
        for call in self._waiting.values():
            if call.timer is not None:
                call.timer.cancel()
            call.task.cancel()
        await asyncio.gather(*(c.task for c in self._waiting.values()), return_exceptions=True)
        self._waiting.clear()
