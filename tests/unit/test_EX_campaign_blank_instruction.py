"""A campaign row's blank `dynamic_instruction` is no instruction given, as a single call's
is: the campaign's `defaults` hold under it. A JSON list exported from a spreadsheet writes
`""` for an empty cell, and each such row was called with the seed's "You are a helpful
assistant.", the campaign's own instructions (why it calls, in its language) dropped, with
nothing said: a blank instruction is the default one, not a refused row."""

from __future__ import annotations

import pytest

from common.calls.request import RequestRules
from common.campaigns.request import merged

DEFAULTS = {
    "dynamic_instruction": "Eres un asistente de ventas. Recuerda al cliente su pedido.",
    "language": "es",
}


@pytest.mark.parametrize("blank", ["", "   ", " \n\t ", "\u200b"])
def test_a_rows_blank_instruction_keeps_the_campaigns(blank: str) -> None:
    row = {"phone_number": "+34612345678", "name": "Carlos", "dynamic_instruction": blank}
    call = RequestRules().parse(merged(DEFAULTS, row))
    assert call.dynamic_instruction == DEFAULTS["dynamic_instruction"]
    assert (call.name, call.language) == ("Carlos", "es")


def test_a_rows_own_instruction_still_wins() -> None:
    row = {"phone_number": "+34612345678", "dynamic_instruction": "Pregunta por la factura."}
    assert RequestRules().parse(merged(DEFAULTS, row)).dynamic_instruction == (
        "Pregunta por la factura."
    )


def test_a_rows_instruction_that_is_no_text_is_still_refused() -> None:
    for bad in (5, "\x00", "x" * 4001):
        row = {"phone_number": "+34612345678", "dynamic_instruction": bad}
        with pytest.raises(Exception, match="dynamic_instruction"):
            RequestRules().parse(merged(DEFAULTS, row))
