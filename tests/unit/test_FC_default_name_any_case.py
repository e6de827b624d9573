"""A call whose name is the seed's default `Guest` is greeted and told goodbye by no name;
one saying `guest` or ` GUEST ` (a CSV row, a request a client filled with the default in
its own case) was greeted by that word: "Greet GUEST by name", and its goodbye was "to
guest". The default is compared case- and space-insensitively."""

from __future__ import annotations

import pytest

from agent.plan import plan_session
from common.calls.request import OutboundCall
from common.config_store.model import CallConfig
from common.settings import Settings

SETTINGS = Settings()


@pytest.mark.parametrize("name", ["guest", " GUEST ", "gUeSt\u00a0", "  gUEST"])
def test_the_default_name_in_any_case_or_spacing_is_no_name(name: str) -> None:
    requested = OutboundCall.model_validate({"phone_number": "+14155550123", "name": name})
    plan = plan_session(CallConfig.create(requested.name, tts_language="es"), SETTINGS)
    assert "guest" not in plan.greeting.casefold()
    assert plan.greeting.startswith("The call has just been answered. Greet them (by no name)")
    assert "The callee's name is not known: address them by no name." in plan.instructions
    assert "guest" not in plan.instructions.casefold()
    assert plan.callee == "the callee (by no name)"  # the goodbye's and do-not-call's replies


@pytest.mark.parametrize("name", ["Guesty", "Guest House", "Ann"])
def test_names_that_only_look_like_it_are_names(name: str) -> None:
    plan = plan_session(CallConfig.create(name), SETTINGS)
    assert plan.greeting.startswith(f'The call has just been answered. Greet "{name}" by name')
    assert plan.callee == name
