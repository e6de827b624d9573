"""Post-call analysis: the schema and the value checks (pure), and the real `openai.LLM`
plugin against a fake OpenAI-compatible server on 127.0.0.1 that speaks the streaming
chat-completions wire format (SSE `data:` chunks, a usage chunk, `[DONE]`).

The fake server is on loopback inside the test, so the HTTP tests do not use `no_network`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from livekit.agents.llm.utils import to_openai_response_format
from livekit.plugins import openai
from pytest_aiohttp import AiohttpServer

from agent.analysis import (
    NO_CONVERSATION,
    NOT_JSON,
    AnalysisResult,
    analyze,
    build_response_model,
    format_transcript,
    read_answer,
    validate_extracted,
    validate_value,
)
from common.config_store.model import (
    ANALYSIS_SCHEMA_MAX_CHARS,
    ANALYSIS_SCHEMA_MAX_ENUM_VALUES,
    AnalysisField,
    AnalysisRequest,
    analysis_schema_problem,
    analysis_schema_size,
)
from common.contracts import SuccessVerdict, TranscriptTurn

REQUEST = AnalysisRequest(
    summary=True,
    success_criteria="The callee agrees to a batting lesson.",
    fields={
        "age": AnalysisField(type="integer", description="The callee's age", required=True),
        "interested": AnalysisField(type="boolean", description="Wants a lesson"),
        "level": AnalysisField(type="enum", enum=["beginner", "club", "pro"]),
        "budget": AnalysisField(type="number", description="Budget per lesson in GBP"),
        "json": AnalysisField(type="string", description="A name pydantic itself uses"),
    },
)

TRANSCRIPT = [
    TranscriptTurn(role="agent", text="Hi Alice, it's your cricket coach.", at_s=0.2),
    TranscriptTurn(role="callee", text="Oh hi! I'm thirty and I play club cricket.", at_s=2.5),
    TranscriptTurn(role="agent", text="Want a lesson on Saturday?", at_s=4.0, interrupted=True),
    TranscriptTurn(role="callee", text="Yes please, up to 40 pounds.", at_s=5.1),
]

GOOD_ANSWER = {
    "summary": "Alice, a club cricketer aged 30, booked a Saturday lesson.",
    "success": {"achieved": True, "reason": "She said yes to a lesson."},
    "extracted": {"age": 30, "interested": True, "level": "club", "budget": 40, "json": None},
}


# ----------------------------------------------------------------------------- pure parts


def test_the_schema_is_built_from_the_request() -> None:
    model = build_response_model(REQUEST)
    assert model is not None
    wire = to_openai_response_format(model)  # what the plugin puts in the request
    assert wire["type"] == "json_schema" and wire["json_schema"]["strict"] is True
    schema = wire["json_schema"]["schema"]
    assert set(schema["required"]) == {"summary", "success", "extracted"}
    extracted = schema["properties"]["extracted"]
    assert set(extracted["properties"]) == {"age", "interested", "level", "budget", "json"}
    assert extracted["additionalProperties"] is False
    assert extracted["properties"]["age"]["type"] == ["integer", "null"]
    assert extracted["properties"]["budget"]["type"] == ["number", "null"]
    assert extracted["properties"]["interested"]["type"] == ["boolean", "null"]
    assert extracted["properties"]["level"]["enum"] == ["beginner", "club", "pro", None]
    assert extracted["properties"]["age"]["description"].startswith("The callee's age")
    assert set(schema["properties"]["success"]["properties"]) == {"achieved", "reason"}


def test_each_field_and_the_criteria_are_sent_once() -> None:
    """Regression: `extracted` and `success` were described where they were used, a `$ref`
    with a description beside it, which the strict schema inlines while keeping `$defs`: the
    fields, their enum values and the criteria went to OpenAI twice, each copy counted against
    its limits on a schema's enum values (1,000) and their length (120,000 characters). They
    are written in place, with no `$defs` nor `$ref` (which some OpenAI-compatible servers do
    not resolve)."""
    request = AnalysisRequest.model_validate(
        {
            "success_criteria": "They book a lesson",
            "fields": {
                "level": {"type": "enum", "enum": ["beginner-x", "club-x", "pro-x"]},
                "plan": {"type": "enum", "enum": ["gold-x"]},
            },
        }
    )
    model = build_response_model(request)
    assert model is not None
    wire = json.dumps(to_openai_response_format(model))
    for text in ("beginner-x", "club-x", "pro-x", "gold-x", "They book a lesson"):
        assert wire.count(text) == 1, text
    schema = to_openai_response_format(model)["json_schema"]["schema"]
    assert "$defs" not in wire and "$ref" not in wire
    success, extracted = schema["properties"]["success"], schema["properties"]["extracted"]
    assert success["description"] == "Judged against: They book a lesson"
    assert success["additionalProperties"] is False
    assert success["required"] == ["achieved", "reason"]
    assert extracted["description"] == "Values taken from the call"
    assert extracted["additionalProperties"] is False and extracted["required"] == ["level", "plan"]


def _schema_size(schema: object) -> tuple[int, int]:
    """(enum values, characters of property names, definition names and enum values) of a
    JSON schema, as OpenAI's structured outputs count them against their limits."""
    values = chars = 0
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("properties", "$defs") and isinstance(value, dict):
                chars += sum(map(len, value))
            if key == "enum" and isinstance(value, list):
                values += len(value)
                chars += sum(len(v) for v in value if isinstance(v, str))
            inner = _schema_size(value)
            values, chars = values + inner[0], chars + inner[1]
    elif isinstance(schema, list):
        for value in schema:
            inner = _schema_size(value)
            values, chars = values + inner[0], chars + inner[1]
    return values, chars


