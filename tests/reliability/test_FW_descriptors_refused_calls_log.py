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

import errno
import logging
from typing import Any

import pytest

from common.config_store.store import ConfigWriteError
from handlers.keys import CONFIG
from tests.conftest import AppFactory

NOT_TAKEN_BACK = "could not take back the config write"
TOO_MANY = "could not write config (lock): Too many open files"


async def test_calls_refused_out_of_descriptors_log_one_line_not_one_each(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As config.json's store fails with every descriptor in use: its write and its read
    (the record cannot be looked for) and the retraction. (The real exhaustion, in this
    process, made CPython 3.11.7's ast module fail pytest's session end now and then.)"""
    client = await start_app()
    resp = await client.post("/calls/outbound", json={"phone_number": "+14155557701"})
    assert resp.status == 200, await resp.text()  # config.json is there
    config = client.app[CONFIG]

    async def out_of_descriptors(*_args: Any, **_kwargs: Any) -> Any:
        raise ConfigWriteError(errno.EMFILE, TOO_MANY)

    for name in ("update_async", "load_async", "retract_call_async"):
        monkeypatch.setattr(config, name, out_of_descriptors)
    caplog.set_level(logging.INFO, logger="common")
    answers: list[tuple[int, dict[str, Any]]] = []
    for _ in range(12):
        resp = await client.post("/calls/outbound", json={"phone_number": "+14155557701"})
        answers.append((resp.status, await resp.json()))
    assert {status for status, _ in answers} == {503}, answers
    assert all("Too many open files" in answer["error"] for _, answer in answers), answers
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    not_taken_back = [r for r in errors if r.getMessage().startswith(NOT_TAKEN_BACK)]
    assert len(not_taken_back) == 1, [r.getMessage() for r in errors]
    # Every kind of line once at most: the refusals' own line is said once a minute too.
    kinds = [r.msg for r in errors if r.name.startswith("common.calls")]
    assert len(kinds) == len(set(kinds)), [r.getMessage() for r in errors]
