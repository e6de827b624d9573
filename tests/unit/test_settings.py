"""Settings from the environment and `.env`: defaults, clear errors, secrets kept out of repr."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import (
    DEFAULT_CARTESIA_VOICE_ID,
    DEV_API_KEY,
    DEV_API_SECRET,
    Settings,
    SettingsError,
    configure_logging,
    dotenv_warnings,
    load_settings,
    read_dotenv,
    settings_from_env,
    variable,
)

# Every variable settings_from_env reads.
VARIABLES = (
    "HOST",
    "PORT",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "HTTP_KEEPALIVE_S",
    "CONFIG_PATH",
    "CONFIG_RECORD_TTL_S",
    "CALLS_DB_PATH",
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    "CLAIM_LEASE_S",
    "LIVEKIT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "SIP_OUTBOUND_TRUNK_ID",
    "AGENT_NAME",
    "CALLS_API_TOKEN",
    "CALLS_ALLOWED_COUNTRIES",
    "CALLS_RATE_LIMIT_PER_MIN",
    "CALLS_MAX_ACTIVE",
    "CALL_RINGING_TIMEOUT_S",
    "CALL_MAX_DURATION_S",
    "REAPER_INTERVAL_S",
    "READYZ_REUSE_S",
    "METRICS_REUSE_S",
    "CALLS_SETTLE_GRACE_S",
    "AGENT_JOIN_TIMEOUT_S",
    "PUBLIC_BASE_URL",
    "CALLS_WEBHOOK_URL",
    "CALLS_WEBHOOK_SECRET",
    "CALLS_WEBHOOK_ALLOW_PRIVATE",
    "CALLS_WEBHOOK_RETRY_SCHEDULE",
    "CALL_DATA_RETENTION_DAYS",
    "CAMPAIGN_ENFORCE_CALLING_HOURS",
    "CAMPAIGN_PAUSE_AFTER_TRUNK_FAULTS",
    "CAMPAIGN_PAUSE_AFTER_AGENT_FAULTS",
    "WEBHOOK_PATH",
    "SANDBOX_PORT",
    "SANDBOX_TIME_SCALE",
    "OPENAI_API_KEY",
    "OPENAI_MODEL",
    "OPENAI_BASE_URL",
    "DEEPGRAM_API_KEY",
    "DEEPGRAM_MIP_OPT_OUT",
    "CALLS_API_TOKEN_PREVIOUS",
    "CARTESIA_API_KEY",
    "CARTESIA_VOICE_ID",
    "CARTESIA_VOICE_IDS",
    "AGENT_HTTP_HOST",
    "AGENT_REPORT_SPOOL_DIR",
)

REAL_LIVEKIT = {
    "LIVEKIT_URL": "wss://example.livekit.cloud",
    "LIVEKIT_API_KEY": "APIrealkey",
    "LIVEKIT_API_SECRET": "real-secret-value-0123456789abcdef",
    "SIP_OUTBOUND_TRUNK_ID": "ST_abc123",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting comes from the developer's own shell."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ------------------------------------------------------------------ defaults


def test_defaults_from_empty_mapping() -> None:
    settings = settings_from_env({})
    assert settings == Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert (settings.log_level, settings.log_format) == ("INFO", "text")
    assert settings.config_path == Path("config.json")
    assert settings.calls_db_path == Path("calls.db")
    assert settings.config_record_ttl_s == 86400.0
    assert settings.livekit_url is None
    assert settings.uses_sandbox
    assert (settings.livekit_api_key, settings.livekit_api_secret) == (DEV_API_KEY, DEV_API_SECRET)
    assert settings.sip_outbound_trunk_id == ""
    assert settings.agent_name == "outbound-caller"
    assert settings.calls_api_token is None
    assert settings.calls_allowed_countries == ()
    assert settings.calls_rate_limit_per_min == 60
    assert settings.calls_max_active == 50
    assert settings.call_ringing_timeout_s == 30
    assert settings.call_max_duration_s == 600
    assert settings.reaper_interval_s == 30.0
    assert settings.webhook_path == "/webhooks/livekit"
    assert (settings.sandbox_port, settings.sandbox_time_scale) == (7880, 1.0)
    assert settings.openai_model == "gpt-4o-mini"
    assert settings.openai_base_url is None  # OpenAI's own
    assert settings.openai_api_key == settings.deepgram_api_key == settings.cartesia_api_key == ""
    assert settings.cartesia_voice_id == DEFAULT_CARTESIA_VOICE_ID
    assert settings.is_loopback
    assert settings.webhook_url == "http://127.0.0.1:8000/webhooks/livekit"
    settings.require_livekit()  # the sandbox needs nothing


def test_blank_values_take_defaults() -> None:
    settings = settings_from_env(dict.fromkeys(VARIABLES, "  "))
    assert settings == Settings()


def test_every_setting_has_its_variable() -> None:
    assert {f.name.upper() for f in dataclasses.fields(Settings)} == set(VARIABLES)


def test_openai_base_url_names_an_openai_compatible_endpoint() -> None:
    settings = settings_from_env({"OPENAI_BASE_URL": "https://llm.internal.example/v1/"})
    assert settings.openai_base_url == "https://llm.internal.example/v1"
    with pytest.raises(SettingsError, match="OPENAI_BASE_URL must be scheme://host"):
        settings_from_env({"OPENAI_BASE_URL": "https://llm.internal.example/v1?key=x"})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # OpenAI's host without /v1: the SDK posted to /chat/completions, 404 on every call
        ("https://api.openai.com", "OPENAI_BASE_URL for OpenAI's own API is"),
        ("https://API.openai.com/", "OPENAI_BASE_URL for OpenAI's own API is"),
        # the endpoint pasted for the base: /chat/completions/chat/completions, 404
        ("https://api.openai.com/v1/chat/completions", "OPENAI_BASE_URL is the API's base URL"),
        ("http://127.0.0.1:8080/v1/chat/completions/", "OPENAI_BASE_URL is the API's base URL"),
    ],
)
def test_openai_base_url_that_every_request_would_miss_is_refused(value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings_from_env({"OPENAI_BASE_URL": value})
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "value",
    ["https://api.openai.com/v1", "https://api.openai.com/v1/", "http://127.0.0.1:8080"],
)
def test_openai_base_urls_that_serve_the_api_are_taken(value: str) -> None:
    assert settings_from_env({"OPENAI_BASE_URL": value}).openai_base_url == value.rstrip("/")


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings_from_env({}).port = 1  # type: ignore[misc]


def test_values_are_read_and_normalised() -> None:
    settings = settings_from_env(
        {
            "HOST": " 0.0.0.0 ",
            "PORT": " 9000 ",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "JSON",
            "CONFIG_PATH": "/var/lib/caller/config.json",
            "CALLS_DB_PATH": "/var/lib/caller/calls.db",
            "CALLS_ALLOWED_COUNTRIES": " es, us ,GB,",
            "CALLS_API_TOKEN": "tok-0123456789abcdef",
            "CALLS_RATE_LIMIT_PER_MIN": "5",
            "SANDBOX_TIME_SCALE": "0",
            "REAPER_INTERVAL_S": "0.5",
            "WEBHOOK_PATH": "/hooks/lk",
            "AGENT_NAME": "my-agent",
        }
    )
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)  # noqa: S104
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert settings.config_path == Path("/var/lib/caller/config.json")
    assert settings.calls_db_path == Path("/var/lib/caller/calls.db")
    assert settings.calls_allowed_countries == ("ES", "US", "GB")
    assert settings.calls_api_token == "tok-0123456789abcdef"
    assert settings.calls_rate_limit_per_min == 5
    assert settings.sandbox_time_scale == 0.0
    assert settings.reaper_interval_s == 0.5
    assert settings.agent_name == "my-agent"
    assert not settings.is_loopback
    # A wildcard bind is reached on loopback from this machine.
    assert settings.webhook_url == "http://127.0.0.1:9000/hooks/lk"


def test_the_ipv6_wildcard_is_reached_on_ipv6_loopback() -> None:
    """HOST=:: listens on IPv6 only: the sandbox's webhooks went to 127.0.0.1, nowhere."""
    settings = Settings(host="::", port=8080, calls_api_token="t" * 32)
    assert settings.webhook_url == "http://[::1]:8080/webhooks/livekit"
    assert settings.report_url == "http://[::1]:8080/agent/reports"