def test_the_intake_counts_the_schema_as_the_agent_sends_it() -> None:
    """The intake refuses an analysis OpenAI would refuse (`analysis_schema_problem`), by its
    count of the schema the agent sends (`analysis_schema_size`): the two held together, and
    an analysis at the intake's limits is within OpenAI's."""
    fields: dict[str, object] = {
        f"field_{i}": {"type": "enum", "enum": [f"{j:02d}".ljust(199, "v") for j in range(50)]}
        for i in range(12)
    }
    fields |= {"age": {"type": "integer"}, "few": {"type": "enum", "enum": ["a", "bc"]}}
    request = AnalysisRequest.model_validate({"success_criteria": "Agrees", "fields": fields})
    assert analysis_schema_problem(request) is None
    model = build_response_model(request)
    assert model is not None
    sent = _schema_size(to_openai_response_format(model)["json_schema"]["schema"])
    assert sent == analysis_schema_size(request)
    assert sent[0] <= ANALYSIS_SCHEMA_MAX_ENUM_VALUES and sent[1] <= ANALYSIS_SCHEMA_MAX_CHARS


def test_only_what_is_asked_for_is_in_the_schema() -> None:
    summary_only = build_response_model(AnalysisRequest())
    assert summary_only is not None and set(summary_only.model_fields) == {"summary"}
    nothing = build_response_model(AnalysisRequest(summary=False))
    assert nothing is None


NUMBER = AnalysisField(type="number")
INTEGER = AnalysisField(type="integer")
BOOLEAN = AnalysisField(type="boolean")
STRING = AnalysisField(type="string")
ENUM = AnalysisField(type="enum", enum=["yes", "no"])


@pytest.mark.parametrize(
    ("spec", "value", "kept", "error"),
    [
        (INTEGER, 30, 30, None),
        (INTEGER, 30.0, 30, None),
        (INTEGER, "thirty", None, "expected an integer, got 'thirty'"),
        (INTEGER, 3.5, None, "expected an integer, got 3.5"),
        (INTEGER, True, None, "expected an integer, got True"),
        (NUMBER, 3.5, 3.5, None),
        (NUMBER, 4, 4, None),
        (NUMBER, "4", None, "expected a number, got '4'"),
        (NUMBER, False, None, "expected a number, got False"),
        (BOOLEAN, False, False, None),
        (BOOLEAN, "yes", None, "expected true or false, got 'yes'"),
        (STRING, "club", "club", None),
        (STRING, 7, None, "expected a string, got 7"),
        (ENUM, "no", "no", None),
        (ENUM, "maybe", None, "expected one of yes, no, got 'maybe'"),
        (ENUM, None, None, None),
    ],
)
def test_value_checks(spec: AnalysisField, value: Any, kept: Any, error: str | None) -> None:
    assert validate_value(spec, value) == (kept, error)


def test_a_bad_value_is_dropped_and_named_the_others_kept() -> None:
    kept, errors = validate_extracted(
        REQUEST.fields, {"age": "thirty", "interested": True, "level": "legend"}
    )
    assert kept == {"interested": True, "budget": None, "json": None}
    assert errors == [
        "extracted.age: expected an integer, got 'thirty'",
        "extracted.level: expected one of beginner, club, pro, got 'legend'",
    ]


