"""Without a token, every loopback address is one client of CALLS_RATE_LIMIT_PER_MIN, and
.env.example says so, as README does.

.env.example said the limit was "per client address without a token", as it was in the first
release: an operator reading it took 127.0.0.1 and ::1 (HOST=localhost listens on both) or
127.0.0.2 for clients with a limit each, while the server counts them as one, this machine.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def comment_above(name: str) -> str:
    """The comment lines right above `# NAME=` in .env.example, joined."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if re.match(rf"#\s*{name}=", line))
    said: list[str] = []
    for line in reversed(lines[:at]):
        if not line.startswith("#") or re.match(r"#\s*[A-Z][A-Z0-9_]*=", line):
            break
        said.insert(0, line.lstrip("# "))
    return " ".join(said)


def test_env_example_says_every_loopback_address_is_one_client() -> None:
    said = comment_above("CALLS_RATE_LIMIT_PER_MIN")
    assert "per client address" not in said, said
    assert "every loopback address" in said and "is one client" in said, said
    assert "1 to 1,000,000" in said, said
