"""Cartesia's TTS as the agent uses it: livekit's plugin, with Cartesia's refusals said.

Cartesia refuses a generation request it will not serve (the account's credits spent, 402;
its concurrency limit reached, 429; a voice, language or emotion it does not have, 400) with
an `error` message on the websocket, which also says `done` (`{"type": "error", "done":
true, "status_code": 402, "error_code", "title", "message"}`, or `"error": "..."` in older
API versions). livekit-plugins-cartesia reads any `done` as the end of the context, before
it looks at the type (on purpose: Cartesia answers the blank input of a turn that only calls
a tool with such an error): the refusal ended the request with no audio and no word of why.
Every call then failed as `tts (cartesia) APIError`, its log saying only that no audio came
for the text, and nothing named the credits, the limit or the voice.

Here a refusal of a request that had words to say is raised as what it is: an
`APIStatusError` with Cartesia's status and its own short words, which the session's log,
the call's reason (`tts (cartesia) APIStatusError 402`) and livekit-agents' retries go by
(a 4xx other than 429 is not tried again: it would be refused again).

Imported on use (by `agent.session.build_tts`), as the plugins are.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from livekit.agents import APIStatusError
from livekit.plugins import cartesia

from agent.session import KEY_REFUSAL_RECHECK_S
from common.masking import clip_for_log, redact

# How much of Cartesia's own words a refusal keeps (its title, or its error for older API
# versions): enough to read "Insufficient credits" or "Voice not found".
REFUSAL_CHARS = 120

# The plugin's label: the call's reason names the provider from it (`provider_named`).
PLUGIN_LABEL = f"{cartesia.TTS.__module__}.{cartesia.TTS.__name__}"


# Cartesia refusing the websocket itself for the API key: every request would be refused.
KEY_REFUSED = frozenset({401, 403})


class CartesiaTTS(cartesia.TTS):
    """`cartesia.TTS` whose websockets raise Cartesia's refusals (`refusal_of`), and which
    tells when Cartesia refused its API key (`key_refused`, set by any connection refused
    twice: the one the session opens ahead, while the phone rings, first)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._label = PLUGIN_LABEL
        self.key_refused = asyncio.Event()
        self.refusal: APIStatusError | None = None

    async def _connect_ws(self, timeout: float) -> aiohttp.ClientWebSocketResponse:
        try:
            ws = await super()._connect_ws(timeout)
        except APIStatusError as exc:
            if exc.status_code not in KEY_REFUSED:
                raise
            # Asked again before the key counts as refused (KEY_REFUSAL_RECHECK_S).
            await asyncio.sleep(KEY_REFUSAL_RECHECK_S)
            try:
                ws = await super()._connect_ws(timeout)
            except APIStatusError as again:
                if again.status_code in KEY_REFUSED:
                    self.refusal = again
                    self.key_refused.set()
                raise
        say_refusals(ws)
        return ws


def say_refusals(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Make `ws` raise Cartesia's refusal of the request being spoken, as it is received.

    The pool gives a socket to one stream at a time, and a stream sends its context's first
    request before it reads: the context last sent to is the one being spoken. A refusal of
    an earlier context (one interrupted) is left to the plugin, which ignores it, and so is
    one of a context sent no words (the blank input of a tool's turn)."""
    send_str, receive = ws.send_str, ws.receive
    spoken: set[str] = set()  # contexts sent words to say
    current: list[str] = []  # the context last sent to

    async def sending(data: str, compress: int | None = None) -> None:
        try:
            request = json.loads(data)
        except ValueError:
            request = None
        if isinstance(request, dict) and isinstance(context := request.get("context_id"), str):
            current[:] = [context]
            transcript = request.get("transcript")
            if isinstance(transcript, str) and transcript.strip():
                spoken.add(context)
        await send_str(data, compress)

    async def receiving(timeout: float | None = None) -> aiohttp.WSMessage:
        message = await receive(timeout)
        # Audio chunks are base64 with no quotes: only a message naming "error" is read twice.
        if message.type == aiohttp.WSMsgType.TEXT and '"error"' in message.data:
            refusal = refusal_of(message.data)
            being_spoken = current[0] if current else None
            if refusal is not None and refusal[0] == being_spoken and being_spoken in spoken:
                raise refusal[1]
        return message

    ws.send_str = sending  # type: ignore[method-assign]
    ws.receive = receiving  # type: ignore[method-assign]


def refusal_of(data: str) -> tuple[str, APIStatusError] | None:
    """(its context, the error) if `data` is Cartesia's error message, else None."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != "error":
        return None
    context = message.get("context_id")
    status = message.get("status_code")
    words = next(
        (
            text
            for key in ("title", "error", "message")
            if isinstance(text := message.get(key), str) and text.strip()
        ),
        "no reason given",
    )
    code = message.get("error_code")
    said = redact(clip_for_log(words, REFUSAL_CHARS))
    if isinstance(code, str) and code:
        said += f" ({redact(clip_for_log(code, 40))})"
    error = APIStatusError(
        f"Cartesia refused the request: {said}",
        status_code=status if isinstance(status, int) and not isinstance(status, bool) else -1,
        request_id=None,
        body=None,
    )
    return (context if isinstance(context, str) else ""), error
