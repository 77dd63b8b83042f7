"""The caller context, pure (issue #16): its names, its header, access selectors, hidden
arguments, and `${caller.*}` expansion in connections."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any
from unittest.mock import create_autospec

import pytest
from livekit import rtc

from jackfield.core.caller_context import (
    ANONYMOUS,
    CONTEXT_NAMES,
    MAX_CONTEXT_BYTES,
    CallerContext,
    MissingContext,
    admits,
    name_problem,
    with_hidden,
    without_hidden,
)
from jackfield.core.connection import context_names, identity_scoped, redact, resolve
from jackfield.core.expansion import expand, problems
from jackfield.spec.models import AccessSpec, MCPServerSpec, ToolsSpec

ALICE = CallerContext(
    identity="alice", name="Alice Liddell", attributes={"tenant": "acme", "lk.role": "admin"},
    room="support-1", metadata='{"plan": "gold", "seats": 3}',
)  # fmt: skip
BOB = CallerContext(identity="bob", attributes={"tenant": "globex"}, room="support-2")


def test_caller_context_values_are_named_as_config_refers_to_them() -> None:
    assert ALICE.values() == {
        "caller.identity": "alice",
        "caller.name": "Alice Liddell",
        "caller.attributes.tenant": "acme",
        "caller.attributes.lk.role": "admin",
        "room.name": "support-1",
        "job.metadata": '{"plan": "gold", "seats": 3}',
        "job.metadata.plan": "gold",
        "job.metadata.seats": "3",
    }
    assert ANONYMOUS.values() == {}
    # metadata that is not a JSON object has no fields, only itself
    assert CallerContext(metadata="[1, 2]").values() == {"job.metadata": "[1, 2]"}
    assert CallerContext(metadata="plain text").values() == {"job.metadata": "plain text"}


def test_caller_context_travels_in_its_header_and_back() -> None:
    assert CallerContext.from_header(ALICE.to_header()) == ALICE
    assert CallerContext.from_header(ANONYMOUS.to_header()) == ANONYMOUS


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("%%%", "not base64url JSON"),
        (base64.urlsafe_b64encode(b"[1]").decode(), "not a JSON object"),
        (base64.urlsafe_b64encode(b'{"identity": 7}').decode(), "not a string"),
        (base64.urlsafe_b64encode(b'{"attributes": {"a": 1}}').decode(), "not a string"),
        ("A" * (MAX_CONTEXT_BYTES + 1), "over"),
    ],
)
def test_a_caller_header_that_is_not_a_context_is_refused_with_the_reason(
    value: str, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        CallerContext.from_header(value)


def test_a_caller_context_too_large_for_its_header_says_so() -> None:
    huge = CallerContext(identity="x", attributes={"blob": "y" * MAX_CONTEXT_BYTES})
    with pytest.raises(ValueError, match="too large"):
        huge.to_header()


def test_caller_context_of_a_livekit_participant_keeps_only_strings() -> None:
    participant = SimpleNamespace(identity="sip_+15550100", name="", attributes={"tenant": "acme"})
    got = CallerContext.of(participant, room="call-7", metadata='{"plan": "gold"}')
    assert got == CallerContext(
        "sip_+15550100", "", {"tenant": "acme"}, "call-7", '{"plan": "gold"}'
    )
    # livekit's fake-job room: an autospec participant, whose name and attributes are mocks
    mock: Any = create_autospec(rtc.RemoteParticipant, instance=True)
    mock.identity = "mock_user"
    assert CallerContext.of(mock, room="r", metadata="") == CallerContext(
        identity="mock_user", room="r", metadata=""
    )
    assert CallerContext.of(None, room="r", metadata=None) == CallerContext(room="r")


@pytest.mark.parametrize(
    "name",
    ["caller.identity", "caller.name", "room.name", "job.metadata", "caller.attributes.tenant",
     "caller.attributes.lk.role", "job.metadata.plan"],
)  # fmt: skip
def test_known_caller_context_names_have_no_problem(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name", ["caller.email", "caller.attributes.", "room.sid", "job.id", "user.identity"]
)
def test_unknown_caller_context_names_are_named_with_the_known_ones(name: str) -> None:
    message = name_problem(name)
    assert message is not None and repr(name) in message
    assert all(known in message for known in CONTEXT_NAMES)


def test_caller_access_selectors_match_any_one_with_all_of_its_fields() -> None:
    access = AccessSpec.model_validate(
        {"callers": [{"attributes": {"tenant": "acme", "lk.role": "adm*"}}, {"identity": "bob"}]}
    )
    assert admits(access, ALICE)
    assert admits(access, BOB)
    assert not admits(access, CallerContext(identity="carol", attributes={"tenant": "acme"}))
    assert not admits(access, ANONYMOUS)  # no caller matches no selector
    assert admits(None, ANONYMOUS)  # no access: everyone
    by_room = AccessSpec.model_validate({"callers": [{"room": "support-*", "identity": "a*"}]})
    assert admits(by_room, ALICE) and not admits(by_room, BOB)


def test_a_caller_selector_needs_something_to_match_and_callers_are_never_empty() -> None:
    with pytest.raises(ValueError, match="needs identity, attributes or room"):
        AccessSpec.model_validate({"callers": [{}]})
    with pytest.raises(ValueError, match="at least 1"):
        AccessSpec.model_validate({"callers": []})


def test_caller_hidden_arguments_by_tool_exact_name_else_first_glob_over_the_shared() -> None:
    tools = ToolsSpec.model_validate({"arguments": {
        "tenant": "acme",
        "get_*": {"user_id": "${caller.identity}"},
        "get_orders": {"user_id": "${caller.identity}", "scope": "orders"},
        "*": {"region": "eu"},
    }})  # fmt: skip
    assert tools.arguments_for("get_orders") == {
        "tenant": "acme", "user_id": "${caller.identity}", "scope": "orders"
    }  # fmt: skip
    assert tools.arguments_for("get_profile") == {"tenant": "acme", "user_id": "${caller.identity}"}
    assert tools.arguments_for("delete") == {"tenant": "acme", "region": "eu"}
    assert ToolsSpec().arguments_for("any") == {}


def test_caller_hidden_arguments_override_what_the_llm_sent_and_name_it() -> None:
    templates = {
        "user_id": "${caller.identity}",
        "tenant": "${TENANT}",
        "plan": "${job.metadata.plan}",
    }
    filled, overridden = with_hidden(
        {"user_id": "mallory", "query": "orders"}, templates, {"TENANT": "acme"}, ALICE
    )
    assert filled == {"user_id": "alice", "query": "orders", "tenant": "acme", "plan": "gold"}
    assert overridden == ("user_id",)
    with pytest.raises(MissingContext) as missing:
        with_hidden({}, {"user_id": "${caller.identity}"}, {}, ANONYMOUS)
    assert missing.value.name == "caller.identity"
    # a default stands in for a value the caller does not have
    assert with_hidden({}, {"t": "${caller.attributes.tier:-basic}"}, {}, BOB)[0] == {"t": "basic"}


def test_caller_hidden_arguments_leave_the_schema_the_llm_sees() -> None:
    properties = {"user_id": {"type": "string"}, "query": {"type": "string"}}
    schema = {"type": "object", "additionalProperties": False, "required": ["user_id", "query"],
              "properties": properties}  # fmt: skip
    assert without_hidden(schema, {"user_id"}) == {
        "type": "object", "additionalProperties": False, "required": ["query"],
        "properties": {"query": {"type": "string"}},
    }  # fmt: skip
    assert "required" not in without_hidden(schema, {"user_id", "query"})
    assert without_hidden(schema, set()) == schema


def _session_server(**fields: Any) -> MCPServerSpec:
    base = {} if "url" in fields else {"command": "srv"}
    return MCPServerSpec.model_validate({**base, "scope": "session", **fields})


def test_caller_names_expand_per_session_and_are_secrets_of_its_connection() -> None:
    spec = _session_server(
        args=["--user", "${caller.identity}"],
        env={"TENANT": "${caller.attributes.tenant}", "KEY": "${API_KEY}",
             "TIER": "${caller.attributes.tier:-basic}"},
    )  # fmt: skip
    assert identity_scoped(spec)
    connection = resolve(spec, {"API_KEY": "k-123456"}, ALICE.values())
    assert [a.reveal() for a in connection.args] == ["--user", "alice"]
    assert {k: v.reveal() for k, v in connection.env.items()} == {
        "TENANT": "acme", "KEY": "k-123456", "TIER": "basic"
    }  # fmt: skip
    assert connection.secrets == {"alice", "acme", "k-123456"}
    assert "alice" not in repr(connection) and redact("user alice", connection.secrets) == (
        "user ********"
    )
    # the connection the catalog is read over has no caller: defaults, else empty
    catalog = resolve(spec, {"API_KEY": "k-123456"})
    assert [a.reveal() for a in catalog.args] == ["--user", ""]
    assert catalog.env["TIER"].reveal() == "basic"
    with pytest.raises(KeyError, match="caller.identity"):
        resolve(spec, {"API_KEY": "k-123456"}, CallerContext(attributes={"tenant": "t"}).values())


def test_a_missing_caller_value_without_default_stops_the_session_connection() -> None:
    spec = _session_server(env={"TENANT": "${caller.attributes.tenant}"})
    with pytest.raises(KeyError, match="caller.attributes.tenant"):
        resolve(spec, {}, CallerContext(identity="carol").values())


def test_only_session_servers_naming_the_caller_are_identity_scoped() -> None:
    assert not identity_scoped(_session_server(env={"A": "${A}"}))
    assert not identity_scoped(
        MCPServerSpec.model_validate({"command": "srv", "env": {"U": "${caller.identity}"}})
    )
    remote = {"transport": "http", "url": "https://x/${caller.attributes.tenant}/mcp"}
    assert identity_scoped(_session_server(**remote))
    named = _session_server(env={"A": "a ${room.name}", "B": "${HOME}", "C": "$${a.b}"})
    assert context_names(named) == ("room.name",)


def test_caller_names_are_never_environment_variables() -> None:
    # a dotted name is the context's even when the environment has one of that name
    with pytest.raises(KeyError):
        expand("${caller.identity}", {"caller.identity": "env"}, {})
    assert problems("${caller.identity}", {}) == []  # allowed here; no env lookup
    refused = problems("x ${caller.identity}", {}, context="is not allowed here")
    assert [(p.offset, p.message) for p in refused] == [
        (2, "${caller.identity} is not allowed here")
    ]
    assert json.loads(json.dumps(ALICE.to_json())) == ALICE.to_json()
