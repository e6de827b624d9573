"""Fuzzed `POST /calls/outbound` bodies against the live app (hypothesis, 500 examples at
RELIABILITY_SCALE=1): wrong types, huge strings, unicode, nested junk, missing and extra fields,
bytes that are not JSON. Never a 5xx; a refused body writes no config, places no call and adds
no row; an accepted one places exactly one call; and the app accepts exactly the bodies the
validator accepts."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import example, given
from hypothesis import strategies as st

from common.calls.errors import InvalidCall
from common.calls.request import parse_outbound_call
from common.config_store.model import EMOTIONS, LANGUAGES, RESERVED_KEYS
from handlers.keys import STORE
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES
from tests.reliability.conftest import FULL_NUMBER, Figures, scaled
from tests.reliability.fuzz import LoopBridge, fuzz_settings

Client = TestClient[Any, Any]

VALID_NUMBERS = [
    "+1234567890",
    "+34612345678",
    "+441234567890",
    "+14155550123",
    "+14155550486",
    "+4915123456789",
    "+81312345678",
    "+1 (415) 555-0100",
]
# Names are logged (as the seed's log line does), so they must not look like phone numbers.
texts = st.text(max_size=300).filter(lambda t: FULL_NUMBER.search(t) is None)
huge_texts = st.integers(min_value=200, max_value=70_000).map(lambda n: "é" * n)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
    max_leaves=25,
)
phone_numbers = (
    st.sampled_from(VALID_NUMBERS)
    | st.from_regex(r"\A\+[1-9][0-9]{7,14}\Z")
    | st.from_regex(r"\A\+?[0-9 ()\-.]{0,25}\Z")
    | texts
    | huge_texts
    | json_values
)
languages = (
    st.sampled_from(sorted(LANGUAGES))
    | st.sampled_from(sorted(LANGUAGES)).map(lambda code: f" {code.upper()} ")
    | texts
    | json_values
)
emotions = (
    st.sampled_from(list(EMOTIONS))
    | st.sampled_from(list(EMOTIONS)).map(str.swapcase)
    | texts
    | json_values
)
params = (
    st.dictionaries(texts, json_values, max_size=6)
    | st.dictionaries(st.sampled_from(sorted(RESERVED_KEYS)), json_values, min_size=1, max_size=2)
    | st.dictionaries(texts, huge_texts, min_size=1, max_size=2)
    | json_values
)
FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "phone_number": phone_numbers,
    "name": texts | huge_texts | json_values,
    "dynamic_instruction": texts | huge_texts | json_values,
    "language": languages,
    "emotion": emotions,
    "additional_params": params,
}


@st.composite
def call_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Dicts of the real fields (each present or not, each of any shape) plus extra fields."""
    body = {
        name: draw(strategy) for name, strategy in FIELD_STRATEGIES.items() if draw(st.booleans())
    }
    body.update(draw(st.dictionaries(texts, json_values, max_size=2)))
    return body


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


raw_bodies = st.one_of(
    call_bodies().map(_encode),
    json_values.map(_encode),
    st.binary(max_size=2000),
    texts.map(str.encode),
    st.integers(min_value=1, max_value=5000).map(lambda d: b"[" * d + b"]" * d),
)
DEEP = 30_000  # nesting far past Python's recursion limit, in less than 64 KiB


def _config_version(path: Path) -> tuple[int, int] | None:
    try:
        st_ = os.stat(path)
    except FileNotFoundError:
        return None
    return st_.st_ino, st_.st_mtime_ns


def _accepts(raw: bytes) -> bool:
    """What the validator says of this body (the app must agree)."""
    try:
        parse_outbound_call(json.loads(raw))
    except (InvalidCall, ValueError, RecursionError):
        return False
    return True


async def test_fuzzed_outbound_bodies(
    start_app: AppFactory, tmp_path: Path, figures: Figures
) -> None:
    client = await start_app(
        sandbox_time_scale=100.0,
        calls_rate_limit_per_min=1_000_000,
        calls_max_active=1_000_000,
    )
    client.app[SANDBOX].webhook_url = None  # nothing writes config.json behind the test's back
    sandbox, db, config = client.app[SANDBOX], client.app[STORE], tmp_path / "config.json"
    bridge = LoopBridge(asyncio.get_running_loop())
    counts: dict[str, int] = {}

    def dials() -> int:
        return sum(r.method == "CreateSIPParticipant" for r in sandbox.requests)

    async def rows() -> int:
        return sum((await db.count_by_status()).values())

    async def post(raw: bytes, headers: dict[str, str]) -> tuple[int, bool, dict[str, Any]]:
        # As a stream: aiohttp warns (an error here) of a bytes body over 1 MiB, which a few
        # huge_texts fields reach now and then; the bytes sent are the same.
        resp = await client.post("/calls/outbound", data=io.BytesIO(raw), headers=headers)
        return resp.status, "Idempotent-Replay" in resp.headers, await resp.json()

    examples = scaled(500, minimum=20)

    @fuzz_settings(examples)
    @given(
        raw=raw_bodies, key=st.one_of(st.none(), st.none(), st.none(), st.text("ab", min_size=1))
    )
    @example(raw=_encode(SEED_EXAMPLES[0]), key=None)
    @example(raw=b"[" * DEEP + b"]" * DEEP, key=None)
    @example(raw=b'{"phone_number": "+1234567890", "name": ' + b"[" * DEEP, key=None)
    @example(raw=b'{"phone_number": "+1234567890", "name": "\\ud800"}', key=None)
    @example(raw=b'{"phone_number": "+1234567890", "additional_params": {"\\udfff": 1}}', key=None)
    @example(raw=b'{"phone_number": "+1234567890", "additional_params": {"a": NaN}}', key=None)
    @example(raw=b'{"phone_number": ' + b"9" * 5000 + b"}", key=None)
    @example(raw=b'{"phone_number": "+1234567890"}', key="a")
    @example(raw=b'{"phone_number": "+1234567890"}', key="a")
    def check(raw: bytes, key: str | None) -> None:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        before = (_config_version(config), dials(), bridge.run(rows()))
        status, replayed, answer = bridge.run(post(raw, headers))
        counts[str(status)] = counts.get(str(status), 0) + 1
        assert status < 500, answer
        after = (_config_version(config), dials(), bridge.run(rows()))
        if replayed:  # an Idempotency-Key seen before: its first answer, and nothing else
            assert status == 200 and after == before
            return
        if status == 409:  # a used Idempotency-Key with another body: refused, nothing done
            assert key is not None and "different request body" in answer["error"]
            assert after == before
            return
        if status == 200:
            assert answer["status"] == "success"
            assert re.fullmatch(r"call-[0-9a-f]{12}", answer["call_id"])
            assert after[0] != before[0]  # the call's config record was written
            assert (after[1] - before[1], after[2] - before[2]) == (1, 1)  # one call, one row
        else:
            assert answer["status"] == "error"
            assert after == before  # no config written, no call placed, no row added
        assert (status == 200) == _accepts(raw)

    started = time.monotonic()
    await asyncio.to_thread(check)
    tried = sum(counts.values())
    assert tried >= examples
    figures.add(
        f"{tried} bodies: "
        + ", ".join(f"{n} x {s}" for s, n in sorted(counts.items()))
        + f"; 0 x 5xx, 0 side effects of refused bodies; {time.monotonic() - started:.1f} s"
    )
