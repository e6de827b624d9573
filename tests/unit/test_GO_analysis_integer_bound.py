"""An extracted `integer` is kept only within what every JSON reader keeps exactly
(±(2**53 - 1), I-JSON). A callee who dictated a 20-digit number for an integer field (a
policy number, "my budget is a hundred quintillion") had it kept, stored and sent in the
customer's `call.report` webhook, where a JavaScript receiver read 12345678901234567891 as
12345678901234567000 (silently another number) and Go's decoder into an int64 refused the
whole body. Now such a value is dropped and named, like any other value that does not fit.

The real `openai.LLM` plugin talks to the fake OpenAI server of test_agent_analysis.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from livekit.plugins import openai

from agent.analysis import validate_value
from common.config_store.model import AnalysisField
from tests.unit.test_agent_analysis import (
    GOOD_ANSWER,
    FakeOpenAI,
    fake_openai,
    make_llm,
    run_analysis,
)

__all__ = ["fake_openai", "make_llm"]  # fixtures

INTEGER = AnalysisField(type="integer")
MAX_SAFE_INTEGER = 9007199254740991  # 2**53 - 1, JavaScript's Number.MAX_SAFE_INTEGER
DICTATED = 12345678901234567891  # 20 digits: past 2**63 too


@pytest.mark.parametrize(
    "value", [2**53 - 1, -(2**53 - 1), 9007199254740991.0, 0, 30, float(2**52)]
)
def test_integers_every_reader_keeps_are_kept(value: Any) -> None:
    assert validate_value(INTEGER, value) == (int(value), None)


@pytest.mark.parametrize("value", [2**53, -(2**53), DICTATED, 1e20, -1e300, 10**400])
def test_larger_integers_are_dropped_and_named(value: Any) -> None:
    kept, problem = validate_value(INTEGER, value)
    assert kept is None
    assert problem is not None
    assert problem.startswith(f"expected an integer within ±{MAX_SAFE_INTEGER}")
    assert "ask for a string" in problem


async def test_a_dictated_20_digit_integer_is_not_reported(
    fake_openai: FakeOpenAI, make_llm: Callable[[str], openai.LLM]
) -> None:
    answer = json.loads(json.dumps(GOOD_ANSWER))
    answer["extracted"]["age"] = DICTATED
    fake_openai.answer = json.dumps(answer)

    result = await run_analysis(fake_openai, make_llm)

    assert result.extracted is not None
    assert "age" not in result.extracted  # not 12345678901234567891, nor its double
    assert result.extracted["level"] == "club" and result.extracted["budget"] == 40
    (error,) = result.errors
    assert error.startswith(f"extracted.age: expected an integer within ±{MAX_SAFE_INTEGER}")
    assert error.endswith(f"got {DICTATED}")
    assert result.summary == GOOD_ANSWER["summary"]
