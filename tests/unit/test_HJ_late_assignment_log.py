"""livekit-agents' WARNING for an assignment that came after the worker stopped waiting for it
(`received assignment for an unknown job`: LiveKit's answer later than 7.5 s, a loaded
worker or a slow LiveKit) printed the job's whole proto in its `job` field, and with it the
dispatch metadata the server sent: the callee's number whole, their name and the call's
instructions, in the worker's log at WARNING, under its JSON and its console formatters
alike. The agent's log filter leaves the metadata out (its length said) and masks numbers
elsewhere in it; the job's and the call's ids stay."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from livekit.agents.cli.log import JsonFormatter
from livekit.protocol import agent as agent_proto
from livekit.protocol import models

from agent.worker import build_server
from common.settings import Settings

CALL_ID = "call-3c73ee58142c"
NUMBER = "+14155550188"
INSTRUCTIONS = "Remind Ms Lee of the 300 dollars she owes."
METADATA = json.dumps(
    {
        "call_id": CALL_ID,
        "phone_number": NUMBER,
        "config": {"caller_name": "Alice Smith", "agent_instructions": INSTRUCTIONS},
        "report_url": "https://calls.example.com/agent/reports",
    }
)


@pytest.fixture
def worker_log() -> Iterator[io.StringIO]:
    """The worker's log as `python -m agent start` writes it: livekit-agents' JSON lines."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    livekit_logger = logging.getLogger("livekit.agents")
    livekit_logger.addHandler(handler)
    level = livekit_logger.level
    livekit_logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        livekit_logger.removeHandler(handler)
        livekit_logger.setLevel(level)


def test_a_late_assignment_logs_no_number_name_nor_instructions(worker_log: io.StringIO) -> None:
    server = build_server(Settings())
    server._pending_assignments = {}  # as its run() starts it: no job waits for this one
    room_metadata = '{"outcome": "failed"}'
    room = models.Room(sid="RM_1", name=CALL_ID, metadata=room_metadata)
    job = agent_proto.Job(id="AJ_late", dispatch_id="AD_1", room=room, metadata=METADATA)

    server._handle_assignment(agent_proto.JobAssignment(job=job))

    line = json.loads(worker_log.getvalue().strip().splitlines()[-1])
    assert line["message"] == "received assignment for an unknown job"
    assert line["level"] == "WARNING"
    text = json.dumps(line, ensure_ascii=False)
    for secret in (NUMBER, "Alice Smith", INSTRUCTIONS, "300 dollars"):
        assert secret not in text
    shown = line["job"]
    assert shown["metadata"] == f"[{len(METADATA)} chars, left out of the log]"
    assert shown["room"]["metadata"] == f"[{len(room_metadata)} chars, left out of the log]"
    assert (shown["id"], shown["dispatchId"], shown["room"]["name"]) == ("AJ_late", "AD_1", CALL_ID)


def test_a_room_named_with_a_number_is_masked_in_the_job_field(worker_log: io.StringIO) -> None:
    """Another app's inbound call dispatched to this agent's name, in a room LiveKit names
    after the caller (`call-_+14155550188_XyZ1`): the number masked, as in `room` fields."""
    server = build_server(Settings())
    server._pending_assignments = {}
    room = models.Room(name=f"call-_{NUMBER}_XyZ1")

    server._handle_assignment(agent_proto.JobAssignment(job=agent_proto.Job(id="AJ_2", room=room)))

    line = json.loads(worker_log.getvalue().strip().splitlines()[-1])
    assert NUMBER not in json.dumps(line)
    assert line["job"]["room"]["name"].endswith("0188_XyZ1")
