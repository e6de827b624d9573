"""A name with no word to say is no name: the agent greets the callee by none, as it does
the seed's default Guest. A CSV's placeholder ("-", "?", "N/A" is a name), punctuation or
emoji alone passed as a name (something visible), and the LLM was told "Greet - by name"
and "You are on an outbound phone call with -. Address them as -."."""

from __future__ import annotations

import pytest

from agent.plan import plan_session
from common.config_store.model import CallConfig
from common.settings import Settings

SETTINGS = Settings()


@pytest.mark.parametrize("name", ["-", "?", "...", "🌸🌸", "~~x~~", '<break time="1s"/> ☎'])
def test_a_name_with_nothing_to_say_is_no_name(name: str) -> None:
    plan = plan_session(CallConfig.create(name, call_id="call-1"), SETTINGS)
    assert plan.greeting.startswith("The call has just been answered. Greet them (by no name)")
    assert "The callee's name is not known: address them by no name." in plan.instructions
    assert name not in plan.instructions
    assert plan.callee_as_data == "the callee (by no name)"


@pytest.mark.parametrize("name", ["Ana 🌸", "N/A", "Jo", "42", "もも"])
def test_a_name_with_a_word_is_said(name: str) -> None:
    plan = plan_session(CallConfig.create(name, call_id="call-1"), SETTINGS)
    assert plan.greeting.startswith(f'The call has just been answered. Greet "{name}" by name')
