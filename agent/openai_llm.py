"""OpenAI's LLM as the agent uses it: livekit's plugin, whose requests made without
connection options get the call's own.

The session gives its requests (a reply, the greeting) `agent.session`'s bound on how long
the LLM may keep the callee waiting. The answering-machine detector (livekit-agents' AMD)
asks this LLM too, with no options: livekit-agents' defaults, 10 s an attempt and 3 more,
and an OpenAI that took its request and sent nothing kept the callee who said "Hello?" in
silence for the detector's whole 20 s. Its requests are bounded as the session's are.

Each request's stream is checked as the plugin does not: a stream that ends, however
cleanly, before OpenAI said the reply was over (neither a finish_reason nor `data: [DONE]`: a
proxy or gateway that gave up on its upstream) fails the request, as a stream cut off does,
rather than being taken as the whole reply (an OpenAI-compatible server, vLLM, llama.cpp's,
LocalAI, may end a whole reply with `[DONE]` alone); and a refusal that says how long to
wait (Retry-After on a 429 or 503) is waited out before the request is asked again, when that
is short enough for a callee to wait.

Imported on use (by `agent.session.build_llm`), as the plugins are.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

import openai as openai_sdk
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS
from livekit.plugins import openai
from livekit.plugins.openai.llm import LLMStream
from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta

from agent.analysis import ENDED_EARLY, NOT_STREAMED
from agent.session import KEY_REFUSAL_RECHECK_S
from common.retry_after import seconds_asked

logger = logging.getLogger(__name__)

# The plugin's label: the call's reason names the provider from it (`provider_named`).
PLUGIN_LABEL = f"{openai.LLM.__module__}.{openai.LLM.__name__}"
# The longest wait a refusal may ask for (Retry-After, retry-after-ms) that the agent waits
# out before it asks again: a callee waits a few seconds for a reply, not 30. The plugin read
# no header: it asked again 0.1 s and 2 s later whatever OpenAI said, and a rate limit of 3 s
# ended the call (its apology) at 2.1 s, one it could have waited out. Past this, the request
# is not asked again (each such try fails, and counts against the same limit).
RETRY_AFTER_MAX_S: Final = 4.0


class CallLLM(openai.LLM):
    """`openai.LLM` whose `chat` without connection options uses `conn_options`, and which
    tells when OpenAI refused its API key (`key_refused`) to the request the session makes
    ahead (livekit-agents' prewarm, listing the models, as it is built: while the phone
    rings), which livekit-agents ignores."""

    def __init__(
        self, *, conn_options: APIConnectOptions, call_id: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        _watch_for_done(self._client)
        self._label = PLUGIN_LABEL
        self._call_conn_options = conn_options
        self._call_id = call_id
        self.key_refused = asyncio.Event()
        self.refusal: APIStatusError | None = None

    async def _prewarm_impl(self) -> None:
        try:
            await super()._prewarm_impl()
        except openai_sdk.AuthenticationError:
            # 401 only: a restricted key without the models' read scope is refused the list
            # (403) and may still be given chat completions. Asked again before the key
            # counts as refused (KEY_REFUSAL_RECHECK_S).
            await asyncio.sleep(KEY_REFUSAL_RECHECK_S)
            try:
                await super()._prewarm_impl()
            except openai_sdk.AuthenticationError as exc:
                # Not OpenAI's message: it quotes part of the key ("sk-...abcd").
                self.refusal = APIStatusError(
                    "OpenAI refused the API key", status_code=exc.status_code
                )
                self.key_refused.set()
                raise

    def chat(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS, **kwargs: Any
    ) -> LLMStream:
        if conn_options is DEFAULT_API_CONNECT_OPTIONS:
            conn_options = self._call_conn_options
        stream = super().chat(conn_options=conn_options, **kwargs)
        _check(stream, conn_options, self._call_id)
        return stream


@dataclass
class _Attempt:
    number: int = -1
    finished: bool = False  # a choice with its finish_reason came
    done: bool = False  # the stream's `data: [DONE]` came
    said: bool = False  # words or a tool call went to the session
    chunk_id: str | None = None  # the last chunk's id, and the plugin's thinking filter
    thinking: Any = None


# The attempt under way in this task (the stream's own): what its SSE decoder tells of [DONE].
_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("openai_attempt", default=None)
# The clients whose SSE decoders tell it (one shared by an agent process's jobs: wrapped once).
_WATCHED: weakref.WeakSet[openai_sdk.AsyncClient] = weakref.WeakSet()


class _DoneTold:
    """An SSE decoder that marks `attempt` done when the stream's `data: [DONE]` comes. The
    SDK reads that event itself (it ends its iteration there) and the plugin never sees it:
    a server that ends a whole reply with `[DONE]` and no finish_reason (vLLM, llama.cpp's,
    LocalAI, LM Studio) had every reply failed as cut (the apology, the call ended)."""

    def __init__(self, decoder: Any, attempt: _Attempt) -> None:
        self._decoder = decoder
        self._attempt = attempt

    def iter_bytes(self, iterator: Iterator[bytes]) -> Iterator[Any]:
        return self._decoder.iter_bytes(iterator)  # type: ignore[no-any-return]

    async def aiter_bytes(self, iterator: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for event in self._decoder.aiter_bytes(iterator):
            if event.data.startswith("[DONE]"):  # as the SDK reads it
                self._attempt.done = True
            yield event


def _watch_for_done(client: openai_sdk.AsyncClient) -> None:
    """`client`'s streams made in an attempt (`_ATTEMPT`) tell it when `[DONE]` came."""
    if client in _WATCHED:
        return
    make = client._make_sse_decoder

    def made() -> Any:
        decoder = make()
        attempt = _ATTEMPT.get()
        return decoder if attempt is None else _DoneTold(decoder, attempt)

    client._make_sse_decoder = made  # type: ignore[method-assign]
    _WATCHED.add(client)


