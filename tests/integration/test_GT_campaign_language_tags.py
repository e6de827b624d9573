"""A campaign's rows and defaults keep a language given as a tag (`es-MX`, `nb-NO`, `pt_BR`)
as the catalogue code it was read as (`es`, `no`, `pt`).

The rows are parsed again as each call is placed, by whichever server drives the campaign
then. In a rolling upgrade, servers of the previous release (ef3582f) share the database,
and they take a language only as a catalogue code (`value.strip().lower() in LANGUAGES`):
a campaign created on a new server with `es-MX` rows (201, no invalid row) and driven by
an old one ended `completed: 6 invalid`, nobody called (seen with both releases' servers
on one PostgreSQL, the campaign's start_at reached after the new server stopped).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp.test_utils import TestClient

from common.config_store.model import LANGUAGES
from handlers.keys import STORE

LATER = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
TAGS = {
    "+14155550131": ("es-MX", "es"),
    "+14155550132": ("nb-NO", "no"),
    "+14155550133": ("pt_BR", "pt"),
    "+14155550134": ("fil", "tl"),
    "+14155550135": ("ZH-Hant-TW", "zh"),
    "+14155550136": ("en-US-u-hc-h12", "en"),
}


def previous_release_takes(language: object) -> bool:
    """How ef3582f's normalize_language read a language."""
    return isinstance(language, str) and language.strip().lower() in LANGUAGES


async def test_rows_and_defaults_keep_the_language_they_were_read_as(
    client: TestClient[Any, Any],
) -> None:
    recipients: list[dict[str, Any]] = [
        {"phone_number": number, "name": "Ann", "language": tag}
        for number, (tag, _) in TAGS.items()
    ]
    recipients.append({"phone_number": "+14155550137", "name": "Bo"})  # the defaults'
    resp = await client.post(
        "/campaigns",
        json={
            "name": "tags",
            "defaults": {"language": "de-AT", "dynamic_instruction": "Remind them."},
            "recipients": recipients,
            "start_at": LATER,  # nothing placed while the test reads
        },
    )
    body = await resp.json()
    assert resp.status == 201, body
    assert body["invalid_row_count"] == 0
    store = client.app[STORE]
    campaign = await store.get_campaign(body["campaign_id"])
    assert campaign is not None
    assert campaign.spec.defaults["language"] == "de"
    assert previous_release_takes(campaign.spec.defaults["language"])
    rows = await store.list_recipients(body["campaign_id"], state=None, limit=100, after=None)
    languages = {row.phone_number: row.fields.get("language") for row in rows}
    assert languages == {
        **{number: code for number, (_, code) in TAGS.items()},
        "+14155550137": None,
    }
    assert all(previous_release_takes(code) for code in languages.values() if code)


async def test_a_code_is_kept_in_lower_case_and_none_is_not_added(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.post(
        "/campaigns",
        json={
            "name": "codes",
            "recipients": [
                {"phone_number": "+14155550141", "name": "Ann", "language": "FR"},
                {"phone_number": "+14155550142", "name": "Bo", "language": None},
                {"phone_number": "+14155550143", "name": "Cy"},
            ],
            "start_at": LATER,
        },
    )
    body = await resp.json()
    assert resp.status == 201, body
    store = client.app[STORE]
    campaign = await store.get_campaign(body["campaign_id"])
    assert campaign is not None and "language" not in campaign.spec.defaults
    rows = await store.list_recipients(body["campaign_id"], state=None, limit=100, after=None)
    assert [row.fields.get("language") for row in rows] == ["fr", None, None]
