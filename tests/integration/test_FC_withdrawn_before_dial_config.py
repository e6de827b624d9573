"""A call hung up through the API, or whose number was put on the do-not-call list, after it
was recorded but before its dial, is never dialled; its config write is taken back as a
refused call's is. Only its record was removed: the seed's flat document
(load_dynamic_config()["caller_name"]) went on naming that call, never placed, where it named
the call placed before it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.keys import CALLS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES
from tests.integration.test_FA_dial_mark_failed_config import assert_config_back_to_before


async def _hang_up(client: TestClient[Any, Any], call_id: str) -> None:
    answer = await client.post(f"/calls/{call_id}/hangup")
    assert answer.status == 200, await answer.text()


async def _list_number(client: TestClient[Any, Any], _call_id: str) -> None:
    answer = await client.post("/dnc", json={"numbers": [SEED_EXAMPLES[1]["phone_number"]]})
    assert answer.status == 200, await answer.text()


@pytest.mark.parametrize(("meanwhile", "answered"), [(_hang_up, {200}), (_list_number, {422})])
async def test_a_call_withdrawn_before_its_dial_takes_its_config_write_back(
    start_app: AppFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    meanwhile: Callable[[TestClient[Any, Any], str], Awaitable[None]],
    answered: set[int],
) -> None:
    client = await start_app(sandbox_time_scale=100.0)  # the first call stays live
    placed = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="Before"))
    assert placed.status == 200
    store = client.app[CALLS].store
    start_dial = store.start_dial

    async def withdrawn_first(call_id: str, *args: Any, **kwargs: Any) -> Any:
        await meanwhile(client, call_id)  # after its row, before its dial is marked
        return await start_dial(call_id, *args, **kwargs)

    monkeypatch.setattr(store, "start_dial", withdrawn_first)
    never = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[1], name="Never"))
    assert never.status in answered, await never.text()
    assert_config_back_to_before(client, tmp_path)
    dials = [r for r in client.app[SANDBOX].requests if r.method == "CreateSIPParticipant"]
    assert len(dials) == 1  # "Never" was not dialled
