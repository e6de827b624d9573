"""Typed application keys: the long-lived resources handlers reach through `request.app`."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from common.calls.events import EventDispatcher
from common.calls.service import CallService
from common.calls.unreported import ReportsRefused
from common.campaigns.service import CampaignService
from common.config_store.store import ConfigStore
from common.metrics import Metrics
from common.notify.deliveries import WebhookSender
from common.repeats import Repeats
from common.settings import Settings
from common.storage.base import CallStore
from handlers.body_reads import BodyReads

SETTINGS = web.AppKey("settings", Settings)
CONFIG = web.AppKey("config", ConfigStore)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", CallStore)
EVENTS = web.AppKey("events", EventDispatcher)
CALLS = web.AppKey("calls", CallService)
WEBHOOKS = web.AppKey("webhooks", WebhookSender)
CAMPAIGNS = web.AppKey("campaigns", CampaignService)
LIVEKIT_URL = web.AppKey("livekit_url", str)
# Every route's OpenAPI description, added by the handler modules as they register routes.
ROUTES = web.AppKey("routes", list[Any])
# Routes whose successful requests the access log writes only at DEBUG (RouteDoc.log_success).
QUIET_ROUTES = web.AppKey("quiet_routes", set[Any])
# Refused machines' requests (LiveKit's webhooks, agents' reports, probes): their log lines,
# and their access lines, at most once a minute per kind (anyone can send them by the thousand)
REFUSALS = web.AppKey("refusals", Repeats)
# Calls whose agents' reports were refused for a failure of this server's (503): not counted
# as calls whose reports do not reach it (common/calls/unreported.py).
REPORTS_REFUSED = web.AppKey("reports_refused", ReportsRefused)
# The request bodies being read: a stop ends their reads at once (handlers/body_reads.py).
BODY_READS = web.AppKey("body_reads", BodyReads)
# Campaign uploads read and checked at once (handlers/campaigns.py's upload_turn).
UPLOAD_TURNS = web.AppKey("upload_turns", asyncio.Semaphore)
