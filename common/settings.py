"""Static settings: read once from the environment and `.env` into a frozen dataclass.

Real environment variables win over `.env`. Every setting has a default that lets `make run`
start with no `.env` at all (on the embedded sandbox). A wrong value stops start-up with one
`SettingsError` line naming the variable.
"""

from __future__ import annotations

import difflib
import io
import ipaddress
import json
import logging
import os
import re
import socket
import stat
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from dotenv import dotenv_values
from dotenv.parser import Original, parse_stream
from yarl import URL

from common.config_store.model import LANGUAGES
from common.contracts import REPORTS_PATH
from common.host_header import is_loopback_host
from common.masking import CALL_ID_IN_TEXT, CAMPAIGN_ID_IN_TEXT
from common.times import iso_time

# Clearly-marked development credentials, accepted only by the embedded sandbox.
DEV_API_KEY = "devkey-sandbox-only"
DEV_API_SECRET = "sandbox-secret-not-for-production-use-0123456789"  # noqa: S105

DEFAULT_CARTESIA_VOICE_ID = "f786b574-daa5-4673-aa0c-cbe3e8534c02"  # Cartesia "Katie"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


# ----------------------------------------------------------------------------- parsers
# Each takes the variable's name and its non-blank, stripped value (blank means "default").

Parser = Callable[[str, str], Any]


_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")


def _listen_host(name: str, raw: str) -> str:
    """An address or host name to listen on (empty: every address). A URL, a port or
    brackets in it failed only when listening, after a misleading refusal ("CALLS_API_TOKEN
    must be set to listen on HOST=[::1]")."""
    text = _text(name, raw).strip()
    if not text:
        return text
    if "/" in text:
        raise SettingsError(f"{name} is an address or a host name, not a URL: got {text!r}")
    if "[" in text or "]" in text:
        raise SettingsError(f"{name} takes an IPv6 address without brackets (::1), got {text!r}")
    if ":" in text:
        try:
            ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            # HOST's port is PORT; the agent's health server's is livekit-agents' own (8081)
            hint = " (set PORT)" if name == "HOST" else ""
            raise SettingsError(f"{name} takes no port{hint}: got {text!r}") from None
        return text
    if not _HOST_NAME.fullmatch(text):
        raise SettingsError(f"{name} must be an IP address or a host name, got {text!r}")
    return text


def _text(name: str, raw: str) -> str:
    """One line of text. A line break in a value is a quote opened on its line and closed on
    a later one: python-dotenv reads the lines between as part of the value, and the settings
    on them are gone (LIVEKIT_URL with them: the server started on the sandbox)."""
    if not raw.isprintable():  # line breaks and control characters are not printable
        raise SettingsError(
            f"{name} must be one line of printable text: no line break, control character or"
            " invisible space such as U+00A0 (in .env, a quote opened on its line and closed"
            " on a later one takes the lines between into it)"
        )
    return raw


# What a LiveKit id is made of: its prefix (`ST_` for a SIP trunk), then letters and digits
# (livekit/protocol's guid.IsValidID).
_LIVEKIT_ID_CHARACTERS = re.compile(r"[A-Za-z0-9_]+")


def _trunk_id(name: str, raw: str) -> str:
    """A LiveKit SIP trunk id: a character none has (a space, a `-` of a trunk's name, the
    `+` of a number) was accepted at start-up, and every call then failed at LiveKit."""
    text = _text(name, raw)
    if not _LIVEKIT_ID_CHARACTERS.fullmatch(text):
        bad = next(c for c in text if not _LIVEKIT_ID_CHARACTERS.fullmatch(c))
        raise SettingsError(
            f"{name} holds {bad!r}, which no LiveKit trunk id has: it is ST_ followed by letters"
            " and digits (is it the trunk's name or number? `lk sip outbound list` shows ids)"
        )
    return text


# SANDBOX_TIME_SCALE's bound, and `python -m sandbox --time-scale`'s.
MAX_SANDBOX_TIME_SCALE = 1000.0


# An API token a person could guess, or try every value of, is no protection on a server that
# listens beyond loopback: at least this many characters (secrets.token_urlsafe(32) gives 43).
MIN_TOKEN_CHARS = 16


