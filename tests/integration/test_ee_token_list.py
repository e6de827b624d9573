"""CALLS_API_TOKEN given as a list, `new,old`, the way CALLS_WEBHOOK_SECRET is rotated
(27282df): it is one token, compared whole, and every client, on either token, was refused
401 with nothing at start-up to say why. The start-up log now says it and names
CALLS_API_TOKEN_PREVIOUS; a token that only holds a comma is left alone."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_startup import run_server_until

NEW = "new-token-0123456789abcdef"
OLD = "old-token-0123456789abcdef"
SAID = "CALLS_API_TOKEN holds a comma: it is one token, compared whole, not a list"


def test_a_token_written_as_a_list_is_warned_of_at_start_up(tmp_path: Path) -> None:
    done = run_server_until(tmp_path, "starting on http://", CALLS_API_TOKEN=f"{NEW},{OLD}")
    assert SAID in done.stderr, done.stderr
    assert "CALLS_API_TOKEN_PREVIOUS to the old one" in done.stderr
    assert NEW not in done.stderr and OLD not in done.stderr  # a secret is never shown


def test_a_token_holding_a_comma_alone_is_not_warned_of(tmp_path: Path) -> None:
    done = run_server_until(tmp_path, "starting on http://", CALLS_API_TOKEN=f"{NEW},x")
    assert "starting on http://" in done.stderr, done.stderr
    assert "holds a comma" not in done.stderr
