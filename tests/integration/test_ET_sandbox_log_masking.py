"""The sandbox's line for a refused request masks a number in the path it quotes, and masks
before it cuts: `sandbox livekit.SIP/+14155550123 -> 404 bad_route: …` wrote the path whole
(its message, masked, said `+•••••••0123` on the same line), and a number across the
message's cut kept its first digits (`+141555`, too few to be masked)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from sandbox import Sandbox
from tests.integration.test_sandbox import KEY, SECRET, twirp_post


@pytest.fixture
async def box() -> AsyncIterator[Sandbox]:
    sandbox = Sandbox(api_key=KEY, api_secret=SECRET, webhook_url=None, time_scale=0.0)
    await sandbox.start()
    yield sandbox
    await sandbox.stop()


async def test_a_refused_requests_line_masks_the_number_in_its_path(
    box: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sandbox")
    status, answer = await twirp_post(box, "livekit.SIP/+14155550123", {}, None)
    assert (status, answer["code"]) == (404, "bad_route")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sandbox ")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("sandbox livekit.SIP/+•••••••0123 -> 404 bad_route: "), lines
    assert lines[0].endswith(' "/twirp/livekit.SIP/+•••••••0123"'), lines


async def test_a_refused_requests_message_is_masked_before_it_is_cut(
    box: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sandbox")
    # The message, `no handler for path "/twirp/<path>"`, holds `+141555` at its 300th
    # character, where the line cuts it.
    path = "livekit.SIP/" + "a" * 252 + "+14155550123"
    status, answer = await twirp_post(box, path, {}, None)
    assert (status, answer["code"]) == (404, "bad_route")
    assert answer["msg"].index("+14155550123") == 292
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sandbox ")]
    assert len(lines) == 1, lines
    assert "41555" not in lines[0], lines
    assert lines[0].endswith("a+••••••…"), lines
