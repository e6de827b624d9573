"""The seed's dynamic-configuration API: `update_config[_async]`, `load_dynamic_config[_async]`,
`get_config_value[_async]`, plus keyword-only `call_id=` and `remove_call_config[_async]`.

The functions work on one `ConfigStore` (common.config_store): the server and the agent
point it at CONFIG_PATH with `configure_store`; used on its own (as in the seed's examples) it
reads CONFIG_PATH from the settings on first use.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from common.config_store.model import DEFAULT_EMOTION, DEFAULT_LANGUAGE
from common.config_store.store import ConfigStore, ConfigWriteError, UnknownCallError

__all__ = [
    "ConfigStore",
    "ConfigWriteError",
    "UnknownCallError",
    "configure_store",
    "get_config_value",
    "get_config_value_async",
    "get_store",
    "load_dynamic_config",
    "load_dynamic_config_async",
    "remove_call_config",
    "remove_call_config_async",
    "update_config",
    "update_config_async",
]

logger = logging.getLogger(__name__)

# The checkout (this file is its common/update_config.py): the seed's "project_root".
CHECKOUT = Path(__file__).resolve().parent.parent

_default_store: ConfigStore | None = None
_default_lock = threading.Lock()
# The store `get_store` made from the settings, and the environment's values of what it read
# (CONFIG_PATH, CONFIG_RECORD_TTL_S) then: made anew when they change (`_STORE_VARIABLES`).
_made_from_env: tuple[ConfigStore, tuple[str | None, ...]] | None = None
_STORE_VARIABLES = ("CONFIG_PATH", "CONFIG_RECORD_TTL_S")


def _new_default_lock() -> None:
    """A forked child's own lock: one held by another thread at the fork stays held."""
    global _default_lock
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_default_lock)


def configure_store(path: str | os.PathLike[str], *, record_ttl_s: float = 86400.0) -> ConfigStore:
    """Point the module-level functions at `path` (the server and agent call this once)."""
    global _default_store
    with _default_lock:
        _default_store = ConfigStore(path, record_ttl_s=record_ttl_s)
        return _default_store


def get_store() -> ConfigStore:
    """The store behind the module functions: CONFIG_PATH from settings unless configured,
    made anew when the environment's CONFIG_PATH (or CONFIG_RECORD_TTL_S) changes."""
    global _default_store, _made_from_env
    with _default_lock:
        # The environment set after a first use (a notebook's `%env CONFIG_PATH=...`, a
        # test's monkeypatch.setenv, an application's os.environ before its first call
        # through another module): every later call went on writing and reading the
        # config.json named first, unsaid. A relative one still names the file it did
        # while the variable is unchanged (the working directory changed since).
        variables = tuple(os.environ.get(name) for name in _STORE_VARIABLES)
        if (
            _made_from_env is not None
            and _default_store is _made_from_env[0]
            and variables != _made_from_env[1]
        ):
            logger.info(
                "CONFIG_PATH or CONFIG_RECORD_TTL_S changed in the environment since the"
                " config store was made for %s: the seed's functions read them again",
                _default_store.path,
            )
            _default_store = None
        if _default_store is None:
            from common.settings import (
                checkout_unread_warning,
                environment,
                settings_from_env,
            )

            # Only the settings the store needs, read as the server reads them: the seed's
            # .env holds the application's own settings too ("Database URLs, service
            # endpoints"), and one of ours it gives another meaning (DATABASE_URL=mysql://...
            # for the application's database, PORT for its own server) failed every call of
            # these functions with a SettingsError about it. CALLS_DB_PATH only to refuse a
            # CONFIG_PATH naming the calls database, which is none with a DATABASE_URL.
            env = environment()
            wanted = {"CONFIG_PATH", "CONFIG_RECORD_TTL_S"}
            if not env.get("DATABASE_URL", "").strip():
                wanted.add("CALLS_DB_PATH")
            # config.json's content is the store's to judge: the seed's "Invalid JSON: logs
            # error and uses fallback defaults" (its next write sets the file aside, as a
            # server's does; a server still refuses to start on a file that is no object).
            settings = settings_from_env(
                {name: value for name, value in env.items() if name in wanted},
                config_file_read=False,
            )
            # The seed puts config.json in "project_root"; CONFIG_PATH is found from the
            # working directory, and a script run elsewhere (cron, the user's own project)
            # wrote a config.json that no server or agent of the checkout read, unsaid.
            # Its .env only when it sets what these functions use (a checkout's .env holds
            # the server's LIVEKIT_URL, trunk and CALLS_DB_PATH too, this last read only to
            # refuse a CONFIG_PATH naming it): with CONFIG_PATH absolute, as the README
            # says, it warned at every run that the .env was not read.
            unread = checkout_unread_warning(
                CHECKOUT,
                [settings.config_path],
                "script",
                reads={"CONFIG_PATH", "CONFIG_RECORD_TTL_S"},
            )
            if unread is not None:
                logger.warning("%s", unread)
            _default_store = ConfigStore(
                settings.config_path, record_ttl_s=settings.config_record_ttl_s
            )
            _made_from_env = (_default_store, variables)
        return _default_store


def update_config(
    caller_name: str | None = None,
    agent_instructions: str | None = None,
    tts_language: str = DEFAULT_LANGUAGE,
    tts_emotion: str = DEFAULT_EMOTION,
    additional_params: dict[str, Any] | None = None,
    *,
    call_id: str | None = None,
) -> dict[str, Any]:
    """Update the dynamic configuration (seed API); `call_id=` also stores a per-call record."""
    return get_store().update(
        caller_name,
        agent_instructions,
        tts_language,
        tts_emotion,
        additional_params,
        call_id=call_id,
    )


async def update_config_async(
    caller_name: str | None = None,
    agent_instructions: str | None = None,
    tts_language: str = DEFAULT_LANGUAGE,
    tts_emotion: str = DEFAULT_EMOTION,
    additional_params: dict[str, Any] | None = None,
    *,
    call_id: str | None = None,
) -> dict[str, Any]:
    """Async `update_config`: returns once the write is durable; never blocks the loop."""
    return await get_store().update_async(
        caller_name,
        agent_instructions,
        tts_language,
        tts_emotion,
        additional_params,
        call_id=call_id,
    )


def load_dynamic_config(*, call_id: str | None = None) -> dict[str, Any]:
    """The latest flat config (seed API), or with `call_id` that call's own record."""
    return get_store().load(call_id=call_id)


async def load_dynamic_config_async(*, call_id: str | None = None) -> dict[str, Any]:
    return await get_store().load_async(call_id=call_id)


def get_config_value(key: str, default: Any = None, *, call_id: str | None = None) -> Any:
    """One value of the latest config (or of `call_id`'s record: UnknownCallError if it has
    none), `default` when the key is not in it."""
    return get_store().get(key, default, call_id=call_id)


async def get_config_value_async(
    key: str, default: Any = None, *, call_id: str | None = None
) -> Any:
    return await get_store().get_async(key, default, call_id=call_id)


def remove_call_config(call_id: str) -> bool:
    """Remove a finished call's record from config.json; True if it was there."""
    return get_store().remove_call(call_id)


async def remove_call_config_async(call_id: str) -> bool:
    return await get_store().remove_call_async(call_id)
