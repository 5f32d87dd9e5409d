"""Strict JSON schemas: structured outputs and ``strict`` tools (issue 15 item 1).

Pure: no aiohttp, no asyncio. Anthropic's ``output_config.format`` (``json_schema``; the older
top-level ``output_format`` is an alias) and a tool's ``"strict": true`` guarantee that the
answer matches the schema. OpenAI's strict mode gives the same guarantee for a narrower schema
language, so the gateway sends ``strict: true`` with a schema OpenAI accepts and means the same:

* lossless rewrites: ``definitions`` → ``$defs``, ``oneOf`` → ``anyOf``, ``allOf`` merged,
  annotations beside a ``$ref`` dropped, a ``type`` added to ``enum``/``const``, and keywords
  OpenAI does not take (a ``format`` outside its nine, ``default``, ``examples``,
  ``uniqueItems``, unknown ones) moved into the ``description``, as the Anthropic SDK does;
* what OpenAI requires and Anthropic does not: every property listed in ``required``, so an
  optional property becomes required *and nullable*, and a root that is not an object is
  wrapped as ``{"value": …}``. The answer is restored before the client sees it (a ``null``
  the model gave an optional property that does not allow one is removed; the wrapper is
  taken off), so it matches the client's schema;
* a clear 400 for what cannot mean the same: an object whose ``additionalProperties`` is not
  ``false`` (Anthropic's own rule), ``not``, ``if``/``then``/``else``, ``patternProperties``,
  an ``allOf`` that cannot be merged, a ``$ref`` that is not local, non-scalar enums.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ..errors import InvalidRequestError
from ..schemas.anthropic import MessagesRequest
from .strict_normalise import MAX_DEPTH as _MAX_DEPTH
from .strict_normalise import normalise
from .tool_schema import upstream_tool_name
from .tools import is_custom_tool


def output_format(req: MessagesRequest) -> tuple[dict[str, Any], str] | None:
    """The structured-output schema and where it came from (``output_config.format.schema``
    or the deprecated ``output_format.schema``), or None. Both at once is a 400, as the SDK
    makes it; a ``json_schema`` format without a schema is a 400."""
    fmt = req.output_config.format if req.output_config is not None else None
    where = "output_config.format"
    if req.output_format is not None:
        if fmt is not None:
            raise InvalidRequestError(
                "output_format: both output_format and output_config.format were provided; "
                "use only output_config.format (output_format is deprecated)"
            )
        fmt, where = req.output_format, "output_format"
    if fmt is None or fmt.type != "json_schema":
        return None
    if not isinstance(fmt.schema, dict):
        raise InvalidRequestError(f"{where}.schema: required for json_schema")
    return fmt.schema, f"{where}.schema"


@dataclass(frozen=True, slots=True)
class StrictPlan:
    """A request's strict schemas: the structured output's and each strict tool's (by the
    function name sent upstream)."""

    output: StrictSchema | None = None
    #: the ``text.format`` / ``json_schema`` name (the schema's title, made valid)
    output_name: str = "output"
    tools: Mapping[str, StrictSchema] = field(default_factory=dict)

    @property
    def restores(self) -> bool:
        """Whether any answer may need restoring."""
        return (self.output is not None and self.output.restores) or any(
            t.restores for t in self.tools.values()
        )

    def text(self) -> StrictSchema | None:
        """The structured output's schema when answers need restoring."""
        return self.output if self.output is not None and self.output.restores else None

    def tool(self, upstream_name: str | None) -> StrictSchema | None:
        """A strict tool's schema when its inputs need restoring."""
        found = self.tools.get(upstream_name or "")
        return found if found is not None and found.restores else None


NO_STRICT: Final = StrictPlan()


def strict_to_doc(plan: StrictPlan) -> dict[str, Any] | None:
    """What :func:`strict_from_doc` makes the plan again from (JSON)."""
    if plan.output is None and not plan.tools:
        return None
    out = plan.output
    return {
        "o": [out.source, out.where] if out is not None else None,
        "n": plan.output_name,
        "t": {name: [t.source, t.where] for name, t in plan.tools.items()},
    }


