"""CALLS_API_TOKEN written as a list with an empty entry, `new,`, is warned of as `new,old` is.

`CALLS_API_TOKEN=${NEW},${OLD}` in a compose file or deployment template, the old token unset
once the rotation is over, reaches the server as `new,`: one token, compared whole, so every
client sending the new token was refused 401, and nothing at start-up said why (a list of two
tokens was warned of, one with an empty entry was not).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import settings_from_env
from tests.integration.test_startup import run_server_until

NEW = "new-token-0123456789abcdef"
SAID = "CALLS_API_TOKEN holds a comma: it is one token, compared whole, not a list"


@pytest.mark.parametrize("token", [f"{NEW},", f",{NEW}", f"{NEW},,"])
def test_a_token_with_an_empty_entry_is_warned_of(token: str) -> None:
    warnings = settings_from_env({"CALLS_API_TOKEN": token}).token_warnings()
    assert len(warnings) == 1 and warnings[0].startswith(SAID), warnings


def test_a_token_holding_a_comma_with_a_short_part_is_still_left_alone() -> None:
    assert settings_from_env({"CALLS_API_TOKEN": f"{NEW},x"}).token_warnings() == []


def test_the_server_says_so_at_start_up(tmp_path: Path) -> None:
    done = run_server_until(tmp_path, "starting on http://", CALLS_API_TOKEN=f"{NEW},")
    assert SAID in done.stderr, done.stderr
    assert NEW not in done.stderr  # a secret is never shown
