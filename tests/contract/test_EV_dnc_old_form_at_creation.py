"""A Mexican mobile an older release listed in its old form (+52 1 and ten digits, from an
agent's report) is `dnc` from its campaign's creation, as a number listed in its current form
is, and as a call to it is refused: the creation compared the current form alone, and the
recipient waited for its window (pending, the campaign's finish reckoned with it) to be found
listed at its turn."""

from __future__ import annotations

import dataclasses

from common.campaigns.model import NewRecipient
from common.storage.base import CallStore
from tests.contract.test_campaign_store import campaign
from tests.helpers import FakeClock

LISTED_OLD = "+5215512345678"  # as an older release keyed it
CURRENT = "+525512345678"  # as a campaign's row is kept now
OTHER = "+525512345679"


async def test_a_number_listed_in_its_old_form_is_dnc_from_the_start(
    store: CallStore, clock: FakeClock
) -> None:
    await store.add_dnc([LISTED_OLD], "agent", "call-old")
    rows = [NewRecipient(0, 0, CURRENT, {}), NewRecipient(1, 1, OTHER, {})]
    await store.create_campaign(dataclasses.replace(campaign(0), recipients=rows), clock.now)
    created = await store.get_campaign("cmp-1")
    assert created is not None and created.counts == {"dnc": 1, "pending": 1}
    listed = await store.list_recipients("cmp-1", state="dnc", limit=10, after=None)
    assert [r.phone_number for r in listed] == [CURRENT]