def strict_from_doc(doc: Any) -> StrictPlan:
    if not isinstance(doc, dict):
        return NO_STRICT
    output = doc.get("o")
    tools = doc.get("t") or {}
    return StrictPlan(
        output=make_strict(output[0], output[1]) if output else None,
        output_name=str(doc.get("n") or "output"),
        tools={name: make_strict(t[0], t[1], object_root=True) for name, t in tools.items()},
    )


def strict_arguments(
    plan: StrictPlan, upstream_name: str | None, arguments: str | None
) -> str | None:
    """A strict tool call's arguments restored to the client's schema (others unchanged)."""
    restorer = plan.tool(upstream_name) if plan.tools else None
    if restorer is None or arguments is None:
        return arguments
    return restorer.restore_text(arguments)


_NAME_BAD: Final = re.compile(r"[^A-Za-z0-9_-]")


def strict_plan(req: MessagesRequest) -> StrictPlan:
    """The strict schemas of ``req`` (NO_STRICT for nearly every request); a 400 names a
    schema that cannot be made strict."""
    fmt = output_format(req)
    tools = {}
    for i, tool in enumerate(req.tools or ()):
        if tool.strict and is_custom_tool(tool.type, tool.input_schema) and tool.name:
            where = f"tools.{i}.input_schema"
            tools[upstream_tool_name(tool.name)] = make_strict(
                tool.input_schema or {}, where, object_root=True
            )
    if fmt is None and not tools:
        return NO_STRICT
    output = name = None
    if fmt is not None:
        schema, where = fmt
        output = make_strict(schema, where)
        title = schema.get("title")
        name = _NAME_BAD.sub("_", title)[:64] if isinstance(title, str) and title else None
    return StrictPlan(output=output, output_name=name or "output", tools=tools)


# ---------------------------------------------------------------------------------------------
# The schema


@dataclass(frozen=True, slots=True)
class StrictSchema:
    """A client schema made strict. ``schema`` goes upstream; answers are restored against
    ``original`` (the client's schema, normalised, without its ``$defs``) when ``restores``."""

    schema: dict[str, Any]
    original: dict[str, Any]
    #: the definitions, and ``"#"`` for the root (a recursive ``$ref``)
    defs: dict[str, Any]
    #: a non-object root, sent as ``{"value": …}``
    wrapped: bool
    #: whether an answer may need restoring (an optional property made nullable, a wrapper)
    restores: bool
    #: the client's schema and where it was (to make it again, for a batch's results)
    source: dict[str, Any] = field(default_factory=dict)
    where: str = ""
    object_root: bool = False

    def restore(self, value: Any) -> Any:
        """The answer as the client's schema has it (see the module docstring)."""
        if not self.restores:
            return value
        if self.wrapped:
            value = value.get("value") if isinstance(value, dict) else value
        return _restore(value, self.original, self.defs, 0)

    def restore_text(self, text: str) -> str:
        """:meth:`restore` on JSON text; text that does not parse (a cut-off answer) is kept."""
        if not self.restores:
            return text
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        return orjson.dumps(self.restore(value)).decode()


def make_strict(schema: dict[str, Any], where: str, *, object_root: bool = False) -> StrictSchema:
    """The strict form of ``schema`` (``where`` prefixes error messages). ``object_root``:
    the root must be an object (a tool's input), else any root is accepted and wrapped."""
    norm = normalise(schema, where)
    defs: dict[str, Any] = norm.pop("$defs", None) or {}
    body = norm
    if "$ref" in body:  # a root $ref (a Pydantic RootModel): the definition itself
        body = dict(_resolve(body, defs))
    wrapped = body.get("type") != "object" or "anyOf" in body
    if wrapped and object_root:
        raise InvalidRequestError(f"{where}: the root must be an object schema")
    if wrapped and b'"$ref":"#"' in orjson.dumps(norm):
        raise InvalidRequestError(
            f"{where}: " + "a recursive schema ($ref '#') needs an object root"
        )
    lookup = {**defs, "#": body}
    strictifier = _Strictifier(lookup)
    out = strictifier.node(body)
    if wrapped:
        out = {
            "type": "object",
            "properties": {"value": out},
            "required": ["value"],
            "additionalProperties": False,
        }
    if defs:
        out["$defs"] = {name: strictifier.node(d) for name, d in defs.items()}
    return StrictSchema(
        schema=out,
        original=body,
        defs=lookup,
        wrapped=wrapped,
        restores=wrapped or strictifier.loosened,
        source=schema,
        where=where,
        object_root=object_root,
    )


