"""A lone surrogate (JSON "\\ud800") inside `voicemail` or `analysis` was answered with
pydantic's "Input should be a valid string, unable to parse raw data as a unicode string",
of a value that is a string: the README promises `must be valid Unicode text`, as the
top-level texts (name, first_message, dynamic_instruction) say it."""

from __future__ import annotations

from typing import Any

import pytest

from common.calls.errors import InvalidCall
from common.calls.request import parse_outbound_call

LONE = "\ud800"

CASES: dict[str, tuple[dict[str, Any], str]] = {
    "voicemail.message": (
        {"voicemail": {"action": "leave_message", "message": f"a{LONE}"}},
        "voicemail.message",
    ),
    "voicemail.action": ({"voicemail": {"action": LONE}}, "voicemail.action"),
    "analysis.success_criteria": (
        {"analysis": {"success_criteria": LONE}},
        "analysis.success_criteria",
    ),
    "a field's description": (
        {"analysis": {"fields": {"a": {"type": "string", "description": LONE}}}},
        "analysis.fields.a.description",
    ),
    "an enum value": (
        {"analysis": {"fields": {"a": {"type": "enum", "enum": [LONE]}}}},
        "analysis.fields.a.enum.0",
    ),
    "a key in voicemail": ({"voicemail": {LONE: 1}}, "voicemail"),
}


@pytest.mark.parametrize(("extra", "field"), CASES.values(), ids=CASES.keys())
def test_a_lone_surrogate_is_said_as_such(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidCall) as refused:
        parse_outbound_call({"phone_number": "+14155550123", **extra})
    said = {error.field: error.error for error in refused.value.errors}
    assert said.get(field) == "must be valid Unicode text", said
