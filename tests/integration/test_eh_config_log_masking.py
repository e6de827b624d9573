"""A callee's number given as their name (no name known) is masked in the config store's
seed line, as every phone number in the logs is, through the API and the seed's function."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common import update_config

NUMBER_AS_NAME = "+1 415 555 2671"


def _lines(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


async def test_a_number_placed_as_the_name_is_masked_in_the_config_line(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="common.config_store.store"):
        resp = await client.post(
            "/calls/outbound",
            json={
                "phone_number": "+14155552671",
                "name": NUMBER_AS_NAME,
                "dynamic_instruction": "Confirm the callback number 415-555-2671.",
            },
        )
        assert resp.status == 200
        update_config.update_config(caller_name="+442079460958")
    logged = _lines(caplog)
    assert "✓ Configuration updated successfully" in logged
    # Was "Caller Name: +1 415 555 2671", and the instructions' number whole at DEBUG.
    for digits in ("415 555", "415-555", "2079460958"):
        assert digits not in logged, logged
    assert "Caller Name: +• ••• ••• 2671" in logged
    assert "Caller Name: +••••••••0958" in logged
