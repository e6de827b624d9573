"""Languages both speech services serve are taken: Hebrew, Urdu, Gujarati and Punjabi.

Deepgram added them to nova-3 after the installed plugin (changelog 2026-02-03 he ur,
2026-04-23 gu, 2026-08-05 pa), and Cartesia's sonic-3 declares each. The README promises
the codes both serve, "as Deepgram's changelog does" for those the plugin does not declare
yet; a call in Hebrew was refused 422 "unsupported language 'he'".
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from livekit.plugins import cartesia, deepgram
from livekit.plugins.cartesia.tts import _to_cartesia_options

from agent.plan import plan_session
from agent.session import build_stt, build_tts
from common.config_store.model import CallConfig
from common.settings import Settings
from common.update_config import load_dynamic_config

NEW = {"he": "Hebrew", "ur": "Urdu", "gu": "Gujarati", "pa": "Punjabi"}

SETTINGS = Settings(
    openai_api_key="dummy-openai",
    deepgram_api_key="dummy-deepgram",
    cartesia_api_key="dummy-cartesia",
)


@pytest.mark.parametrize("code", sorted(NEW))
async def test_a_call_in_a_language_both_services_serve_is_placed(
    client: TestClient[Any, Any], code: str
) -> None:
    resp = await client.post(
        "/calls/outbound",
        json={"phone_number": "+14155557760", "name": "Dana", "language": code.upper()},
    )
    body = await resp.json()
    assert resp.status == 200, body
    call_id = body["call_id"]
    assert load_dynamic_config(call_id=call_id)["tts_language"] == code
    shown = await (await client.get(f"/calls/{call_id}")).json()
    assert shown["language"] == code


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("code", sorted(NEW))
def test_the_agent_listens_and_speaks_that_language(code: str) -> None:
    plan = plan_session(CallConfig.create("Dana", tts_language=code), SETTINGS)

    stt, tts = build_stt(plan, SETTINGS), build_tts(plan, SETTINGS)

    assert isinstance(stt, deepgram.STT) and stt._opts.language == code
    assert isinstance(tts, cartesia.TTS)
    assert _to_cartesia_options(tts._opts, streaming=True)["language"] == code
    assert f"Speak {NEW[code]} for the whole call" in plan.instructions
    assert f"in {NEW[code]}," in plan.greeting
