"""check_plain_json: what it refuses, and that a huge value costs no more than a small one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.json_values import _shape, check_plain_json

TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner) | st.dictionaries(TEXT, inner),
    max_leaves=30,
)


def compact(value: Any) -> bytes:
    """The value as a client sends it compactly: what the limit counts."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_the_limit_counts_compact_json_as_a_client_measures_it() -> None:
    """`{"k": "x" * 8184}` is 8,192 bytes as sent compactly; it was refused (Python's default
    separators count ", " and ": ")."""
    check_plain_json({"k": "x" * 8184}, max_bytes=8192)
    with pytest.raises(ValueError, match="larger than 8192 bytes"):
        check_plain_json({"k": "x" * 8185}, max_bytes=8192)


@settings(max_examples=200)
@given(JSON_VALUES)
def test_the_size_found_by_the_walk_is_never_more_than_the_encoding(value: Any) -> None:
    """The walk's early "too large" must never refuse a value that fits."""
    encoded = len(compact(value))
    _, _, at_least = _shape(value, 1000, 10**9)
    assert at_least <= encoded


@settings(max_examples=150)
@given(JSON_VALUES, st.integers(min_value=0, max_value=400))
def test_a_value_is_refused_for_its_size_exactly_when_its_encoding_is_larger(
    value: Any, max_bytes: int
) -> None:
    encoded = len(compact(value))
    if encoded > max_bytes:
        with pytest.raises(ValueError, match="larger than"):
            check_plain_json(value, max_bytes=max_bytes)
    else:
        check_plain_json(value, max_bytes=max_bytes)


class _Watched(list[Any]):
    """A list that counts how many of its members were looked at."""

    looked_at = 0

    def __iter__(self) -> Iterator[Any]:
        for member in super().__iter__():
            _Watched.looked_at += 1
            yield member


@pytest.mark.parametrize(
    "value",
    [
        {"a": _Watched(["x"] * 100_000)},  # 100,000 members: past 8 KiB by their count
        _Watched([_Watched(["x"] * 500)] * 200),  # 200 of 500 members: past it by their sizes
    ],
)
def test_a_huge_value_is_refused_before_its_members_are_walked(value: Any) -> None:
    """A 60 KB gzipped campaign upload held a 15-million-member list in `additional_params`
    (limit 8 KiB): walking and encoding all of it took 3-4 s on the event loop."""
    _Watched.looked_at = 0
    with pytest.raises(ValueError, match="larger than 8192 bytes"):
        check_plain_json(value, max_bytes=8192)
    assert _Watched.looked_at <= 8192


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": float("inf")}, "JSON-serialisable"),
        ({"a": "\ud800"}, "valid Unicode"),
        ({"a\x00": 1}, "NUL"),
        ({1: 1}, "keys must be strings"),
        ([[[[1]]]], "deeper than 3"),
    ],
)
def test_what_is_not_plain_json_is_named(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_plain_json(value, max_bytes=8192, max_depth=3)
