"""Caller context in the config: where `${caller.*}` may stand, the errors `validate` gives with
their file:line:column, the shapes of `tools.arguments` and `access`, what `plan` shows of
identity-scoped, restricted and hidden-argument servers, and the multi-tenant example."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from jackfield.core.caller_context import NOT_IN_PROMPTS, NOT_SHARED, name_problem
from jackfield.core.connection import identity_scoped
from jackfield.core.plan_render import render
from jackfield.core.planning import CallerScope, plan
from jackfield.core.reconcile import applied_view
from jackfield.errors import ConfigError
from tests.conftest import JACKFIELD, REPO
from tests.support.config import AGENT, errors_of, load_dir, server_yaml, write

EXAMPLE = REPO / "examples" / "multi-tenant"
EXAMPLE_ENV = {"CRM_API_KEY": "crm-key-for-the-test", "ORDERS_TOKEN": "orders-token-for-test"}
PROMPT = "apiVersion: jackfield/v1\nkind: Prompt\nmetadata: {name: style}\nspec:\n"


def at(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """The 1-based line and column of the `nth` `needle` in `text` (independent of the loader)."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def found(root: Path, env: dict[str, str] | None = None) -> list[tuple[str, int, int, str]]:
    return [(e.path, e.line, e.column, e.message) for e in errors_of(root, env)]


