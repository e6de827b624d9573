"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from common.calls.events import EVENT_TYPES, MAX_TAKEOVERS
from common.calls.outcomes import FINAL_STATUSES, Status
from common.campaigns.model import CAMPAIGN_EVENTS

# Every label value each counter can take, exported at 0 from the start: a series that first
# appears at 1 (the first failed placement after a start) is no increase to Prometheus, so
# `increase(calls_placed_total{result="failed"}[10m]) > 0` missed the first failure after
# every restart (and a server restarted daily, with one failure a day, every one).
PLACED_RESULTS = ("placed", "failed")
WEBHOOK_RESULTS = (
    "applied",
    "duplicate",
    "ignored",
    "unverified",
    "malformed",
    "too_large",
    "unreadable",
    "db_error",
)
REPORT_RESULTS = (
    "applied",
    "duplicate",
    "too_many_turns",
    "unverified",
    "malformed",
    "too_large",
    "unreadable",
    "other_call",
    "unknown_call",
    "db_error",
)
DELIVERY_RESULTS = ("delivered", "retrying", "failed", "stopped")

# prometheus_client gave each counter's and histogram's series a gauge beside it, its creation
# time: `calls_placed_created{result="placed"} 1.79e+09`, under the HELP "Calls handed to
# LiveKit". The text format has no place for it (Prometheus stores it as one more series), and
# it was 43 of the page's 126 series. A restart shows as the counters' reset (Prometheus's
# rate() and increase() take it); this page's registry has no process collector, so no
# `process_start_time_seconds` either.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (not annotated)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route, method and status code",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.calls_by_status = Gauge(
            "calls", "Calls in the database by status", ["status"], registry=self.registry
        )
        self.calls_placed = Counter(
            "calls_placed", "Calls handed to LiveKit", ["result"], registry=self.registry
        )
        self.config_write_seconds = Histogram(
            "config_write_seconds",
            "Durable per-call config.json writes",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.webhooks = Counter(
            "webhooks", "LiveKit webhooks received by result", ["result"], registry=self.registry
        )
        self.call_events = Counter(
            "call_events",
            "Call events written to the outbox, each counted once, by its writer",
            ["type"],
            registry=self.registry,
        )
        self.calls_ended = Counter(
            "calls_ended", "Calls that reached a final status", ["status"], registry=self.registry
        )
        self.reports = Counter(
            "agent_reports", "Agent reports received by result", ["result"], registry=self.registry
        )
        self.webhook_deliveries = Counter(
            "customer_webhook_deliveries",
            "Customer webhook delivery attempts by result (delivered, retrying, failed, stopped)",
            ["result"],
            registry=self.registry,
        )
        self.webhook_latency = Histogram(
            "customer_webhook_latency_seconds",
            "From a call event to its customer webhook's delivery (not one redelivered by hand)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0, 86400.0),
            registry=self.registry,
        )
        self.livekit_over_limit = Gauge(
            "livekit_over_limit",
            "1 if LiveKit answered the last readiness check over a limit of its own (HTTP 429,"
            " resource_exhausted: calls are refused 503 with Retry-After meanwhile); else 0",
            registry=self.registry,
        )
        self.webhook_verification_failures = Counter(
            "webhook_verification_failures",
            "Webhooks refused because their signature did not verify",
            registry=self.registry,
        )
        for counter, values in (
            (self.calls_placed, PLACED_RESULTS),
            (self.webhooks, WEBHOOK_RESULTS),
            (self.reports, REPORT_RESULTS),
            (self.webhook_deliveries, DELIVERY_RESULTS),
            (self.call_events, (*EVENT_TYPES, *CAMPAIGN_EVENTS)),  # one outbox for both
            (self.calls_ended, sorted(status.value for status in FINAL_STATUSES)),
        ):
            for value in values:
                counter.labels(value)

        # Registered once counted: until then (the database did not answer since the start)
        # it said 0, no backlog, where nothing was known; absent now, as `calls` is.
        self.deliveries_pending = Gauge(
            "customer_webhook_deliveries_pending",
            "Customer webhook deliveries not delivered, failed or stopped yet (a backlog)",
            registry=None,
        )
        self.events_given_up = Gauge(
            "call_events_given_up",
            f"Call events given up undispatched after {MAX_TAKEOVERS} take-overs (a subscriber"
            " kept failing them): their customer webhooks unsent, their campaign attempts open",
            registry=None,
        )
        self._pending_shown = False
        self.database_read = Gauge(
            "calls_database_read",
            "1 if the database counts above were read for this scrape (within a few seconds);"
            " 0 if the database did not answer and they are the last ones read",
            registry=self.registry,
        )

    def render(self, counts: DatabaseCounts | None, fresh: bool) -> bytes:
        """The registry, with the database's counts (every status, 0 for those with no
        call: a live-calls panel showed "no data" rather than 0) when there are any."""
        self.calls_by_status.clear()
        if counts is not None:
            for status in Status:
                self.calls_by_status.labels(status=status.value).set(
                    counts.by_status.get(status.value, 0)
                )
            self.deliveries_pending.set(counts.deliveries_pending)
            self.events_given_up.set(counts.events_given_up)
            if not self._pending_shown:
                self.registry.register(self.deliveries_pending)
                self.registry.register(self.events_given_up)
                self._pending_shown = True
        self.database_read.set(1 if fresh else 0)
        return generate_latest(self.registry)


@dataclass(frozen=True)
class DatabaseCounts:
    by_status: dict[str, int]
    deliveries_pending: int
    events_given_up: int