def test_a_required_value_that_is_missing_is_an_error() -> None:
    kept, errors = validate_extracted(REQUEST.fields, {"age": None})
    assert "age" not in kept
    assert errors == ["extracted.age: required but not found in the call"]


def test_reading_answers() -> None:
    good = read_answer(REQUEST, json.dumps(GOOD_ANSWER))
    assert good.errors == []
    assert good.success == SuccessVerdict(achieved=True, reason="She said yes to a lesson.")
    assert good.extracted == GOOD_ANSWER["extracted"]
    assert read_answer(REQUEST, '{"summary": "cut') == AnalysisResult(errors=[NOT_JSON])
    assert read_answer(REQUEST, "[1, 2]") == AnalysisResult(errors=[NOT_JSON])
    partial = read_answer(REQUEST, json.dumps({"summary": "", "success": {"achieved": "yes"}}))
    assert partial.summary is None and partial.success is None
    assert partial.errors[0] == "summary: expected a text, got ''"
    assert partial.errors[1].startswith("success: expected {achieved: true|false, reason}")
    assert partial.errors[2] == "extracted: expected an object, got None"


def test_the_transcript_as_the_llm_reads_it() -> None:
    assert format_transcript(TRANSCRIPT[1:3]) == (
        '[2.5 s] Callee: "Oh hi! I\'m thirty and I play club cricket."\n'
        '[4.0 s] Agent (interrupted): "Want a lesson on Saturday?"'
    )


# ----------------------------------------------------------------------------- over HTTP


def sse(chunk: dict[str, Any] | str) -> bytes:
    data = chunk if isinstance(chunk, str) else json.dumps(chunk)
    return f"data: {data}\n\n".encode()