@pytest.mark.parametrize(
    ("host", "reached"),
    [
        ("", "127.0.0.1"),
        ("0", "127.0.0.1"),  # the kernel takes it for 0.0.0.0; http://0:8000 is no URL
        ("0.0.0.0", "127.0.0.1"),  # noqa: S104
        ("::", "[::1]"),
        ("0:0:0:0:0:0:0:0", "[::1]"),
        ("127.1", "127.0.0.1"),
        ("localhost", "localhost"),
    ],
)
def test_the_address_this_machine_reaches_the_server_on(host: str, reached: str) -> None:
    settings = Settings(host=host, port=8080, calls_api_token="t" * 32)
    assert settings.webhook_url == f"http://{reached}:8080/webhooks/livekit"


def test_a_sandbox_owner_is_the_host_its_port_and_its_address() -> None:
    """Two servers on one host may share a PORT on different addresses: each its own."""
    owners = {Settings(host=h, port=8000).sandbox_owner for h in ("127.0.0.1", "::1")}
    assert len(owners) == 2


def test_ipv6_host_is_bracketed_in_webhook_url() -> None:
    settings = settings_from_env({"HOST": "::1", "PORT": "8080"})
    assert settings.is_loopback
    assert settings.webhook_url == "http://[::1]:8080/webhooks/livekit"


@pytest.mark.parametrize(
    "url", ["wss://x.livekit.cloud", "ws://localhost:7880", "https://h", "http://h"]
)
def test_livekit_url_schemes(url: str) -> None:
    settings = settings_from_env({"LIVEKIT_URL": url})
    assert settings.livekit_url == url
    assert not settings.uses_sandbox


@pytest.mark.parametrize("port", ["1", "65535"])
def test_port_bounds_inclusive(port: str) -> None:
    assert settings_from_env({"PORT": port}).port == int(port)


