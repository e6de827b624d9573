"""Due recipients whose rows no longer read (fields that are no JSON object: a hand edit, or
another release's row), on each store: the due list names them apart, set aside they wait
UNREADABLE_RETRY_S (pending still), and the list reads the ones due after them."""

from __future__ import annotations

from common.storage.base import CallStore
from common.storage.campaign_programs import UNREADABLE_RETRY_S
from tests.contract.test_campaign_store import campaign
from tests.contract.test_report_store import execute
from tests.helpers import FakeClock


async def test_unreadable_due_recipients_are_set_aside_and_read_again_later(
    store: CallStore, clock: FakeClock
) -> None:
    await store.create_campaign(campaign(3), clock.now, start_now=True)
    await execute(store, "UPDATE campaign_recipients SET fields = ? WHERE idx < 2", '["Ann Lee"]')
    due = await store.due_recipients("cmp-1", clock.now, 2)
    assert (due.readable, due.unreadable) == ([], [0, 1])  # a full list, none to call

    assert await store.set_aside_recipients("cmp-1", due.unreadable, clock.now) == 2
    assert await store.set_aside_recipients("cmp-1", due.unreadable, clock.now) == 0  # not due

    due = await store.due_recipients("cmp-1", clock.now, 2)
    assert ([r.idx for r in due.readable], due.unreadable) == ([2], [])
    shown = await store.list_recipients("cmp-1", state=None, limit=3, after=None)
    assert [(r.state, r.next_at) for r in shown[:2]] == [
        ("pending", clock.now + UNREADABLE_RETRY_S)
    ] * 2
    assert shown[0].errors and shown[0].errors[-1]["field"] == "row"
    await execute(store, "UPDATE campaign_recipients SET fields = '{}' WHERE idx = 1")  # mended
    clock.advance(UNREADABLE_RETRY_S)
    due = await store.due_recipients("cmp-1", clock.now, 3)
    assert ([r.idx for r in due.readable], due.unreadable) == ([2, 1], [0])  # by due time


async def test_an_attempt_is_not_begun_for_a_recipient_whose_fields_no_longer_read(
    store: CallStore, clock: FakeClock
) -> None:
    """Its fields edited after the due list read it: not begun, nothing written (the driver
    reads its due list again, which sets it aside)."""
    await store.create_campaign(campaign(2), clock.now, start_now=True)
    await store.claim_campaigns(clock.now, 10.0, 10)
    for idx, fields in ((0, '{"name": '), (1, '["Ann Lee"]')):
        await execute(store, "UPDATE campaign_recipients SET fields = ? WHERE idx = ?", fields, idx)
        assert await store.begin_attempt("cmp-1", idx, clock.now + 1, clock.now) is None
    assert await store.open_attempts("cmp-1") == (0, [])
    shown = await store.list_recipients("cmp-1", state=None, limit=2, after=None)
    assert [(r.state, r.attempts) for r in shown] == [("pending", 0)] * 2
    got = await store.get_campaign("cmp-1")
    assert got is not None and got.placed == 0