@dataclass
class FakeOpenAI:
    """`POST /v1/chat/completions`, streaming `answer` in pieces like OpenAI does."""

    base_url: str = ""
    answer: str = ""
    status: int = 200
    hang: asyncio.Event | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("Authorization")})
        if self.hang is not None:
            await self.hang.wait()
        if self.status != 200:
            return web.json_response({"error": {"message": "boom"}}, status=self.status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": body["model"]}
        pieces = [self.answer[i : i + 17] for i in range(0, len(self.answer), 17)]
        first = {"role": "assistant", "content": pieces[0] if pieces else ""}
        await response.write(sse({**base, "choices": [{"index": 0, "delta": first}]}))
        for piece in pieces[1:]:
            delta = {"content": piece}
            await response.write(sse({**base, "choices": [{"index": 0, "delta": delta}]}))
        done = {"index": 0, "delta": {}, "finish_reason": "stop"}
        await response.write(sse({**base, "choices": [done]}))
        usage = {"prompt_tokens": 321, "completion_tokens": 45, "total_tokens": 366}
        await response.write(sse({**base, "choices": [], "usage": usage}))
        await response.write(sse("[DONE]"))
        await response.write_eof()
        return response


@pytest.fixture
async def fake_openai(aiohttp_server: AiohttpServer) -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    fake.base_url = str(server.make_url("/v1"))
    yield fake
    if fake.hang is not None:
        fake.hang.set()


@pytest.fixture
async def make_llm() -> AsyncIterator[Callable[[str], openai.LLM]]:
    made: list[openai.LLM] = []

    def make(base_url: str) -> openai.LLM:
        llm = openai.LLM(model="gpt-4.1-mini", api_key="test", base_url=base_url)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        await llm.aclose()


async def run_analysis(
    fake: FakeOpenAI, make_llm: Callable[[str], openai.LLM], timeout_s: float = 30.0
) -> AnalysisResult:
    # 30 s: the fake answers at once, but a loaded 2-core machine took 13.9 s for the first
    # exchange of a worker (each attempt gets half), and 10 s read as "analysis failed: timeout"
    return await analyze(
        make_llm(fake.base_url),
        REQUEST,
        TRANSCRIPT,
        context_instructions="You are a cricket coach calling Alice.",
        timeout_s=timeout_s,
    )


async def test_a_good_structured_answer(
    fake_openai: FakeOpenAI, make_llm: Callable[[str], openai.LLM]
) -> None:
    fake_openai.answer = json.dumps(GOOD_ANSWER)

    result = await run_analysis(fake_openai, make_llm)

    assert result.errors == []
    assert result.summary == GOOD_ANSWER["summary"]
    assert result.success == SuccessVerdict(achieved=True, reason="She said yes to a lesson.")
    assert result.extracted == GOOD_ANSWER["extracted"]
    assert result.usage == {
        "provider": fake_openai.base_url.removeprefix("http://").removesuffix("/v1"),
        "model": "gpt-4.1-mini",
        "input_tokens": 321,
        "output_tokens": 45,
        "total_tokens": 366,
    }
    (sent,) = fake_openai.requests
    body = sent["body"]
    assert sent["auth"] == "Bearer test"
    assert body["model"] == "gpt-4.1-mini" and body["stream"] is True
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert set(schema["properties"]["extracted"]["properties"]) == set(REQUEST.fields)
    system, user = body["messages"]
    assert (
        system["role"] == "system" and "You are a cricket coach calling Alice." in system["content"]
    )
    assert "The callee agrees to a batting lesson." in system["content"]
    assert user["content"].splitlines()[2] == (
        '[2.5 s] Callee: "Oh hi! I\'m thirty and I play club cricket."'
    )


async def test_a_value_that_fails_its_check_is_dropped_and_named(
    fake_openai: FakeOpenAI, make_llm: Callable[[str], openai.LLM], caplog: pytest.LogCaptureFixture
) -> None:
    answer = json.loads(json.dumps(GOOD_ANSWER))
    answer["extracted"]["age"] = "thirty, call me on +1 415 555 0123"
    fake_openai.answer = json.dumps(answer)

    result = await run_analysis(fake_openai, make_llm)

    value = "'thirty, call me on +1 415 555 0123'"
    assert result.errors == [f"extracted.age: expected an integer, got {value}"]
    # The log names the value, never what the callee said: it outlives the call's retention.
    assert "post-call analysis: 1 value(s) dropped or missing: extracted.age" in caplog.text
    assert "thirty" not in caplog.text and "555" not in caplog.text
    assert result.extracted is not None and "age" not in result.extracted
    assert result.extracted["level"] == "club"
    assert result.summary == GOOD_ANSWER["summary"]
    assert result.usage["input_tokens"] == 321


async def test_a_malformed_answer(
    fake_openai: FakeOpenAI, make_llm: Callable[[str], openai.LLM]
) -> None:
    fake_openai.answer = '{"summary": "Alice booked a less'

    result = await run_analysis(fake_openai, make_llm)

    assert (result.summary, result.success, result.extracted) == (None, None, None)
    assert result.errors == ["the analysis answer was not valid JSON"]


async def test_a_server_that_never_answers(
    fake_openai: FakeOpenAI, make_llm: Callable[[str], openai.LLM]
) -> None:
    fake_openai.hang = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await run_analysis(fake_openai, make_llm, timeout_s=1.0)

    assert loop.time() - started < 3.0
    assert result == AnalysisResult(errors=["analysis failed: timeout"])


async def test_an_api_error(fake_openai: FakeOpenAI, make_llm: Callable[[str], openai.LLM]) -> None:
    fake_openai.status = 400

    result = await run_analysis(fake_openai, make_llm)

    assert result == AnalysisResult(errors=["analysis failed: the LLM API answered HTTP 400"])
    assert len(fake_openai.requests) == 1  # a 400 is not retried


async def test_no_conversation_no_request(
    fake_openai: FakeOpenAI, make_llm: Callable[[str], openai.LLM]
) -> None:
    result = await analyze(make_llm(fake_openai.base_url), REQUEST, [], context_instructions="")
    assert result == AnalysisResult(errors=[NO_CONVERSATION])
    assert fake_openai.requests == []


def test_an_enum_of_one_value_is_sent_as_an_enum_not_a_const() -> None:
    """pydantic writes a one-value Literal as `const`, which OpenAI's structured outputs do
    not list among the keywords they support and some OpenAI-compatible gateways
    (OPENAI_BASE_URL) refuse (googleapis/python-genai#264): an analysis asking for a field
    with one allowed value could fail the whole analysis there. It is sent as an `enum`."""
    request = AnalysisRequest.model_validate(
        {"summary": False, "fields": {"plan": {"type": "enum", "enum": ["gold"]}}}
    )
    model = build_response_model(request)
    assert model is not None
    wire = to_openai_response_format(model)
    assert '"const"' not in json.dumps(wire)
    extracted = wire["json_schema"]["schema"]["properties"]["extracted"]
    assert extracted["properties"]["plan"]["enum"] == ["gold", None]