# ------------------------------------------------------------------ malformed values


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORT", "abc", "PORT must be an integer, got 'abc'"),
        # a token one could guess; the message never shows it
        ("CALLS_API_TOKEN", "hunter2", "CALLS_API_TOKEN must be at least 16 characters (it has 7)"),
        ("CALLS_API_TOKEN", "abcdefgh ijklmnop", "CALLS_API_TOKEN must be printable ASCII"),
        ("CALLS_API_TOKEN", "abcdefgh\x07ijklmnop", "CALLS_API_TOKEN must be printable ASCII"),
        ("PORT", "70000", "PORT must be between 1 and 65535, got 70000"),
        ("PORT", "-1", "PORT must be between 1 and 65535, got -1"),
        # 0 (a port of the kernel's choosing) gave LiveKit and the agents a webhook and
        # report address they could not reach
        ("PORT", "0", "PORT must be between 1 and 65535, got 0"),
        ("PORT", "80.5", "PORT must be an integer, got '80.5'"),
        ("SANDBOX_PORT", "65536", "SANDBOX_PORT must be between 0 and 65535, got 65536"),
        ("CALLS_RATE_LIMIT_PER_MIN", "0", "CALLS_RATE_LIMIT_PER_MIN must be between"),
        ("CALLS_MAX_ACTIVE", "many", "CALLS_MAX_ACTIVE must be an integer"),
        ("CALL_RINGING_TIMEOUT_S", "601", "CALL_RINGING_TIMEOUT_S must be between 5 and 600"),
        ("CALL_RINGING_TIMEOUT_S", "1", "CALL_RINGING_TIMEOUT_S must be between 5 and 600"),
        ("CALL_MAX_DURATION_S", "0", "CALL_MAX_DURATION_S must be between 30 and 86400"),
        # counted from the dial, ringing included: every call was cut at 10 s
        ("CALL_MAX_DURATION_S", "10", "CALL_MAX_DURATION_S must be between 30 and 86400"),
        (
            "LOG_LEVEL",
            "LOUD",
            "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'",
        ),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of text, json, got 'xml'"),
        (
            "CALLS_ALLOWED_COUNTRIES",
            "USA",
            "CALLS_ALLOWED_COUNTRIES must be two-letter ISO regions, got USA",
        ),
        (
            "CALLS_ALLOWED_COUNTRIES",
            "ES,1X,FRA",
            "CALLS_ALLOWED_COUNTRIES must be two-letter ISO regions, got 1X, FRA",
        ),
        # Two letters, but no number is in them: UK refused every call to the United Kingdom
        # ("country GG is not allowed; allowed: US, UK"), XX every call to anywhere else.
        (
            "CALLS_ALLOWED_COUNTRIES",
            "US,UK,XX",
            "CALLS_ALLOWED_COUNTRIES: no phone number belongs to UK, XX (UK: did you mean GB?)",
        ),
        # 1e300 s after the last attempt is no date: GET /calls/{id}/deliveries answered 500
        (
            "CALLS_WEBHOOK_RETRY_SCHEDULE",
            "0,1e300",
            "CALLS_WEBHOOK_RETRY_SCHEDULE must be one or more seconds between 0 and 2592000"
            " (30 days), got '0,1e300'",
        ),
        (
            "CALLS_WEBHOOK_RETRY_SCHEDULE",
            "0,nan",
            "CALLS_WEBHOOK_RETRY_SCHEDULE must be one or more seconds between 0 and 2592000"
            " (30 days), got '0,nan'",
        ),
        ("SANDBOX_TIME_SCALE", "-1", "SANDBOX_TIME_SCALE must be a number from 0 to 1000"),
        ("SANDBOX_TIME_SCALE", "nan", "SANDBOX_TIME_SCALE must be a number from 0 to 1000"),
        ("SANDBOX_TIME_SCALE", "inf", "SANDBOX_TIME_SCALE must be a number from 0 to 1000"),
        ("SANDBOX_TIME_SCALE", "1e308", "SANDBOX_TIME_SCALE must be a number from 0 to 1000"),
        ("SANDBOX_TIME_SCALE", "fast", "SANDBOX_TIME_SCALE must be a number, got 'fast'"),
        ("CONFIG_RECORD_TTL_S", "0.5", "CONFIG_RECORD_TTL_S must be a number from 1 to 31536000"),
        ("REAPER_INTERVAL_S", "0", "REAPER_INTERVAL_S must be a number from 0.01 to 3600"),
        ("REAPER_INTERVAL_S", "1e308", "REAPER_INTERVAL_S must be a number from 0.01 to 3600"),
        ("CLAIM_LEASE_S", "1e308", "CLAIM_LEASE_S must be a number from 1 to 3600"),
        ("CALLS_SETTLE_GRACE_S", "601", "CALLS_SETTLE_GRACE_S must be a number from 0 to 600"),
        ("CALL_DATA_RETENTION_DAYS", "1e9", "CALL_DATA_RETENTION_DAYS must be a number from 0"),
        ("CALLS_DB_PATH", "~/calls.db", "CALLS_DB_PATH is not expanded"),
        ("CONFIG_PATH", "$HOME/config.json", "CONFIG_PATH is not expanded"),
        (
            "PUBLIC_BASE_URL",
            "http://h:1/?x=1",
            "PUBLIC_BASE_URL must be scheme://host[:port][/path]",
        ),
        ("PUBLIC_BASE_URL", "http://h/#f", "PUBLIC_BASE_URL must be scheme://host[:port][/path]"),
        (
            "PUBLIC_BASE_URL",
            "http://u:pw@h/",
            "PUBLIC_BASE_URL must be scheme://host[:port][/path]",
        ),
        (
            "SIP_OUTBOUND_TRUNK_ID",
            "ST_abc\nLIVEKIT_URL=wss://x",
            "SIP_OUTBOUND_TRUNK_ID must be one line of printable text",
        ),
        ("AGENT_NAME", "agent\x07", "AGENT_NAME must be one line of printable text"),
        (
            "LIVEKIT_URL",
            "ftp://x",
            "LIVEKIT_URL must start with wss:// or ws:// or https:// or http://",
        ),
        ("LIVEKIT_URL", "example.livekit.cloud", "LIVEKIT_URL must start with"),
        ("LIVEKIT_URL", "http://", "LIVEKIT_URL must name a host"),
        ("LIVEKIT_URL", "wss://exa mple.livekit.cloud", "LIVEKIT_URL must name a host"),
        ("LIVEKIT_URL", "https://x:99999", "LIVEKIT_URL is not a valid URL"),
        ("LIVEKIT_URL", "wss://x:0", "LIVEKIT_URL may not name port 0"),
        ("LIVEKIT_URL", "ws://[::1", "LIVEKIT_URL is not a valid URL"),
        # credentials: every request to LiveKit was a 500 (aiohttp refuses them beside our
        # Authorization); a query or fragment was dropped by livekit-api and logged whole
        ("LIVEKIT_URL", "wss://u:pw@lk.example.com", "LIVEKIT_URL must be scheme://host"),
        ("LIVEKIT_URL", "wss://lk.example.com/?token=x", "LIVEKIT_URL must be scheme://host"),
        ("LIVEKIT_URL", "wss://lk.example.com#x", "LIVEKIT_URL must be scheme://host"),
        # an IDNA label that is no punycode: reading its host at start-up was a traceback
        ("LIVEKIT_URL", "ws://xn--a.example", "LIVEKIT_URL names no valid host name"),
        ("PUBLIC_BASE_URL", "http://xn--a.example", "PUBLIC_BASE_URL names no valid host name"),
        ("PUBLIC_BASE_URL", "http://", "PUBLIC_BASE_URL must name a host"),
        ("PUBLIC_BASE_URL", "http://[x", "PUBLIC_BASE_URL is not a valid URL"),
        # a path of the API: every webhook landed on the calls API (or a traceback)
        ("WEBHOOK_PATH", "/calls/outbound", "WEBHOOK_PATH must not be one of the API's paths"),
        ("WEBHOOK_PATH", "/agent/reports", "WEBHOOK_PATH must not be one of the API's paths"),
        ("WEBHOOK_PATH", "/healthz", "WEBHOOK_PATH must not be one of the API's paths"),
        ("WEBHOOK_PATH", "/{x}", "WEBHOOK_PATH must be a plain path"),  # a catch-all route
        ("WEBHOOK_PATH", "/x/../calls", "WEBHOOK_PATH must not hold '.', '..' or empty"),
        ("WEBHOOK_PATH", "/a/./b", "WEBHOOK_PATH must not hold '.', '..' or empty"),
        ("WEBHOOK_PATH", "//hooks", "WEBHOOK_PATH must not hold '.', '..' or empty"),
        ("PORT", "8_000", "PORT must be an integer, got '8_000'"),
        ("PORT", "\u0668\u0660\u0660\u0660", "PORT must be an integer"),  # Arabic-Indic 8000
        ("WEBHOOK_PATH", "/hooks?x=1", "WEBHOOK_PATH must be a plain path"),
        ("WEBHOOK_PATH", "x", "WEBHOOK_PATH must start with '/', got 'x'"),
        ("WEBHOOK_PATH", "webhooks/livekit", "WEBHOOK_PATH must start with '/'"),
        # a directory's path: config.json's lock beside it was a traceback at start-up
        ("CONFIG_PATH", "/", "CONFIG_PATH must be a file's path, not a directory's, got '/'"),
        ("CONFIG_PATH", ".", "CONFIG_PATH must be a file's path, not a directory's, got '.'"),
        ("CONFIG_PATH", "..", "CONFIG_PATH must be a file's path, not a directory's"),
        ("CONFIG_PATH", "state/", "CONFIG_PATH must be a file's path, not a directory's"),
        ("CONFIG_PATH", "state/.", "CONFIG_PATH must be a file's path, not a directory's"),
        ("CONFIG_PATH", "a\0b.json", "CONFIG_PATH must not hold a NUL character"),
        ("CALLS_DB_PATH", "/", "CALLS_DB_PATH must be a file's path, not a directory's"),
        ("CALLS_DB_PATH", "/var/lib/calls/", "CALLS_DB_PATH must be a file's path, not a"),
        # SQLite's in-memory database: the calls would not outlive the server
        ("CALLS_DB_PATH", ":memory:", "CALLS_DB_PATH must be a file's path, got ':memory:'"),
        ("CALLS_DB_PATH", "file:calls.db?mode=memory", "CALLS_DB_PATH must be a file's path"),
        # a voice for a language no call can have would never be used
        ("CARTESIA_VOICE_IDS", "nb=abc", "CARTESIA_VOICE_IDS: 'nb' is not a supported language"),
        ("CARTESIA_VOICE_IDS", "es", "CARTESIA_VOICE_IDS takes language=voice_id pairs"),
        ("CARTESIA_VOICE_IDS", "es=a,ES=b", "CARTESIA_VOICE_IDS names es twice"),
        # an env file's comment kept in the value: every call asked OpenAI for that model
        ("OPENAI_MODEL", "gpt-4o-mini # cheap", "OPENAI_MODEL is a model id, without spaces"),
        # pairs run together (`;` or a space for the comma): es's voice was "<id>;fr=<id>",
        # taken with a warning, every Spanish call failed at its first words and French ones
        # spoke with the default voice
        ("CARTESIA_VOICE_IDS", "es=a;fr=b", "CARTESIA_VOICE_IDS takes language=voice_id pairs"),
        ("CARTESIA_VOICE_IDS", "es=a fr=b", "CARTESIA_VOICE_IDS takes language=voice_id pairs"),
    ],
)
def test_malformed_value_names_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings_from_env({name: value})
    assert str(info.value).startswith(message)
    assert str(info.value).startswith(name)
    assert "\n" not in str(info.value)  # one line


