"""Which LiveKit rooms get the agent: `spec.dispatch` as the worker's `agent_name`. Pure.

LiveKit's rule: a worker registered with an empty agent_name is dispatched automatically to
every new room; one with a name only where a dispatch asks for that name (the AgentDispatch
API, a SIP dispatch rule, or a token's RoomAgentDispatch).
"""

from __future__ import annotations

from jackfield.spec.models import AgentDocument


def livekit_agent_name(document: AgentDocument) -> str:
    """The agent_name to register the worker with: "" for automatic dispatch, else the name."""
    dispatch = document.spec.dispatch
    if dispatch.mode == "automatic":
        return ""
    return dispatch.agent_name or document.metadata.name
