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

from typing import Any

from livekit.agents import APIConnectOptions
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS
from livekit.plugins import openai
from livekit.plugins.openai.llm import LLMStream

# The plugin's label: the call's reason names the provider from it (`provider_named`).
PLUGIN_LABEL = f"{openai.LLM.__module__}.{openai.LLM.__name__}"


class CallLLM(openai.LLM):
    """`openai.LLM` whose `chat` without connection options uses `conn_options`."""

    def __init__(self, *, conn_options: APIConnectOptions, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._label = PLUGIN_LABEL
        self._call_conn_options = conn_options

    def chat(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS, **kwargs: Any
    ) -> LLMStream:
        if conn_options is DEFAULT_API_CONNECT_OPTIONS:
            conn_options = self._call_conn_options
        return super().chat(conn_options=conn_options, **kwargs)
