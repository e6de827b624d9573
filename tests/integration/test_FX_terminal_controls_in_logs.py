"""Control characters a client sends in a call's instructions (which the server logs at DEBUG)
are written escaped, as line breaks and bidi controls are: raw, a terminal showing the log
(`tail -f`) acted on them. Seen with the real server at LOG_LEVEL=DEBUG: instructions of
`x\\x1b]0;pwned\\x07y\\x08\\x08z\\x9b31m` were written as they were, an ESC sequence setting the
window's title, backspaces overwriting what the line showed, C1's CSI; `\\x1b[1A\\x1b[2K` erases
the line above. The tab stays a tab; tracebacks keep their lines.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from tests.processes import ServerProcess

INSTRUCTIONS = "Remind them.\x1b[1A\x1b[2K\x1b]0;pwned\x07 Be\x08\x08 kind\x9b31m\x7f\tThanks."
CONTROLS = "\x1b\x07\x08\x9b\x7f"


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_control_characters_in_instructions_are_logged_escaped(
    tmp_path: Path, log_format: str
) -> None:
    server = ServerProcess(
        tmp_path,
        "server",
        {"LOG_LEVEL": "DEBUG", "LOG_FORMAT": log_format, "SANDBOX_TIME_SCALE": "0"},
    )
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
            body = {
                "phone_number": "+14155550123",
                "name": "Alice",
                "dynamic_instruction": INSTRUCTIONS,
            }
            async with session.post(f"{server.url}/calls/outbound", json=body) as resp:
                assert resp.status == 200, await resp.text()
                call_id = (await resp.json())["call_id"]
    finally:
        server.stop()
    lines = [line for line in server.logs().splitlines() if "- Instructions" in line]
    assert len(lines) == 1, server.logs()
    (line,) = lines
    assert not any(ch in line for ch in CONTROLS), ascii(line)
    # The line names its call, as the success line before it does: it had no call_id field in
    # JSON, and in text another call's line could come between the two (the seed's
    # update_config from threads), the instructions then read as that call's.
    if log_format == "text":
        assert f"(call {call_id})" in line
    else:
        assert json.loads(line)["call_id"] == call_id
    if log_format == "text":
        shown = "Remind them.\\x1b[1A\\x1b[2K\\x1b]0;pwned\\x07 Be\\x08\\x08 kind\\x9b31m\\x7f"
        assert shown in line
    else:  # JSON's own escapes: the message reads back as it was logged
        assert "\\x1b]0;pwned\\x07" not in line
        assert "Remind them.\x1b[1A\x1b[2K" in json.loads(line)["msg"]
