"""common/text.py: what text can be kept, and what refused input that is kept becomes."""

from __future__ import annotations

import pytest

from common.text import shown_text, text_problem


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        pytest.param("+1 (415) 555-0131", "+1 (415) 555-0131", id="kept-as-given"),
        pytest.param("Zoë ☎ 👨\u200d👩", "Zoë ☎ 👨\u200d👩", id="any-script"),
        pytest.param("\x00+1\ud800", "\ufffd+1\ufffd", id="nul-and-lone-surrogate"),
        pytest.param("a\tb\nc\x7f", "a\ufffdb\ufffdc\ufffd", id="controls"),
        pytest.param("a\u2028b\u202ec", "a\ufffdb\ufffdc", id="line-and-bidi"),
        pytest.param("abcdef", "abcd\u2026", id="clipped"),
        pytest.param("abcde", "abcde", id="at-the-limit"),
    ],
)
def test_shown_text_can_be_stored_and_shown(given: str, shown: str) -> None:
    assert shown_text(given, 5 if given.startswith("abc") else 100) == shown
    shown.encode("utf-8")  # no lone surrogate left


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Hola, ¿qué tal? 👋\n\tbye", None),
        ("", None),
        ("a\x00b", "must not contain NUL characters"),
        ("a\ud800", "must be valid Unicode text"),
        ("\udfff\x00", "must be valid Unicode text"),
    ],
)
def test_text_problem_names_what_no_database_can_keep(text: str, problem: str | None) -> None:
    assert text_problem(text) == problem
