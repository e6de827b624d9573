"""A Hangul filler is a letter by its Unicode category and a blank to read: a first message
or a name of fillers alone passed as a word, and the callee heard nothing (FZ's review)."""

from __future__ import annotations

import pytest

from common.text import has_spoken_word


@pytest.mark.parametrize("text", ["\u3164", "\u115f\u1160", "\uffa0 \u3164", "~~\u3164~~"])
def test_hangul_fillers_alone_are_no_word(text: str) -> None:
    assert not has_spoken_word(text)


@pytest.mark.parametrize("text", ["한국어", "\u3164안녕", "ㅋㅋ", "Hi \u3164"])
def test_hangul_with_a_syllable_or_jamo_is_a_word(text: str) -> None:
    assert has_spoken_word(text)
