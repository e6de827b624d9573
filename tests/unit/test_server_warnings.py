"""Start-up warnings that save a 3 a.m. search: where the agents' reports will go."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import server
from common.settings import Settings, SettingsError
from server import check_webhook_host, warn_open_files, warn_report_url
from tests.processes import reachable_directory

REAL: dict[str, Any] = {"livekit_url": "wss://example.livekit.cloud", "port": 8123}


def test_a_real_livekit_without_public_base_url_is_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_report_url(dataclasses.replace(Settings(), **REAL))
    assert "PUBLIC_BASE_URL is not set" in caplog.text
    assert "http://127.0.0.1:8123/agent/reports" in caplog.text


@pytest.mark.parametrize(
    "overrides",
    [{}, {**REAL, "public_base_url": "https://calls.example.com"}],
    ids=["sandbox", "public-base-url-set"],
)
def test_no_warning_when_the_address_is_known_or_local(
    caplog: pytest.LogCaptureFixture, overrides: dict[str, Any]
) -> None:
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_report_url(dataclasses.replace(Settings(), **overrides))
    assert caplog.text == ""


def test_the_sandbox_with_public_base_url_says_where_its_agent_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The embedded sandbox's agent posts its reports to PUBLIC_BASE_URL: set for a real
    LiveKit whose LIVEKIT_URL went missing, every call's results were lost, said nowhere."""
    with caplog.at_level(logging.WARNING, logger="server"):
        sandbox = dataclasses.replace(Settings(), public_base_url="https://calls.example.com")
        warn_report_url(sandbox)
    assert "PUBLIC_BASE_URL is set but LIVEKIT_URL is not" in caplog.text
    assert "https://calls.example.com/agent/reports" in caplog.text


# ------------------------------------------------------------------ CALLS_WEBHOOK_URL's host

WHSEC = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAx"


def _with_hook(url: str, **more: Any) -> Settings:
    return dataclasses.replace(
        Settings(), calls_webhook_url=url, calls_webhook_secret=WHSEC, **more
    )


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """What the server's resolver answers, by host (a host not in it does not resolve)."""
    from tests.unit.test_notify_guard import FakeResolver

    table: dict[str, list[str]] = {}
    monkeypatch.setattr(server, "PooledResolver", lambda: FakeResolver(table))
    return table


def test_a_webhook_host_resolving_to_a_private_address_stops_start_up(
    dns: dict[str, list[str]],
) -> None:
    """A call's webhook_url resolving there is a 422; CALLS_WEBHOOK_URL's started the server,
    and every event was refused at connect time and retried for a day."""
    dns["hooks.internal.example"] = ["93.184.216.34", "10.0.0.7"]  # any private answer counts
    with pytest.raises(SettingsError) as info:
        check_webhook_host(_with_hook("https://hooks.internal.example/calls"))
    assert str(info.value).startswith("CALLS_WEBHOOK_URL: hooks.internal.example resolves to")
    assert "10.0.0.7" in str(info.value) and "CALLS_WEBHOOK_ALLOW_PRIVATE=1" in str(info.value)


