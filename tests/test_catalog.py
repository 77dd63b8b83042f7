"""The tool catalog's rules, as plain functions over values: naming, filtering, conflicts, diffs."""

from __future__ import annotations

import re

import pytest

from jackfield.core.catalog import (
    MAX_NAME,
    Catalog,
    CatalogChange,
    Entry,
    UpstreamTool,
    build,
    compare,
    exposed_name,
    selected,
    server_entries,
)
from jackfield.spec.models import ToolsSpec

SCHEMA = {"type": "object"}


def tool(name: str, description: str = "") -> UpstreamTool:
    return UpstreamTool(name, description, SCHEMA)


def tools_spec(**fields: object) -> ToolsSpec:
    return ToolsSpec.model_validate(fields)


# --------------------------------------------------------------------------- naming


@pytest.mark.parametrize(
    ("prefix", "name", "exposed"),
    [
        ("echo_", "echo", "echo_echo"),
        ("", "get_time", "get_time"),
        ("srv_", "get.time", "srv_get_time"),
        ("srv_", "read file/now", "srv_read_file_now"),
        ("", "café", "caf_"),
        ("a-b_", "x-y", "a-b_x-y"),
        ("", "", "_"),
    ],
)
def test_exposed_names_keep_only_characters_every_provider_accepts(
    prefix: str, name: str, exposed: str
) -> None:
    assert exposed_name(prefix, name) == exposed


def test_a_name_of_exactly_the_limit_is_kept_whole() -> None:
    name = "t" * (MAX_NAME - 4)
    assert exposed_name("srv_", name) == "srv_" + name


def test_a_long_name_is_shortened_to_the_limit_with_a_stable_hash() -> None:
    long = "list_all_the_things_in_the_very_large_inventory_of_this_server_please"
    shortened = exposed_name("warehouse_", long)

    assert len(shortened) == MAX_NAME
    assert shortened == exposed_name("warehouse_", long)  # deterministic
    assert shortened.startswith(("warehouse_" + long)[: MAX_NAME - 9])
    assert re.fullmatch(r"[A-Za-z0-9_-]{55}_[0-9a-f]{8}", shortened)


def test_long_names_that_differ_only_at_the_end_stay_distinct() -> None:
    base = "x" * 80
    assert exposed_name("", base + "a") != exposed_name("", base + "b")
    # names that sanitise alike are told apart by the hash of what the server called them
    assert exposed_name("", base + ".") != exposed_name("", base + "/")


# --------------------------------------------------------------------------- filtering


@pytest.mark.parametrize(
    ("include", "exclude", "kept"),
    [
        (["*"], [], ["echo", "env", "get_time", "set_time", "Upper"]),
        (["*_time"], [], ["get_time", "set_time"]),
        (["*"], ["set_*", "env"], ["echo", "get_time", "Upper"]),
        (["e*", "get_time"], ["env"], ["echo", "get_time"]),
        ([], [], []),
        (["upper"], [], []),  # globs are case-sensitive, like the names they match
        (["e?ho", "[gs]et_time"], [], ["echo", "get_time", "set_time"]),
    ],
)
def test_include_then_exclude_globs_select_tools(
    include: list[str], exclude: list[str], kept: list[str]
) -> None:
    upstream = [tool(n) for n in ("echo", "env", "get_time", "set_time", "Upper")]
    spec = tools_spec(include=include, exclude=exclude)
    assert [t.name for t in selected(upstream, spec)] == kept


def test_the_default_prefix_is_the_server_name() -> None:
    [entry] = server_entries("clock", [tool("now", "The time.")], tools_spec())
    assert entry == Entry("clock_now", "clock", "now", "The time.", SCHEMA)


@pytest.mark.parametrize(("prefix", "exposed"), [("", "now"), ("t_", "t_now")])
def test_an_explicit_prefix_replaces_the_default(prefix: str, exposed: str) -> None:
    [entry] = server_entries("clock", [tool("now")], tools_spec(prefix=prefix))
    assert (entry.name, entry.upstream) == (exposed, "now")


# --------------------------------------------------------------------------- conflicts


def entries(server: str, *names: str, prefix: str = "") -> list[Entry]:
    return server_entries(server, [tool(n) for n in names], tools_spec(prefix=prefix))


def test_a_contested_name_goes_to_the_first_server_by_name_and_both_report_it() -> None:
    catalog = build(
        {"zeta": entries("zeta", "search", "only_zeta"), "alpha": entries("alpha", "search")}
    )

    assert catalog.entries["search"].server == "alpha"
    assert catalog.entries["only_zeta"].server == "zeta"
    note = "search: kept by server alpha, withheld from zeta"
    assert catalog.conflicts == {"alpha": (note,), "zeta": (note,)}
    assert catalog.by_server("zeta") == ("only_zeta",)
    assert catalog.by_server("alpha") == ("search",)


def test_the_winner_does_not_depend_on_the_order_servers_are_given() -> None:
    a, b = entries("a", "x"), entries("b", "x")
    assert build({"a": a, "b": b}) == build({"b": b, "a": a})


def test_two_tools_of_one_server_that_sanitise_alike_are_reported_once() -> None:
    catalog = build({"srv": entries("srv", "get.time", "get_time")})
    assert catalog.entries["get_time"].upstream == "get.time"
    assert catalog.conflicts == {
        "srv": ("get_time: tools 'get.time' and 'get_time' of server srv both map to it;"
                " 'get.time' kept",)
    }  # fmt: skip


def test_no_conflict_is_reported_when_names_differ() -> None:
    catalog = build({"a": entries("a", "x", prefix="a_"), "b": entries("b", "x", prefix="b_")})
    assert catalog.conflicts == {} and set(catalog.entries) == {"a_x", "b_x"}


# --------------------------------------------------------------------------- diffs


def test_compare_lists_added_removed_and_changed_names() -> None:
    old = build({"s": entries("s", "keep", "drop", "edit")})
    edited = server_entries(
        "s", [tool("keep"), tool("edit", "new text"), tool("new")], tools_spec(prefix="")
    )
    new = build({"s": edited})

    change = compare(old, new)
    assert change == CatalogChange(added=("new",), removed=("drop",), changed=("edit",))
    assert not change.empty
    assert compare(new, new).empty
    assert compare(Catalog(), old).added == ("drop", "edit", "keep")


def test_a_tool_moving_to_another_server_is_a_change() -> None:
    old = build({"b": entries("b", "x")})
    new = build({"a": entries("a", "x"), "b": entries("b", "x")})
    assert compare(old, new) == CatalogChange(changed=("x",))
