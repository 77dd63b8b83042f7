"""JSON Schemas of the documents, for editors (yaml-language-server) and external linters."""

from __future__ import annotations

import json
from typing import Any

from jackfield.spec.models import AgentDocument, MCPServerDocument, PromptDocument

SCHEMAS: dict[str, type[AgentDocument] | type[MCPServerDocument] | type[PromptDocument]] = {
    "agent.schema.json": AgentDocument,
    "server.schema.json": MCPServerDocument,
    "prompt.schema.json": PromptDocument,
}


def schema_of(
    model: type[AgentDocument] | type[MCPServerDocument] | type[PromptDocument],
) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://jackfield.dev/schemas/{model.__name__}.json",
        **schema,
    }


def render_all() -> dict[str, str]:
    """File name -> file text, deterministic."""
    return {
        name: json.dumps(schema_of(model), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, model in SCHEMAS.items()
    }
