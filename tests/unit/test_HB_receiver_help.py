"""`python -m sandbox.receiver --help`, the verifying receiver README's "Try it locally"
names: its description shows the two commands to run, each on lines of its own. argparse's
default formatter ran them into the sentences around them ("... CALLS_WEBHOOK_SECRET=whsec_...
\\ CALLS_WEBHOOK_ALLOW_PRIVATE=1 make run A request whose signature ..."), the line
continuation in the middle of a line: not a command one could copy."""

from __future__ import annotations

import pytest

from sandbox import receiver


def test_help_shows_the_commands_on_lines_of_their_own(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as stopped:
        receiver.main(["--help"])
    assert stopped.value.code == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]

    assert (
        "CALLS_WEBHOOK_SECRET=whsec_... .venv/bin/python -m sandbox.receiver [--port 9000]" in lines
    )
    assert "CALLS_WEBHOOK_URL=http://127.0.0.1:9000/ CALLS_WEBHOOK_SECRET=whsec_... \\" in lines
    assert "CALLS_WEBHOOK_ALLOW_PRIVATE=1 make run" in lines
