"""Structured outputs and strict tools (issue 15 item 1): the schema OpenAI's strict mode gets,
the 400s for what cannot mean the same, and answers restored to the client's schema, streamed
and not, over both dialects, with the official SDK's ``messages.parse`` as a client."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pydantic
import pytest
from aiohttp.test_utils import TestServer

from gateway.anthropic.strict import make_strict
from gateway.anthropic.strict_normalise import OPEN_OBJECT
from gateway.errors import InvalidRequestError
from gateway.mock_upstream import FunctionCall, Script, Text
from tests.anthropic_grammar import check_stream, parse_frames
from tests.conftest import GatewayFactory, Upstream

MODEL = "claude-sonnet-5-5"
W = "output_config.format.schema"


def obj(props: dict[str, Any], required: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required is not None:
        out["required"] = required
    return {**out, **kw}


# ---------------------------------------------------------------------------------------------
# The schema sent upstream


def test_an_already_strict_schema_is_sent_as_it_is() -> None:
    schema = obj({"a": {"type": "string"}, "b": {"type": ["integer", "null"]}}, ["a", "b"])
    st = make_strict(schema, W)
    assert st.schema == schema and not st.restores


@pytest.mark.parametrize(
    ("schema", "strict"),
    [
        # optional → required and nullable (type, enum, $ref, anyOf, const)
        (
            obj({"a": {"type": "string"}, "e": {"enum": ["x", "y"]}}, []),
            obj({"a": {"type": ["string", "null"]},
                 "e": {"enum": ["x", "y", None], "type": ["string", "null"]}}, ["a", "e"]),
        ),
        (
            obj({"r": {"$ref": "#/$defs/R", "description": "dropped beside $ref"}},
                **{"$defs": {"R": obj({"k": {"type": "string"}}, ["k"])}}),
            obj({"r": {"anyOf": [{"$ref": "#/$defs/R"}, {"type": "null"}]}}, ["r"],
                **{"$defs": {"R": obj({"k": {"type": "string"}}, ["k"])}}),
        ),
        # already nullable: required, unchanged
        (
            obj({"n": {"anyOf": [{"type": "string"}, {"type": "null"}]}}),
            obj({"n": {"anyOf": [{"type": "string"}, {"type": "null"}]}}, ["n"]),
        ),
        # oneOf → anyOf; definitions → $defs; formats and defaults OpenAI lacks → description
        (
            obj({"u": {"type": "string", "format": "uri", "default": "x"},
                 "o": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                 "d": {"$ref": "#/definitions/D"}}, ["u", "o", "d"],
                definitions={"D": {"type": "string", "format": "date"}}),
            obj({"u": {"type": "string", "description": '{format: uri, default: "x"}'},
                 "o": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                 "d": {"$ref": "#/$defs/D"}}, ["u", "o", "d"],
                **{"$defs": {"D": {"type": "string", "format": "date"}}}),
        ),
        # allOf merged; $schema dropped
        (
            {"$schema": "https://json-schema.org/draft/2020-12/schema", "allOf": [
                obj({"a": {"type": "string"}}, ["a"]), {"properties": {"b": {"type": "number"}},
                                                        "required": ["b"]}]},
            obj({"a": {"type": "string"}, "b": {"type": "number"}}, ["a", "b"]),
        ),
    ],
    ids=["optional", "ref", "nullable", "rewrites", "allOf"],
)  # fmt: skip
def test_schemas_made_strict(schema: dict[str, Any], strict: dict[str, Any]) -> None:
    assert make_strict(schema, W).schema == strict


def test_a_root_that_is_not_an_object_is_wrapped() -> None:
    st = make_strict({"type": "array", "items": {"type": "integer"}}, W)
    assert st.schema == obj({"value": {"type": "array", "items": {"type": "integer"}}}, ["value"])
    assert st.restore_text('{"value": [1, 2]}') == "[1,2]"
    with pytest.raises(InvalidRequestError, match=r"tools\.0\.input_schema: the root must be an"):
        make_strict({"type": "string"}, "tools.0.input_schema", object_root=True)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "object", "properties": {}}, f"{W}: {OPEN_OBJECT}"),
        (obj({"a": obj({}, additionalProperties=True)}), f"{W}.properties.a: {OPEN_OBJECT}"),
        (obj({"a": {"not": {"type": "string"}}}),
         f"{W}.properties.a: 'not' is not supported in a strict schema"),
        (obj({"a": {"$ref": "https://x/s.json"}}),
         f"{W}.properties.a: '$ref' 'https://x/s.json' is not a local definition (#/$defs/…)"),
        (obj({"a": {"enum": [{"x": 1}]}}),
         f"{W}.properties.a: 'enum' values must be strings, numbers, booleans or null in a "
         "strict schema"),
        (obj({"a": {"allOf": [{"type": "string"}, {"type": "integer"}]}}),
         f"{W}.properties.a: 'allOf' parts disagree on 'type'"),
        (obj({"a": True}), f"{W}.properties.a: boolean schemas are not supported in a strict "
         "schema"),
        (obj({"a": {"description": "?"}}),
         f"{W}.properties.a: a strict schema needs a 'type' (or anyOf, enum, const)"),
        (obj({}, ["ghost"]), f"{W}: required property 'ghost' is not in properties"),
    ],
)  # fmt: skip
def test_what_cannot_mean_the_same_is_a_400(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make_strict(schema, W)
    assert info.value.message == message


def test_restoring_removes_only_the_models_absent_values() -> None:
    schema = obj(
        {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "note": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
            "pick": {"anyOf": [obj({"x": {"type": "integer"}}), obj({"y": {"type": "integer"}})]},
        },
        ["name"],
        **{"$defs": {"Tag": obj({"k": {"type": "string"}, "v": {"type": "string"}}, ["k"])}},
    )
    st = make_strict(schema, W)
    answer = {"name": None, "age": None, "note": None, "tags": [{"k": "a", "v": None}],
              "pick": {"y": None}}  # fmt: skip
    # a required null stays (the model's own), a nullable optional null stays
    assert st.restore(answer) == {"name": None, "note": None, "tags": [{"k": "a"}], "pick": {}}
    assert st.restore_text('{"name": "x", "age": 3') == '{"name": "x", "age": 3'  # cut off: kept


# ---------------------------------------------------------------------------------------------
# Through the gateway


class Person(pydantic.BaseModel):
    name: str
    age: int = 0
    nickname: str | None = None


async def post(gw: TestServer, doc: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(gw.make_url("/v1/messages"), json=doc) as r:
        return r.status, await r.json()


def sent_body(upstream: Upstream) -> dict[str, Any]:
    return next(r.body for r in reversed(upstream.mock.requests) if r.path.endswith(
        ("/responses", "/chat/completions")))  # fmt: skip


@pytest.mark.parametrize("dialect", ["responses", "chat"])
async def test_sdk_parse_gets_its_model_back(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str
) -> None:
    gw = await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": dialect}})
    answer = '{"name": "Ada", "age": null, "nickname": null}'  # as strict mode has it
    client = anthropic.AsyncAnthropic(base_url=str(gw.make_url("")), api_key="k", max_retries=0)
    ask = {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": "who?"}]}
    for stream in (False, True):
        upstream.mock.enqueue(Script(items=[Text(answer)]))
        if stream:
            async with client.messages.stream(**ask, output_format=Person) as s:
                parsed = (await s.get_final_message()).parsed_output
        else:
            parsed = (await client.messages.parse(**ask, output_format=Person)).parsed_output
        # "age" was absent for the model: the client's default, not a validation error
        assert parsed == Person(name="Ada", age=0, nickname=None)
        body = sent_body(upstream)
        fmt = body["text"]["format"] if dialect == "responses" else body["response_format"]
        inner = fmt if dialect == "responses" else fmt["json_schema"]
        assert inner["strict"] is True and inner["name"] == "Person"
        assert inner["schema"]["required"] == ["name", "age", "nickname"]
        assert inner["schema"]["properties"]["age"]["type"] == ["integer", "null"]
    await client.close()


@pytest.mark.parametrize("dialect", ["responses", "chat"])
async def test_restored_text_streams_as_one_delta(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str
) -> None:
    gw = await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": dialect}})
    schema = obj({"a": {"type": "integer"}, "b": {"type": "integer"}}, ["a"])
    doc = {"model": MODEL, "max_tokens": 100, "stream": True,
           "output_config": {"format": {"type": "json_schema", "schema": schema}},
           "messages": [{"role": "user", "content": "numbers"}]}  # fmt: skip
    upstream.mock.enqueue(Script(items=[Text('{"a": 1, "b": null}')]))
    async with aiohttp.ClientSession() as s, s.post(gw.make_url("/v1/messages"), json=doc) as r:
        events = parse_frames(await r.read())
    check_stream(events)
    deltas = [d["delta"] for name, d in events if name == "content_block_delta"]
    assert deltas == [{"type": "text_delta", "text": '{"a":1}'}]


@pytest.mark.parametrize("dialect", ["responses", "chat"])
@pytest.mark.parametrize("stream", [False, True])
async def test_strict_tool_input_is_restored(
    make_gateway: GatewayFactory, upstream: Upstream, dialect: str, stream: bool
) -> None:
    gw = await make_gateway(upstreams={"default": {"base_url": upstream.url, "dialect": dialect}})
    schema = obj({"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, ["city"])
    tools = [
        {"name": "weather", "strict": True, "input_schema": schema},
        {"name": "loose", "input_schema": {"type": "object", "properties": {"q": {}}}},
    ]
    upstream.mock.enqueue(
        Script(items=[
            FunctionCall("weather", '{"city": "Oslo", "unit": null}', call_id="call_1"),
            FunctionCall("loose", '{"q": null}', call_id="call_2"),
        ])
    )  # fmt: skip
    doc = {"model": MODEL, "max_tokens": 100, "tools": tools, "stream": stream,
           "messages": [{"role": "user", "content": "weather?"}]}  # fmt: skip
    client = anthropic.AsyncAnthropic(base_url=str(gw.make_url("")), api_key="k", max_retries=0)
    if stream:
        async with client.messages.stream(**{k: v for k, v in doc.items() if k != "stream"}) as s:
            msg = await s.get_final_message()
    else:
        msg = await client.messages.create(**doc)
    await client.close()
    assert [(b.name, b.input) for b in msg.content if b.type == "tool_use"] == [
        ("weather", {"city": "Oslo"}),  # the model's "absent" unit
        ("loose", {"q": None}),  # not strict: as the model wrote it
    ]
    fns = sent_body(upstream)["tools"]
    if dialect == "chat":
        fns = [f["function"] | {} for f in fns]
    expected = [True, False] if dialect == "responses" else [True, None]
    assert [f.get("strict") for f in fns] == expected
    assert fns[0]["parameters"]["required"] == ["city", "unit"]


async def test_schema_faults_are_a_400_before_any_upstream_call(
    gateway: TestServer, upstream: Upstream
) -> None:
    base = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    open_schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "schema": open_schema}
    cases = [
        ({"output_config": {"format": fmt}}, f"{W}: {OPEN_OBJECT}"),
        ({"output_format": fmt}, f"output_format.schema: {OPEN_OBJECT}"),
        ({"output_format": fmt, "output_config": {"format": fmt}},
         "output_format: both output_format and output_config.format were provided; use only "
         "output_config.format (output_format is deprecated)"),
        ({"tools": [{"name": "t", "strict": True, "input_schema": open_schema}]},
         f"tools.0.input_schema: {OPEN_OBJECT}"),
    ]  # fmt: skip
    for extra, message in cases:
        status, answer = await post(gateway, {**base, **extra})
        assert status == 400
        assert answer["error"] == {"type": "invalid_request_error", "message": message}
    assert upstream.mock.requests == []


async def test_output_format_is_an_alias(gateway: TestServer, upstream: Upstream) -> None:
    schema = obj({"a": {"type": "string"}}, ["a"])
    upstream.mock.enqueue(Script(items=[Text('{"a": "x"}')]))
    status, answer = await post(gateway, {
        "model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
        "output_format": {"type": "json_schema", "schema": schema}})  # fmt: skip
    assert status == 200
    assert answer["content"] == [{"type": "text", "text": '{"a": "x"}'}]  # nothing to restore
    assert sent_body(upstream)["text"]["format"]["schema"] == schema
    assert json.loads(answer["content"][0]["text"]) == {"a": "x"}
