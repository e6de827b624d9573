"""Static settings: read once from the environment and `.env` into a frozen dataclass.

Real environment variables win over `.env`. Every setting has a default that lets `make run`
start with no `.env` at all (on the embedded sandbox). A wrong value stops start-up with one
`SettingsError` line naming the variable.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

# Clearly-marked development credentials, accepted only by the embedded sandbox.
DEV_API_KEY = "devkey-sandbox-only"
DEV_API_SECRET = "sandbox-secret-not-for-production-use-0123456789"  # noqa: S105

DEFAULT_CARTESIA_VOICE_ID = "f786b574-daa5-4673-aa0c-cbe3e8534c02"  # Cartesia "Katie"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_format: str = "text"

    config_path: Path = Path("config.json")
    config_record_ttl_s: float = 86400.0
    calls_db_path: Path = Path("calls.db")

    livekit_url: str | None = None
    livekit_api_key: str = DEV_API_KEY
    livekit_api_secret: str = field(default=DEV_API_SECRET, repr=False)
    sip_outbound_trunk_id: str = ""
    agent_name: str = "outbound-caller"

    calls_api_token: str | None = field(default=None, repr=False)
    calls_allowed_countries: tuple[str, ...] = ()
    calls_rate_limit_per_min: int = 60
    calls_max_active: int = 50
    call_ringing_timeout_s: int = 30
    call_max_duration_s: int = 600
    reaper_interval_s: float = 30.0
    calls_settle_grace_s: float = 10.0
    webhook_path: str = "/webhooks/livekit"

    sandbox_port: int = 7880
    sandbox_time_scale: float = 1.0

    openai_api_key: str = field(default="", repr=False)
    openai_model: str = "gpt-4o-mini"
    deepgram_api_key: str = field(default="", repr=False)
    cartesia_api_key: str = field(default="", repr=False)
    cartesia_voice_id: str = DEFAULT_CARTESIA_VOICE_ID

    @property
    def uses_sandbox(self) -> bool:
        """No LIVEKIT_URL: calls go to the embedded loopback sandbox, no phone rings."""
        return self.livekit_url is None

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def instance_name(self) -> str:
        """This server among others on one database: host name and port."""
        return f"{socket.gethostname()}:{self.port}"

    @property
    def webhook_url(self) -> str:
        """Where this server receives webhooks, as seen from this machine."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{self.webhook_path}"

    def require_livekit(self) -> None:
        """With a real LIVEKIT_URL, refuse to start without a trunk and real credentials."""
        if self.uses_sandbox:
            return
        if self.livekit_api_key == DEV_API_KEY:
            raise SettingsError("LIVEKIT_API_KEY must be set when LIVEKIT_URL is set")
        if self.livekit_api_secret == DEV_API_SECRET:
            raise SettingsError("LIVEKIT_API_SECRET must be set when LIVEKIT_URL is set")
        if not self.sip_outbound_trunk_id:
            raise SettingsError("SIP_OUTBOUND_TRUNK_ID must be set when LIVEKIT_URL is set")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= low or value != value or value == float("inf"):
        raise SettingsError(f"{name} must be a finite number >= {low}, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


def _optional(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def _countries(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("CALLS_ALLOWED_COUNTRIES", "")
    regions = tuple(part.strip().upper() for part in raw.split(",") if part.strip())
    bad = [r for r in regions if len(r) != 2 or not r.isalpha()]
    if bad:
        raise SettingsError(
            f"CALLS_ALLOWED_COUNTRIES must be two-letter ISO regions, got {', '.join(bad)}"
        )
    return regions


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Build Settings from a plain mapping (pure; `load_settings` adds the process env)."""
    livekit_url = _optional(env, "LIVEKIT_URL")
    if livekit_url is not None and not livekit_url.startswith(
        ("ws://", "wss://", "http://", "https://")
    ):
        raise SettingsError("LIVEKIT_URL must start with wss://, ws://, https:// or http://")
    webhook_path = _str(env, "WEBHOOK_PATH", "/webhooks/livekit")
    if not webhook_path.startswith("/"):
        raise SettingsError(f"WEBHOOK_PATH must start with '/', got {webhook_path!r}")
    return Settings(
        host=_str(env, "HOST", "127.0.0.1"),
        port=_int(env, "PORT", 8000, 0, 65535),
        log_level=_choice(env, "LOG_LEVEL", "INFO", LOG_LEVELS),
        log_format=_choice(env, "LOG_FORMAT", "text", LOG_FORMATS),
        config_path=Path(_str(env, "CONFIG_PATH", "config.json")),
        config_record_ttl_s=_float(env, "CONFIG_RECORD_TTL_S", 86400.0, 1.0),
        calls_db_path=Path(_str(env, "CALLS_DB_PATH", "calls.db")),
        livekit_url=livekit_url,
        livekit_api_key=_str(env, "LIVEKIT_API_KEY", DEV_API_KEY),
        livekit_api_secret=_str(env, "LIVEKIT_API_SECRET", DEV_API_SECRET),
        sip_outbound_trunk_id=_str(env, "SIP_OUTBOUND_TRUNK_ID", ""),
        agent_name=_str(env, "AGENT_NAME", "outbound-caller"),
        calls_api_token=_optional(env, "CALLS_API_TOKEN"),
        calls_allowed_countries=_countries(env),
        calls_rate_limit_per_min=_int(env, "CALLS_RATE_LIMIT_PER_MIN", 60, 1, 1_000_000),
        calls_max_active=_int(env, "CALLS_MAX_ACTIVE", 50, 1, 1_000_000),
        call_ringing_timeout_s=_int(env, "CALL_RINGING_TIMEOUT_S", 30, 1, 600),
        call_max_duration_s=_int(env, "CALL_MAX_DURATION_S", 600, 1, 86400),
        reaper_interval_s=_float(env, "REAPER_INTERVAL_S", 30.0, 0.01),
        calls_settle_grace_s=_float(env, "CALLS_SETTLE_GRACE_S", 10.0, 0.0),
        webhook_path=webhook_path,
        sandbox_port=_int(env, "SANDBOX_PORT", 7880, 0, 65535),
        sandbox_time_scale=_float(env, "SANDBOX_TIME_SCALE", 1.0, 0.0),
        openai_api_key=_str(env, "OPENAI_API_KEY", ""),
        openai_model=_str(env, "OPENAI_MODEL", "gpt-4o-mini"),
        deepgram_api_key=_str(env, "DEEPGRAM_API_KEY", ""),
        cartesia_api_key=_str(env, "CARTESIA_API_KEY", ""),
        cartesia_voice_id=_str(env, "CARTESIA_VOICE_ID", DEFAULT_CARTESIA_VOICE_ID),
    )


def load_settings(dotenv_path: str | os.PathLike[str] | None = ".env") -> Settings:
    """Settings from `.env` (if present) overlaid by the real environment."""
    merged: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ)
    return settings_from_env(merged)


# Fields our log calls pass as `extra=` that JSON logs carry as fields of their own.
_JSON_FIELDS = ("call_id", "status")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _JSON_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Set up the root logger once, as LOG_LEVEL and LOG_FORMAT say."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
