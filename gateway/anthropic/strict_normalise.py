"""Strict schemas, step one: the client's schema with one meaning in OpenAI's keywords.

Pure: no aiohttp, no asyncio. See :mod:`.strict` for the whole story; this module rewrites
losslessly (``definitions`` → ``$defs``, ``oneOf`` → ``anyOf``, ``allOf`` merged, ``$ref``
annotations dropped, a ``type`` for ``enum``/``const``), moves keywords OpenAI does not take
into the ``description``, and refuses what cannot mean the same with a 400 naming the path.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from ..errors import InvalidRequestError
from .tool_schema import ALLOWED_FORMATS

#: the message Anthropic's API gives for an object schema that is not closed
OPEN_OBJECT: Final = "For 'object' type, 'additionalProperties' must be explicitly set to false"
_UNSUPPORTED: Final = frozenset(
    {
        "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "dependencies",
        "patternProperties", "propertyNames", "unevaluatedProperties", "unevaluatedItems",
        "prefixItems", "contains", "minContains", "maxContains", "$dynamicRef", "$anchor",
        "$dynamicAnchor", "$recursiveRef",
    }
)  # fmt: skip
#: kept as they are (OpenAI's strict subset)
_KEPT: Final = frozenset(
    {
        "type", "title", "description", "enum", "const", "pattern", "minLength", "maxLength",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems",
        "maxItems",
    }
)  # fmt: skip
#: removed without a trace (they describe the document, not the value)
_DROPPED: Final = frozenset({"$schema", "$id", "$comment"})
#: beside a ``$ref``: dropped (OpenAI refuses any keyword there)
_REF_ANNOTATIONS: Final = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"}
)
_SCALARS: Final = (str, int, float, bool, type(None))
MAX_DEPTH: Final = 64


def _fail(where: str, path: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{where}{path}: {message}")


def normalise(schema: dict[str, Any], where: str) -> dict[str, Any]:
    """``schema`` rewritten (see the module docstring), its definitions under ``$defs``;
    ``where`` starts every error message."""
    return _Normaliser(where, schema).root()


class _Normaliser:
    def __init__(self, where: str, schema: dict[str, Any]) -> None:
        self.where = where
        raw_defs = schema.get("$defs")
        if raw_defs is None:
            raw_defs = schema.get("definitions")
        self.raw_defs = raw_defs if isinstance(raw_defs, dict) else {}
        self.schema = schema

    def root(self) -> dict[str, Any]:
        if not isinstance(self.schema, dict):
            raise _fail(self.where, "", "must be a JSON object")
        out = self.node(self.schema, "", 0)
        if self.raw_defs:
            out["$defs"] = {
                name: self.node(d, f".$defs.{name}", 1) for name, d in self.raw_defs.items()
            }
        return out

    def fail(self, path: str, message: str) -> InvalidRequestError:
        return _fail(self.where, path, message)

    def node(self, node: Any, path: str, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise self.fail(path, "the schema is nested too deeply")
        if isinstance(node, bool):
            raise self.fail(path, "boolean schemas are not supported in a strict schema")
        if not isinstance(node, dict):
            raise self.fail(path, "a schema must be a JSON object")
        for key in node:
            if key in _UNSUPPORTED:
                raise self.fail(path, f"'{key}' is not supported in a strict schema")
        if "$ref" in node:
            return self._ref(node, path)
        if "allOf" in node:
            return self.node(self._merge_all_of(node, path), path, depth + 1)
        out: dict[str, Any] = {}
        notes: list[str] = []
        for key, value in node.items():
            if key in ("$defs", "definitions") and path == "":
                continue
            if key in _DROPPED:
                continue
            if key in ("anyOf", "oneOf"):
                if not isinstance(value, list) or not value:
                    raise self.fail(path, f"'{key}' must be a non-empty array")
                branches = [
                    self.node(b, f"{path}.{key}.{i}", depth + 1) for i, b in enumerate(value)
                ]
                out["anyOf"] = out.get("anyOf", []) + branches
            elif key == "properties":
                if not isinstance(value, dict):
                    raise self.fail(path, "'properties' must be an object")
                out[key] = {
                    name: self.node(sub, f"{path}.properties.{name}", depth + 1)
                    for name, sub in value.items()
                }
            elif key == "items":
                out[key] = self.node(value, f"{path}.items", depth + 1)
            elif key == "required":
                if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
                    raise self.fail(path, "'required' must be an array of strings")
                out[key] = list(dict.fromkeys(value))
            elif key == "additionalProperties":
                out[key] = value
            elif key in ("enum", "const"):
                values = value if key == "enum" else [value]
                if key == "enum" and (not isinstance(value, list) or not value):
                    raise self.fail(path, "'enum' must be a non-empty array")
                if not all(isinstance(v, _SCALARS) for v in values):
                    raise self.fail(path, f"'{key}' values must be strings, numbers, booleans "
                                    "or null in a strict schema")  # fmt: skip
                out[key] = value
            elif key == "format":
                if isinstance(value, str) and value in ALLOWED_FORMATS:
                    out[key] = value
                else:
                    notes.append(f"format: {value}")
            elif key in _KEPT:
                out[key] = value
            else:  # default, examples, uniqueItems, vendor keys …: kept as a hint
                notes.append(f"{key}: {orjson.dumps(value, default=str).decode()}")
        if notes:
            hint = "{" + ", ".join(notes) + "}"
            text = out.get("description")
            out["description"] = f"{text}\n\n{hint}" if isinstance(text, str) and text else hint
        self._typed(out, path)
        return out

    def _typed(self, out: dict[str, Any], path: str) -> None:
        """Every node says what it is; objects are closed (Anthropic's rule, and OpenAI's)."""
        if "type" not in out and "anyOf" not in out:
            if "enum" in out or "const" in out:
                values = out["enum"] if "enum" in out else [out["const"]]
                types = list(dict.fromkeys(_json_type(v) for v in values))
                out["type"] = types[0] if len(types) == 1 else types
            elif "properties" in out:
                out["type"] = "object"
            elif "items" in out:
                out["type"] = "array"
            else:
                raise self.fail(path, "a strict schema needs a 'type' (or anyOf, enum, const)")
        kinds = out.get("type")
        is_object = kinds == "object" or (isinstance(kinds, list) and "object" in kinds)
        if is_object:
            if out.get("additionalProperties") is not False:
                raise self.fail(path, OPEN_OBJECT)
            out.setdefault("properties", {})
            for name in out.get("required", ()):
                if name not in out["properties"]:
                    raise self.fail(path, f"required property '{name}' is not in properties")
        elif "additionalProperties" in out:
            del out["additionalProperties"]

    def _ref(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        ref = node["$ref"]
        if not isinstance(ref, str):
            raise self.fail(path, "'$ref' must be a string")
        if ref.startswith("#/definitions/"):
            ref = "#/$defs/" + ref.removeprefix("#/definitions/")
        if ref != "#" and not (
            ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in self.raw_defs
        ):
            raise self.fail(path, f"'$ref' {ref!r} is not a local definition (#/$defs/…)")
        others = set(node) - {"$ref"} - _REF_ANNOTATIONS
        if others:
            raise self.fail(path, f"keywords beside '$ref' are not supported: {sorted(others)}")
        return {"$ref": ref}

    def _merge_all_of(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        parts = node["allOf"]
        if not isinstance(parts, list) or not parts:
            raise self.fail(path, "'allOf' must be a non-empty array")
        merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
        for i, part in enumerate(parts):
            if isinstance(part, dict) and "$ref" in part:
                part = self._definition(part["$ref"], f"{path}.allOf.{i}")
            if not isinstance(part, dict) or "allOf" in part or "anyOf" in part or "oneOf" in part:
                raise self.fail(path, "this 'allOf' cannot be merged into one schema")
            for key, value in part.items():
                if key == "properties" and isinstance(value, dict):
                    props = dict(merged.get("properties") or {})
                    for name, sub in value.items():
                        if name in props and props[name] != sub:
                            raise self.fail(path, f"'allOf' defines property '{name}' twice")
                        props[name] = sub
                    merged["properties"] = props
                elif key == "required" and isinstance(value, list):
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
                elif key in ("description", "title") and key in merged:
                    continue  # the outer schema's own wins
                elif key in merged and merged[key] != value:
                    raise self.fail(path, f"'allOf' parts disagree on '{key}'")
                else:
                    merged[key] = value
        return merged

    def _definition(self, ref: Any, path: str) -> dict[str, Any]:
        name = ref.split("/")[-1] if isinstance(ref, str) else None
        found = self.raw_defs.get(name) if name is not None else None
        if not isinstance(found, dict):
            raise self.fail(path, f"'$ref' {ref!r} is not a local definition (#/$defs/…)")
        return found


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"
