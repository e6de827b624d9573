"""A first message or voicemail message the agent's text-to-speech says nothing of is refused.

livekit-agents runs every `session.say` through its default TTS text transforms
(`filter_markdown`, `filter_emoji`): a first message of emoji ("👋😊"), struck-through text
("~~Hello~~") or punctuation ("...") passed validation (something visible), and the callee
picked up to silence; a voicemail message of them left a silent message. `has_spoken_word`
says whether a letter or digit is left; these tests hold it to livekit's own filters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from livekit.agents.voice.transcription.filters import filter_emoji, filter_markdown

from common.calls.errors import InvalidCall
from common.calls.request import parse_outbound_call
from common.text import NOTHING_TO_SAY, has_spoken_word
from tests.helpers import SEED_EXAMPLES

UNSPOKEN = [
    "👋😊",
    "📞 📞",
    "❤️",
    "⭐✔☎",
    "🅰🅱",
    "~~Hello there~~",
    "...",
    "!!! ???",
    "→ ※",
    "***",
    "---",
    "![](https://example.com/wave.png)",
    "[](https://example.com)",
    "```hello```",
    "。！",
]
SPOKEN = [
    "Hi 👋",
    "1️⃣",
    "Hello *there*",
    "**Bonjour**",
    "`code`",
    "[our offer](https://example.com)",
    "~~old~~ new",
    "もしもし",
    "नमस्ते",
    "مرحبا",
    "42",
    "Hola Carlos, le llamo por su pedido. ¿Tiene un momento?",
]
# Cartesia's tags: acted on (a pause, a change of voice), not said; livekit leaves them in.
TAGS_ALONE = ['<break time="30s"/>', '<emotion value="angry"/> <speed ratio="1.5"/>']


async def _livekit_says(text: str) -> str:
    """What livekit-agents' default TTS text transforms hand the TTS for `text`."""

    async def source() -> AsyncIterator[str]:
        yield text

    return "".join([chunk async for chunk in filter_emoji(filter_markdown(source()))])


@pytest.mark.parametrize("text", UNSPOKEN + SPOKEN)
async def test_the_rule_agrees_with_livekits_filters(text: str) -> None:
    said = await _livekit_says(text)
    assert has_spoken_word(text) == any(ch.isalnum() for ch in said), (text, said)
    assert has_spoken_word(text) == (text in SPOKEN)


def _errors(**fields: object) -> dict[str, str]:
    with pytest.raises(InvalidCall) as info:
        parse_outbound_call({**SEED_EXAMPLES[0], **fields})
    return {e.field: e.error for e in info.value.errors}


@pytest.mark.parametrize("text", UNSPOKEN + TAGS_ALONE)
def test_a_first_message_with_nothing_to_say_is_refused(text: str) -> None:
    assert _errors(first_message=text) == {"first_message": NOTHING_TO_SAY}


@pytest.mark.parametrize("text", UNSPOKEN + TAGS_ALONE)
def test_a_voicemail_message_with_nothing_to_say_is_refused(text: str) -> None:
    leave = {"action": "leave_message", "message": text}
    assert _errors(voicemail=leave) == {"voicemail": f"message {NOTHING_TO_SAY}"}


@pytest.mark.parametrize("text", [*SPOKEN, 'Hola <break time="1s"/> Carlos'])
def test_messages_with_words_are_kept_as_written(text: str) -> None:
    leave = {"action": "leave_message", "message": text}
    call = parse_outbound_call({**SEED_EXAMPLES[0], "first_message": text, "voicemail": leave})
    assert call.first_message == text
    assert call.voicemail is not None and call.voicemail.message == text
