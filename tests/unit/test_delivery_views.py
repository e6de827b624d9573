"""How a call's deliveries are shown: one waiting behind an earlier event's retries says so."""

from __future__ import annotations

from dataclasses import replace

from common.calls.models import WebhookDelivery
from common.notify.deliveries import next_outcome
from handlers.schemas import DeliveryView

HOOK, OTHER = "https://hooks.example.com/a", "https://other.example.com/b"


def delivery(id: int, state: str, next_at: float, url: str = HOOK) -> WebhookDelivery:
    return WebhookDelivery(
        id=id,
        event_id=id,
        call_id="call-1",
        url=url,
        webhook_id=f"msg_call-1_{id}",
        state=state,
        attempts=1,
        next_attempt_at=next_at,
        last_status=None,
        last_error=None,
        created_at=1_700_000_000.0,
        delivered_at=None,
        event_type="call.ended",
    )


def test_a_delivery_behind_a_retrying_one_names_it_and_is_not_shown_overdue() -> None:
    """They showed their own next_attempt_at, long past while they waited (read as stuck)."""
    retrying = delivery(5, "pending", 1_700_000_600.0)  # its next try in 10 min
    views = DeliveryView.list_of(
        [
            delivery(9, "pending", 1_700_000_001.0),
            delivery(7, "pending", 1_700_000_900.0),
            retrying,
            delivery(3, "delivered", 1_700_000_000.0),
            delivery(8, "pending", 1_700_000_002.0, url=OTHER),  # another URL: its own order
        ]
    )
    shown = {v.id: (v.waiting_for, v.next_attempt_at) for v in views}
    assert [v.id for v in views] == [3, 5, 7, 8, 9]
    assert shown == {
        3: (None, None),
        5: (None, "2023-11-14T22:23:20.000Z"),
        7: (5, "2023-11-14T22:28:20.000Z"),  # its own time is later
        8: (None, "2023-11-14T22:13:22.000Z"),
        9: (5, "2023-11-14T22:23:20.000Z"),  # not before the one it waits for
    }


def test_a_redelivered_delivery_starts_the_retry_schedule_again() -> None:
    """Counted from its first attempt ever, a redelivered failed delivery failed after one
    attempt, and a delivered one waited the schedule's later pauses for its first retry."""
    schedule = (0.0, 5.0, 30.0, 120.0)
    failed_then_redelivered = replace(delivery(1, "pending", 0.0), attempts=4, round_start=4)
    first_retry = next_outcome(failed_then_redelivered, 500, "HTTP 500", schedule, 100.0)
    assert (first_retry.state, first_retry.next_attempt_at) == ("pending", 105.0)
    last = replace(failed_then_redelivered, attempts=7)
    assert next_outcome(last, 500, "HTTP 500", schedule, 100.0).state == "failed"
