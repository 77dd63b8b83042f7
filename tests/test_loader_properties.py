"""Property tests: whatever bytes arrive, the loader answers with its own errors, with positions."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jackfield.core.desired import build_snapshot
from jackfield.core.loading import SourceFile, load_file
from jackfield.errors import ConfigInvalid

yaml_ish = st.text(alphabet=string.printable + "{}[]:-&*!|>'\"#%@`", max_size=400)
keys = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "metadata",
        "spec",
        "name",
        "command",
        "url",
        "transport",
        "env",
        "tools",
        "include",
        "x",
    ]
)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def _assert_positions(errors: list) -> None:  # type: ignore[type-arg]
    for e in errors:
        assert e.line >= 1 and e.column >= 1 and e.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_give_errors_with_positions_or_nothing(data: bytes) -> None:
    _, errors = load_file(SourceFile("servers.d/x.yaml", data), {})
    _assert_positions(errors)


@settings(max_examples=300, deadline=None)
@given(yaml_ish)
def test_random_yaml_text_gives_errors_with_positions_or_nothing(text: str) -> None:
    _, errors = load_file(SourceFile("servers.d/x.yaml", text.encode()), {})
    _assert_positions(errors)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_random_documents_never_raise_anything_but_config_invalid(doc: dict) -> None:  # type: ignore[type-arg]
    import yaml

    text = yaml.safe_dump({"apiVersion": "jackfield/v1", "kind": "MCPServer", **doc})
    try:
        build_snapshot([SourceFile("servers.d/x.yaml", text.encode())], {})
    except ConfigInvalid as e:
        _assert_positions(e.errors)
