"""What every importer shares: names, secrets taken out of values, the documents written. Pure.

Literal secrets in the input (env values whose names look secret, credential headers, secret
flags in args, secret query parameters in URLs) become `${VAR}` references; the caller prints
which variables to set, never their values. The formats themselves are in `import_formats`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from jackfield.core.expansion import FILE_PREFIX, references
from jackfield.spec.models import API_VERSION

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|AUTH|CREDENTIAL|COOKIE)", re.I)
_CREDENTIAL_HEADERS = {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"}
# a flag such as --token-file or --auth-url names where a secret is, not the secret itself
_NOT_A_SECRET_FLAG = re.compile(r"[-_](FILE|PATH|DIR|URL|URI|MODE|TYPE)$", re.I)
_FLAG = re.compile(r"^--?([A-Za-z0-9][A-Za-z0-9_-]*)(?:=(.*))?$", re.S)
_QUERY_PARAM = re.compile(r"([?&])([^=&#]+)=([^&#]*)")
_SCHEMA_COMMENT = "# yaml-language-server: $schema=../schemas/server.schema.json\n"


class ImportRefused(ValueError):
    """The input is not a file of the format asked for, or holds what jackfield cannot express;
    the message is one line, and nothing is written."""


@dataclass
class Imported:
    files: dict[str, str] = field(default_factory=dict)
    """File name (`<name>.yaml`) -> YAML text."""
    variables: list[str] = field(default_factory=list)
    """Environment variables the new files refer to without a default: the user sets them."""
    warnings: list[str] = field(default_factory=list)
    """What was changed or left out on the way, one line each."""

    def need(self, var: str) -> str:
        """`${var}`, remembered as a variable to set."""
        if var not in self.variables:
            self.variables.append(var)
        return f"${{{var}}}"

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def add(self, raw_name: str, spec: dict[str, Any], *, comment: str = "") -> str:
        """One MCPServer file for `spec`; a name already taken gets `-2`, `-3`, ... Returns the
        metadata name used."""
        base = dns_name(raw_name)
        name, n = base, 1
        while f"{name}.yaml" in self.files:
            n += 1
            suffix = f"-{n}"
            name = base[: 63 - len(suffix)].rstrip("-") + suffix
        if name != base:
            self.warn(f"{raw_name}: name {base!r} already used; written as {name!r}")
        for text in _strings(spec):
            for ref in references(text):
                # a file's or the caller's (dotted) name is not one to set in the environment
                plain = not ref.name.startswith(FILE_PREFIX) and "." not in ref.name
                if ref.default is None and plain:
                    self.need(ref.name)
        document = {
            "apiVersion": API_VERSION,
            "kind": "MCPServer",
            "metadata": {"name": name},
            "spec": spec,
        }
        header = _SCHEMA_COMMENT + "".join(f"# {line}\n" for line in comment.splitlines())
        self.files[f"{name}.yaml"] = header + yaml.safe_dump(
            document, sort_keys=False, allow_unicode=True
        )
        return name


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def dns_name(name: str) -> str:
    """A valid metadata name (lowercase DNS label) from any string."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "server"


def env_name(*parts: str) -> str:
    """An environment variable name (upper snake) from the parts: `("my-server", "api key")`
    -> `MY_SERVER_API_KEY`; a leading digit gets a `_`."""
    name = re.sub(r"[^A-Z0-9]+", "_", "_".join(parts).upper()).strip("_") or "VALUE"
    return f"_{name}" if name[0].isdigit() else name


def looks_secret(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def secret_ref(value: str, var: str, out: Imported) -> str:
    """`${var}` in place of a literal secret; a value that already refers to a variable stays."""
    return value if "${" in value else out.need(var)


def env_value(key: str, value: str, out: Imported) -> str:
    """An env entry's value, a `${KEY}` reference if the name looks secret and the value is
    literal. The variable keeps the entry's own name: it is the one the server reads."""
    return secret_ref(value, env_name(key), out) if looks_secret(key) else value


def header_value(server: str, key: str, value: str, out: Imported) -> str:
    """A header's value with a literal credential taken out; an auth scheme stays in the text
    (`Bearer ${SERVER_TOKEN}`)."""
    if key.lower() not in _CREDENTIAL_HEADERS and not looks_secret(key):
        return value
    var = env_name(server, "TOKEN" if key.lower().endswith("authorization") else key)
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() in ("bearer", "basic", "token"):
        return f"{scheme} {secret_ref(rest, var, out)}"
    return secret_ref(value, var, out)


def argv_values(server: str, args: list[str], out: Imported) -> list[str]:
    """Arguments with the literal values of secret flags taken out: `--api-key sk-1` and
    `--api-key=sk-1` become `--api-key ${SERVER_API_KEY}`."""
    result: list[str] = []
    secret_next: str | None = None
    for arg in args:
        if secret_next is not None and not arg.startswith("-"):
            result.append(secret_ref(arg, secret_next, out))
            secret_next = None
            continue
        secret_next = None
        flag = _FLAG.match(arg)
        if flag and looks_secret(flag[1]) and not _NOT_A_SECRET_FLAG.search(flag[1]):
            var = env_name(server, flag[1])
            if flag[2] is None:
                secret_next = var
            else:
                arg = f"{arg[: flag.start(2)]}{secret_ref(flag[2], var, out)}"
        result.append(arg)
    return result


def url_value(server: str, url: str, out: Imported) -> str:
    """A URL with the literal values of secret-looking query parameters taken out."""

    def replace(m: re.Match[str]) -> str:
        if not looks_secret(m[2]) or not m[3]:
            return m[0]
        return f"{m[1]}{m[2]}={secret_ref(m[3], env_name(server, m[2]), out)}"

    return _QUERY_PARAM.sub(replace, url)


def loads_jsonc(text: str) -> Any:
    """JSON, also with the `//` and `/* */` comments and trailing commas that VS Code and Cursor
    accept. Comments and those commas become blanks, so a decoder error keeps its line:column.

    Raises:
        json.JSONDecodeError: the text is not JSON(C).
    """
    return json.loads(_blank_jsonc(text))


def _blank_jsonc(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    comma: int | None = None  # index in `out` of the last comma, while only blanks follow it
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            comma, i = None, j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        else:
            if c in "]}" and comma is not None:
                out[comma] = " "
            if c == ",":  # a doubled comma stays, for the decoder to report where it is
                comma = len(out) if comma is None else None
            elif not c.isspace():
                comma = None
            out.append(c)
            i += 1
    return "".join(out)