@pytest.mark.parametrize(
    "name", sorted(variable(item.name) for item in dataclasses.fields(Settings))
)
def test_a_value_that_took_later_lines_is_refused_without_echoing_them(name: str) -> None:
    """A quote left open in .env takes the lines after it into the value: their secrets
    were printed in the error of every setting that quoted what it got."""
    swallowed = "x\nLIVEKIT_API_SECRET=LEAKED-secret-0123456789\nOPENAI_API_KEY=sk-LEAKED"
    with pytest.raises(SettingsError) as info:
        settings_from_env({name: swallowed})
    message = str(info.value)
    assert message.startswith(f"{name} must be one line of printable text"), message
    assert "LEAKED" not in message.upper() and "\n" not in message


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("LIVEKIT_URL", "wss://app:Sup3rS3cret/x@lk.example.com"),
        ("LIVEKIT_URL", "ftp://app:Sup3rS3cret@lk.example.com"),
        ("LIVEKIT_URL", "wss://app:Sup3rS3cret@lk.example.com"),
        ("PUBLIC_BASE_URL", "http://app:Sup3rS3cret#x@h:99999"),
    ],
)
def test_a_url_error_never_quotes_a_password(name: str, url: str) -> None:
    """A password with a `/` or `#` in it ends the parser's host there, and the rest was
    quoted as the port that did not parse."""
    with pytest.raises(SettingsError) as info:
        settings_from_env({name: url})
    assert "Sup3rS3cret" not in str(info.value) and "S3cret" not in str(info.value)


def test_several_database_hosts_are_taken() -> None:
    url = "postgresql://u:p@h1:5432,h2:5433/db"  # libpq's multi-host form
    assert settings_from_env({"DATABASE_URL": url}).database_url == url


def test_the_sandbox_may_not_take_the_servers_port() -> None:
    with pytest.raises(SettingsError, match=r"SANDBOX_PORT must differ from PORT \(8000\)"):
        settings_from_env({"PORT": "8000", "SANDBOX_PORT": "8000"}).require_livekit()


@pytest.mark.parametrize("content", [b"AGENT_NAME=caf\xe9\n"])
def test_a_dotenv_that_cannot_be_read_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(content)
    with pytest.raises(SettingsError, match=r"\.env cannot be read: not UTF-8 text"):
        load_settings(dotenv)


@pytest.mark.parametrize(
    ("content", "line"),
    [
        # an unclosed quote: python-dotenv skipped it and the lines it ran on into
        ('PORT=1\nCALLS_ALLOWED_COUNTRIES="US\nAGENT_NAME=a\n', "line 2 (CALLS_ALLOWED_COUNTRIES)"),
        ("export CALLS_API_TOKEN='s3cret-token-0123456789\n", "line 1 (CALLS_API_TOKEN)"),
        ('PORT=9100\n\nLIVEKIT_API_SECRET="s3cret" trailing\n', "line 3 (LIVEKIT_API_SECRET)"),
        ("# a comment\ns3cret words here\n", "line 2"),  # no variable: none named
        ("CALLS_ALLOWED_COUNTRIES US\n", "line 1 (CALLS_ALLOWED_COUNTRIES)"),  # a setting's name
    ],
)
def test_a_dotenv_line_that_does_not_parse_stops_start_up(
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: str,
    line: str,
) -> None:
    """python-dotenv skipped it (with a stderr line naming neither file nor variable) and the
    server started without it: `CALLS_ALLOWED_COUNTRIES="US` allowed every country."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(content)
    with pytest.raises(SettingsError) as info:
        load_settings(dotenv)
    assert str(info.value) == (
        f"{dotenv} {line} cannot be parsed (an unclosed quote, or not NAME=value); fix or remove it"
    )
    assert "s3cret" not in str(info.value) and '"US' not in str(info.value)
    assert [r for r in caplog.records if r.name.startswith("dotenv")] == []


@pytest.mark.parametrize(
    ("content", "line", "name"),
    [
        ("PORT=9100\nCALLS_ALLOWED_COUNTRIES\n", 2, "CALLS_ALLOWED_COUNTRIES"),
        ("\nexport CALLS_API_TOKEN\n", 2, "CALLS_API_TOKEN"),
        # one name to python-dotenv, with no value: every country was allowed
        ("CALLS_ALLOWED_COUNTRIES:US\n", 1, "CALLS_ALLOWED_COUNTRIES"),
    ],
)
def test_a_setting_without_a_value_in_dotenv_stops_start_up(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, content: str, line: int, name: str
) -> None:
    """python-dotenv reads a name alone as "no value", which was dropped without a word: a
    bare `CALLS_ALLOWED_COUNTRIES` let calls go to every country. (Other names alone are
    left alone, as other variables are: test_load_settings_reads_dotenv.)"""
    dotenv = tmp_path / ".env"
    dotenv.write_text(content)
    with pytest.raises(SettingsError) as info:
        load_settings(dotenv)
    assert str(info.value) == (
        f"{dotenv} line {line} ({name}) is a setting without `=`: write {name}=value, or"
        f" {name}= for the default"
    )


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# ------------------------------------------------------------------ require_livekit


def test_require_livekit_accepts_complete_real_settings() -> None:
    settings = settings_from_env(REAL_LIVEKIT)
    assert not settings.uses_sandbox
    settings.require_livekit()


@pytest.mark.parametrize("secret", ["secret", "APIrealkey", "real-secret-value-0123456789abc"])
def test_a_secret_shorter_than_livekits_is_warned_not_refused(secret: str) -> None:
    """Shorter than 32 characters: often the API key pasted in its place, or a value cut
    short, and every request and webhook fails its signature at run time. Warned, not
    refused: livekit-server --dev's pair is devkey / secret."""
    settings = settings_from_env({**REAL_LIVEKIT, "LIVEKIT_API_SECRET": secret})
    settings.require_livekit()  # starts
    assert settings.short_secret_warning() == (
        f"LIVEKIT_API_SECRET is {len(secret)} characters; LiveKit's are at least 32 but for"
        " livekit-server --dev's (is it the API key, or cut short?)"
    )
    assert settings_from_env(REAL_LIVEKIT).short_secret_warning() is None
    assert settings_from_env({}).short_secret_warning() is None  # the sandbox's own pair