def _check(stream: LLMStream, conn_options: APIConnectOptions, call_id: str | None) -> None:
    """Wrap `stream`'s attempts (its task starts on the loop's next turn, after this): one
    whose stream ended without a finish_reason and without `[DONE]` fails (`ENDED_EARLY`),
    retried only if nothing was said from it yet; a refusal asking for a short wait is
    waited out (`_wait_as_asked`)."""
    run = stream._run
    parse_choice = stream._parse_choice
    attempt = _Attempt()

    def parse(id: str, choice: Any, thinking_filter: Any) -> Any:
        attempt.chunk_id, attempt.thinking = id, thinking_filter
        if choice.finish_reason is not None:
            attempt.finished = True
        chunk = parse_choice(id, choice, thinking_filter)
        if chunk is not None and chunk.has_response():
            attempt.said = True
        return chunk

    async def checked_run() -> None:
        attempt.number += 1
        attempt.finished = attempt.done = attempt.said = False
        attempt.chunk_id = attempt.thinking = None
        _ATTEMPT.set(attempt)  # this task's: its stream's decoder is made in run()
        try:
            await run()
        except APIStatusError as exc:
            if not attempt.said:
                await _wait_as_asked(exc, attempt.number, conn_options, call_id)
            raise
        whole = attempt.finished or attempt.done  # a finish_reason, or [DONE]
        if attempt.done and not attempt.finished:
            _end_as_finished(stream, parse_choice, attempt)
        if not whole and attempt.chunk_id is None and (kind := _not_streamed(stream)):
            # One JSON completion (a server that does not stream, or a gateway that buffers
            # and re-types its answer), read as no event at all: "the stream ended before the
            # reply did" sent its operator to look for a proxy cutting streams. The same
            # answer would come again: not asked again.
            logger.warning(
                "call %s: %s: its answer was %s, not a stream of events (text/event-stream):"
                " the LLM endpoint (OPENAI_BASE_URL) must stream its replies",
                call_id,
                ENDED_EARLY,
                kind,
            )
            # Said as what it is (NOT_STREAMED) in the analysis's failure too, which the call's
            # report carries: not a stream ended early.
            raise APIConnectionError(f"{ENDED_EARLY}: {NOT_STREAMED}", retryable=False)
        if not whole:
            logger.warning(
                "call %s: %s (no finish_reason, no [DONE]): %s",
                call_id,
                ENDED_EARLY,
                "the words said are all the callee hears of it"
                if attempt.said
                else "nothing of it said yet, asked again while tries are left",
            )
            raise APIConnectionError(ENDED_EARLY, retryable=not attempt.said)

    stream._parse_choice = parse  # type: ignore[method-assign]
    stream._run = checked_run  # type: ignore[method-assign]