def jackfield(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed `jackfield ARGS`, with no JACKFIELD_* leaking in and `env` added."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JACKFIELD_")}
    return subprocess.run(
        [str(JACKFIELD), *args], cwd=cwd, env={**clean, **(env or {})},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


# --- where a context name may stand --------------------------------------------------------


SHARED_FIELDS = {
    "env": "  command: x\n  env:\n    TENANT: 'id=${caller.identity}'\n",
    "args": '  command: x\n  args: ["--user", "${caller.identity}"]\n',
    "headers": "  transport: http\n  url: https://x.example/mcp\n"
    '  headers: {X-User: "u ${caller.identity}"}\n',
    "url": "  transport: http\n  url: https://x.example/${caller.identity}/mcp\n",
}


@pytest.mark.parametrize("field", SHARED_FIELDS)
def test_a_caller_name_in_a_shared_servers_connection_is_an_error_at_its_dollar(
    config_dir: Path, field: str
) -> None:
    text = server_yaml("crm", SHARED_FIELDS[field])
    write(config_dir, {"servers.d/crm.yaml": text})
    line, column = at(text, "${caller.identity}")
    message = "${caller.identity} " + NOT_SHARED
    assert found(config_dir) == [("servers.d/crm.yaml", line, column, message)]
    # `scope: shared` written out is the same as the default
    write(config_dir, {"servers.d/crm.yaml": text + "  scope: shared\n"})
    assert found(config_dir) == [("servers.d/crm.yaml", line, column, message)]


def test_a_caller_name_in_a_shared_servers_env_has_an_exact_position(config_dir: Path) -> None:
    write(config_dir, {"servers.d/crm.yaml": server_yaml("crm", SHARED_FIELDS["env"])})
    # line 7 is `    TENANT: 'id=${caller.identity}'`: the quote at 13, "id=" is 3 more, then `${`
    ((path, line, column, message),) = found(config_dir)
    assert (path, line, column) == ("servers.d/crm.yaml", 7, 17)
    assert message.startswith("${caller.identity} is the caller's, and a shared server")


def test_every_known_caller_name_works_in_a_session_servers_connection(config_dir: Path) -> None:
    body = (
        "  command: x\n  scope: session\n"
        '  args: ["--user", "${caller.identity}", "--room=${room.name}"]\n'
        "  env:\n"
        "    NAME: ${caller.name:-someone}\n"
        "    TENANT: ${caller.attributes.tenant}\n"
        "    PLAN: ${job.metadata.plan}\n"
        "    RAW: ${job.metadata}\n"
    )
    write(config_dir, {"servers.d/mail.yaml": server_yaml("mail", body)})
    assert found(config_dir) == []
    assert identity_scoped(load_dir(config_dir).servers["mail"].document.spec)


@pytest.mark.parametrize(
    "name", ["caller.id", "caller.attributes.", "room", "room.id", "job.meta.plan", "Caller.name"]
)
def test_an_unknown_caller_context_name_in_a_session_server_is_an_error(
    config_dir: Path, name: str
) -> None:
    text = server_yaml("mail", f"  command: x\n  scope: session\n  env: {{T: 'x${{{name}}}'}}\n")
    write(config_dir, {"servers.d/mail.yaml": text})
    line, column = at(text, "${" + name)
    if "." not in name:  # `${room}` is a plain variable: unset, not a context name
        assert [(p, ln, c) for p, ln, c, _ in found(config_dir)] == [
            ("servers.d/mail.yaml", line, column)
        ]
        return
    problem = name_problem(name)
    assert problem is not None and name in problem
    assert found(config_dir) == [("servers.d/mail.yaml", line, column, problem)]


ARGUMENTS = """\
  command: x
  tools:
    arguments:
      user_id: ${caller.identity}
      tenant: '${caller.atributes.tenant}'
      "get_*":
        account: "${caller.attributes.account}"
        region: "eu-${caller.region}"
        key: ${ARGS_KEY_FOR_CALLER_TEST}
"""


def test_caller_tool_arguments_report_unknown_names_and_unset_variables_in_both_shapes(
    config_dir: Path,
) -> None:
    text = server_yaml("crm", ARGUMENTS)
    write(config_dir, {"servers.d/crm.yaml": text})
    unset = "environment variable ARGS_KEY_FOR_CALLER_TEST is not set"
    got = found(config_dir)
    assert [(p, ln, c) for p, ln, c, _ in got] == [
        ("servers.d/crm.yaml", 9, 16),  # tenant: the quote at 15
        ("servers.d/crm.yaml", 12, 21),  # region: "eu-${...}", the quote at 17
        ("servers.d/crm.yaml", 13, 14),  # key: plain, at 14
    ]
    assert [(ln, c) for _, ln, c, _ in got] == [
        at(text, "${caller.atributes"),
        at(text, "${caller.region"),
        at(text, "${ARGS_KEY"),
    ]
    assert got[0][3] == name_problem("caller.atributes.tenant")
    assert got[1][3] == name_problem("caller.region")
    assert got[2][3].startswith(unset)
    fixed = ARGUMENTS.replace("atributes", "attributes").replace("caller.region", "room.name")
    write(config_dir, {"servers.d/crm.yaml": server_yaml("crm", fixed)})
    assert found(config_dir, {"ARGS_KEY_FOR_CALLER_TEST": "k"}) == []


def test_a_caller_name_in_tools_arguments_of_a_shared_server_is_fine(config_dir: Path) -> None:
    body = "  command: x\n  tools: {arguments: {user_id: '${caller.identity}'}}\n"
    write(config_dir, {"servers.d/crm.yaml": server_yaml("crm", body)})
    assert found(config_dir) == []


def test_a_disabled_server_is_not_checked_for_caller_names_either(config_dir: Path) -> None:
    body = (
        "  enabled: false\n  command: x\n  env: {T: '${caller.identity}'}\n"
        "  tools: {arguments: {u: '${caller.nope}', k: '${UNSET_FOR_CALLER_TEST}'}}\n"
        "  prompt: Hello ${caller.name}.\n"
    )
    write(config_dir, {"servers.d/crm.yaml": server_yaml("crm", body)})
    assert found(config_dir) == []


# --- instructions and prompts are never expanded ---------------------------------------------


AGENT_WITH_CALLER = """\
apiVersion: jackfield/v1
kind: Agent
metadata: {name: assistant}
spec:
  instructions: |
    You are a test agent.
    The caller is ${caller.name}, of ${caller.attributes.tenant}.
  greeting: "Say hello to ${caller.name}."
"""


def test_a_caller_name_in_the_agents_instructions_or_greeting_is_an_error_at_its_dollar(
    config_dir: Path,
) -> None:
    write(config_dir, {"agent.yaml": AGENT_WITH_CALLER})
    got = found(config_dir)
    # inside the `|` block: found on its own line (7), not at the block's `|` (5:17)
    assert [(p, ln, c) for p, ln, c, _ in got] == [
        ("agent.yaml", 7, 19),
        ("agent.yaml", 7, 38),
        ("agent.yaml", 8, 27),
    ]
    assert [m for *_, m in got] == [
        "${caller.name} " + NOT_IN_PROMPTS,
        "${caller.attributes.tenant} " + NOT_IN_PROMPTS,
        "${caller.name} " + NOT_IN_PROMPTS,
    ]


def test_a_caller_name_in_a_prompt_document_or_a_servers_prompt_is_an_error(
    config_dir: Path,
) -> None:
    prompt = PROMPT + "  text: >\n    Speak to ${caller.name}\n    kindly.\n"
    server = server_yaml(
        "crm",
        "  command: x\n  prompt: |\n    Hi.\n\n    Hello again ${caller.name} ${caller.name}\n",
    )
    write(config_dir, {"servers.d/style.yaml": prompt, "servers.d/crm.yaml": server})
    assert found(config_dir) == [
        ("servers.d/crm.yaml", 9, 17, "${caller.name} " + NOT_IN_PROMPTS),
        ("servers.d/crm.yaml", 9, 32, "${caller.name} " + NOT_IN_PROMPTS),
        ("servers.d/style.yaml", 6, 14, "${caller.name} " + NOT_IN_PROMPTS),
    ]
    assert [(9, 17), (9, 32)] == [at(server, "${caller.name}", n) for n in (0, 1)]


def test_a_caller_name_on_the_first_line_of_a_plain_multi_line_instruction_is_found(
    config_dir: Path,
) -> None:
    agent = AGENT.replace("You are a test agent.", "Hi ${caller.name}\n    and more.")
    write(config_dir, {"agent.yaml": agent})
    assert found(config_dir) == [("agent.yaml", 5, 20, "${caller.name} " + NOT_IN_PROMPTS)]


def test_caller_names_in_many_multi_line_prompts_of_one_file_are_each_found(
    config_dir: Path,
) -> None:
    count = 2000
    docs = [
        f"apiVersion: jackfield/v1\nkind: Prompt\nmetadata: {{name: p{n}}}\nspec:\n"
        f"  text: |\n    Line one.\n    For ${{caller.name}}.\n"
        for n in range(count)
    ]
    write(config_dir, {"servers.d/many.yaml": "---\n".join(docs)})
    got = found(config_dir)
    # each document is 7 lines and a `---`: its `${` is on its 7th line, column 9
    assert [(ln, c) for _, ln, c, _ in got] == [(8 * n + 7, 9) for n in range(count)]


def test_plain_variables_and_escapes_in_prompts_stay_literal_text_for_callers(
    config_dir: Path,
) -> None:
    # never errors there: prompts are not expanded, so `${HOME}` is just text
    prompt = PROMPT + "  text: 'Use ${UNSET_FOR_CALLER_TEST}, $${caller.identity} and ${oops'\n"
    write(config_dir, {"servers.d/style.yaml": prompt})
    assert found(config_dir) == []


def test_a_caller_name_the_source_does_not_hold_verbatim_points_at_its_scalar(
    config_dir: Path,
) -> None:
    # an escape in a multi-line double-quoted scalar: the value has `${`, the file does not
    prompt = PROMPT + '  text: "Speak\n    to \\u0024{caller.name}"\n'
    write(config_dir, {"servers.d/style.yaml": prompt})
    assert [(p, ln, c) for p, ln, c, _ in found(config_dir)] == [("servers.d/style.yaml", 5, 9)]


# --- shapes: tools.arguments and access ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "column", "message"),
    [
        (
            "  access: {callers: []}\n",
            6,
            21,
            "spec.access.callers: list at least one caller selector (to hide a server from"
            " everyone, set enabled: false)",
        ),
        (
            "  access:\n    callers:\n      - {identity: 'admin-*'}\n      - {}\n",
            9,
            9,
            "a caller selector needs identity, attributes or room to match",
        ),
        (
            "  access: {callers: [{idenity: a}]}\n",
            6,
            23,
            "unknown key 'idenity' in spec.access.callers.0; did you mean 'identity'?",
        ),
        ("  access: [a]\n", 6, 11, "spec.access: Input should be a valid dictionary"),
        (
            "  tools: {arguments: {x: 3}}\n",
            6,
            26,
            "spec.tools.arguments.x: tools.arguments values are strings (an argument of every"
            " tool) or mappings of argument names to strings (under a tool name or glob)"
            " (quote the value to keep it as text)",
        ),
        (
            "  tools: {arguments: {x: [a]}}\n",
            6,
            26,
            "spec.tools.arguments.x: tools.arguments values are strings (an argument of every"
            " tool) or mappings of argument names to strings (under a tool name or glob)",
        ),
        (
            "  tools:\n    arguments:\n      'get_*': {account: 42}\n",
            8,
            26,
            "spec.tools.arguments.get_*.account: Input should be a valid string (quote the"
            " value to keep it as text)",
        ),
        ("  tools: {arguments: [a]}\n", 6, 22, "spec.tools.arguments: Input should be a valid"),
    ],
)
def test_caller_shapes_of_access_and_tools_arguments_are_errors_in_plain_words(
    config_dir: Path, body: str, line: int, column: int, message: str
) -> None:
    write(config_dir, {"servers.d/crm.yaml": server_yaml("crm", "  command: x\n" + body)})
    ((path, got_line, got_column, got),) = found(config_dir)
    assert (path, got_line, got_column) == ("servers.d/crm.yaml", line, column)
    assert got.startswith(message), got
    assert "instance of" not in got and "dict[str" not in got


