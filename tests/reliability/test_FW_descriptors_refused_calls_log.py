"""Calls refused while every file descriptor is in use are logged once a minute, not each.

Seen live: a server started under `ulimit -n 256` and sent 600 calls, 300 at once, answered
512 of them 503 (`could not write config (lock): Too many open files`) and logged an ERROR
for each refused call's config write that could not be taken back (449 lines in 23 s, the
same words each time): its record could not be read, so the retraction was tried, and
failed for the same reason. Now the first one is said, and later ones once a minute with how
many were held back; the server still answers the calls 503 and places them again once
descriptors are free.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.conftest import AppFactory
from tests.reliability.test_ER_descriptors import every_descriptor_in_use

NOT_TAKEN_BACK = "could not take back the config write"


async def test_calls_refused_out_of_descriptors_log_one_line_not_one_each(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app()
    body = {"phone_number": "+14155557701", "name": "Ann"}
    resp = await client.post("/calls/outbound", json=body)  # a connection kept open
    assert resp.status == 200, await resp.text()
    caplog.set_level(logging.INFO, logger="common")
    answers: list[tuple[int, dict[str, Any]]] = []
    with every_descriptor_in_use():
        for _ in range(12):
            resp = await client.post("/calls/outbound", json=body)
            answers.append((resp.status, await resp.json()))
    assert {status for status, _ in answers} == {503}, answers
    assert all("Too many open files" in answer["error"] for _, answer in answers), answers
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    not_taken_back = [
        r
        for r in errors
        if r.name == "common.calls.service" and r.getMessage().startswith(NOT_TAKEN_BACK)
    ]
    assert len(not_taken_back) == 1, [r.getMessage() for r in errors]
    # Every kind of line once at most: the refusals' own line is said once a minute too.
    kinds = [r.msg for r in errors if r.name.startswith("common.calls")]
    assert len(kinds) == len(set(kinds)), [r.getMessage() for r in errors]

    resp = await client.post("/calls/outbound", json=body)
    assert resp.status == 200, await resp.text()
