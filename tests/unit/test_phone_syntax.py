"""The number patterns the API document publishes say exactly what the syntax check takes:
a client built from the document neither refuses "+1 (415) 555-0100" nor sends a number the
server refuses as malformed (schemathesis found both kinds of disagreement)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from common.calls.phone import _E164, _SEPARATORS, PHONE_SYNTAX
from handlers.dnc import AFTER_SYNTAX

RANDOM = st.text(alphabet="+0123456789 ()-.\t", max_size=24)
# Near misses and hits alike: a "+" (or not), 6 to 17 digits, separators between.
PIECES = st.lists(st.sampled_from([*"0123456789", " ", "(", ")", "-", "."]), max_size=22)
NEAR = st.tuples(st.sampled_from(["", "+", " ", "++", "(+", " +"]), PIECES).map(
    lambda parts: parts[0] + "".join(parts[1])
)
TEXT = st.one_of(RANDOM, NEAR)


def well_formed(text: str) -> bool:
    return _E164.fullmatch(_SEPARATORS.sub("", text)) is not None


@given(TEXT)
def test_the_number_pattern_is_the_syntax_check(text: str) -> None:
    assert (re.fullmatch(PHONE_SYNTAX, text) is not None) == well_formed(text)


@given(TEXT)
def test_the_after_pattern_is_what_after_takes(text: str) -> None:
    """Empty is "from the start"; a leading space is the "+" form decoding made of it."""
    taken = not text or well_formed("+" + text[1:] if text.startswith(" ") else text)
    assert (re.fullmatch(AFTER_SYNTAX, text) is not None) == taken


def test_examples() -> None:
    for good in ("+1 (415) 555-0100", "+14155550100", " +14155550100", "(+1) 415.555.0100"):
        assert re.fullmatch(PHONE_SYNTAX, good), good
    for bad in ("14155550100", "+0415555010", "+1415", "++14155550100", "+1 415 555 0100 x1"):
        assert not re.fullmatch(PHONE_SYNTAX, bad), bad
