"""An erasure of a number (POST /calls/erase) while a campaign listing it is being created:
its rows are stored before the campaign's row, and the erasure found them (recipients_erased
1) and erased the refused row's errors, which quote what else the row had wrong (a language
'Zelda Quixote', a name from a column shifted). But the campaign's Idempotency-Key answer
(its 201's invalid_rows, replayed to a retry of the upload) is written with the campaign's
row, after: it kept the erased messages for good, in calls.db and in every retry's answer.
It is now written with the messages of the rows erased meanwhile erased too."""

from __future__ import annotations

from typing import Any

import pytest

from common.storage.campaign_programs import ERASED_ERROR
from handlers.keys import STORE
from tests.conftest import AppFactory
from tests.integration.test_erasure import AUTH, LATER, SCALE, TOKEN, kept_in_files

ANN = "+14155557700"
ZELDA = "+14155550123"


async def test_an_erasure_while_the_campaign_is_stored_reaches_its_idempotency_answer(
    start_app_on_each_database: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_app = start_app_on_each_database
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    store: Any = client.app[STORE]
    original = store._run_to_its_end
    erasures: list[dict[str, Any]] = []

    async def erase_then_create(program: Any) -> Any:
        # The rows are stored, the campaign's row not yet: the callee's erasure comes now.
        resp = await client.post("/calls/erase", json={"phone_number": ZELDA}, headers=AUTH)
        erasures.append(await resp.json())
        return await original(program)

    monkeypatch.setattr(store, "_run_to_its_end", erase_then_create)
    csv = f"phone_number,language\n{ANN},en\n{ZELDA[1:]},Zelda Quixote\n"
    upload: dict[str, Any] = {
        "data": csv.encode(),
        "params": {"name": "later", "start_at": LATER, "invalid_rows": "skip"},
        "headers": {**AUTH, "Content-Type": "text/csv", "Idempotency-Key": "list-1"},
    }
    resp = await client.post("/campaigns", **upload)
    assert resp.status == 201, await resp.text()
    assert erasures and erasures[0]["recipients_erased"] == 1, erasures
    monkeypatch.setattr(store, "_run_to_its_end", original)

    assert b"Zelda Quixote" not in kept_in_files(client)
    replayed = await client.post("/campaigns", **upload)
    assert replayed.status == 201, await replayed.text()
    answer = await replayed.json()
    assert answer["invalid_rows"] == [
        {"row": 3, "field": "phone_number", "error": ERASED_ERROR},
        {"row": 3, "field": "language", "error": ERASED_ERROR},
    ]
