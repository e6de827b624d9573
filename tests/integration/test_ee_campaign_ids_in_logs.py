"""A campaign's id in the access log is kept whole, as a call's is: `cmp-0e79890193b5`
holds a run of 8 digits, and the masking of phone-like numbers wrote it `cmp-0e••••0193b5`
(about one id in nine holds such a run): no search for the campaign found its requests, and
JSON lines carried no `campaign_id` for them."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from common.settings import Settings, configure_logging
from tests.conftest import AppFactory

CAMPAIGN_ID = "cmp-0e79890193b5"  # 8 digits in a row, as ~11% of campaign ids have


async def test_access_log_keeps_a_campaign_id_whole_and_json_carries_it(
    start_app: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = await start_app()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(dataclasses.replace(Settings(), log_format="json"))
    try:
        resp = await client.get(f"/campaigns/{CAMPAIGN_ID}")
        assert resp.status == 404, await resp.text()
        resp = await client.get("/calls/+14155550188")  # a number is still masked
        await resp.read()
    finally:
        err = capsys.readouterr().err
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    docs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [d for d in docs if d.get("logger") == "aiohttp.access" or "GET /" in d["msg"]]
    about = [d for d in access if "/campaigns/" in d["msg"]]
    assert about, access
    assert all(f"/campaigns/{CAMPAIGN_ID} " in d["msg"] for d in about), about
    assert all(d.get("campaign_id") == CAMPAIGN_ID for d in about), about
    assert not any("14155550188" in d["msg"] for d in access), access
    assert any("/calls/+•••••••0188" in d["msg"] for d in access), access
