"""The one check that a free-form value (an object a client or an agent fills as it likes) is
plain JSON that every reader and writer downstream can take.

A value that decoded from JSON may still break what comes after: `Infinity` and `1e999` decode
to inf, which pydantic writes as null and stdlib JSON as a bare `Infinity` (not JSON); a lone
surrogate (`"\\ud800"`) cannot be encoded, so no database or log can hold it; a NUL
(`"\\u0000"`, in a key or a value) is JSON, but PostgreSQL's jsonb refuses it and so does its
text once a reader takes the value out of the document; a few hundred levels of nesting make
encoders and decoders recurse past their limits (pydantic stops at 255, reading back sooner);
an integer of more than 4,300 digits is written by a process that raised Python's limit on
them (`PYTHONINTMAXSTRDIGITS=0`), and every other Python process's json.loads refuses the
whole document holding it (config.json, a dispatch's metadata).
`check_plain_json` refuses all of these, and values too large, before anything is stored.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Final

# Deeper is no data anyone reads, and a few hundred levels break JSON encoders downstream.
MAX_DEPTH: Final = 32
# The most digits an integer may have for a Python process with the default limit to read it
# (4,300): what one process writes, every reader of the file must take back.
MAX_INT_DIGITS: Final = sys.int_info.default_max_str_digits
_UNREADABLE_INT: Final = 10**MAX_INT_DIGITS


def check_plain_json(value: object, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> None:
    """Raise ValueError (its message fit for a client, without the field's name) unless
    `value` is JSON with string keys, finite numbers (integers of at most MAX_INT_DIGITS
    digits) and valid Unicode without NUL, nested at most `max_depth` levels and at most
    `max_bytes` as compact UTF-8 JSON (no spaces: the size a client measures of what it sends
    compactly)."""
    depth, nul, at_least = _shape(value, max_depth, max_bytes)
    if at_least > max_bytes:  # known before the walk (or the encoding) took it all in
        raise ValueError(f"is larger than {max_bytes} bytes as JSON")
    if depth > max_depth:
        raise ValueError(f"nests deeper than {max_depth} levels")
    if nul:
        raise ValueError("must not contain NUL characters")
    try:
        encoded = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. JSON "\ud800", in a key or a value
        raise ValueError("must be valid Unicode text") from None
    except (TypeError, ValueError) as exc:  # inf or NaN, or not a JSON type at all
        raise ValueError(f"must be JSON-serialisable: {exc}") from None
    if len(encoded) > max_bytes:
        raise ValueError(f"is larger than {max_bytes} bytes as JSON")


def _shape(value: object, depth_limit: int, size_limit: int) -> tuple[int, bool, int]:
    """How deep `value` nests objects and lists (a scalar: 0), whether a string in it (a key or
    a value) holds a NUL, and a lower bound of its size as json.dumps writes it in UTF-8 (a
    string is at least its characters and quotes, any other scalar a character, separators as
    written); without recursion, stopping once past either limit, so that a huge value costs
    no more than a small one past the limit. Keys that are not strings are refused here
    (json.dumps would turn 1 into "1" and stop at a tuple)."""
    deepest = 0
    nul = False
    at_least = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack and at_least <= size_limit:
        item, depth = stack.pop()
        children: Iterable[object]
        if isinstance(item, str):
            nul = nul or "\x00" in item
            at_least += len(item) + 2
            continue
        if isinstance(item, Mapping | list | tuple) and len(item) > size_limit:
            at_least += len(item)  # a byte each at least, whatever the members are
            break
        if isinstance(item, Mapping):
            if any(not isinstance(key, str) for key in item):
                raise ValueError("keys must be strings")
            nul = nul or any("\x00" in key for key in item)
            at_least += sum(len(key) + 3 for key in item)  # '"key":'
            at_least += max(len(item) - 1, 0)  # ',' between members
            children = item.values()
        elif isinstance(item, list | tuple):
            at_least += max(len(item) - 1, 0)
            children = item
        else:
            if isinstance(item, int) and abs(item) >= _UNREADABLE_INT:
                raise ValueError(f"must not hold an integer of more than {MAX_INT_DIGITS} digits")
            at_least += 1
            continue
        at_least += 2  # the brackets
        deepest = max(deepest, depth + 1)
        if deepest > depth_limit or at_least > size_limit:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest, nul, at_least


class RepeatedKey(ValueError):
    """A JSON object names one key twice."""


def unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """`json.loads`' object_pairs_hook for what clients send: an object whose keys are all
    different. With `{"phone_number": A, "phone_number": B}` a proxy checking the first and
    this server taking the last would disagree on the number; RepeatedKey otherwise."""
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RepeatedKey(f"the key {key[:50]!r} appears more than once in an object")
            seen.add(key)
    return document
