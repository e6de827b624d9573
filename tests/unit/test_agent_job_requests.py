"""A job offered for a room that is not one of our calls (another app of the same LiveKit
project dispatching to the same agent name) is rejected as it is offered, without
`terminate`, so LiveKit can offer it to that app's own worker: accepted, it was that app's no
more (the entrypoint then left the room alone, and the other app's session had no agent).
Our calls, proved by their dispatch or by config.json's record, are accepted."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from livekit.agents import JobRequest
from livekit.agents.job import JobAcceptArguments
from livekit.protocol import agent as agent_proto
from livekit.protocol import models

from agent import worker
from agent.worker import request_job
from common.config_store.store import ConfigStore
from common.settings import Settings
from tests.unit.test_agent_worker import settings as settings  # noqa: F401 - a fixture


class Answers:
    """What the worker told LiveKit of a job request."""

    def __init__(self) -> None:
        self.accepted: list[JobAcceptArguments] = []
        self.rejected: list[bool] = []  # each rejection's `terminate`

    async def accept(self, arguments: JobAcceptArguments) -> None:
        self.accepted.append(arguments)

    async def reject(self, terminate: bool) -> None:
        self.rejected.append(terminate)


async def offer(room: str, metadata: dict[str, Any] | str) -> Answers:
    answers = Answers()
    raw = metadata if isinstance(metadata, str) else json.dumps(metadata)
    job = agent_proto.Job(id=f"job-{room}", room=models.Room(name=room), metadata=raw)
    await request_job(JobRequest(job=job, on_reject=answers.reject, on_accept=answers.accept))
    return answers


@pytest.mark.parametrize(
    ("room", "metadata"),
    [
        ("support-chat-42", ""),
        ("support-chat-42", {"user": "alice"}),
        ("support-chat-42", {"call_id": "call-0123456789ab", "phone_number": "+14155550123"}),
        ("call-42", {"call_id": "call-42"}),  # no number dialled into it
    ],
)
async def test_another_apps_job_is_rejected_for_another_worker(
    settings: Settings,  # noqa: F811 - the fixture
    caplog: pytest.LogCaptureFixture,
    room: str,
    metadata: dict[str, Any] | str,
) -> None:
    answers = await offer(room, metadata)
    assert answers.accepted == []
    assert answers.rejected == [False]  # not terminated: LiveKit may offer it elsewhere
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"room {room!r} is not one of our calls" in warning.getMessage()
    assert "AGENT_NAME='outbound-caller'" in warning.getMessage()


async def test_our_call_is_accepted_by_its_dispatch(
    settings: Settings,  # noqa: F811 - the fixture
) -> None:
    answers = await offer("call-ours", {"call_id": "call-ours", "phone_number": "+14155550123"})
    assert answers.rejected == [] and len(answers.accepted) == 1


async def test_our_call_is_accepted_by_its_config_record(
    settings: Settings,  # noqa: F811 - the fixture
) -> None:
    """Its dispatch metadata lost, but config.json holds its call's record: ours."""
    await ConfigStore(settings.config_path).update_async("Ann", call_id="call-known")
    answers = await offer("call-known", "")
    assert answers.rejected == [] and len(answers.accepted) == 1


def test_the_worker_asks_request_job(settings: Settings) -> None:  # noqa: F811 - the fixture
    server = worker.build_server(settings)
    assert server._request_fnc is request_job
