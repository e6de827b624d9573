"""A page of `GET /campaigns/{id}/recipients` reads its page, not the whole campaign: it
looked the campaign up with the read `GET /campaigns/{id}` answers with, which counts every
recipient by state (a 100,000-recipient campaign: 41 ms a 10-row page, against 6 ms for one
of 10,000; paging through it 100 at a time cost 40 s of the reads' one thread), for counts
no page shows. An unknown campaign, or an upload still being staged, is still a 404."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp.test_utils import TestClient

from common.storage import campaign_programs
from handlers.keys import STORE
from tests.conftest import AppFactory


async def created(client: TestClient[Any, Any], rows: int) -> str:
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    recipients = [{"phone_number": f"+1415555{n:04d}", "name": f"R{n}"} for n in range(rows)]
    resp = await client.post(
        "/campaigns", json={"name": "big", "recipients": recipients, "start_at": start}
    )
    assert resp.status == 201, await resp.text()
    campaign_id: str = (await resp.json())["campaign_id"]
    return campaign_id


async def test_a_recipients_page_does_not_count_the_campaign(
    start_app_on_each_database: AppFactory, monkeypatch: Any
) -> None:
    client = await start_app_on_each_database()
    campaign_id = await created(client, 30)
    counted: list[str] = []
    whole = campaign_programs.get_campaign

    def spied(d: Any, wanted: str, lock: bool = False) -> Any:
        counted.append(wanted)
        return whole(d, wanted, lock)

    monkeypatch.setattr(campaign_programs, "get_campaign", spied)
    seen: list[int] = []
    states: list[str] = []
    after = ""
    while True:
        resp = await client.get(f"/campaigns/{campaign_id}/recipients?limit=7{after}")
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        seen += [r["recipient"] for r in page["recipients"]]
        states += [r["state"] for r in page["recipients"]]
        if page["next_after"] is None:
            break
        after = f"&after={page['next_after']}"
    assert seen == list(range(30))
    assert counted == []  # no page read the campaign's counts
    query = f"status={states[0]}&limit=2&after=3"
    filtered = await client.get(f"/campaigns/{campaign_id}/recipients?{query}")
    assert [r["recipient"] for r in (await filtered.json())["recipients"]] == [4, 5]

    unknown = await client.get("/campaigns/cmp-000000000000/recipients")
    assert unknown.status == 404
    assert (await unknown.json())["error"] == "unknown campaign"


async def test_a_staged_upload_is_no_campaign_yet(start_app: AppFactory) -> None:
    """Recipients stored before their campaign's row (an upload in progress, or given up)
    are no campaign's page."""
    client = await start_app()
    campaign_id = await created(client, 3)
    store = client.app[STORE]
    # The same rows under an id whose campaign row is not written (yet).
    await store._run(  # noqa: SLF001 - the test stages rows as an upload does
        _copy_recipients(campaign_id, "cmp-staged000000"), write=True
    )
    resp = await client.get("/campaigns/cmp-staged000000/recipients")
    assert resp.status == 404


def _copy_recipients(source: str, target: str) -> Any:
    from common.storage.programs import Query

    yield Query(
        "INSERT INTO campaign_recipients (campaign_id, idx, row_number, phone_number, fields,"
        " state, attempts, next_at, updated_at) SELECT ?, idx, row_number, phone_number,"
        " fields, state, attempts, next_at, updated_at FROM campaign_recipients"
        " WHERE campaign_id = ?",
        (target, source),
    )