def test_livekit_dev_keys_beyond_loopback_are_warned_of() -> None:
    """livekit-server --dev's pair (devkey / secret) is in LiveKit's docs: with it and a HOST
    beyond loopback, anyone reaching the server could sign webhooks and agent reports (the
    embedded sandbox's public pair is refused from other machines; this one was taken from
    anywhere without a word)."""
    dev = {**REAL_LIVEKIT, "LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "secret"}
    token = {"CALLS_API_TOKEN": "a-token-of-at-least-32-characters-0123"}
    for host in ("0.0.0.0", "192.0.2.7", "::"):  # noqa: S104
        settings = settings_from_env({**dev, **token, "HOST": host})
        said = [w for w in settings.livekit_warnings() if "--dev's public pair" in w]
        assert "secret" not in said[0].replace("_SECRET", "")  # its value is not logged
        assert said == [
            "LIVEKIT_API_KEY and LIVEKIT_API_SECRET are livekit-server --dev's public pair"
            f" and HOST={host} is not loopback: anyone who reaches this"
            " server can sign LiveKit webhooks and agent reports with it (settle calls, write"
            " their reports, put numbers on the do-not-call list, have customer webhooks"
            " sent); give LiveKit a key pair of its own (livekit-server --keys)"
        ]
    everywhere = {**REAL_LIVEKIT, **token, "HOST": "0.0.0.0"}  # noqa: S104
    for quiet in (dev, everywhere, {**dev, "HOST": "::1"}):
        warned = settings_from_env(quiet).livekit_warnings()
        assert not [w for w in warned if "--dev's public pair" in w], quiet


def test_livekit_dev_keys_behind_a_public_base_url_are_warned_of() -> None:
    """HOST=127.0.0.1 behind a proxy or a tunnel, PUBLIC_BASE_URL its address for the agents:
    whoever reaches the proxy could sign with livekit-server --dev's pair, and nothing said
    so (only a HOST beyond loopback was warned of)."""
    dev = {**REAL_LIVEKIT, "LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "secret"}
    behind = settings_from_env({**dev, "PUBLIC_BASE_URL": "https://calls.acme.test"})
    assert [w for w in behind.livekit_warnings() if "--dev's public pair" in w] == [
        "LIVEKIT_API_KEY and LIVEKIT_API_SECRET are livekit-server --dev's public pair and"
        " PUBLIC_BASE_URL's host calls.acme.test is not loopback (agents, and whoever else,"
        " reach this server through it): anyone who reaches this server can sign LiveKit"
        " webhooks and agent reports with it (settle calls, write their reports, put numbers"
        " on the do-not-call list, have customer webhooks sent); give LiveKit a key pair of"
        " its own (livekit-server --keys)"
    ]
    for here in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
        quiet = settings_from_env({**dev, "PUBLIC_BASE_URL": here})
        assert not [w for w in quiet.livekit_warnings() if "--dev's public pair" in w], here


def test_livekit_settings_that_look_like_mistakes_are_warned_of() -> None:
    """Probe AO: a trunk id that is no LiveKit trunk id, keys set with no LIVEKIT_URL (the
    sandbox runs, with them), started without a word."""
    assert settings_from_env(REAL_LIVEKIT).livekit_warnings() == []
    assert settings_from_env({}).livekit_warnings() == []
    trunk = settings_from_env({**REAL_LIVEKIT, "SIP_OUTBOUND_TRUNK_ID": "MyTwilioTrunk"})
    (said,) = trunk.livekit_warnings()
    assert said.startswith("SIP_OUTBOUND_TRUNK_ID does not start with ST_")
    assert "MyTwilioTrunk" not in said
    keys = {"LIVEKIT_API_KEY": "APIrealkey", "LIVEKIT_API_SECRET": "real-secret-value-0123456789ab"}
    (said,) = settings_from_env(keys).livekit_warnings()
    assert "is set but LIVEKIT_URL is not: the embedded sandbox runs with them" in said
    short = settings_from_env({**REAL_LIVEKIT, "LIVEKIT_API_SECRET": "short-one"})
    assert short.livekit_warnings() == [short.short_secret_warning()]


@pytest.mark.parametrize(
    ("trunk", "bad"),
    [
        ("ST_abc def", "' '"),
        ("my-twilio-trunk", "'-'"),
        ("+14155550100", "'+'"),
        ("ST_ab\u00e9", "'\u00e9'"),
    ],
)
def test_a_trunk_id_with_a_character_no_livekit_id_has_stops_start_up(trunk: str, bad: str) -> None:
    """A space in SIP_OUTBOUND_TRUNK_ID (or a trunk's name, or its number) started the server,
    and every call failed at LiveKit. Now start-up stops naming the setting and the character."""
    with pytest.raises(SettingsError) as raised:
        settings_from_env({**REAL_LIVEKIT, "SIP_OUTBOUND_TRUNK_ID": trunk})
    assert str(raised.value).startswith(f"SIP_OUTBOUND_TRUNK_ID holds {bad}, which no LiveKit")
    assert trunk not in str(raised.value)


@pytest.mark.parametrize("trunk", ["ST_abc123", "ST_r9EpBGtDfTph", "ST_AbCdEfGhJkLmNoPq"])
def test_a_trunk_id_of_livekits_shape_is_accepted(trunk: str) -> None:
    settings = settings_from_env({**REAL_LIVEKIT, "SIP_OUTBOUND_TRUNK_ID": trunk})
    assert settings.sip_outbound_trunk_id == trunk
    assert settings.livekit_warnings() == []


def test_require_livekit_ignores_missing_values_on_the_sandbox() -> None:
    settings_from_env({"SIP_OUTBOUND_TRUNK_ID": ""}).require_livekit()
    settings_from_env({"LIVEKIT_API_KEY": "APIx"}).require_livekit()


def test_a_trunk_without_livekit_url_is_refused() -> None:
    """LIVEKIT_URL misspelled or lost from the environment, the rest of a real setup given:
    the server ran on the sandbox, every call "completed", nobody was called."""
    real_but_url = {k: v for k, v in REAL_LIVEKIT.items() if k != "LIVEKIT_URL"}
    with pytest.raises(SettingsError, match="^SIP_OUTBOUND_TRUNK_ID is set but LIVEKIT_URL"):
        settings_from_env(real_but_url).require_livekit()


@pytest.mark.parametrize(
    "missing", ["LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "SIP_OUTBOUND_TRUNK_ID"]
)
def test_require_livekit_demands_each_value(missing: str) -> None:
    env = {k: v for k, v in REAL_LIVEKIT.items() if k != missing}
    settings = settings_from_env(env)  # reading succeeds; starting does not
    with pytest.raises(SettingsError, match=f"^{missing} must be set") as raised:
        settings.require_livekit()
    assert "when LIVEKIT_URL is set" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "dev_value"),
    [("LIVEKIT_API_KEY", DEV_API_KEY), ("LIVEKIT_API_SECRET", DEV_API_SECRET)],
)
def test_require_livekit_refuses_dev_credentials(name: str, dev_value: str) -> None:
    """Set by hand to the sandbox's development value (copied from a sandbox's .env), it was
    refused as "must be set", though it was: the refusal now says why it cannot be used."""
    settings = settings_from_env({**REAL_LIVEKIT, name: dev_value})
    with pytest.raises(SettingsError, match=f"^{name} must be set") as raised:
        settings.require_livekit()
    said = str(raised.value)
    assert "development one (its default) cannot be used with a real LiveKit" in said
    assert dev_value not in said


# ------------------------------------------------------------------ load_settings


def test_load_settings_reads_dotenv(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\n"
        "PORT=9100\n"
        "LOG_LEVEL=warning\n"
        'AGENT_NAME="quoted agent"\n'
        "CALLS_ALLOWED_COUNTRIES=es,fr\n"
        "EMPTY_KEY\n"
    )
    settings = load_settings(dotenv)
    assert settings.port == 9100
    assert settings.log_level == "WARNING"
    assert settings.agent_name == "quoted agent"
    assert settings.calls_allowed_countries == ("ES", "FR")


def test_dotenv_values_are_taken_as_written_never_expanded(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """python-dotenv expanded ${VAR}, an unset one to nothing, which means the default:
    `CALLS_ALLOWED_COUNTRIES=${REGIONS}` allowed every country, `LIVEKIT_URL=${LK_URL}` ran
    the sandbox, a token holding "${" was changed. Taken as written, each is refused, or
    kept, and said at start-up (without its value)."""
    clean_env.setenv("HOME", "/root")
    dotenv = tmp_path / ".env"
    dotenv.write_text("CALLS_ALLOWED_COUNTRIES=${REGIONS}\n")
    with pytest.raises(SettingsError, match="CALLS_ALLOWED_COUNTRIES"):
        load_settings(dotenv)
    dotenv.write_text("CONFIG_PATH=${HOME}/x.json\n")
    with pytest.raises(SettingsError, match="CONFIG_PATH"):
        load_settings(dotenv)
    token = "abc${SHLVL}" + "x" * 40
    dotenv.write_text(f"CALLS_API_TOKEN={token}\n")
    dotenv.chmod(0o600)  # a secret's file (one every user may read is a warning of its own)
    assert load_settings(dotenv).calls_api_token == token
    (warning,) = dotenv_warnings(dotenv)
    assert warning.startswith("CALLS_API_TOKEN (") and "not expanded" in warning
    assert token not in warning


def test_real_environment_wins_over_dotenv(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=9100\nAGENT_NAME=from-dotenv\nOPENAI_MODEL=gpt-dotenv\n")
    clean_env.setenv("PORT", "9200")
    clean_env.setenv("AGENT_NAME", "from-env")
    settings = load_settings(str(dotenv))
    assert settings.port == 9200
    assert settings.agent_name == "from-env"
    assert settings.openai_model == "gpt-dotenv"  # not overridden: .env still counts


def test_an_empty_variable_does_not_undo_dotenv(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`LIVEKIT_URL=` from a compose file silently put a production server in sandbox mode."""
    dotenv = tmp_path / ".env"
    dotenv.write_text("LIVEKIT_URL=wss://x.livekit.cloud\nAGENT_NAME=from-dotenv\n")
    clean_env.setenv("LIVEKIT_URL", "")
    clean_env.setenv("AGENT_NAME", "  ")
    settings = load_settings(dotenv)
    assert settings.livekit_url == "wss://x.livekit.cloud" and not settings.uses_sandbox
    assert settings.agent_name == "from-dotenv"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.2", True), ("127.1.2.3", True), ("::1", True), ("localhost", True)]
    + [("LOCALHOST", True), ("Localhost", True), ("localhost.", False)]
    + [("10.0.0.1", False), ("0.0.0.0", False), ("example.com", False)]  # noqa: S104
    + [("localhost.example.com", False), ("notlocalhost", False)],
)
def test_every_loopback_address_is_loopback(host: str, loopback: bool) -> None:
    assert settings_from_env({"HOST": host}).is_loopback is loopback


def test_load_settings_without_dotenv_uses_environment(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("PORT", "9300")
    assert load_settings(tmp_path / "missing.env").port == 9300
    assert load_settings(None).port == 9300
    with pytest.raises(SettingsError, match="is there but is no file to read"):
        load_settings(tmp_path)  # a directory is no .env: not read as if absent
    (tmp_path / "link.env").symlink_to(tmp_path / "nowhere")
    with pytest.raises(SettingsError, match="is there but is no file to read"):
        load_settings(tmp_path / "link.env")  # a link to nothing


def test_load_settings_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert load_settings(tmp_path / "missing.env") == Settings()


def test_load_settings_bad_dotenv_value(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("LOG_FORMAT=xml\n")
    with pytest.raises(SettingsError, match="^LOG_FORMAT"):
        load_settings(dotenv)
    clean_env.setenv("LOG_FORMAT", "json")  # the environment fixes it
    assert load_settings(dotenv).log_format == "json"


def test_load_settings_real_livekit_from_dotenv(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("".join(f"{k}={v}\n" for k, v in REAL_LIVEKIT.items()))
    settings = load_settings(dotenv)
    assert settings.livekit_url == REAL_LIVEKIT["LIVEKIT_URL"]
    settings.require_livekit()


# ------------------------------------------------------------------ secrets


SECRETS = {
    "LIVEKIT_API_SECRET": "lk-secret-Zq8w7e6r5t4y3u2i1o0p",
    "CALLS_API_TOKEN": "calls-token-Aa1Bb2Cc3Dd4Ee5",
    "OPENAI_API_KEY": "sk-openai-Ff6Gg7Hh8Ii9Jj0",
    "DEEPGRAM_API_KEY": "dg-Kk1Ll2Mm3Nn4Oo5",
    "CARTESIA_API_KEY": "sk_car_Pp6Qq7Rr8Ss9Tt0",
}


def test_repr_and_str_never_contain_secrets() -> None:
    settings = settings_from_env({**REAL_LIVEKIT, **SECRETS})
    assert settings.livekit_api_secret == SECRETS["LIVEKIT_API_SECRET"]
    assert settings.calls_api_token == SECRETS["CALLS_API_TOKEN"]
    assert settings.openai_api_key == SECRETS["OPENAI_API_KEY"]
    for text in (repr(settings), str(settings), f"{settings}", "%s" % (settings,)):  # noqa: UP031
        assert "Settings(" in text
        for secret in SECRETS.values():
            assert secret not in text
    assert "livekit_api_key='APIrealkey'" in repr(settings)  # the key is an identifier, not secret


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"])
@pytest.mark.parametrize("tail", [" # the prod key", "\u2011x"])
def test_a_provider_key_that_no_request_could_carry_is_refused_unechoed(
    name: str, tail: str
) -> None:
    """A comment that `docker run --env-file` keeps in the value, or a non-ASCII character
    pasted in: taken, every call's request to that provider failed with the callee on the
    line (401, or a header that could not be sent)."""
    value = SECRETS[name] + tail
    with pytest.raises(SettingsError) as info:
        settings_from_env({name: value})
    assert str(info.value) == f"{name} must be printable ASCII without spaces"
    assert SECRETS[name] not in str(info.value)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY"])
@pytest.mark.parametrize("value", ["sk-...", "..."])
def test_a_provider_key_left_as_the_seeds_placeholder_is_refused(name: str, value: str) -> None:
    """The seed's `.env` example (`OPENAI_API_KEY=sk-...`, `DEEPGRAM_API_KEY=...`) copied as
    it is: the worker started, and every call's request to that provider was refused after
    the callee had answered."""
    with pytest.raises(SettingsError) as info:
        settings_from_env({name: value})
    assert str(info.value) == f"{name} holds '...', a placeholder: set the real key"


@pytest.mark.parametrize("name", ["LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"])
@pytest.mark.parametrize("tail", [" # prod", "\u2011x"])
def test_a_livekit_key_that_no_token_could_be_signed_with_is_refused_unechoed(
    name: str, tail: str
) -> None:
    """A comment that `docker run --env-file` keeps in the value, or a non-ASCII character
    pasted in: taken, the server started, every request it signed was refused (401) and
    every LiveKit webhook failed its check, each call's outcome lost."""
    value = {**REAL_LIVEKIT, **SECRETS}[name]
    with pytest.raises(SettingsError) as info:
        settings_from_env({**REAL_LIVEKIT, **SECRETS, name: value + tail})
    assert str(info.value) == f"{name} must be printable ASCII without spaces"
    assert value not in str(info.value)


def test_repr_hides_dev_secret_too() -> None:
    assert DEV_API_SECRET not in repr(Settings())


# ------------------------------------------------------------------ logging


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_configure_logging(root_logger: logging.Logger, log_format: str) -> None:
    configure_logging(settings_from_env({"LOG_LEVEL": "warning", "LOG_FORMAT": log_format}))
    assert root_logger.level == logging.WARNING
    (handler,) = root_logger.handlers
    record = logging.LogRecord("x.y", logging.WARNING, __file__, 1, "call %s", ("c-1",), None)
    line = handler.format(record)
    assert "call c-1" in line
    if log_format == "json":
        assert line.startswith("{") and '"level": "WARNING"' in line and '"logger": "x.y"' in line
    else:
        assert "WARNING" in line and "x.y" in line
    # What a client sent cannot start a line of its own (a forged CRITICAL line)...
    forged = "c-1\n2026-12-04 12:00:00,000 CRITICAL server: INJECTED\r\u2028x"
    record = logging.LogRecord("x.y", logging.WARNING, __file__, 1, "call %s", (forged,), None)
    assert len(handler.format(record).splitlines()) == 1
    assert "INJECTED" in handler.format(record)
    # ... while a traceback keeps its lines (in JSON, its field's).
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = handler.format(record)
    traceback = json.loads(line)["exc"] if log_format == "json" else line
    assert len(traceback.splitlines()) > 2 and "ValueError: boom" in traceback


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/St_Johns", "Pacific/Chatham"])
def test_a_text_line_says_its_time_in_utc_wherever_the_machine_is(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    """A line's time was the machine's local time with no zone said (`2026-12-08 05:37:00,123`
    in Kolkata for 00:07 UTC): read against the API's UTC times, hours off."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        configure_logging(settings_from_env({"LOG_FORMAT": "text"}))
        (handler,) = root_logger.handlers
        record = logging.LogRecord("x.y", logging.INFO, __file__, 1, "stopped", (), None)
        record.created, record.msecs = 1796688420.123, 123.0  # 2026-12-08 00:07:00.123 UTC
        assert handler.format(record).startswith("2026-12-08T00:07:00.123Z INFO    x.y: stopped")
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    "env",
    [
        {"CONFIG_PATH": "calls.db"},
        {"CONFIG_PATH": "./calls.db"},
        {"CONFIG_PATH": "data/../calls.db-wal"},
        {"CONFIG_PATH": "x/store", "CALLS_DB_PATH": "x/store.lock"},
    ],
)
def test_config_path_naming_the_calls_database_stops_start_up(env: dict[str, str]) -> None:
    """`CONFIG_PATH=calls.db` started: the first call's write set the database aside as a
    corrupt config file and wrote JSON in its place, and every request was a 503 after."""
    with pytest.raises(SettingsError, match="name the same file"):
        settings_from_env(env)


@pytest.mark.parametrize(
    "text",
    [
        "LIVEKIT_API_SECRET=s3cret\nPORT=8000\n",  # CONFIG_PATH=.env
        "# Outbound calling\n\nA README.\n",
        "root:x:0:0:root:/root:/bin/bash\n",
        "[1, 2, 3]",  # JSON, but not config.json's object
        "\x00\x01binary",
    ],
    ids=["dotenv", "readme", "passwd", "array", "binary"],
)
def test_config_path_naming_a_file_that_is_no_json_object_stops_start_up(
    tmp_path: Path, text: str
) -> None:
    """Probe AO: `CONFIG_PATH=.env` started, and the first call set the operator's .env aside
    as a corrupt config.json and wrote JSON in its place (a README copy too, its mode 0600).
    The file's text is never shown."""
    path = tmp_path / "some-file"
    path.write_text(text)
    with pytest.raises(SettingsError, match="not a JSON object") as refused:
        settings_from_env({"CONFIG_PATH": str(path)})
    assert "s3cret" not in str(refused.value) and "root:x" not in str(refused.value)
    assert path.read_text() == text


@pytest.mark.parametrize("text", ["[]", "null", '// my note\n{"caller_name": "x"}'])
def test_a_config_json_broken_by_hand_is_told_how_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """The server's own config.json, edited by hand into something that is no JSON object (a
    note above it, its object replaced): the line said it was "not config.json" and to "point
    CONFIG_PATH at config.json", which it was, the default."""
    monkeypatch.chdir(tmp_path)
    Path("config.json").write_text(text)
    with pytest.raises(SettingsError) as refused:
        settings_from_env({})
    message = str(refused.value)
    assert message.startswith("CONFIG_PATH (config.json) names a file that is not a JSON object")
    assert "(not config.json)" not in message
    assert "If it is this server's config.json, broken by an edit, fix it or move it aside" in (
        message
    )
    assert Path("config.json").read_text() == text


@pytest.mark.parametrize(
    "text", ["", "  \n", '{"caller_name": "x"}', '\ufeff {"calls": {}}', '{"calls": {"cut sh']
)
def test_a_config_json_even_a_corrupt_one_starts(tmp_path: Path, text: str) -> None:
    """Empty, or an object (cut short or mistyped: set aside on the first write, as
    before); in UTF-16 and -32 too, which the config store reads (review AR: refused)."""
    path = tmp_path / "config.json"
    for encoding in ("utf-8", "utf-16", "utf-16-le", "utf-32"):
        path.write_bytes(text.encode(encoding))
        assert settings_from_env({"CONFIG_PATH": str(path)}).config_path == path, encoding


def test_config_path_beside_a_postgresql_database_may_be_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name alone, read in a directory of its own: in the project's, where `make run`
    (README's first step) leaves a calls.db, CONFIG_PATH=calls.db named that SQLite file,
    rightly refused as no JSON object, and `make test` failed there (probe BB)."""
    monkeypatch.chdir(tmp_path)
    env = {"CONFIG_PATH": "calls.db", "DATABASE_URL": "postgresql://u@h/db"}
    assert settings_from_env(env).config_path.name == "calls.db"


def test_dotenv_mistakes_that_parse_are_warned_without_values(tmp_path: Path) -> None:
    """A setting given twice (the last wins) and a name close to a setting (read as unset:
    its default applies) started without a word."""
    from common.settings import dotenv_warnings

    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "PORT=8420\nCALL_MAX_ACTIV=5\nport=8499\n# PORT=1\nPORT=8422\nUNRELATED_TOOL=x\n"
        "LIVEKIT_API_SECRET=s3cret-value\nLIVEKIT_API_SECRET=s3cret-other\n"
    )
    dotenv.chmod(0o600)  # a secret's file (one every user may read is a warning of its own)
    warnings = dotenv_warnings(dotenv)
    assert warnings == [
        f"PORT is set on {dotenv} lines 1, 5: line 5's is used",
        f"CALL_MAX_ACTIV ({dotenv} line 2) is no setting of this server: did you mean"
        " CALLS_MAX_ACTIVE? (it is read as unset)",
        f"port ({dotenv} line 3) is no setting of this server: did you mean PORT? (it is read"
        " as unset)",
        f"LIVEKIT_API_SECRET is set on {dotenv} lines 7, 8: line 8's is used",
    ]
    assert not any("s3cret" in w or "8499" in w for w in warnings)
    assert dotenv_warnings(tmp_path / "missing.env") == []


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("[::1]", "without brackets"),
        ("127.0.0.1:8000", "takes no port"),
        ("http://127.0.0.1", "not a URL"),
        ("my host", "IP address or a host name"),
    ],
)
def test_a_listen_address_that_cannot_be_one_is_named(host: str, why: str) -> None:
    """They were refused for want of a CALLS_API_TOKEN ("to listen on HOST=[::1]"), and with
    one given, failed to listen ("Name or service not known")."""
    with pytest.raises(SettingsError, match=f"^HOST .*{why}"):
        settings_from_env({"HOST": host})
    with pytest.raises(SettingsError, match=f"^AGENT_HTTP_HOST .*{why}"):
        settings_from_env({"AGENT_HTTP_HOST": host})


def test_the_agent_http_host_with_a_port_is_not_told_to_set_port() -> None:
    """PORT is the server's: the agent's health server does not listen on it, and setting it
    changed nothing for AGENT_HTTP_HOST=0.0.0.0:8081."""
    with pytest.raises(SettingsError) as refused:
        settings_from_env({"AGENT_HTTP_HOST": "127.0.0.1:8081"})
    assert str(refused.value) == "AGENT_HTTP_HOST takes no port: got '127.0.0.1:8081'"
    with pytest.raises(SettingsError, match=r"^HOST takes no port \(set PORT\)"):
        settings_from_env({"HOST": "127.0.0.1:8000"})


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "::1",
        "::",
        "0.0.0.0",  # noqa: S104 - only parsed
        "localhost",
        "fe80::1%eth0",
    ],
)
def test_listen_addresses_and_names_are_taken(host: str) -> None:
    assert settings_from_env({"HOST": host, "CALLS_API_TOKEN": "t" * 40}).host == host


def test_servers_of_one_host_on_one_port_have_different_names() -> None:
    """127.0.0.1 and ::1 on one PORT, one database: one name made them one server for the
    claims on events and deliveries (the one starting gave the other's back, and a delivery
    in flight went out twice at once)."""
    first = settings_from_env({"HOST": "127.0.0.1", "PORT": "8000"})
    second = settings_from_env({"HOST": "::1", "PORT": "8000", "CALLS_API_TOKEN": "t" * 40})
    assert first.instance_name != second.instance_name
    assert first.instance_name == settings_from_env({"PORT": "8000"}).instance_name


def test_the_sandbox_slowed_down_stretches_how_long_a_call_may_take() -> None:
    """SANDBOX_TIME_SCALE=50, "to watch slowly": its calls were settled "no final event" by
    the reaper's bound while the sandbox still played them."""
    assert settings_from_env({"SANDBOX_TIME_SCALE": "50"}).sandbox_stretch == 50.0
    assert settings_from_env({"SANDBOX_TIME_SCALE": "0.1"}).sandbox_stretch == 1.0
    assert settings_from_env({**REAL_LIVEKIT, "SANDBOX_TIME_SCALE": "50"}).sandbox_stretch == 1.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLS_DB_PATH", '"calls.db"'),
        ("CONFIG_PATH", "'config.json'"),
        ("CALLS_API_TOKEN", '"s3cret-token-0123456789"'),
        ("LIVEKIT_API_SECRET", "'s3cret-0123456789abcdef0123456789'"),
        ("AGENT_NAME", '" outbound-caller "'),
    ],
)
def test_a_value_wrapped_in_quotes_stops_start_up(name: str, value: str) -> None:
    """The process environment keeps quotes that only .env takes off (docker --env-file):
    CALLS_DB_PATH="calls.db" opened a new, empty database named `"calls.db"` (no do-not-call
    list, no calls) without a word, and a quoted token or secret failed every request."""
    with pytest.raises(SettingsError) as refused:
        settings_from_env({name: value})
    message = str(refused.value)
    assert message.startswith(f"{name} is wrapped in quotes")
    assert "s3cret" not in message and "calls.db" not in message


def test_quotes_inside_a_value_or_taken_off_by_dotenv_are_kept(tmp_path: Path) -> None:
    settings = settings_from_env({"AGENT_NAME": 'a"b"', "OPENAI_MODEL": "'"})
    assert (settings.agent_name, settings.openai_model) == ('a"b"', "'")
    dotenv = tmp_path / ".env"
    dotenv.write_text("CALLS_DB_PATH=\"calls.db\"\nCONFIG_PATH='config.json'\n")
    settings = settings_from_env(read_dotenv(dotenv))
    assert (str(settings.calls_db_path), str(settings.config_path)) == ("calls.db", "config.json")


def test_cartesia_voice_ids_are_read_per_language() -> None:
    settings = settings_from_env({"CARTESIA_VOICE_IDS": " ES = voice-es , ja=voice-ja,"})
    assert settings.cartesia_voice_ids == (("es", "voice-es"), ("ja", "voice-ja"))
    assert settings_from_env({}).cartesia_voice_ids == ()


def test_the_seeds_per_call_values_left_in_dotenv_are_warned_of(tmp_path: Path) -> None:
    """The seed's migration says to remove AGENT_INSTRUCTIONS, CALLER_NAME, TTS_LANGUAGE
    and TTS_EMOTION from .env (they are per call now); left there, they were ignored without
    a word (`TTS_LANGUAGE=es`: every call spoke English). Each is now a start-up warning
    naming the request field that gives it, without its value."""
    from common.settings import dotenv_warnings

    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "AGENT_INSTRUCTIONS=Secret plan\nCALLER_NAME=Bob\nTTS_LANGUAGE=es\nTTS_EMOTION=Calm\n"
        "TWILIO_ACCOUNT_SID=x\n"
    )
    warnings = dotenv_warnings(dotenv)
    assert warnings == [
        f"{name} ({dotenv} line {line}) is not read: each call gives its own, as"
        f" POST /calls/outbound's `{field}` (config.json keeps it per call); remove it"
        for line, (name, field) in enumerate(
            [
                ("AGENT_INSTRUCTIONS", "dynamic_instruction"),
                ("CALLER_NAME", "name"),
                ("TTS_LANGUAGE", "language"),
                ("TTS_EMOTION", "emotion"),
            ],
            start=1,
        )
    ]
    assert not any("Secret" in w or "Bob" in w for w in warnings)