@pytest.mark.parametrize(
    "body",
    [
        "  command: x\n  tools: 3\n",
        "  command: x\n  tools: {arguments: {x: {y: [1]}, z: null, 3: a}}\n",
        "  command: x\n  env: [a, '${caller.identity}']\n  args: {a: b}\n",
        "  command: x\n  scope: [session]\n  url: 7\n  headers: '${caller.identity}'\n",
        "  command: x\n  prompt: [${caller.identity}]\n",
        "  command: x\n  enabled: ${caller.identity}\n",
    ],
)
def test_odd_caller_shapes_are_config_errors_never_a_crash(config_dir: Path, body: str) -> None:
    write(config_dir, {"servers.d/crm.yaml": server_yaml("crm", body)})
    got = errors_of(config_dir)
    assert got and all(isinstance(e, ConfigError) for e in got)


# --- jackfield validate ----------------------------------------------------------------------


def test_jackfield_validate_lists_caller_errors_with_their_positions_and_exits_1(
    config_dir: Path,
) -> None:
    write(
        config_dir,
        {
            "agent.yaml": AGENT.replace("a test agent.", "for ${caller.name}."),
            "servers.d/crm.yaml": server_yaml("crm", SHARED_FIELDS["env"]),
            "servers.d/mail.yaml": server_yaml(
                "mail", "  command: x\n  scope: session\n  args: ['${caller.idenity}']\n"
            ),
        },
    )
    got = jackfield(config_dir, "validate")
    assert got.returncode == 1, got.stdout + got.stderr
    assert got.stdout.splitlines() == [
        "agent.yaml:5:29: ${caller.name} " + NOT_IN_PROMPTS,
        "servers.d/crm.yaml:7:17: ${caller.identity} " + NOT_SHARED,
        f"servers.d/mail.yaml:7:11: {name_problem('caller.idenity')}",
    ]
    assert got.stderr.strip() == "3 error(s)"