def _token(name: str, raw: str) -> str:
    """A bearer token: long enough not to be guessed, and of characters a header carries as
    they are (no spaces or control characters; the value itself is never echoed)."""
    if len(raw) < MIN_TOKEN_CHARS:
        raise SettingsError(
            f"{name} must be at least {MIN_TOKEN_CHARS} characters (it has {len(raw)}); make"
            " one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if not raw.isascii() or not raw.isprintable() or " " in raw:
        raise SettingsError(f"{name} must be printable ASCII without spaces")
    return raw


def _file_path(name: str, raw: str) -> Path:
    """A file's path. `/`, `.`, `..` or a trailing `/` name a directory, which no file can be
    (config.json and its lock beside it, calls.db): `CONFIG_PATH=/` ended start-up in a
    traceback. A NUL, which no path holds, would too."""
    if "\0" in raw:
        raise SettingsError(f"{name} must not hold a NUL character")
    if raw.rsplit("/", 1)[-1] in ("", ".", ".."):
        raise SettingsError(f"{name} must be a file's path, not a directory's, got {raw!r}")
    if raw.startswith("~") or "$" in raw:
        # No shell reads .env: `~/calls.db` made a directory named `~` in the working one.
        raise SettingsError(
            f"{name} is not expanded ('~' and '$' are taken as they are): give the path itself,"
            f" got {raw!r}"
        )
    return Path(raw)


# The files SQLite keeps beside a database in WAL mode.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _directory_path(name: str, raw: str) -> Path:
    """A directory's path, taken as it is (no `~` or `$` expanded), without a NUL."""
    if "\0" in raw:
        raise SettingsError(f"{name} must not hold a NUL character")
    if raw.startswith("~") or "$" in raw:
        raise SettingsError(
            f"{name} is not expanded ('~' and '$' are taken as they are): give the path itself,"
            f" got {raw!r}"
        )
    return Path(raw)


def _sqlite_path(name: str, raw: str) -> Path:
    """A file's path that SQLite takes as one: `:memory:` is no file (and a `file:` name is
    a URI to this SQLite), so every call kept there would be lost when the server stops."""
    if raw == ":memory:" or raw.startswith("file:"):
        raise SettingsError(
            f"{name} must be a file's path, got {raw!r} (SQLite's in-memory database or a URI:"
            " the calls would not outlive the server)"
        )
    return _file_path(name, raw)


def _integer(low: int, high: int) -> Parser:
    def parse(name: str, raw: str) -> int:
        if not raw.isascii() or "_" in raw:  # int() also takes 8_000 and other scripts' digits
            raise SettingsError(f"{name} must be an integer, got {raw!r}")
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
        return value

    return parse


def _number(low: float, high: float) -> Parser:
    """A number in [low, high]: past its bound, a duration means "never" (a reaper that never
    runs again, a lease never taken over), which no setting is for."""

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if not low <= value <= high:  # NaN fails too
            raise SettingsError(
                f"{name} must be a number from {low:.10g} to {high:.10g}, got {raw!r}"
            )
        return value

    return parse


def _voice_ids(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    """`es=<voice id>,fr=<voice id>`: the Cartesia voice for each language named (a catalogue
    language, case-insensitive), as sorted (language, voice id) pairs."""
    pairs: dict[str, str] = {}
    for item in _text(name, raw).split(","):
        language, sep, voice = (part.strip() for part in item.partition("="))
        if not item.strip():
            continue
        if not sep or not language or not voice:
            raise SettingsError(
                f"{name} takes language=voice_id pairs, comma-separated: got {item.strip()!r}"
            )
        if "=" in voice:  # `es=<id>;fr=<id>`: no voice id has one, two pairs ran together
            raise SettingsError(
                f"{name} takes language=voice_id pairs, comma-separated: got {item.strip()!r},"
                " two pairs not separated by a comma"
            )
        code = language.lower()
        if code not in LANGUAGES:
            raise SettingsError(
                f"{name}: {language!r} is not a supported language; allowed: {', '.join(LANGUAGES)}"
            )
        if code in pairs:
            raise SettingsError(f"{name} names {code} twice")
        pairs[code] = voice
    return tuple(sorted(pairs.items()))


def _choice(choices: tuple[str, ...]) -> Parser:
    def parse(name: str, raw: str) -> str:
        for choice in choices:
            if raw.lower() == choice.lower():
                return choice
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")

    return parse


# Codes people write for a region whose ISO code is another one.
_REGION_ALIASES = {"UK": "GB", "EL": "GR"}


def _regions(name: str, raw: str) -> tuple[str, ...]:
    """Regions a number's country is compared with: only ones phone numbers can belong to.
    A code no number has (`UK` for GB, a typo) would refuse every call to the country meant,
    with a message naming a country nobody asked about."""
    regions = tuple(part.strip().upper() for part in raw.split(",") if part.strip())
    if not regions:
        # `${FIRST},${SECOND}` in a compose file or a template, both unset, gives `,`: it
        # was read as empty, every country allowed, the list meant to narrow them lost.
        raise SettingsError(
            f"{name} holds commas but no region ({raw!r}): name the regions that may be"
            " called (US,CA), or leave it empty to allow every country"
        )
    bad = [r for r in regions if len(r) != 2 or not r.isalpha()]
    if bad:
        raise SettingsError(f"{name} must be two-letter ISO regions, got {', '.join(bad)}")
    unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
    if unknown:
        meant = {r: _REGION_ALIASES[r] for r in unknown if r in _REGION_ALIASES}
        hints = [f" ({r}: did you mean {iso}?)" for r, iso in meant.items()]
        raise SettingsError(
            f"{name}: no phone number belongs to {', '.join(unknown)}{''.join(hints)}"
        )
    return regions


def _checked_url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    """`raw` if it is a URL with one of `schemes`, a host and a valid port (if any). The
    errors quote it only when it holds no user info (a password may be in it, whole or cut
    at a `/`, `#` or `?` that the parser took for the end of the host)."""
    wanted = " or ".join(f"{s}://" for s in schemes)
    shown = f", got {raw!r}" if "@" not in raw else ""
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise SettingsError(f"{name} is not a valid URL (its host or port){shown}") from None
    if parts.scheme not in schemes:
        raise SettingsError(f"{name} must start with {wanted}{shown}")
    if not parts.hostname or any(ch.isspace() for ch in raw):
        raise SettingsError(f"{name} must name a host (and hold no spaces){shown}")
    if port == 0:
        raise SettingsError(f"{name} may not name port 0{shown}")
    try:
        URL(raw).host  # noqa: B018 - decodes an IDNA label ("xn--..."), as aiohttp reads it
    except (UnicodeError, ValueError):  # "xn--a": no punycode; read at start-up, a traceback
        raise SettingsError(f"{name} names no valid host name{shown}") from None
    return raw


def _livekit_url(name: str, raw: str) -> str:
    """LiveKit's address. With user info, every request to LiveKit was a 500 (aiohttp refuses
    credentials in a URL beside our Authorization header; a call's row was left undialled);
    a query or a fragment was dropped by livekit-api, and logged at start-up whole."""
    return _plain_url(name, raw, _checked_url(name, raw, ("wss", "ws", "https", "http")))


def http_url(name: str, raw: str) -> str:
    """`raw` without its last `/` if it is an http(s) URL with a host (see _checked_url);
    SettingsError naming `name` if not."""
    return _checked_url(name, raw, ("https", "http")).rstrip("/")


def _base_url(name: str, raw: str) -> str:
    """A base URL paths are appended to: with user info, a query or a fragment, reports
    went to `/?x=1/agent/reports` (404, never retried: every transcript lost)."""
    return _plain_url(name, raw, http_url(name, raw))


def _api_key(name: str, raw: str) -> str:
    """A provider's API key: printable ASCII, one word (never echoed). `sk-... # LLM` (a
    comment an env file of docker or Kubernetes keeps in the value) or a non-ASCII character
    pasted in was taken, and every call's request to that provider was refused (401) or could
    not be sent, with the callee on the line."""
    text = _text(name, raw)
    if not text.isascii() or any(character.isspace() for character in text):
        raise SettingsError(f"{name} must be printable ASCII without spaces")
    # The seed's `.env` example (`OPENAI_API_KEY=sk-...`, `DEEPGRAM_API_KEY=...`) copied as
    # it is: no provider's key holds "..."; taken, the worker started and every call's
    # request to that provider was refused (401) after the callee had answered.
    if "..." in text:
        raise SettingsError(f"{name} holds '...', a placeholder: set the real key")
    return text


def _model_id(name: str, raw: str) -> str:
    """A model's id: one word. `gpt-4o-mini # the cheap one` (a comment that an env file of
    docker compose or Kubernetes keeps in the value) was taken whole, and every LLM request
    of every call asked for a model of that name (404), after the callee had answered."""
    text = _text(name, raw)
    if any(character.isspace() for character in text):
        raise SettingsError(f"{name} is a model id, without spaces: got {raw!r}")
    return text


def _openai_base_url(name: str, raw: str) -> str:
    """An OpenAI-compatible API's base URL, which the SDK appends `/chat/completions` to:
    not that endpoint itself, and OpenAI's own host with its `/v1`. Either way every LLM
    request of every call was refused (404), after the callee had answered."""
    url = _base_url(name, raw)
    parts = urlsplit(url)
    if parts.path.lower().endswith("/chat/completions"):
        raise SettingsError(
            f"{name} is the API's base URL, without /chat/completions (the agent adds it),"
            f" got {raw!r}"
        )
    if (parts.hostname or "").lower() == "api.openai.com" and parts.path != "/v1":
        raise SettingsError(
            f"{name} for OpenAI's own API is https://api.openai.com/v1 (or leave it unset),"
            f" got {raw!r}"
        )
    return url


def _plain_url(name: str, raw: str, url: str) -> str:
    """`url` (`raw` checked) if it has no user info, query or fragment; the error quotes
    `raw` only when it holds no user info (a password)."""
    if "@" in urlsplit(url).netloc or "?" in url or "#" in url:
        raise SettingsError(
            f"{name} must be scheme://host[:port][/path], without user info, ? or #"
            + ("" if "@" in raw else f", got {raw!r}")
        )
    return url


def _boolean(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1 or 0 (true/false), got {raw!r}")


# A delivery's retry no later than this after the one before it: each is shown as a date
# (`next_attempt_at`), and 1e300 s is none (GET /calls/{id}/deliveries answered 500).
MAX_RETRY_DELAY_S = 30 * 86400.0


def _seconds_list(name: str, raw: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise SettingsError(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if not values or any(not 0 <= v <= MAX_RETRY_DELAY_S for v in values):  # NaN fails too
        raise SettingsError(
            f"{name} must be one or more seconds between 0 and {MAX_RETRY_DELAY_S:.0f}"
            f" (30 days), got {raw!r}"
        )
    return values


# How to make a CALLS_WEBHOOK_SECRET, said with every error about one (as _token's says how to
# make a token): "whsec_ + base64 of at least 24 bytes" named a format, not a command.
WHSEC_RECIPE = (
    "make one with: python -c 'import base64, os;"
    ' print("whsec_" + base64.b64encode(os.urandom(32)).decode())\''
)


def _webhook_secret(name: str, raw: str) -> str:
    from common.notify.signing import parse_secrets

    try:
        return parse_secrets(raw)
    except ValueError as exc:
        raise SettingsError(f"{exc}; {WHSEC_RECIPE}") from None


def _database_url(name: str, raw: str) -> str:
    if not raw.startswith(("postgresql://", "postgres://")):
        raise SettingsError(f"{name} must start with postgresql:// (or postgres://)")
    # Nothing more is checked here: libpq's URLs take forms urlsplit does not (several hosts,
    # `host1:5432,host2:5433`); asyncpg reads it at start-up, and an error says so without
    # quoting it (it may hold a password).
    return raw


# The service's own routes: LiveKit's webhooks must not land on them (nor they on it).
API_PREFIXES = (
    "/calls",
    "/campaigns",
    "/dnc",
    "/deliveries",
    "/agent",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
)


def _url_path(name: str, raw: str) -> str:
    if not raw.startswith("/"):
        raise SettingsError(f"{name} must start with '/', got {raw!r}")
    if any(ch in raw for ch in "{}?#%") or any(ch.isspace() for ch in raw):
        raise SettingsError(f"{name} must be a plain path (no {{ }} ? # % or spaces), got {raw!r}")
    if any(part in (".", "..") for part in raw.split("/")) or "//" in raw:
        # clients (LiveKit's too) normalise those away: the webhooks would go elsewhere
        raise SettingsError(f"{name} must not hold '.', '..' or empty segments, got {raw!r}")
    taken = [p for p in API_PREFIXES if raw == p or raw.startswith(p + "/")]
    if taken:
        raise SettingsError(f"{name} must not be one of the API's paths ({taken[0]}), got {raw!r}")
    return raw


def setting(default: Any, parse: Parser, doc: str, *, secret: bool = False) -> Any:
    """A setting: its default, how its variable (the field's name in upper case) is read, and
    what it means. Secrets are left out of repr()."""
    return field(default=default, repr=not secret, metadata={"parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    host: str = setting(
        "127.0.0.1", _listen_host, "Listen address. Anything but loopback requires CALLS_API_TOKEN."
    )
    port: int = setting(8000, _integer(1, 65535), "Listen port.")
    log_level: str = setting("INFO", _choice(LOG_LEVELS), "DEBUG, INFO, WARNING, ERROR, CRITICAL.")
    log_format: str = setting("text", _choice(LOG_FORMATS), "text, or json (one object per line).")
    http_keepalive_s: float = setting(
        75.0,
        _number(1.0, 3600.0),
        "How long (s) an idle client connection is kept open for its next request: longer"
        " than a load balancer's own idle timeout in front (GCP's is 600 s).",
    )

    config_path: Path = setting(
        Path("config.json"), _file_path, "The dynamic config file (seed format + per-call records)."
    )
    config_record_ttl_s: float = setting(
        86400.0,
        _number(1.0, 365 * 86400.0),
        "Records of calls that never finished are pruned after this long.",
    )
    calls_db_path: Path = setting(
        Path("calls.db"), _sqlite_path, "SQLite database of calls, outcomes and timelines."
    )
    database_url: str | None = setting(
        None,
        _database_url,
        "postgresql://user:pass@host:5432/db: PostgreSQL, for several servers; unset: SQLite.",
        secret=True,
    )
    database_pool_size: int = setting(
        10, _integer(1, 1000), "PostgreSQL connections per server at most."
    )
    claim_lease_s: float = setting(
        60.0,
        _number(1.0, 3600.0),
        "How long a server holds work it claimed (events, deliveries) before others may "
        "take it over, should it die.",
    )

    livekit_url: str | None = setting(
        None, _livekit_url, "Unset: the embedded sandbox. Set (wss://...): the real LiveKit."
    )
    # One word of printable ASCII, as a provider's key (_api_key): `APIxyz # prod` (a comment
    # `docker run --env-file` keeps) signed every request and checked every webhook with it.
    livekit_api_key: str = setting(
        DEV_API_KEY, _api_key, "Required with LIVEKIT_URL; also verifies webhooks."
    )
    livekit_api_secret: str = setting(
        DEV_API_SECRET, _api_key, "Required with LIVEKIT_URL; also verifies webhooks.", secret=True
    )
    sip_outbound_trunk_id: str = setting(
        "", _trunk_id, "Outbound SIP trunk (ST_...); required with LIVEKIT_URL."
    )
    agent_name: str = setting(
        "outbound-caller", _text, "The agent worker's name; calls are dispatched to it."
    )

    calls_api_token: str | None = setting(
        None,
        _token,
        "Bearer token required on the /calls API (constant-time compare; 16+ characters).",
        secret=True,
    )
    calls_api_token_previous: str | None = setting(
        None,
        _token,
        "A token still taken besides CALLS_API_TOKEN while its clients move to the new one.",
        secret=True,
    )
    calls_allowed_countries: tuple[str, ...] = setting(
        (), _regions, "Comma list of ISO regions that may be called, e.g. US,CA,GB (empty: all)."
    )
    calls_rate_limit_per_min: int = setting(
        60,
        _integer(1, 1_000_000),
        "Placed calls per minute per token (or, without one, for this machine).",
    )
    calls_max_active: int = setting(
        50, _integer(1, 1_000_000), "Calls not yet in a final state at once."
    )
    # At least a request's least (5 s): a call dials for a second or so before it rings, and
    # 1 made every call no_answer (probe AO).
    call_ringing_timeout_s: int = setting(
        30, _integer(5, 600), "How long the phone rings (a request may set ringing_timeout_s)."
    )
    # At least a request's least (30 s) too: it counts from the dial, ringing included, so
    # 1 (or 10, meant as minutes) cut every call before or just after its answer, unsaid.
    call_max_duration_s: int = setting(
        600, _integer(30, 86400), "Longest call (a request may set max_duration_s)."
    )
    reaper_interval_s: float = setting(
        30.0, _number(0.01, 3600.0), "How often stuck calls are settled and config.json is pruned."
    )
    readyz_reuse_s: float = setting(
        1.0,
        _number(0.0, 60.0),
        "How long a /readyz verdict is reused (0: each request checks).",
    )
    metrics_reuse_s: float = setting(
        5.0,
        _number(0.0, 60.0),
        "How long the database's counts in /metrics are reused (0: each scrape counts).",
    )
    calls_settle_grace_s: float = setting(
        10.0,
        _number(0.0, 600.0),
        "After an unanswered room_finished, how long late events may still show an answer.",
    )
    agent_join_timeout_s: float = setting(
        20.0,
        _number(0.0, 600.0),
        "After a dial, how long a call waits for an agent in its room before it is ended"
        " (0: never checked).",
    )
    webhook_path: str = setting("/webhooks/livekit", _url_path, "Where LiveKit posts webhooks.")
    public_base_url: str | None = setting(
        None,
        _base_url,
        "This server's address as agents reach it (their reports go to <it>/agent/reports); "
        "default http://HOST:PORT.",
    )
    calls_webhook_url: str | None = setting(
        None,
        _text,
        "Customer webhooks: where every call's events are POSTed (a call's webhook_url wins).",
    )
    calls_webhook_secret: str | None = setting(
        None,
        _webhook_secret,
        "Signs customer webhooks (Standard Webhooks): whsec_ + base64 of >= 24 bytes; several,"
        " comma-separated, to rotate it (each delivery is signed with each).",
        secret=True,
    )
    calls_webhook_allow_private: bool = setting(
        False,
        _boolean,
        "1: webhook URLs may be plain http and private/loopback addresses (local testing).",
    )
    campaign_pause_after_trunk_faults: int = setting(
        10,
        _integer(0, 100_000),
        "A campaign whose calls fail at the trunk this many times in a row is paused (0: never).",
    )
    campaign_pause_after_agent_faults: int = setting(
        10,
        _integer(0, 100_000),
        "A campaign whose calls its agent's failure ends this many times in a row is paused"
        " (0: never).",
    )
    campaign_enforce_calling_hours: bool = setting(
        True,
        _boolean,
        "Campaigns never call outside 08:00-21:00 recipient local time (TCPA); 0 turns it off.",
    )
    calls_webhook_retry_schedule: tuple[float, ...] = setting(
        (0.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 21600.0, 86400.0),
        _seconds_list,
        "Seconds before each attempt of a webhook delivery (the first is 0: at once).",
    )
    call_data_retention_days: float = setting(
        30.0,
        _number(0.0, 36500.0),
        "Transcripts, summaries and extracted fields are erased this long after a call ends.",
    )

    sandbox_port: int = setting(7880, _integer(0, 65535), "The embedded sandbox's port.")
    sandbox_time_scale: float = setting(
        1.0,
        _number(0.0, MAX_SANDBOX_TIME_SCALE),
        "Multiplies every simulated delay (0.01 = 100x faster, 0 = instant).",
    )

    openai_api_key: str = setting("", _api_key, "Agent LLM key.", secret=True)
    openai_model: str = setting("gpt-4o-mini", _model_id, "Agent LLM model.")
    openai_base_url: str | None = setting(
        None,
        _openai_base_url,
        "Agent LLM endpoint: an OpenAI-compatible API's base URL (default OpenAI's, "
        "https://api.openai.com/v1).",
    )
    deepgram_api_key: str = setting("", _api_key, "Agent STT key (nova-3).", secret=True)
    deepgram_mip_opt_out: bool = setting(
        True,
        _boolean,
        "Each call's audio opted out of Deepgram's Model Improvement Program (Deepgram keeps it"
        " only while transcribing; the callee never agreed to more); 0 takes part.",
    )
    cartesia_api_key: str = setting("", _api_key, "Agent TTS key (sonic-3).", secret=True)
    cartesia_voice_id: str = setting(
        DEFAULT_CARTESIA_VOICE_ID,
        _text,
        "Cartesia voice id, for every language CARTESIA_VOICE_IDS does not name.",
    )
    cartesia_voice_ids: tuple[tuple[str, str], ...] = setting(
        (),
        _voice_ids,
        "Cartesia voice per language (es=<id>,fr=<id>): a voice speaks another language with "
        "its own accent.",
    )
    agent_http_host: str = setting(
        "127.0.0.1",
        _listen_host,
        "Where the agent worker's health/status HTTP server listens (0.0.0.0 for a container's "
        "health checks).",
    )
    agent_report_spool_dir: Path = setting(
        Path("agent-reports"),
        _directory_path,
        "Where the agent worker keeps the reports a job could not deliver before it ended "
        "(the calls server away), and sends them again from.",
    )

    @property
    def uses_sandbox(self) -> bool:
        """No LIVEKIT_URL: calls go to the embedded loopback sandbox, no phone rings."""
        return self.livekit_url is None

    @property
    def is_loopback(self) -> bool:
        # Any case, as /etc/hosts is read; not `localhost.`, which the resolver may ask DNS
        # for: what a name server answers for it is not known to be this machine.
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback  # 127.0.0.0/8, ::1
        except ValueError:
            return False

    @property
    def instance_name(self) -> str:
        """This server among others on one database (whose claims on outbox events and
        customer webhook deliveries are whose): host name, port and listen address, as
        `sandbox_owner`. Without the address, two servers of one host on one PORT (127.0.0.1
        and ::1) were one: the one starting gave the other's claims back, and a delivery it
        was sending went out twice at once."""
        return self.sandbox_owner

    @property
    def time_scale(self) -> float:
        """What the calls' simulated delays are multiplied by: the embedded sandbox's
        SANDBOX_TIME_SCALE, 1 on a real LiveKit."""
        return self.sandbox_time_scale if self.uses_sandbox else 1.0

    @property
    def sandbox_stretch(self) -> float:
        """How many times its limits a call may take: the embedded sandbox's time scale when
        it slows calls down (SANDBOX_TIME_SCALE=50 "to watch slowly": its calls were settled
        "no final event" while it still played them), else 1."""
        return max(1.0, self.time_scale)

    @property
    def sandbox_owner(self) -> str:
        """Whose embedded sandbox holds a call's room: this server, by host name, listen
        address and port. Two servers on one host may share a PORT on different addresses
        (127.0.0.1 and ::1); the one starting must not take the other's calls for its own."""
        return f"{socket.gethostname()}:{self.port}@{self.host}"

    @cached_property
    def own_names(self) -> frozenset[str]:
        """The names this server is reached by besides loopback ones, lower case: HOST, and
        PUBLIC_BASE_URL's host (where agents post their reports). Read once: every API request
        without a token is checked against them."""
        public = urlsplit(self.public_base_url or "").hostname or ""
        return frozenset(name for name in (self.host.lower(), public.rstrip(".")) if name)

    @property
    def local_base_url(self) -> str:
        """This server's address as seen from this machine."""
        host = reachable(self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def webhook_url(self) -> str:
        """Where this server receives webhooks, as seen from this machine."""
        return f"{self.local_base_url}{self.webhook_path}"

    @property
    def report_url(self) -> str:
        """Where agents post their reports (PUBLIC_BASE_URL, else this machine's address)."""
        return f"{self.public_base_url or self.local_base_url}{REPORTS_PATH}"

    def secret_texts(self) -> list[str]:
        """The values of the settings that are secrets (left out of repr), set ones only, and
        each of CALLS_WEBHOOK_SECRET's while it is rotated (`new,old`: one alone in a text is
        no match for the list)."""
        values = (getattr(self, f.name) for f in fields(self) if not f.repr)
        texts = [v for v in values if isinstance(v, str) and v]
        if self.calls_webhook_secret and "," in self.calls_webhook_secret:
            texts += self.calls_webhook_secret.split(",")  # as parse_secrets joined them
        return texts

    def short_secret_warning(self) -> str | None:
        """With a real LiveKit, a secret shorter than LiveKit's usual: often the API key pasted
        in its place or a value cut short (every request and webhook would then fail its
        signature). A warning, not a refusal: `livekit-server --dev`'s secret is `secret`."""
        length = len(self.livekit_api_secret)
        if self.uses_sandbox or length >= MIN_LIVEKIT_SECRET_CHARS:
            return None
        return (
            f"LIVEKIT_API_SECRET is {length} characters; LiveKit's are at least"
            f" {MIN_LIVEKIT_SECRET_CHARS} but for livekit-server --dev's (is it the API key, or"
            " cut short?)"
        )

    @property
    def public_dev_keys_exposed(self) -> bool:
        """A real LIVEKIT_URL with livekit-server --dev's well-known key pair, on a server
        others reach: its signature (webhooks, agent reports) proves nothing there. (The
        embedded sandbox's public pair is refused from other machines: handlers/http.py.)"""
        return self._dev_keys_reached_by() is not None

    def _dev_keys_reached_by(self) -> str | None:
        """How others reach a server that takes livekit-server --dev's public pair (None: they
        do not, as far as its settings tell): a HOST beyond loopback, or a PUBLIC_BASE_URL
        whose host is none of this machine's loopback names, where agents elsewhere, through a
        proxy or a tunnel in front of this server, post their reports (HOST=127.0.0.1 behind
        one was taken from anywhere without a word)."""
        if self.uses_sandbox or (self.livekit_api_key, self.livekit_api_secret) != LIVEKIT_DEV_KEYS:
            return None
        if not self.is_loopback:
            return f"HOST={self.host} is not loopback"
        public = (urlsplit(self.public_base_url or "").hostname or "").rstrip(".")
        if public and not is_loopback_host(public):
            return (
                f"PUBLIC_BASE_URL's host {public} is not loopback (agents, and whoever else,"
                " reach this server through it)"
            )
        return None

    def livekit_warnings(self) -> list[str]:
        """LiveKit settings that start but are likely mistakes (probe AO: accepted without a
        word): a short secret, a trunk id not LiveKit's shape, keys set for the sandbox."""
        warnings = [w for w in (self.short_secret_warning(),) if w is not None]
        if self.public_dev_keys_exposed:
            warnings.append(
                "LIVEKIT_API_KEY and LIVEKIT_API_SECRET are livekit-server --dev's public pair"
                f" and {self._dev_keys_reached_by()}: anyone who reaches"
                " this server can sign LiveKit webhooks and agent reports with it (settle calls,"
                " write their reports, put numbers on the do-not-call list, have customer"
                " webhooks sent); give LiveKit a key pair of its own (livekit-server --keys)"
            )
        if self.uses_sandbox:
            if self.livekit_api_key != DEV_API_KEY or self.livekit_api_secret != DEV_API_SECRET:
                warnings.append(
                    "LIVEKIT_API_KEY or LIVEKIT_API_SECRET is set but LIVEKIT_URL is not: the"
                    " embedded sandbox runs with them (no phone is called); set LIVEKIT_URL for"
                    " a real LiveKit"
                )
        elif not self.sip_outbound_trunk_id.startswith("ST_"):
            warnings.append(
                "SIP_OUTBOUND_TRUNK_ID does not start with ST_ as LiveKit's trunk ids do (is it"
                " the trunk's name or number?): every dial will be refused if it is not one"
            )
        return warnings

    def require_token_pair(self) -> None:
        """CALLS_API_TOKEN_PREVIOUS is the old token of a rotation: without a new one it
        would be the API's only token under a name that says it is going."""
        if self.calls_api_token_previous is None:
            return
        if not self.calls_api_token:
            raise SettingsError(
                "CALLS_API_TOKEN_PREVIOUS is set but CALLS_API_TOKEN is not: it is the old token"
                " kept while clients move to CALLS_API_TOKEN; set CALLS_API_TOKEN to the new one"
            )
        if self.calls_api_token_previous == self.calls_api_token:
            raise SettingsError(
                "CALLS_API_TOKEN_PREVIOUS is CALLS_API_TOKEN itself: set it to the old token"
                " (or unset it once no client uses the old one)"
            )

    def token_warnings(self) -> list[str]:
        """A token that reads as a list (`new,old`, as CALLS_WEBHOOK_SECRET is given while it
        is rotated, or `new,` with an empty entry) is one token, compared whole: every client,
        on either token, is refused 401. Said at start-up; not refused, as a token may hold a
        comma."""
        warnings = []
        for name, token in (
            ("CALLS_API_TOKEN", self.calls_api_token),
            ("CALLS_API_TOKEN_PREVIOUS", self.calls_api_token_previous),
        ):
            parts = (token or "").split(",")
            # An empty part too: `${NEW},${OLD}` in a template, the old one unset, gives `new,`
            given = [part.strip() for part in parts if part.strip()]
            if len(parts) > 1 and all(len(part) >= MIN_TOKEN_CHARS for part in given):
                warnings.append(
                    f"{name} holds a comma: it is one token, compared whole, not a list (a"
                    " client sending either part is refused 401); to keep the old token taken"
                    " while clients move to a new one, set CALLS_API_TOKEN to the new one and"
                    " CALLS_API_TOKEN_PREVIOUS to the old one"
                )
        return warnings

    def require_webhook_secret(self) -> None:
        """Customer webhooks are signed: a URL without a secret stops start-up, as does a URL
        the SSRF guard refuses (plain http or a private address, unless allowed)."""
        if self.calls_webhook_url is None:
            return
        if self.calls_webhook_secret is None:
            raise SettingsError(
                "CALLS_WEBHOOK_SECRET must be set when CALLS_WEBHOOK_URL is set "
                f"(whsec_ + base64 of at least 24 random bytes); {WHSEC_RECIPE}"
            )
        from common.notify.guard import UnsafeWebhookUrl, check_url

        try:
            check_url(self.calls_webhook_url, allow_private=self.calls_webhook_allow_private)
        except UnsafeWebhookUrl as exc:
            raise SettingsError(f"CALLS_WEBHOOK_URL: {exc}") from None

    def require_livekit(self) -> None:
        """With a real LIVEKIT_URL, refuse to start without a trunk and real credentials;
        with the sandbox, refuse it the server's own port, and a trunk (meant for a real
        LiveKit)."""
        if self.uses_sandbox:
            if self.sandbox_port == self.port:
                raise SettingsError(f"SANDBOX_PORT must differ from PORT ({self.port})")
            if self.sip_outbound_trunk_id:
                # A real trunk without its LiveKit (LIVEKIT_URL misspelled, or lost from the
                # environment): every call was "placed" into the sandbox and nobody called.
                raise SettingsError(
                    "SIP_OUTBOUND_TRUNK_ID is set but LIVEKIT_URL is not: calls would go to"
                    " the embedded sandbox and no phone would be called; set LIVEKIT_URL, or"
                    " unset SIP_OUTBOUND_TRUNK_ID to try the sandbox"
                )
            return
        # Unset, or set to the sandbox's development pair by hand (copied from a sandbox's
        # .env): "must be set" alone read as wrong for one that is set.
        for name, value, dev in (
            ("LIVEKIT_API_KEY", self.livekit_api_key, DEV_API_KEY),
            ("LIVEKIT_API_SECRET", self.livekit_api_secret, DEV_API_SECRET),
        ):
            if value == dev:
                raise SettingsError(
                    f"{name} must be set to your LiveKit's when LIVEKIT_URL is set: the"
                    " sandbox's development one (its default) cannot be used with a real LiveKit"
                )
        if not self.sip_outbound_trunk_id:
            raise SettingsError("SIP_OUTBOUND_TRUNK_ID must be set when LIVEKIT_URL is set")


# LiveKit Cloud's secrets are longer, and livekit-server logs an error for a shorter one
# ("secret is too short") but for its --dev pair (devkey / secret).
MIN_LIVEKIT_SECRET_CHARS = 32
# livekit-server --dev's key pair: in LiveKit's docs, so anyone may sign with it.
LIVEKIT_DEV_KEYS = ("devkey", "secret")  # noqa: S105 - a public pair, not a secret of ours


def owner_parts(owner: str) -> tuple[str, int, str] | None:
    """A `Settings.sandbox_owner`'s host name, port and listen address (None if it is none)."""
    where, _, listen = owner.rpartition("@")
    name, _, port = where.rpartition(":")
    return (name, int(port), listen) if name and port.isascii() and port.isdigit() else None


def ipv6_only_warning(name: str, host: str) -> str | None:
    """A listen address that is IPv6's wildcard (`::`): asyncio (and aiohttp on it) binds it
    IPv6 only, where Linux, Go and Node programs given `::` take IPv4 too. A load balancer's
    or Kubernetes' checks to an IPv4 address were refused (connection refused) while the
    log said only `starting on http://[::]:8000`. None for any other address."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if address.version != 6 or not address.is_unspecified:
        return None
    return (
        f"{name}={host} listens on IPv6 only: IPv4 clients (a load balancer's or Kubernetes'"
        f" health checks to an IPv4 address among them) cannot connect; {name}=0.0.0.0"
        " listens on IPv4"
    )


def reachable(host: str) -> str:
    """Where this machine reaches a server listening on `host`: the wildcard's own loopback
    (a server on `::` listens on IPv6 only, as asyncio binds it, so 127.0.0.1 would reach
    nothing there; `0` and `0.0.0.0` are IPv4's wildcard), else `host` itself."""
    if host == "":
        return "127.0.0.1"
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        try:  # the short IPv4 forms the kernel takes too: "0", "127.1"
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return host  # a name
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return str(address)


def variable(name: str) -> str:
    """The environment variable of a Settings field."""
    return name.upper()


def settings_from_env(env: Mapping[str, str], *, config_file_read: bool = True) -> Settings:
    """Build Settings from a plain mapping (`load_settings` adds the process env).
    `config_file_read`: CONFIG_PATH's file is read to refuse one that is no JSON object (for
    a server or an agent starting; the seed's functions in a script read it as the seed says,
    defaults and an error line for a file they cannot use)."""
    values: dict[str, Any] = {}
    for item in fields(Settings):
        raw = env.get(variable(item.name), "").strip()
        if len(raw.splitlines()) > 1:  # never echoed: the lines a quote took hold secrets
            _text(variable(item.name), raw)
        _refuse_quoted(variable(item.name), raw)
        _refuse_an_example(variable(item.name), raw)
        if raw:
            values[item.name] = item.metadata["parse"](variable(item.name), raw)
    settings = Settings(**values)
    _refuse_one_file_for_two(settings)
    _refuse_ringing_past_the_limit(settings)
    _refuse_a_route_as_base_url(settings)
    if config_file_read:
        _refuse_a_config_path_not_json(settings.config_path)
    return settings


# Values that only show where a setting goes: .env.example's examples (of the four settings
# unset by default, which it shows uncommented would turn on), an earlier release's, and the
# seed's `.env` placeholders. Uncommented as they are ("to fill in later"), PUBLIC_BASE_URL
# sent every agent's reports to a host that is nobody's, unsaid; the others failed every call,
# with a warning at most. The first release's token example (2026-11-26 to 12-03), kept in a
# `.env` across upgrades, opened the API with HOST=0.0.0.0 to anyone who read that file: it
# passes every check a token has. Compared without case or a last `/`.
_FIRST_RELEASE_TOKEN = "change-me-to-a-long-random-string"  # noqa: S105 - refused, not used
EXAMPLE_VALUES = {
    "PUBLIC_BASE_URL": ("https://calls.example.com",),
    "DATABASE_URL": ("postgresql://user:password@db-host:5432/calls",),
    "LIVEKIT_URL": ("wss://your-project.livekit.cloud", "wss://your-livekit-server.com"),
    "CALLS_WEBHOOK_URL": ("https://hooks.example.com/calls",),
    "LIVEKIT_API_KEY": ("your_api_key_here",),
    "LIVEKIT_API_SECRET": ("your_api_secret_here",),
    "CALLS_API_TOKEN": (_FIRST_RELEASE_TOKEN,),
    "CALLS_API_TOKEN_PREVIOUS": (_FIRST_RELEASE_TOKEN,),
    "SIP_OUTBOUND_TRUNK_ID": ("st_xxxxxxxxxxxx",),
}


def _refuse_an_example(name: str, raw: str) -> None:
    """An example's value (EXAMPLE_VALUES) stops start-up, naming the setting, never the
    value (a secret's place)."""
    if raw.rstrip("/").lower() in EXAMPLE_VALUES.get(name, ()):
        raise SettingsError(
            f"{name} is an example's value (.env.example's, this release's or an earlier"
            " one's, or the seed's .env), not yours:"
            " set your own, or leave it unset (comment it out)"
        )


def _refuse_quoted(name: str, raw: str) -> None:
    """A value wrapped in quotes: `.env` takes them off, but the process environment keeps
    them (`docker run --env-file`, a compose or Kubernetes value quoted twice), and no
    setting's value is one. `CALLS_DB_PATH="calls.db"` opened a new, empty database named
    with its quotes (no do-not-call list, no calls, no idempotency keys), without a word;
    a quoted token or secret failed every request. Never echoed: it may be a secret."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        raise SettingsError(
            f"{name} is wrapped in quotes ({raw[0]}...{raw[0]}), which would be part of its"
            " value: only .env takes quotes off; give the value without them"
        )


def _refuse_ringing_past_the_limit(settings: Settings) -> None:
    """CALL_RINGING_TIMEOUT_S over CALL_MAX_DURATION_S: LiveKit counts a call's max duration
    from the dial, ringing included, so every call that set neither was cut at the max
    duration while still ringing (600 s of ringing under a 30 s limit rang 30 s), unsaid."""
    ringing, longest = settings.call_ringing_timeout_s, settings.call_max_duration_s
    if ringing > longest:
        raise SettingsError(
            f"CALL_RINGING_TIMEOUT_S ({ringing}) is longer than CALL_MAX_DURATION_S ({longest}),"
            " which counts from the dial, ringing included: every call would be cut while"
            " still ringing; lower CALL_RINGING_TIMEOUT_S or raise CALL_MAX_DURATION_S"
        )


def _refuse_a_route_as_base_url(settings: Settings) -> None:
    """PUBLIC_BASE_URL ending in a route of this server, the reports' own (`<it>/agent/reports`
    as the README says where they go) or WEBHOOK_PATH (LiveKit's webhook URL copied over):
    the reports path is added to it, so every report of every call went to
    `/webhooks/livekit/agent/reports`, 404, which the agents do not retry. Each call's
    answer, transcript and analysis were lost, and the server logged nothing of it."""
    path = urlsplit(settings.public_base_url or "").path.rstrip("/")
    for route, what in (
        (REPORTS_PATH, "the agents' reports path, which is added to it"),
        (settings.webhook_path.rstrip("/"), "WEBHOOK_PATH, where LiveKit posts its webhooks"),
    ):
        if route and (path == route or path.endswith(route)):
            base = settings.public_base_url or ""
            raise SettingsError(
                f"PUBLIC_BASE_URL ends with {route} ({what}): it is this server's base URL,"
                f" the agents' reports going to <it>{REPORTS_PATH} (here {base}{REPORTS_PATH},"
                f" which no route answers); set it to {base.rstrip('/')[: -len(route)]}"
            )


def _refuse_one_file_for_two(settings: Settings) -> None:
    """CONFIG_PATH naming the calls database (`CONFIG_PATH=calls.db`): the first call's config
    write set the database aside as a corrupt config.json and wrote JSON in its place."""
    if settings.database_url is not None:
        return
    config = Path(os.path.realpath(settings.config_path))  # resolve() raises on a link loop
    database = Path(os.path.realpath(settings.calls_db_path))
    sqlite_files = {database, *(database.with_name(database.name + s) for s in SQLITE_SIDE_FILES)}
    if config in sqlite_files or config.with_name(config.name + ".lock") in sqlite_files:
        raise SettingsError(
            f"CONFIG_PATH ({settings.config_path}) and CALLS_DB_PATH ({settings.calls_db_path})"
            " name the same file: config.json would replace the calls database"
        )


# How much of an existing CONFIG_PATH is read at start-up to tell it is a JSON object.
_CONFIG_HEAD_BYTES = 4096


def _refuse_a_config_path_not_json(path: Path) -> None:
    """CONFIG_PATH naming a file that is no JSON object at all (`CONFIG_PATH=.env`, a README,
    /etc/passwd): the server started, and the first call's config write set the file aside as
    a corrupt config.json and wrote JSON in its place (the operator's .env renamed, and the
    next start failed on a .env of JSON). A config.json cut short or mistyped still begins
    with "{" and starts as before (set aside on the first write, as corrupt). Its text is
    never shown: it may be a secret's file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return  # a directory, a FIFO (open() would wait): the config store refuses it
        with open(path, "rb") as file:
            head = file.read(_CONFIG_HEAD_BYTES)
    except OSError:
        return  # none yet, or unreadable: the config store says why, when it reads it
    # In the encoding json.loads would read it in (UTF-8, -16 or -32: the config store reads
    # all three; review AR: a UTF-16 config.json was refused), past a BOM and blanks.
    text = head.decode(json.detect_encoding(head), errors="ignore").lstrip("\ufeff \t\r\n")
    if text and not text.startswith("{"):
        raise SettingsError(
            f"CONFIG_PATH ({path}) names a file that is not a JSON object: the first call's"
            " config write would set it aside and write JSON in its place. If it is this"
            " server's config.json, broken by an edit, fix it or move it aside (a new one is"
            " written); else point CONFIG_PATH at config.json, or at a file that does not exist"
            " yet"
        )


# The variable a `.env` line sets, when it says so before what went wrong in it.
_DOTENV_NAME = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
_VARIABLES = frozenset(variable(item.name) for item in fields(Settings))
# One of our settings' names where a line (or a name python-dotenv read whole) starts, not
# run on into a longer name: `CALLS_ALLOWED_COUNTRIES US`, and `CALLS_ALLOWED_COUNTRIES:US`,
# which python-dotenv reads as one name with no value. Only that name is ever shown.
_SETTING_AT_START = re.compile(
    r"\s*(?:export\s+)?("
    + "|".join(sorted(_VARIABLES, key=len, reverse=True))
    + r")(?![A-Za-z0-9_])"
)


def read_dotenv(path: str | os.PathLike[str]) -> dict[str, str]:
    """The variables `path` (a .env file) sets. A line python-dotenv cannot parse stops
    start-up, naming the file, the line and its variable, never its text (a secret may be
    in it): python-dotenv skipped it, and every line an unclosed quote ran on into, with a
    stderr line naming neither, and the server started without them (an unclosed
    `CALLS_ALLOWED_COUNTRIES="US` let calls go to every country)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:  # unreadable, or not UTF-8 text
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(f"{path} cannot be read: {reason}") from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            number, line = _statement_line(binding.original)
            named = _DOTENV_NAME.match(line) or _SETTING_AT_START.match(line)
            raise SettingsError(
                f"{path} line {number}"
                + (f" ({named.group(1)})" if named else "")
                + " cannot be parsed (an unclosed quote, or not NAME=value); fix or remove it"
            )
        setting = _SETTING_AT_START.match(binding.key or "")
        if binding.value is None and setting is not None:
            # python-dotenv reads a name alone as "no value" and dotenv_values drops it: a
            # bare `CALLS_ALLOWED_COUNTRIES` silently allowed every country. Other names
            # alone are left to whatever else reads the file, as other variables are.
            number, _line = _statement_line(binding.original)
            name = setting.group(1)
            raise SettingsError(
                f"{path} line {number} ({name}) is a setting without `=`: write"
                f" {name}=value, or {name}= for the default"
            )
    # As written: python-dotenv expands ${VAR} by default, and an unset one became empty,
    # which means the default (`CALLS_ALLOWED_COUNTRIES=${REGIONS}` allowed every country,
    # a secret holding "${" was changed without a word).
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {k: v for k, v in values.items() if v is not None}


def _statement_line(original: Original) -> tuple[int, str]:
    """The number and text of a statement's first line: python-dotenv counts from the blank
    lines before it."""
    lines = original.string.splitlines()
    for offset, line in enumerate(lines):
        if line.strip():
            return original.line + offset, line
    return original.line, ""


# The seed's per-call values that its migration moves out of `.env` ("Remove these from
# .env (now in config.json)"), with the POST /calls/outbound field that now gives each.
SEED_PER_CALL_NAMES = {
    "CALLER_NAME": "name",
    "AGENT_INSTRUCTIONS": "dynamic_instruction",
    "TTS_LANGUAGE": "language",
    "TTS_EMOTION": "emotion",
}


def checkout_unread_warning(
    checkout: Path,
    files: Sequence[Path],
    process: str,
    reads: Collection[str] | None = None,
) -> str | None:
    """What of its checkout a `process` (the server, an agent worker) started from another
    working directory does not read: `.env` and `files` (relative paths: calls.db,
    config.json) are found from the working directory. A systemd unit without
    WorkingDirectory, cron, or `python /srv/calls/server.py` from a home directory read no
    `.env` (LIVEKIT_URL, the trunk, the keys) and made new files there. None when the working
    directory is the checkout or has a `.env` of its own (set up on purpose), or when the
    checkout has none of those it lacks; its `.env` is not named when the environment gives
    every setting in it the process `reads` (all, when None) (systemd's EnvironmentFile=
    naming it), nor when it sets none of those."""
    here = Path.cwd()
    if here.resolve() == checkout.resolve():
        return None
    if os.path.lexists(".env"):
        return None  # a directory with its own settings: set up on purpose
    candidates = [Path(".env"), *(path for path in files if not path.is_absolute())]
    unread = [
        str(path)
        for path in candidates
        if not os.path.lexists(path) and (checkout / path).is_file()
    ]
    if ".env" in unread and _given_by_environment(checkout / ".env", reads):
        unread.remove(".env")
    if not unread:
        return None
    named = " and ".join([", ".join(unread[:-1]), unread[-1]] if len(unread) > 1 else unread)
    return (
        f"started from {here}, not from its checkout {checkout}: the checkout's {named}"
        f" {'are' if len(unread) > 1 else 'is'} not read, as .env, calls.db and config.json are"
        f" found from the working directory; start the {process} from {checkout}, or give its"
        " settings in the environment (CALLS_DB_PATH and CONFIG_PATH as absolute paths)"
    )


def _given_by_environment(dotenv: Path, reads: Collection[str] | None) -> bool:
    """Every setting `dotenv` sets that the process `reads` (None: any) is in the process
    environment: it reached the process another way (systemd's EnvironmentFile=, docker's
    --env-file), or the process needs none of them (a script of the seed's functions reads
    CONFIG_PATH and little else, not the server's LIVEKIT_URL or trunk)."""
    try:
        values = read_dotenv(dotenv)
    except SettingsError:
        return False  # one that cannot be parsed cannot have been given whole either
    return all(
        name in os.environ
        for name in values
        if name in _VARIABLES and (reads is None or name in reads)
    )


def dotenv_warnings(path: str | os.PathLike[str] = ".env") -> list[str]:
    """What in a readable `.env` is likely a mistake though it parses (values never shown):
    a setting holding `${` (not expanded), a setting given twice (the last one wins), a
    name this server does not read that is close to one it does (`CALL_MAX_ACTIV`, `port`):
    silently ignored, the default applied; and one of the seed's per-call values left in
    `.env` (`TTS_LANGUAGE=es`: every call spoke English, the default, without a word)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []  # load_settings says why it cannot be read
    lines: dict[str, list[int]] = {}
    given = {name for name, value in os.environ.items() if value.strip()}  # as load_settings
    warnings = []
    for binding in parse_stream(io.StringIO(text)):
        if binding.key in _VARIABLES and binding.value is not None and "${" in binding.value:
            warnings.append(
                f"{binding.key} ({path} line {binding.original.line}) holds ${{: .env is not"
                " expanded, the value is used as written"
            )
        if binding.key is not None and not binding.error:
            lines.setdefault(binding.key, []).append(binding.original.line)
            if (binding.value or "").strip():
                given.add(binding.key)
    for name, at in lines.items():
        where = ", ".join(str(n) for n in at)
        if name in _VARIABLES:
            if len(at) > 1:
                warnings.append(f"{name} is set on {path} lines {where}: line {at[-1]}'s is used")
            continue
        if (field := SEED_PER_CALL_NAMES.get(name.upper())) is not None:
            warnings.append(
                f"{name} ({path} line {where}) is not read: each call gives its own, as"
                f" POST /calls/outbound's `{field}` (config.json keeps it per call); remove it"
            )
            continue
        if (meant := _setting_meant(name)) is not None and not _beside_it(name, meant, given):
            warnings.append(
                f"{name} ({path} line {where}) is no setting of this server: did you mean"
                f" {meant}? (it is read as unset)"
            )
    if (exposed := _secrets_exposed(path, text)) is not None:
        warnings.insert(0, exposed)
    if (writable := _writable_by_others(path)) is not None:
        warnings.insert(0, writable)
    return warnings


def _setting_meant(name: str) -> str | None:
    """The setting a name this server does not read likely means: one spelt nearly as it
    (`CALL_MAX_ACTIV`, `port`), or one holding all its words, in order, with a word or more
    besides (`WEBHOOK_URL`, `LIVEKIT_KEY`, `SIP_TRUNK_ID`, `CALLS_RATE_LIMIT`): the one with
    the fewest besides, when only one has that few (`API_KEY` could be any provider's).
    Spelling alone missed those: `WEBHOOK_URL`, as a call's `webhook_url` is named, left
    customer webhooks off, and `CALLS_RATE_LIMIT=5` the rate at 60, without a word."""
    upper = name.upper()
    words = [word for word in upper.split("_") if word]
    # Not one with another word in a setting's place: another program's (DATABASE_USER).
    close = difflib.get_close_matches(upper, _VARIABLES, n=3, cutoff=0.85)
    if spelt := [setting for setting in close if _misspelt(words, setting)]:
        return spelt[0]
    if len(words) < 2:
        return None
    holding: dict[int, list[str]] = {}
    for setting in _VARIABLES:
        remaining = iter(setting.split("_"))
        if all(word in remaining for word in words):  # each found after the one before
            holding.setdefault(len(setting.split("_")) - len(words), []).append(setting)
    if not holding:
        return None
    fewest = holding[min(holding)]
    return fewest[0] if len(fewest) == 1 else None


def _beside_it(name: str, meant: str, given: Collection[str]) -> bool:
    """Whether `name`, a word or more short of `meant` (`WEBHOOK_SECRET`, `WEBHOOK_URL`,
    `DEEPGRAM_KEY`), stands beside `meant` given a value too (in `.env` or the environment):
    another program's more general name in a `.env` it shares (the project's webhook
    receiver's secret), not a mistake for the setting, which is not read as unset. Said all
    the same, they were false alarms at every start, the setting they named set two lines
    above. A name of the setting's words misspelt or in another case (`port` beside `PORT`),
    or with a word added (`CALLS_API_TOKEN_OLD`, meant as the token kept while it is
    rotated: CALLS_API_TOKEN_PREVIOUS), is still said."""
    words = [word for word in name.upper().split("_") if word]
    return meant in given and len(words) < len(meant.split("_"))


def _misspelt(words: list[str], setting: str) -> bool:
    """Whether a name of `words`, spelt close to `setting`, reads as a misspelling of it,
    not as another program's name with a word of its own in place of one of the setting's:
    `DATABASE_USER` (a database's user, beside DATABASE_HOST in a compose file's .env) is
    not `DATABASE_URL`, nor `SIP_INBOUND_TRUNK_ID` (LiveKit's inbound agents') the outbound
    one, though their spelling is as close as `CALL_MAX_ACTIV`'s to `CALLS_MAX_ACTIVE`.
    Words lined up one to one are each the setting's, misspelt (`ACTIV`, `URI`, `COUNTRY`)
    or cut short (`RING`); a name of other words, fewer or more, is read by its spelling."""
    theirs = setting.split("_")
    if len(words) != len(theirs):
        return True
    return all(
        word == their
        or word.startswith(their)
        or their.startswith(word)
        or difflib.SequenceMatcher(None, word, their).ratio() >= 0.75
        or (len(word) == len(their) and sum(a != b for a, b in zip(word, their, strict=True)) == 1)
        for word, their in zip(words, theirs, strict=True)
    )


# The settings whose values are secrets (left out of repr()).
_SECRET_VARIABLES = frozenset(variable(item.name) for item in fields(Settings) if not item.repr)


def others_may_reach(path: str | os.PathLike[str]) -> bool:
    """Whether users other than a file's owner and group may get to it: every directory on
    its way lets them through (o+x). A 0644 `.env` in a checkout under /root (0700), or a
    home directory of mode 0750, is no other user's to read, and was said to be "read by
    every user of this machine" at every start. True when that cannot be told."""
    try:
        where = Path(path).resolve().parent
        owner = os.stat(path)
    except (OSError, RuntimeError):  # a link loop: its own check says so
        return True
    for directory in (where, *where.parents):
        try:
            if _stops_others(os.stat(directory), owner):
                return False
        except OSError:
            return True
    return True


def _stops_others(directory: os.stat_result, file: os.stat_result) -> bool:
    """Whether `directory` lets no user through but the file's owner and group (and root).
    o-x alone let a 0644 `.env` under a 0750 directory of another group (a team's
    `root:developers`) go unsaid, every member of that group able to read its secrets; or
    under another user's 0700 directory, that user able to."""
    mode = directory.st_mode
    if mode & 0o001:
        return False
    if mode & 0o010 and directory.st_gid != file.st_gid:
        return False  # its group's members pass: others of the file
    return not (mode & 0o100 and directory.st_uid not in (file.st_uid, 0))


def _secrets_exposed(path: str | os.PathLike[str], text: str) -> str | None:
    """A `.env` that every user of the machine may read, holding secrets (`cp .env.example
    .env` makes it 0644 under the usual umask): any local user could sign LiveKit webhooks
    and agent reports with LIVEKIT_API_SECRET, or place calls with CALLS_API_TOKEN. The
    secrets are named, never shown; group access is left alone, as for config.json."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if not mode & 0o004 or not others_may_reach(path):
        return None
    # The statements that parse, as dotenv_values reads them, without its stderr line for
    # one that does not ("python-dotenv could not parse statement starting at line 1", said
    # before the configuration error that names it: two lines, the first naming nothing).
    values = {b.key: b.value for b in parse_stream(io.StringIO(text)) if b.key and not b.error}
    held = [k for k, v in values.items() if k in _SECRET_VARIABLES and (v or "").strip()]
    if not held:
        return None
    return (
        f"{path} (mode {mode:04o}) may be read by every user of this machine, and it holds"
        f" {', '.join(held)}: chmod o-rwx it"
    )


def _writable_by_others(path: str | os.PathLike[str]) -> str | None:
    """A `.env` that every user of the machine may write (`cp .env.example .env` under umask
    000 makes it 0666): any local user could change this server's settings at its next start,
    LIVEKIT_URL or CALLS_WEBHOOK_URL among them (where its calls, and their transcripts, go),
    and nothing said so, a `.env` without secrets not even its mode."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if not mode & 0o002 or not others_may_reach(path):
        return None
    return (
        f"{path} (mode {mode:04o}) may be written by every user of this machine: any of them"
        " may change these settings for the next start (LIVEKIT_URL, CALLS_WEBHOOK_URL:"
        " where calls and their transcripts go): chmod o-w it"
    )


def load_settings(
    dotenv_path: str | os.PathLike[str] | None = ".env", *, config_file_read: bool = True
) -> Settings:
    """Settings from `.env` (if present) overlaid by the real environment (see
    settings_from_env for `config_file_read`)."""
    return settings_from_env(environment(dotenv_path), config_file_read=config_file_read)


def environment(dotenv_path: str | os.PathLike[str] | None = ".env") -> dict[str, str]:
    """The variables as the server reads them: `.env` (if present) overlaid by the real
    environment. A `.env` that is there but no file (a link to nothing, a directory) is an
    error: read as absent, the server started on every default, the sandbox among them, and
    said nothing."""
    _refuse_a_working_directory_gone()
    merged: dict[str, str] = {}
    if dotenv_path is not None and os.path.lexists(dotenv_path):
        if not Path(dotenv_path).is_file():
            raise SettingsError(
                f"{dotenv_path} is there but is no file to read (a link to nothing, or a"
                " directory): fix it or remove it"
            )
        merged.update(read_dotenv(dotenv_path))
    # An empty variable means "the default" to us, so an empty one in the environment (`X=`
    # in a compose file) does not undo what .env sets: LIVEKIT_URL= silently meant the sandbox.
    merged.update({k: v for k, v in os.environ.items() if v.strip() or k not in merged})
    return merged


def _refuse_a_working_directory_gone() -> None:
    """`.env`, calls.db and config.json are found from the working directory, by default. A
    shell still in a directory removed since (a checkout cloned again, a deploy that
    replaced it) started the server, an agent or a script of the seed's functions into a
    FileNotFoundError traceback naming no file: there is no working directory to find them
    from."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise SettingsError(
            "the working directory no longer exists (removed since this shell entered it: a"
            " checkout cloned again, a deploy that replaced it): cd into the project's directory"
            " again, where .env, calls.db and config.json are found"
        ) from None


# The bidi embeddings, overrides and isolates: written raw, one in a client's text (a Referer,
# a User-Agent: the access log writes them as sent) reorders what the rest of its line shows,
# `"http://a/\u202eb 002" "-"` reading as `"-" "200 b`. Written as escapes in either format.
_BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_JSON_LINE_BREAKS = str.maketrans(
    {
        ch: f"\\u{ord(ch):04x}"
        for ch in "\x7f" + "".join(map(chr, range(0x80, 0xA0))) + "\u2028\u2029" + _BIDI_CONTROLS
    }
)

# Fields our log calls pass as `extra=` that JSON logs carry as fields of their own; a call
# or campaign named in a line's text and not passed is carried too.
_JSON_FIELDS = ("call_id", "campaign_id", "status")
_JSON_IDS_IN_TEXT = (("call_id", CALL_ID_IN_TEXT), ("campaign_id", CAMPAIGN_ID_IN_TEXT))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        message = record.getMessage()
        doc: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": message,
        }
        for name in _JSON_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        for name, pattern in _JSON_IDS_IN_TEXT:
            if name not in doc and (named := pattern.search(message)) is not None:
                doc[name] = named.group()  # a line about one, logged without the field
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        # JSON escapes the control characters; these three end a line for some readers too.
        # default=str: a field of another type (bytes, a set) is written as text, not a
        # "Logging error" traceback on stderr in place of the line
        return json.dumps(doc, ensure_ascii=False, default=str).translate(_JSON_LINE_BREAKS)


# The other control characters but the tab: a terminal showing the log (`tail -f`) acts on
# them. A call's instructions (the server logs them at DEBUG) may hold any of them: ESC
# sequences that erase the line above (`\x1b[1A\x1b[2K`), hide the text after them or set the
# window's title, backspaces that overwrite what the line showed, C1's CSI (`\x9b`).
_TERMINAL_CONTROLS = "".join(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)) if chr(c) != "\t")
# What ends a line in a log reader (str.splitlines' breaks), or acts on the terminal showing
# it, written as escapes instead.
_LINE_BREAKS = str.maketrans(
    {
        ch: ch.encode("unicode_escape").decode()
        for ch in "\u2028\u2029" + _TERMINAL_CONTROLS + _BIDI_CONTROLS
    }
)


class TextLogFormatter(logging.Formatter):
    """One line per message: a line break in what a client sent (an id, a name) is shown
    escaped, so it cannot start a line that looks like ours, and so is a bidi control, so it
    cannot reorder what the line shows, and any other control character but the tab, so it
    cannot act on the terminal showing the log. A traceback keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = record.message.translate(_LINE_BREAKS)
        return super().formatMessage(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """The line's time in UTC, as the API writes times (`2026-12-08T00:07:00.123Z`): the
        machine's local time, with no zone said, was read as UTC hours off (TZ=Asia/Kolkata:
        05:37 for 00:07 UTC; an hour jumped back and repeated at a DST change)."""
        return iso_time(record.created)


def configure_logging(settings: Settings) -> None:
    """Set up the root logger once, as LOG_LEVEL and LOG_FORMAT say."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(TextLogFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
