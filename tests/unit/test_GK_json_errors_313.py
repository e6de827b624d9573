"""A JSON body's trailing comma is named as such whichever Python reads it. Python 3.13's
parser says "Illegal trailing comma before end of object" at the comma's position (3.11 and
3.12: "Expecting property name enclosed in double quotes" at the `}`'s): with `make test
PYTHON=python3.13`, POST /calls/outbound answered Python's words, the comma unnamed and the
fix (remove it) unsaid. Both Pythons' errors are made here, as each raises it."""

from __future__ import annotations

import json

import pytest

from handlers.errors import HttpError
from handlers.http import _trailing_comma, decode_json

BODY = '{\n  "phone_number": "+14155550123",\n  "name": "Ann",\n}'
SAID = "a trailing comma at line 3 column 16, before '}' (JSON allows none: remove it)"


@pytest.mark.parametrize(
    ("message", "pos"),
    [
        ("Expecting property name enclosed in double quotes", BODY.index("}")),  # 3.11, 3.12
        ("Illegal trailing comma before end of object", BODY.rindex(",")),  # 3.13
    ],
)
def test_a_trailing_comma_is_named_as_each_python_reports_it(message: str, pos: int) -> None:
    assert _trailing_comma(json.JSONDecodeError(message, BODY, pos)) == SAID


@pytest.mark.parametrize(
    ("message", "pos"),
    [("Expecting value", 4), ("Illegal trailing comma before end of array", 2)],
)
def test_one_in_an_array_too(message: str, pos: int) -> None:
    said = _trailing_comma(json.JSONDecodeError(message, "[1, ]", pos))
    assert said == "a trailing comma at line 1 column 3, before ']' (JSON allows none: remove it)"


@pytest.mark.parametrize(
    ("doc", "pos"),
    [('{"a" , 1}', 5), ('{"a": 1, x}', 9), ("[1, 2", 5), ('{"a": 1,', 8)],
)
def test_other_errors_are_not_called_a_trailing_comma(doc: str, pos: int) -> None:
    assert _trailing_comma(json.JSONDecodeError("Expecting ':' delimiter", doc, pos)) is None


def test_the_body_of_this_python_is_answered_so() -> None:
    with pytest.raises(HttpError) as raised:
        decode_json(BODY.encode())
    assert raised.value.message == f"request body is not valid JSON: {SAID}"
