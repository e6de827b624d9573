"""Domain errors of campaigns (mapped to HTTP answers in handlers/errors.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.campaigns.csv_rows import RowError


class CampaignError(Exception):
    """Base of the errors a request about campaigns can meet."""


class InvalidRows(CampaignError):
    """Rows were refused and the campaign asked to reject them all (or none was valid)."""

    def __init__(
        self, errors: list[RowError], message: str, details: Sequence[dict[str, Any]]
    ) -> None:
        super().__init__(message)
        self.errors = errors
        self.details = details


class UnknownCampaign(CampaignError, LookupError):
    def __init__(self, campaign_id: str) -> None:
        super().__init__("unknown campaign")
        self.campaign_id = campaign_id