# --- jackfield plan --------------------------------------------------------------------------


def test_plan_shows_caller_scoped_restricted_and_hidden_argument_servers(config_dir: Path) -> None:
    write(
        config_dir,
        {
            "servers.d/mail.yaml": server_yaml(
                "mail",
                "  command: x\n  scope: session\n"
                "  env: {A: '${caller.identity}', B: '${caller.attributes.tenant}'}\n",
            ),
            "servers.d/crm.yaml": server_yaml(
                "crm",
                "  command: x\n  tools:\n    arguments:\n      user_id: ${caller.identity}\n"
                "      tenant: acme\n      'get_*': {region: eu}\n",
            ),
            "servers.d/pay.yaml": server_yaml(
                "pay", "  command: x\n  access: {callers: [{identity: 'a-*'}, {room: 'b-*'}]}\n"
            ),
            "servers.d/one.yaml": server_yaml(
                "one", "  command: x\n  access: {callers: [{attributes: {role: admin}}]}\n"
            ),
            "servers.d/plain.yaml": server_yaml(
                "plain", "  command: x\n  scope: session\n  env: {A: '${HOME:-x}'}\n"
            ),
        },
    )
    lines = render(plan(load_dir(config_dir), {})).splitlines()
    assert lines[lines.index("+ create MCPServer/crm (servers.d/crm.yaml:1)") + 1] == (
        "    hides user_id, tenant; get_*: region"
    )
    assert lines[lines.index("+ create MCPServer/mail (servers.d/mail.yaml:1)") + 1] == (
        "    identity-scoped: one connection per caller, opened with caller.identity,"
        " caller.attributes.tenant"
    )
    assert lines[lines.index("+ create MCPServer/pay (servers.d/pay.yaml:1)") + 1] == (
        "    restricted to 2 caller selectors"
    )
    assert lines[lines.index("+ create MCPServer/one (servers.d/one.yaml:1)") + 1] == (
        "    restricted to 1 caller selector"
    )
    after_plain = lines[lines.index("+ create MCPServer/plain (servers.d/plain.yaml:1)") + 1]
    assert not after_plain.startswith("    "), "a session server without caller names is plain"


def test_plan_of_a_server_made_restricted_shows_it_under_the_update(config_dir: Path) -> None:
    write(config_dir, {"servers.d/pay.yaml": server_yaml("pay")})
    before = applied_view(load_dir(config_dir))
    body = "  command: python\n  access: {callers: [{identity: 'a-*'}]}\n"
    write(config_dir, {"servers.d/pay.yaml": server_yaml("pay", body)})
    changes = plan(load_dir(config_dir), before)
    (change,) = changes.effective
    assert change.caller == CallerScope(selectors=1)
    assert render(changes, before).splitlines()[:3] == [
        "~ update MCPServer/pay: spec.access (no reconnect)",
        "    restricted to 1 caller selector",
        '    spec.access: null -> {"callers":[{"attributes":{},"identity":"a-*","room":null}]}',
    ]
    unchanged = plan(load_dir(config_dir), applied_view(load_dir(config_dir)))
    assert render(unchanged) == "No changes. The database matches the files.\n"


