"""The per-server catalog limits and the per-tool screening of `tools/list`, as plain functions:
what is withheld, what is kept, and how each withheld tool is named."""

from __future__ import annotations

from typing import Any

import pytest

from jackfield.core.catalog import UpstreamTool, build, server_entries
from jackfield.core.limits import CatalogLimits
from jackfield.shell.transports import screened
from jackfield.spec.models import ToolsSpec

SCHEMA = {"type": "object"}
LIMITS = CatalogLimits(description_bytes=10, input_schema_bytes=40, tools_per_server=3)


def tool(name: str, description: str = "", schema: dict[str, Any] | None = None) -> UpstreamTool:
    return UpstreamTool(name, description, SCHEMA if schema is None else schema)


def spec(**fields: object) -> ToolsSpec:
    return ToolsSpec.model_validate(fields)


def offered(
    server: str, tools: list[UpstreamTool], **fields: object
) -> tuple[list[str], tuple[str, ...]]:
    catalog = build({server: server_entries(server, tools, spec(**fields), LIMITS)})
    return sorted(catalog.entries), catalog.withheld.get(server, ())


def test_a_description_at_the_limit_is_kept_and_one_byte_over_is_withheld_and_named() -> None:
    names, withheld = offered("s", [tool("fits", "x" * 10), tool("long", "x" * 11)])
    assert names == ["s_fits"]
    assert withheld == ("'long': withheld: description is 11 bytes (limit 10 bytes)",)


def test_sizes_are_counted_in_utf8_bytes_not_characters() -> None:
    names, withheld = offered("s", [tool("accents", "é" * 6)])  # 6 characters, 12 bytes
    assert names == []
    assert withheld == ("'accents': withheld: description is 12 bytes (limit 10 bytes)",)


def test_an_input_schema_over_the_limit_is_withheld_and_named() -> None:
    big = {"type": "object", "properties": {"a": {"type": "string", "enum": ["x" * 30]}}}
    names, withheld = offered("s", [tool("small"), tool("big", schema=big)])
    assert names == ["s_small"]
    assert withheld == ("'big': withheld: inputSchema is 96 bytes (limit 40 bytes)",)


def test_a_server_over_the_tool_count_keeps_its_first_tools_and_notes_the_rest_once() -> None:
    tools = [tool(f"t{i}") for i in range(10)]
    names, withheld = offered("s", tools)
    assert names == ["s_t0", "s_t1", "s_t2"]
    assert withheld == (
        "7 tools withheld: 10 offered, at most 3 per server; the first 3 are kept"
        " (withheld: 't3', 't4', 't5', 't6', 't7' and 2 more)",
    )


def test_withheld_and_excluded_tools_do_not_count_toward_the_limit() -> None:
    tools = [tool("bad", "x" * 99), tool("skip_me"), *(tool(f"t{i}") for i in range(3))]
    names, withheld = offered("s", tools, exclude=["skip_*"])
    assert names == ["s_t0", "s_t1", "s_t2"]
    assert withheld == ("'bad': withheld: description is 99 bytes (limit 10 bytes)",)


def test_an_excluded_tool_over_a_limit_is_not_reported() -> None:
    assert offered("s", [tool("ok"), tool("long", "x" * 99)], exclude=["long"]) == (["s_ok"], ())


def test_a_tool_that_failed_validation_is_withheld_with_its_reason() -> None:
    invalid = UpstreamTool("broken", "", {}, problem="inputSchema: Field required")
    names, withheld = offered("s", [tool("ok"), invalid])
    assert names == ["s_ok"]
    assert withheld == ("'broken': withheld: invalid listing (inputSchema: Field required)",)


def test_a_withheld_tool_claims_no_name_another_server_could_have() -> None:
    a = server_entries("a", [tool("x", "x" * 99)], spec(prefix=""), LIMITS)
    b = server_entries("b", [tool("x")], spec(prefix=""), LIMITS)
    catalog = build({"a": a, "b": b})
    assert catalog.entries["x"].server == "b"
    assert catalog.conflicts == {}


def test_a_long_upstream_name_is_clipped_in_its_note() -> None:
    _, [note] = offered("s", [tool("n" * 500, "x" * 99)])
    assert note.startswith("'" + "n" * 80 + "...': withheld: description")


# --- screening a raw tools/list result, tool by tool ---------------------------------------------

GOOD = {"name": "good", "inputSchema": SCHEMA}


@pytest.mark.parametrize(
    ("bad", "name", "reason"),
    [
        ({"name": "s", "inputSchema": "object"}, "s", "inputSchema: Input should be a valid dict"),
        ({"name": "t", "inputSchema": {"type": "array"}}, "t", "inputSchema.type: Input should be"),
        ({"inputSchema": SCHEMA}, "(tool #2, no valid name)", "name: Field required"),
        (42, "(tool #2, no valid name)", "Input should be a valid dictionary"),
    ],
)
@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_screening_keeps_valid_tools_and_names_each_invalid_one(
    bad: Any, name: str, reason: str, version: str
) -> None:
    kept, rejected = screened({"tools": [GOOD, bad, GOOD]}, version)
    assert kept == [GOOD, GOOD]
    assert list(rejected) == [name]
    assert rejected[name].startswith(reason)


def test_screening_checks_each_tool_against_the_negotiated_revision() -> None:
    modern = {"tools": [GOOD, {"name": "x"}], "ttlMs": 0, "cacheScope": "private",
              "resultType": "complete"}  # fmt: skip
    kept, rejected = screened(modern, "2026-07-28")
    assert kept == [GOOD]
    assert rejected == {"x": "inputSchema: Field required"}


def test_a_result_invalid_apart_from_its_tools_is_left_whole_for_the_sdk_to_report() -> None:
    result = {"tools": [GOOD, {"name": "x"}], "nextCursor": 7}
    assert screened(result, "2025-11-25") == ([GOOD, {"name": "x"}], {})


def test_a_2026_tool_with_an_invalid_header_annotation_is_named_not_dropped_silently() -> None:
    bad = {"name": "h", "inputSchema": {"type": "object", "properties": {
        "q": {"type": "object", "x-mcp-header": "Q"}}}}  # fmt: skip
    modern = {"tools": [GOOD, bad], "ttlMs": 0, "cacheScope": "private", "resultType": "complete"}
    kept, rejected = screened(modern, "2026-07-28")
    assert kept == [GOOD]
    assert rejected["h"].startswith("inputSchema: invalid x-mcp-header (property 'q': ")
    assert screened({"tools": [GOOD, bad]}, "2025-11-25") == ([GOOD, bad], {})
