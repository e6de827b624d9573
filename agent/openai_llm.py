"""OpenAI's LLM as the agent uses it: livekit's plugin, whose requests made without
connection options get the call's own.

The session gives its requests (a reply, the greeting) `agent.session`'s bound on how long
the LLM may keep the callee waiting. The answering-machine detector (livekit-agents' AMD)
asks this LLM too, with no options: livekit-agents' defaults, 10 s an attempt and 3 more,
and an OpenAI that took its request and sent nothing kept the callee who said "Hello?" in
silence for the detector's whole 20 s. Its requests are bounded as the session's are.

Imported on use (by `agent.session.build_llm`), as the plugins are.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai as openai_sdk
from livekit.agents import APIConnectOptions, APIStatusError
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS
from livekit.plugins import openai
from livekit.plugins.openai.llm import LLMStream

from agent.session import KEY_REFUSAL_RECHECK_S

# The plugin's label: the call's reason names the provider from it (`provider_named`).
PLUGIN_LABEL = f"{openai.LLM.__module__}.{openai.LLM.__name__}"


class CallLLM(openai.LLM):
    """`openai.LLM` whose `chat` without connection options uses `conn_options`, and which
    tells when OpenAI refused its API key (`key_refused`) to the request the session makes
    ahead (livekit-agents' prewarm, listing the models, as it is built: while the phone
    rings), which livekit-agents ignores."""

    def __init__(self, *, conn_options: APIConnectOptions, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._label = PLUGIN_LABEL
        self._call_conn_options = conn_options
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
        return super().chat(conn_options=conn_options, **kwargs)
