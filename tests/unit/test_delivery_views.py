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


def test_deliveries_given_back_wait_for_the_next_doubling_of_their_receivers_stall() -> None:
    """A receiver answering has its deliveries back in HOST_BUSY_DEFER_S; one stuck has them
    back at the next of 0.2, 0.4, 0.8, ... s after it last moved that is 0.2 s away or more (so
    a backlog given back at different moments comes due at one time), within the request
    timeout; a clock set back does not make them due at once."""
    from common.notify.deliveries import HOST_BUSY_DEFER_S, REQUEST_TIMEOUT_S, give_back_until

    moved = 1000.0
    assert give_back_until(moved, moved) == moved + HOST_BUSY_DEFER_S
    assert give_back_until(moved, moved + 0.1) == moved + 0.4
    assert give_back_until(moved, moved + 0.3) == give_back_until(moved, moved + 0.5) == moved + 0.8
    assert give_back_until(moved, moved + 1.0) == moved + 1.6
    for tenths in range(-50, 2000):
        now = moved + tenths / 10
        assert now + HOST_BUSY_DEFER_S <= give_back_until(moved, now) <= now + REQUEST_TIMEOUT_S
    assert give_back_until(moved, moved + 600.0) == moved + 600.0 + REQUEST_TIMEOUT_S


def test_a_receiver_asks_to_wait_with_retry_after_in_seconds_or_as_a_date() -> None:
    from datetime import UTC, datetime
    from email.utils import format_datetime

    from common.notify.deliveries import asked_wait

    now = 1_800_000_000.0
    assert asked_wait(429, "120", now) == 120.0
    assert asked_wait(503, " 7 ", now) == 7.0
    later = datetime.fromtimestamp(now + 3600, UTC)
    assert asked_wait(429, format_datetime(later, usegmt=True), now) == 3600.0
    assert asked_wait(429, "Thu, 01 Jan 1970 00:00:00 GMT", now) == 0.0  # in the past: none
    for unreadable in ("", "soon", "-5", "1.5", "١٢٠", None):  # (Arabic-Indic digits)
        assert asked_wait(429, unreadable, now) is None
    assert asked_wait(500, "120", now) is None  # only 429 and 503 ask to wait
    assert asked_wait(503, "9" * 400, now) == 30 * 86400.0  # was inf ("Retry-After: inf s")
    assert asked_wait(503, "Fri, 01 Jan 9999 00:00:00 GMT", now) == 30 * 86400.0


def test_a_retry_waits_what_the_receiver_asked_up_to_the_longest_step() -> None:
    schedule = (0.0, 5.0, 30.0, 600.0)
    first = replace(delivery(1, "pending", 100.0), attempts=0)  # its first attempt, made
    assert next_outcome(first, 429, "HTTP 429", schedule, 100.0).next_attempt_at == 105.0
    assert next_outcome(first, 429, "HTTP 429", schedule, 100.0, 2.0).next_attempt_at == 105.0
    assert next_outcome(first, 429, "HTTP 429", schedule, 100.0, 120.0).next_attempt_at == 220.0
    assert next_outcome(first, 429, "HTTP 429", schedule, 100.0, 1e9).next_attempt_at == 700.0
