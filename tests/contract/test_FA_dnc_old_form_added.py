"""A number an older release listed in its old Mexican form (+52 1 and ten digits, from an
agent's report) is already on the do-not-call list: adding it again in its current form (what
POST /dnc and a report now send) counted it `added`, as if it had not been listed."""

from __future__ import annotations

from common.storage.base import CallStore

LISTED_OLD = "+5215512345678"  # as an older release keyed it
CURRENT = "+525512345678"  # the same number as POST /dnc keys it now
OTHER = "+525512345679"


async def test_a_number_listed_in_its_old_form_is_not_added_again(store: CallStore) -> None:
    await store.add_dnc([LISTED_OLD], "agent", "call-old")
    assert await store.add_dnc([CURRENT, OTHER], "api") == 1  # OTHER alone is new
    assert await store.add_dnc([CURRENT], "api") == 0
    page = await store.list_dnc(limit=10, after=None)
    assert [e.number for e in page] == [LISTED_OLD, OTHER]  # one entry per person
