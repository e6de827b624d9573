"""A language tag whose first subtag names another language (BCP 47's extended language:
`zh-yue` Cantonese, `zh-hak` Hakka, `zh-min-nan` Min Nan) is refused with the list, not taken
as its first subtag's language: 4e4e40d took `zh-yue` as `zh`, and the call to a Cantonese
speaker was placed, 200, in Mandarin. A region, script or variant (`zh-HK`, `zh-Hant-TW`,
`es-419`) and the standard form of the language (`zh-cmn`, `ms-zsm`) are still its
language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.config_store.store import ConfigStore
from common.update_config import load_dynamic_config

ANOTHER_LANGUAGE = ["zh-yue", "ZH_YUE", "zh-yue-HK", "zh-hak", "zh-min-nan", "en-abc"]
SAME_LANGUAGE = {
    "zh-HK": "zh",
    "zh-Hant-TW": "zh",
    "zh-cmn": "zh",
    "zh-cmn-Hans-CN": "zh",
    "ms-zsm": "ms",
    "es-419": "es",
    "en-GB-oed": "en",
    "de-CH-1901": "de",
}


@pytest.mark.parametrize("tag", ANOTHER_LANGUAGE)
async def test_a_tag_naming_another_language_is_refused(
    client: TestClient[Any, Any], tag: str
) -> None:
    resp = await client.post(
        "/calls/outbound",
        json={"phone_number": "+14155557760", "name": "Wing", "language": tag},
    )
    body = await resp.json()
    assert resp.status == 422, body
    (detail,) = body["details"]
    assert detail["field"] == "language"
    assert detail["error"].startswith(f"unsupported language {tag!r}; allowed: ")
    listed = await (await client.get("/calls")).json()
    assert listed["calls"] == []  # no call placed


@pytest.mark.parametrize("tag", sorted(SAME_LANGUAGE))
async def test_a_region_script_or_standard_form_is_its_language(
    client: TestClient[Any, Any], tag: str
) -> None:
    resp = await client.post(
        "/calls/outbound",
        json={"phone_number": "+14155557760", "name": "Wing", "language": tag},
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert load_dynamic_config(call_id=body["call_id"])["tts_language"] == SAME_LANGUAGE[tag]


def test_the_seed_function_refuses_it_too(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.json")
    with pytest.raises(ValueError, match="unsupported tts_language 'zh-yue'"):
        store.update("Wing", tts_language="zh-yue", call_id="call-1")
    assert store.update("Wing", tts_language="zh-HK", call_id="call-1")["tts_language"] == "zh"
