"""CALLS_WEBHOOK_SECRET given as the new and the old secret while it is rotated (27282df,
`whsec_new,whsec_old`) is two secrets: the access log hides each, as it hides one. The
settings' secrets it is given were the list as one text, found in no line: a line holding
either secret alone (a URL, a Referer, a User-Agent) was written with it."""

from __future__ import annotations

import base64
import logging

import pytest

from tests.conftest import AppFactory

NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()


async def test_each_secret_of_a_rotation_is_kept_out_of_the_access_log(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")  # before the first connection
    client = await start_app(calls_webhook_secret=f"{NEW},{OLD}")
    for secret in (NEW, OLD):
        answer = await client.get("/calls", headers={"User-Agent": f"crm {secret}"})
        assert answer.status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(lines) == 2, lines
    assert not any(NEW in line or OLD in line for line in lines), lines
    assert all("[redacted]" in line for line in lines), lines
