"""The post-call analysis names the HTTP status OpenAI refused it with, also once its retry
is spent (the real openai plugin against a local stand-in of OpenAI's chat completions)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from livekit.plugins import openai

from agent.analysis import AnalysisResult
from tests.unit.test_agent_analysis import FakeOpenAI, run_analysis
from tests.unit.test_agent_analysis import fake_openai as fake_openai  # noqa: F401 - fixture
from tests.unit.test_agent_analysis import make_llm as make_llm  # noqa: F401 - fixture


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_refusal_on_both_attempts_is_named_by_its_status(
    fake_openai: FakeOpenAI,  # noqa: F811
    make_llm: Callable[[str], openai.LLM],  # noqa: F811
    status: int,
) -> None:
    """OpenAI answering 429 (a rate limit, or a quota spent) or a 5xx to the analysis and to
    its retry: livekit-agents raises "failed to generate LLM completion after 2 attempts"
    (an APIConnectionError) from the last refusal, and the final report said
    "analysis failed: connection error", sending the operator to look at the network."""
    fake_openai.status = status

    result = await run_analysis(fake_openai, make_llm)

    assert len(fake_openai.requests) == 2  # tried, then tried again
    assert result == AnalysisResult(errors=[f"analysis failed: the LLM API answered HTTP {status}"])