# ---------------------------------------------------------------------------------------------
# Strict: every property required, the optional ones nullable


def _resolve(node: Any, defs: Mapping[str, Any]) -> Any:
    """Follow ``$ref``s (``defs`` holds ``"#"`` for the root)."""
    seen = 0
    while isinstance(node, Mapping) and "$ref" in node and seen < _MAX_DEPTH:
        node = defs.get(node["$ref"].removeprefix("#/$defs/"), {})
        seen += 1
    return node


def _allows_null(node: Any, defs: Mapping[str, Any], depth: int = 0) -> bool:
    if depth > _MAX_DEPTH or not isinstance(node, Mapping):
        return False
    node = _resolve(node, defs)
    kinds = node.get("type")
    if kinds == "null" or (isinstance(kinds, list) and "null" in kinds):
        return True
    if "enum" in node and None in (node["enum"] or ()):
        return True
    if "const" in node and node["const"] is None:
        return True
    return any(_allows_null(b, defs, depth + 1) for b in node.get("anyOf") or ())


class _Strictifier:
    def __init__(self, defs: Mapping[str, Any]) -> None:
        self.defs = defs
        #: an optional property was made required and nullable
        self.loosened = False

    def node(self, node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return node
        out = dict(node)
        if "anyOf" in out:
            out["anyOf"] = [self.node(b) for b in out["anyOf"]]
        if "items" in out:
            out["items"] = self.node(out["items"])
        props = out.get("properties")
        if isinstance(props, dict):
            required = set(out.get("required") or ())
            new_props = {}
            for name, sub in props.items():
                strict_sub = self.node(sub)
                if name not in required and not _allows_null(sub, self.defs):
                    strict_sub = _nullable(strict_sub)
                    self.loosened = True
                new_props[name] = strict_sub
            out["properties"] = new_props
            out["required"] = list(props)
        return out


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """``node`` or null."""
    kinds = node.get("type")
    if isinstance(kinds, str | list) and not ({"$ref", "anyOf", "const"} & set(node)):
        out = dict(node)
        out["type"] = [*kinds, "null"] if isinstance(kinds, list) else [kinds, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    if set(node) == {"anyOf"}:
        return {"anyOf": [*node["anyOf"], {"type": "null"}]}
    return {"anyOf": [node, {"type": "null"}]}


# ---------------------------------------------------------------------------------------------
# Restoring an answer


def _restore(value: Any, node: Any, defs: Mapping[str, Any], depth: int) -> Any:
    if depth > _MAX_DEPTH or not isinstance(node, Mapping):
        return value
    node = _resolve(node, defs)
    if isinstance(value, dict):
        for branch in node.get("anyOf") or ():
            branch = _resolve(branch, defs)
            props = branch.get("properties") if isinstance(branch, Mapping) else None
            if isinstance(props, Mapping) and set(value) <= set(props):
                return _restore(value, branch, defs, depth + 1)
        props = node.get("properties")
        if not isinstance(props, Mapping):
            return value
        required = set(node.get("required") or ())
        out = {}
        for key, item in value.items():
            sub = props.get(key)
            if item is None and key not in required and not _allows_null(sub, defs):
                continue  # the model's "absent" (an unknown key keeps its null)
            out[key] = _restore(item, sub, defs, depth + 1) if sub is not None else item
        return out
    if isinstance(value, list):
        items = node.get("items")
        if items is None:
            for branch in node.get("anyOf") or ():
                branch = _resolve(branch, defs)
                if isinstance(branch, Mapping) and "items" in branch:
                    items = branch["items"]
                    break
        return [_restore(v, items, defs, depth + 1) for v in value] if items else value
    return value