# --- the multi-tenant example and the docs -------------------------------------------------


def test_the_multi_tenant_caller_example_loads_as_documented() -> None:
    snapshot = load_dir(EXAMPLE, EXAMPLE_ENV)
    servers = {name: placed.document.spec for name, placed in snapshot.servers.items()}
    assert set(servers) == {"crm", "orders", "admin"}
    assert identity_scoped(servers["crm"]) and servers["crm"].transport == "stdio"
    orders = servers["orders"]
    assert orders.transport == "http" and orders.scope == "shared" and not identity_scoped(orders)
    assert orders.tools.arguments_for("get_order_status") == {
        "tenant": "${caller.attributes.tenant}",
        "customer_id": "${caller.identity}",
    }
    assert orders.tools.arguments_for("list_products") == {"tenant": "${caller.attributes.tenant}"}
    access = servers["admin"].access
    assert access is not None and len(access.callers) == 1 and identity_scoped(servers["admin"])


def _docs_yaml_blocks() -> tuple[str, str]:
    """docs/config.md's "Caller context" section's ```yaml blocks: the `tools.arguments`
    fragment and the worked example (the one of whole documents)."""
    text = (REPO / "docs" / "config.md").read_text()
    section = text[text.index("## Caller context") :]
    blocks = [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]
    (fragment,) = [b for b in blocks if b.startswith("tools:")]
    (worked,) = [b for b in blocks if "kind: MCPServer" in b]
    return fragment, worked


def test_the_caller_docs_worked_example_is_the_example_directory() -> None:
    fragment, worked = _docs_yaml_blocks()
    documents = list(yaml.safe_load_all(worked))
    on_disk = {
        path.stem: yaml.safe_load(path.read_text())
        for path in sorted((EXAMPLE / "servers.d").glob("*.yaml"))
    }
    assert {d["metadata"]["name"]: d for d in documents} == on_disk, (
        "docs/config.md's worked example and examples/multi-tenant/servers.d differ"
    )
    assert yaml.safe_load(fragment)["tools"]["arguments"]


def test_the_caller_docs_tools_arguments_fragment_validates(config_dir: Path) -> None:
    fragment, _ = _docs_yaml_blocks()
    body = "  command: x\n" + textwrap.indent(fragment, "  ")
    write(config_dir, {"servers.d/frag.yaml": server_yaml("frag", body)})
    assert found(config_dir) == []
    spec = load_dir(config_dir).servers["frag"].document.spec
    assert spec.tools.arguments_for("delete_account") == {
        "tenant": "acme",
        "user_id": "${caller.identity}",
        "confirm_by": "${caller.name:-caller}",
    }


def test_jackfield_validate_passes_on_the_caller_example_once_its_tokens_are_set() -> None:
    got = jackfield(REPO, "validate", "examples/multi-tenant", env=EXAMPLE_ENV)
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.startswith("valid: agent support-desk, 3 server(s), 0 prompt(s)")
    unset = jackfield(REPO, "validate", "examples/multi-tenant")
    assert unset.returncode == 1
    assert [line.split(": ", 1)[0] for line in unset.stdout.splitlines()] == [
        "examples/multi-tenant/servers.d/crm.yaml:14:18",
        "examples/multi-tenant/servers.d/orders.yaml:11:36",
    ]


def test_jackfield_plan_of_the_caller_example_shows_each_servers_markers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    got = jackfield(REPO, "plan", "examples/multi-tenant", "--database-url", url, env=EXAMPLE_ENV)
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.splitlines() == [
        "+ create Agent/support-desk (agent.yaml:8)",
        "+ create MCPServer/admin (servers.d/admin.yaml:5)",
        "    identity-scoped: one connection per caller, opened with caller.identity",
        "    restricted to 1 caller selector",
        "+ create MCPServer/crm (servers.d/crm.yaml:5)",
        "    identity-scoped: one connection per caller, opened with caller.identity,"
        " caller.attributes.tenant",
        "+ create MCPServer/orders (servers.d/orders.yaml:5)",
        "    hides tenant; *_order*: customer_id",
        "",
        "Plan: 4 to create, 0 to update, 0 to delete.",
    ]
    assert EXAMPLE_ENV["CRM_API_KEY"] not in got.stdout
