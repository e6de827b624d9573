"""A call the agent ended on the callee's silence (room metadata `callee_silent`) is
`completed` with that reason when its room_finished comes before any sign of the answer.

The agent records the outcome only on a line it greeted and asked whether anyone was there:
the call was answered. Its `answered` report may still be on its way (retried while the
servers behind PUBLIC_BASE_URL are replaced one by one in a rolling upgrade) and the
callee's participant_left lost. The call waited for the grace as an unanswered one and
settled `no_answer` ("room finished before an answer ... no_answer is inferred"; seen with
the real server, a standalone sandbox and a signed room_finished), or, the answer in by
then, `completed` with no reason: either way a campaign or an operator looking for the
silent calls by their reason did not find it.
"""

from __future__ import annotations

from typing import Any

from common.calls.outcomes import CALLEE_SILENT
from common.contracts import OUTCOME_CALLEE_SILENT, RoomMetadata
from tests.conftest import AppFactory
from tests.helpers import wait_for
from tests.integration.test_webhooks import (
    event_json,
    line_joins,
    place,
    post,
    quiet_app,
    sign,
)


async def test_callee_silent_before_any_answer_signal_is_completed_with_its_reason(
    start_app: AppFactory,
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    await line_joins(client, call_id)
    metadata = RoomMetadata.with_outcome("", OUTCOME_CALLEE_SILENT)
    body = event_json("room_finished", call_id, metadata=metadata)
    assert await post(client, body, sign(body)) == 200
    shown: dict[str, Any] = {}

    async def settled() -> bool:
        shown.update(await (await client.get(f"/calls/{call_id}")).json())
        return shown["status"] not in ("dialing", "ringing", "in_progress")

    await wait_for(settled, timeout=30)
    assert (shown["status"], shown["reason"]) == ("completed", CALLEE_SILENT)
    assert shown["answered_at"] is not None
