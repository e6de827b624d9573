"""An agent that failed after it found voicemail (Cartesia refusing the call's voicemail
message, say) keeps the outcome `voicemail` on the room, with the failure as its reason:
the call shows that reason, not the verdict alone (the real app, the agent's signed
reports, LiveKit's signed webhooks)."""

from __future__ import annotations

import time

import pytest

from agent.reporting import ReportSender
from common.contracts import REPORTS_PATH, AmdVerdict, RoomMetadata
from common.settings import DEV_API_KEY, DEV_API_SECRET
from tests.conftest import AppFactory
from tests.integration.test_webhooks import event_json, place, post, quiet_app, sign

FAILURE = "the agent's session failed: tts (cartesia) APIStatusError 402"


@pytest.mark.parametrize(
    ("verdict", "reason", "shown"),
    [
        # The detector's verdict, then Cartesia refused the message: it was never left,
        # and the call read `voicemail` "machine-vm" as if it had been (the README says the
        # failure is its reason).
        ("machine-vm", FAILURE, FAILURE),
        # The LLM's own finding (its tool: no verdict reported), then the same failure.
        (None, FAILURE, FAILURE),
        # No failure: the verdict, or "answering machine", as before.
        ("machine-vm", None, "machine-vm"),
        (None, None, "answering machine"),
    ],
)
async def test_a_failure_after_voicemail_is_the_calls_reason(
    start_app: AppFactory, verdict: str | None, reason: str | None, shown: str
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client, "+14155557760")
    sender = ReportSender(str(client.make_url(REPORTS_PATH)), call_id, DEV_API_KEY, DEV_API_SECRET)
    sender.answered(time.time())
    if verdict is not None:
        sender.amd(AmdVerdict(category="machine-vm", reason="llm"))
    assert await sender.flush(10)
    await sender.aclose(1)
    metadata = RoomMetadata.with_outcome("", "voicemail", reason)
    for body in [
        event_json("participant_left", call_id, attributes={"sip.callStatus": "active"}),
        event_json("room_finished", call_id, metadata=metadata),
    ]:
        assert await post(client, body, sign(body)) == 200

    call = await (await client.get(f"/calls/{call_id}")).json()
    assert (call["status"], call["reason"], call["amd"]) == ("voicemail", shown, verdict)