def _not_streamed(stream: LLMStream) -> str | None:
    """The media type of the attempt's answer when it was no event stream, else None."""
    response = getattr(getattr(stream, "_oai_stream", None), "response", None)
    kind = str(response.headers.get("content-type", "")) if response is not None else ""
    kind = kind.split(";", 1)[0].strip().lower()
    return kind if kind and kind != "text/event-stream" else None


def _end_as_finished(stream: LLMStream, parse_choice: Any, attempt: _Attempt) -> None:
    """End `attempt`'s reply, whole (ended by [DONE]) with no finish_reason, as a finish_reason
    ends it. The plugin emits a tool call at its finish_reason only (or at the next call's
    start): the reply's last one was dropped without a word (end_call: the callee said
    goodbye and the line stayed open, the agent waiting), as was text its thinking filter
    held back for the reply's end."""
    if attempt.chunk_id is None:  # no chunk: nothing held
        return
    end = Choice(index=0, delta=ChoiceDelta(), finish_reason="tool_calls")
    if (chunk := parse_choice(attempt.chunk_id, end, attempt.thinking)) is not None:
        stream._event_ch.send_nowait(chunk)


async def _wait_as_asked(
    exc: APIStatusError, number: int, conn_options: APIConnectOptions, call_id: str | None
) -> None:
    """Before livekit-agents asks again after `exc` (attempt `number`, from 0): wait as long
    as the refusal's Retry-After asks, less livekit-agents' own interval, or mark it not to
    be asked again when that is longer than RETRY_AFTER_MAX_S. The plugin drops the headers:
    they are read from OpenAI's error it was raised from."""
    original = exc.__context__
    if not exc.retryable or not isinstance(original, openai_sdk.APIStatusError):
        return
    delay = retry_after(original.response.headers)
    if delay is None or number >= conn_options.max_retry:  # not asked for, or no try left
        return
    if delay > RETRY_AFTER_MAX_S:
        exc.retryable = False
        logger.warning(
            "call %s: OpenAI answered %d and asked to wait %.0f s before asking again, more"
            " than a callee waits (%.0f s): not asked again",
            call_id,
            exc.status_code,
            delay,
            RETRY_AFTER_MAX_S,
        )
        return
    logger.info(
        "call %s: OpenAI answered %d; asked again in %.1f s, as it asked (Retry-After)",
        call_id,
        exc.status_code,
        delay,
    )
    await asyncio.sleep(max(0.0, delay - conn_options._interval_for_retry(number)))


def retry_after(headers: Mapping[str, str]) -> float | None:
    """How long a refusal asks to wait, in seconds: `retry-after-ms` (OpenAI's), else
    `Retry-After` (seconds, or an HTTP date); None if neither says (or says nonsense)."""
    seconds: float | None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            seconds = float(ms) / 1000
        elif (value := headers.get("retry-after")) is None:
            return None
        elif value.strip().replace(".", "", 1).isdigit():  # OpenAI's may have decimals
            seconds = float(value)
        else:
            seconds = seconds_asked(value, time.time())
    except ValueError:
        return None
    return max(0.0, seconds) if seconds is not None and math.isfinite(seconds) else None