def test_a_public_webhook_host_or_one_allowed_private_starts(
    dns: dict[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    dns["hooks.example.com"] = ["93.184.216.34"]
    dns["hooks.internal.example"] = ["10.0.0.7"]
    with caplog.at_level(logging.WARNING, logger="server"):
        check_webhook_host(_with_hook("https://hooks.example.com/calls"))
        check_webhook_host(
            _with_hook("http://hooks.internal.example/", calls_webhook_allow_private=True)
        )
        check_webhook_host(Settings())  # no URL: nothing to look up
    assert caplog.text == ""


def test_a_webhook_host_that_does_not_resolve_yet_is_a_warning(
    dns: dict[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    """DNS may not be up at boot, and each connection checks the address again."""
    with caplog.at_level(logging.WARNING, logger="server"):
        check_webhook_host(_with_hook("https://not-yet.example/calls"))
    assert "CALLS_WEBHOOK_URL's host not-yet.example cannot be resolved now" in caplog.text


async def test_a_webhook_host_that_does_not_answer_in_time_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The warning said "cannot be resolved now ()": a TimeoutError prints as nothing."""
    from tests.unit.test_notify_guard import FakeResolver

    class Silent(FakeResolver):
        async def resolve(self, host: str, port: int = 0, family: Any = 0) -> Any:
            await asyncio.sleep(10)

    with caplog.at_level(logging.WARNING, logger="server"):
        refusal = await server.webhook_host_refusal("https://slow.example/", Silent({}), 0.05)
    assert refusal is None
    assert "host slow.example cannot be resolved now (no answer within 0.05 s)" in caplog.text


@pytest.mark.parametrize(
    ("ttl", "longest_call", "warned"),
    [(1.0, 600, True), (3719.0, 600, True), (3720.0, 600, False), (7200.0, 86400, True)],
)
def test_a_record_ttl_shorter_than_a_call_is_warned(
    caplog: pytest.LogCaptureFixture, ttl: float, longest_call: int, warned: bool
) -> None:
    """Requests may ask for 120 s of ringing and 3600 s of talk; CALL_MAX_DURATION_S may make
    the default longer still (86400 s: a TTL of 2 h was not warned)."""
    settings = dataclasses.replace(
        Settings(), config_record_ttl_s=ttl, call_max_duration_s=longest_call
    )
    with caplog.at_level(logging.WARNING, logger="server"):
        server.warn_short_record_ttl(settings)
    assert ("records of calls still live will be pruned" in caplog.text) is warned


@pytest.mark.parametrize(("days", "warned"), [(0.0, True), (0.5, False), (30.0, False)])
def test_a_retention_of_zero_days_is_warned(
    caplog: pytest.LogCaptureFixture, days: float, warned: bool
) -> None:
    """CALL_DATA_RETENTION_DAYS=0, meant as "off": every call's conversation was erased at
    the reaper's next pass after it ended, without a word."""
    settings = dataclasses.replace(Settings(), call_data_retention_days=days)
    with caplog.at_level(logging.WARNING, logger="server"):
        server.warn_zero_retention(settings)
    said = "CALL_DATA_RETENTION_DAYS is 0: every call's transcript, summary and extracted"
    assert (said in caplog.text) is warned
    assert ("within REAPER_INTERVAL_S (30 s) of its end" in caplog.text) is warned


@pytest.mark.parametrize("sandbox", [True, False])
def test_safeguards_turned_off_are_warned_with_a_real_livekit(
    caplog: pytest.LogCaptureFixture, sandbox: bool
) -> None:
    off: dict[str, Any] = {
        "calls_webhook_allow_private": True,
        "campaign_enforce_calling_hours": False,
    }
    settings = dataclasses.replace(Settings(), **off, **({} if sandbox else REAL))
    with caplog.at_level(logging.WARNING, logger="server"):
        server.warn_disabled_safeguards(settings)
    warned = "CALLS_WEBHOOK_ALLOW_PRIVATE is on" in caplog.text
    assert warned is not sandbox
    assert ("CAMPAIGN_ENFORCE_CALLING_HOURS is off" in caplog.text) is not sandbox


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("wss://proj.livekit.cloud", False),
        ("https://livekit.example.com", False),
        ("ws://livekit.example.com:7880", True),
        ("http://10.0.0.5:7880", True),
        ("ws://127.0.0.1:7880", False),
        ("http://[::1]:7880", False),
        ("ws://LOCALHOST.:7880", False),
    ],
)
def test_a_livekit_url_without_encryption_is_warned(
    caplog: pytest.LogCaptureFixture, url: str, warned: bool
) -> None:
    """Every call's number and instructions go to LiveKit in the dispatch: over ws:// to
    another machine, in clear, with nothing said."""
    settings = dataclasses.replace(Settings(), **(REAL | {"livekit_url": url}))
    with caplog.at_level(logging.WARNING, logger="server"):
        server.warn_disabled_safeguards(settings)
    assert ("go unencrypted (use wss:// or https://)" in caplog.text) is warned


@pytest.fixture
def open_tmp_path() -> Iterator[Path]:
    """A directory other users may pass through (pytest's tmp_path is under a 0700 one)."""
    with reachable_directory() as path:
        yield path


def test_files_every_user_may_read_are_warned_of(
    open_tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An older release made config.json and calls.db 0644 (umask 022), kept on upgrade; the
    -wal and -shm SQLite makes beside a 0644 database are 0644 too (probe AV). Group access
    stays silent: `chmod 640` is how an agent of another user reads config.json."""
    settings = dataclasses.replace(
        Settings(),
        config_path=open_tmp_path / "config.json",
        calls_db_path=open_tmp_path / "calls.db",
    )
    copy = "config.json.corrupt-20261205T101010-ab12"  # set aside by an older release: 0644
    for name, mode in (
        ("config.json", 0o640),
        (copy, 0o644),
        ("calls.db", 0o644),
        ("calls.db-wal", 0o604),
    ):
        (open_tmp_path / name).write_text("")
        (open_tmp_path / name).chmod(mode)
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_open_files(settings)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3, warned
    # What each holds: config.json's copies no numbers nor transcripts, said they did.
    assert warned[0] == (
        f"{open_tmp_path / copy} (mode 0644) may be read by every user of this machine; it holds"
        " names, instructions and extra parameters: chmod o-rwx it"
    )
    assert warned[1] == (
        f"{open_tmp_path / 'calls.db'} (mode 0644) may be read by every user of this machine; it"
        " holds names, numbers, instructions and transcripts: chmod o-rwx it"
    )
    assert warned[2].startswith(f"{open_tmp_path / 'calls.db-wal'} (mode 0604)")
    caplog.clear()
    for name in (copy, "calls.db", "calls.db-wal"):
        (open_tmp_path / name).chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_open_files(settings)
    assert caplog.text == ""


@pytest.mark.parametrize("path", ["/dev/null", "/tmp"])  # noqa: S108 - what a user may set
def test_a_directory_or_device_named_as_a_file_is_not_advised_to_be_chmodded(
    caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """CONFIG_PATH=/dev/null or CALLS_DB_PATH=/tmp, refused at start-up as no regular file,
    was first warned of as readable by every user: "chmod o-rwx it", of /dev/null or /tmp."""
    for settings in (
        dataclasses.replace(Settings(), config_path=Path(path)),
        dataclasses.replace(Settings(), calls_db_path=Path(path)),
    ):
        with caplog.at_level(logging.WARNING, logger="server"):
            warn_open_files(settings)
    assert "chmod" not in caplog.text


@pytest.mark.parametrize(
    ("schedule", "warned"),
    [((5.0, 30.0, 120.0), "starts with 5, not 0"), ((0.0, 5.0), None), ((0.0,), None)],
)
def test_a_retry_schedule_whose_first_value_is_not_used_is_warned(
    caplog: pytest.LogCaptureFixture, schedule: tuple[float, ...], warned: str | None
) -> None:
    """`5,30,120`, the retries' delays as README's Customer webhooks lists them: the 5 was
    the first attempt's, at once whatever it says, and the 5 s retry was silently none."""
    settings = dataclasses.replace(Settings(), calls_webhook_retry_schedule=schedule)
    with caplog.at_level(logging.WARNING, logger="server"):
        server.warn_unused_first_retry_step(settings)
    if warned is None:
        assert caplog.text == ""
    else:
        assert warned in caplog.text
        assert "so 5 is not used (retries after: 30, 120 s); start it with 0" in caplog.text
