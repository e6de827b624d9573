"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
            "Call events dispatched from the outbox",
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
            "From a call event to its customer webhook's delivery",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0, 86400.0),
            registry=self.registry,
        )
        self.webhook_verification_failures = Counter(
            "webhook_verification_failures",
            "Webhooks refused because their signature did not verify",
            registry=self.registry,
        )

    def render(self, calls_by_status: dict[str, int]) -> bytes:
        self.calls_by_status.clear()
        for status, count in calls_by_status.items():
            self.calls_by_status.labels(status=status).set(count)
        return generate_latest(self.registry)
