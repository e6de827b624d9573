"""README.md and .env.example document every setting and every route, as the code has them.

The names come from the code, never from a list kept here: the settings from the `Settings`
declaration (common/settings.py, one `setting(...)` per variable), the routes from the app that
`create_app` builds (its router and the OpenAPI document generated from its route
declarations). A setting or a route added without its documentation fails here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from common.settings import Settings, settings_from_env, variable
from handlers.openapi import DOCUMENT

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"

_BACKTICKED = re.compile(r"`([^`]+)`")
_VARIABLE = re.compile(r"[A-Z][A-Z0-9_]*")
_ROUTE = re.compile(r"(GET|POST|PUT|PATCH|DELETE) (/\S*)")


def settings_variables() -> dict[str, bool]:
    """Every setting's environment variable, and whether it is a secret (left out of repr)."""
    return {variable(f.name): not f.repr for f in dataclasses.fields(Settings)}


def section(markdown: str, title: str) -> str:
    """The text under the level-2 heading `title`, up to the next heading of any level."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^#{{2,}} |\Z)", markdown, re.M | re.S)
    assert match is not None, f"README.md has no '## {title}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in `text` (separator rows left out)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.fullmatch(r"[|\s:-]+", line):
            continue
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|"))])
    return rows


def configuration_table() -> dict[str, str]:
    """README's configuration table: each variable named in a row's first cell -> that row."""
    table: dict[str, str] = {}
    for cells in table_rows(section(README.read_text(), "Configuration")):
        for name in _BACKTICKED.findall(cells[0]):
            if _VARIABLE.fullmatch(name):
                table[name] = " | ".join(cells)
    return table


def readme_routes() -> set[tuple[str, str]]:
    """The routes README's API table lists: `METHOD /path` in a row's first cell."""
    routes = set()
    for cells in table_rows(section(README.read_text(), "API")):
        for text in _BACKTICKED.findall(cells[0]):
            match = _ROUTE.fullmatch(text)
            if match is not None:
                routes.add((match.group(1), match.group(2)))
    return routes


def env_example_lines() -> dict[str, str]:
    """.env.example's assignments, commented out or not: variable -> value as written."""
    lines = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match is not None:
            lines[match.group(1)] = match.group(2)
    return lines


def app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """Every route the app registers, from its router and from its OpenAPI document."""
    from handlers.webhooks import other_spelling
    from server import create_app

    settings = dataclasses.replace(
        Settings(), config_path=tmp_path / "config.json", calls_db_path=tmp_path / "calls.db"
    )
    app = create_app(settings)
    routes = set()
    # The webhook's path with a trailing slash is the same route, spelled as LiveKit may be told
    alias = other_spelling(settings.webhook_path)
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*") or route.resource is None:
            continue
        if route.resource.canonical == alias:
            continue
        routes.add((route.method, route.resource.canonical))
    spec: dict[str, Any] = app[DOCUMENT].spec()
    for path, operations in spec["paths"].items():
        routes.update((method.upper(), path) for method in operations)
    return routes


# ----------------------------------------------------------------------------- settings


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    missing = sorted(set(settings_variables()) - set(configuration_table()))
    assert not missing, f"README.md's configuration table lacks {', '.join(missing)}"


def test_the_readme_configuration_table_names_only_settings() -> None:
    unknown = sorted(set(configuration_table()) - set(settings_variables()))
    assert not unknown, f"README.md's configuration table names unknown settings: {unknown}"


def test_secrets_are_marked_in_the_readme() -> None:
    table = configuration_table()
    unmarked = sorted(
        name
        for name, secret in settings_variables().items()
        if secret and name in table and "secret" not in table[name].lower()
    )
    assert not unmarked, f"README.md does not mark these secrets as secret: {unmarked}"


def test_every_setting_is_in_env_example() -> None:
    missing = sorted(set(settings_variables()) - set(env_example_lines()))
    assert not missing, f".env.example lacks {', '.join(missing)}"


def test_env_example_changes_nothing_as_copied() -> None:
    """Every line is commented out: a copied .env.example gives the defaults."""
    values = {k: v for k, v in dotenv_values(ENV_EXAMPLE).items() if v is not None}
    assert settings_from_env(values) == Settings()


@pytest.mark.parametrize("name", [name for name, secret in settings_variables().items() if secret])
def test_env_example_holds_no_secret_value(name: str) -> None:
    value = env_example_lines().get(name, "")
    assert value == "" or "password" in value, f".env.example gives {name} a value"


# ----------------------------------------------------------------------------- routes


def test_every_route_is_in_the_readme(tmp_path: Path) -> None:
    missing = sorted(app_routes(tmp_path) - readme_routes())
    assert not missing, "README.md's API table lacks " + ", ".join(f"{m} {p}" for m, p in missing)


def test_the_readme_lists_only_routes_that_exist(tmp_path: Path) -> None:
    stale = sorted(readme_routes() - app_routes(tmp_path))
    assert not stale, "README.md's API table lists " + ", ".join(f"{m} {p}" for m, p in stale)


def test_the_readme_says_what_a_not_dialled_attempt_is() -> None:
    """A campaign recipient's attempts may show `not_dialled`, and such an attempt is placed
    again beyond max_attempts and retry.on: the README said neither."""
    from common.storage import campaign_programs as cp

    text = " ".join(README.read_text(encoding="utf-8").split())
    assert f"status `{cp.NOT_DIALLED}`" in text
    assert f"placed again {cp.NOT_DIALLED_RETRY_S:g} s later" in text
    assert f"after {cp.MAX_NOT_DIALLED} of them the recipient is `failed`" in text


def test_the_readme_says_the_default_model_is_warned_of_at_agent_start() -> None:
    """`agent start` warns of the default OPENAI_MODEL (LiveKit did not evaluate its
    answering-machine detection with it) on every start: the README's OPENAI_MODEL row and
    its list of what the agent warns of said nothing of it."""
    from agent.cli import amd_evaluated

    row = configuration_table()["OPENAI_MODEL"]
    default = Settings().openai_model
    assert not amd_evaluated(default)
    assert f"`{default}` is not" in row and "`agent start` warning" in row
    for named in re.findall(r"`(gpt-[^`]+)` are", row) + ["gpt-4.1-mini", "gpt-4o"]:
        assert amd_evaluated(named), named
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert "an `OPENAI_MODEL` that LiveKit did not evaluate its answering-machine detection" in text


def _readme_stdlib_verified() -> Any:
    """The README's `verified`, the customer webhook check with the standard library alone."""
    text = README.read_text(encoding="utf-8")
    after = text.split("Without the package, the same check with the standard library:", 1)[1]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match is not None
    namespace: dict[str, Any] = {}
    exec(match.group(1), namespace)  # noqa: S102 - the README's own snippet
    return namespace["verified"]


def test_the_readmes_stdlib_webhook_check_is_false_for_what_the_package_refuses() -> None:
    """It raised (KeyError, ValueError, TypeError) on a post without its headers, a timestamp
    that is no number or a signature that is not ASCII: a 500 and a traceback in the
    receiver for what anyone may post to it, where the package it is "the same check" as
    says WebhookVerificationError (401 in the README's receiver)."""
    import base64
    import time
    from datetime import UTC, datetime

    from common.notify.signing import sign

    verified = _readme_stdlib_verified()
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"type":"call.ended"}'
    good = sign(secret, "msg_call-1_1", datetime.now(UTC), body)
    assert verified(secret, good, body)
    assert not verified(secret, good, body + b" ")
    now = str(int(time.time()))
    for headers in (
        {},
        {**good, "webhook-timestamp": "abc"},
        {**good, "webhook-timestamp": "\u00b2"},  # a digit to str.isdigit, none to int()
        {**good, "webhook-signature": "v1,\u00e9"},
        {**good, "webhook-id": "\udce9"},  # a byte not UTF-8, as aiohttp decodes it
        {"webhook-id": "m", "webhook-timestamp": now},
    ):
        assert verified(secret, headers, body) is False, headers


def test_the_quickstart_says_which_python_it_needs() -> None:
    """pyproject.toml requires a Python the README never named: on a machine whose python3
    is older (Ubuntu 22.04's 3.10), `make run` stopped in pip's "requires a different
    Python", with no word in the README of what to install or how to name another one."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^requires-python = ">=(3\.\d+)"$', pyproject, re.M)
    assert match is not None
    quickstart = section(README.read_text(), "Quickstart")
    assert f"Python {match.group(1)} or later" in quickstart
    assert "make clean && make run PYTHON=" in quickstart


def test_the_readmes_stdlib_webhook_check_takes_a_secret_without_its_padding() -> None:
    """The server takes a CALLS_WEBHOOK_SECRET whose base64 has no `=` padding (as the
    standardwebhooks package does), and signs with it; the README's standard-library check
    raised binascii.Error ("Incorrect padding") on every post with that secret, a receiver
    built from it answering each event 500 where the package verified it."""
    import base64
    from datetime import UTC, datetime

    from common.notify.signing import parse_secret, sign

    verified = _readme_stdlib_verified()
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode().rstrip("=")
    assert parse_secret(secret) == secret  # the server takes it
    body = b'{"type":"call.ended"}'
    good = sign(secret, "msg_call-1_1", datetime.now(UTC), body)
    assert verified(secret, good, body)
    assert not verified(secret, good, body + b" ")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_to_its_own_sections_resolve() -> None:
    """Each `[...](#anchor)` names a heading README has: "see [Outcomes](#outcomes)" in the
    AGENT_JOIN_TIMEOUT_S row led nowhere (the statuses are under `GET /calls/{call_id}`)."""
    text = README.read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+\s+(.*)$", text, re.M)}
    assert anchors >= {"get-callscall_id", "customer-webhooks"}  # the rule reads them right
    broken = sorted(set(re.findall(r"\]\(#([^)]+)\)", text)) - anchors)
    assert broken == []


def test_the_quickstart_says_what_ring_s_a_call_no_agent_came_to_shows() -> None:
    """The Quickstart said every sandbox call's ring_s is about a second over the table's
    figures, but for 0480 and 0503; 0404 ("answered after 2 s") shows ring_s 20 s, talk_s 0
    and answered_at null (no agent told of the answer), which read as a README mistake or
    a server bug. It now names 0404 among the exceptions, with what it shows."""
    quickstart = " ".join(section(README.read_text(), "Quickstart").split())
    assert "`0404`'s answer is told by no agent, so its `ring_s` is its whole time" in quickstart


def test_the_agents_stop_is_described_with_the_times_the_code_has() -> None:
    """README tells operators how long a stopping worker may take (its supervisor must wait
    that long, or live calls end mid-sentence): the drain, the job's exit time and when a
    job's undelivered reports reach the spool are the code's own figures."""
    from livekit.agents.worker import DRAIN_TIMEOUT

    from agent.reporting import SPOOL_AFTER_S
    from agent.worker import SHUTDOWN_PROCESS_TIMEOUT_S

    text = " ".join(README.read_text().split())
    assert DRAIN_TIMEOUT == 3600
    assert "waits up to an hour (livekit-agents' drain timeout)" in text
    assert f"gives each call's job up to {SHUTDOWN_PROCESS_TIMEOUT_S:.0f} s" in text
    assert f"longest call plus {SHUTDOWN_PROCESS_TIMEOUT_S:.0f} s" in text
    assert f"from {SPOOL_AFTER_S:.0f} s into a job's last flush" in text


def test_the_readme_says_the_agent_takes_its_call_from_its_room() -> None:
    """README said the agent "takes the call id from its dispatch metadata": it takes its
    room's name, and refuses a dispatch whose metadata names another call, leaving that room
    as it is (agent.worker._leave_alone: it said "hangs up", which the job does not)."""
    from agent.config_source import NoCallConfigError, resolve_call_id
    from common.contracts import DispatchMetadata

    assert resolve_call_id(DispatchMetadata(), "call-a") == "call-a"
    with pytest.raises(NoCallConfigError):
        resolve_call_id(DispatchMetadata(call_id="call-b"), "call-a")
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert "takes the call id from its dispatch metadata" not in text
    assert "its call is its room's (the server names each call's room after the call;" in text
    assert (
        "a dispatch whose metadata names another call is refused, and the job leaves that room"
        " alone" in text
    )


def test_openapi_says_a_502_dial_refused_with_a_sip_status_ends_as_it_maps(
    tmp_path: Path,
) -> None:
    """POST /calls/outbound's 502 said the call "is recorded as failed": a dial LiveKit
    refused with SIP 486 or 480 is recorded busy / no_answer (b60b095), as README says."""
    from common.calls.outcomes import status_for_sip_code
    from server import create_app

    settings = dataclasses.replace(
        Settings(), config_path=tmp_path / "config.json", calls_db_path=tmp_path / "calls.db"
    )
    spec: dict[str, Any] = create_app(settings)[DOCUMENT].spec()
    said = spec["paths"]["/calls/outbound"]["post"]["responses"]["502"]["description"]
    for code in (486, 480):
        status = status_for_sip_code(code)
        assert status is not None and f"{code} {status.value}" in said, said
    call_id = spec["components"]["schemas"]["ErrorBody"]["properties"]["call_id"]
    assert "busy, no_answer" in call_id["description"]


def test_the_readme_says_how_long_a_spooled_report_stays_on_an_agent_host() -> None:
    """README's retry list said a spooled file is sent again "until the server takes it", its
    personal-data list that it stays "until delivered": a file is also removed once refused
    for good, and unsent once older than the worker's CALL_DATA_RETENTION_DAYS (an hour at
    least, 2eb0d94). The figures are the code's."""
    from agent.spool import MAX_FILES, RESEND_INTERVAL_S, STALE_TEMP_S
    from agent.worker import spool_max_age_s

    text = " ".join(README.read_text(encoding="utf-8").split())
    assert spool_max_age_s(dataclasses.replace(Settings(), call_data_retention_days=0)) == 3600
    assert f"start and every {RESEND_INTERVAL_S:.0f} s, oldest first" in text
    assert (
        "until the server takes it (or refuses it for good; a file older than the worker's"
        " `CALL_DATA_RETENTION_DAYS`, an hour at least, is removed unsent" in text
    )
    assert f"a full spool ({MAX_FILES:,} files)" in text
    assert f"is removed by the worker {STALE_TEMP_S / 60:.0f} minutes later" in text
    assert "`AGENT_REPORT_SPOOL_DIR`, until delivered (see above)" not in text
    assert (
        "`AGENT_REPORT_SPOOL_DIR`, until delivered (or refused for good), and no longer than"
        " the worker's own `CALL_DATA_RETENTION_DAYS` (an hour at least" in text
    )
    assert "agents retry a report for 4 minutes" not in text


def test_the_readme_says_pythontzpath_chooses_the_zone_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Campaign windows read the newer of the system's zone database and the tzdata
    package's, unless PYTHONTZPATH names one (bfe8463): README said the newer, always."""
    import zoneinfo

    from common.campaigns import windows

    monkeypatch.setenv("PYTHONTZPATH", "/nowhere")
    tzpath = zoneinfo.TZPATH
    monkeypatch.setattr(windows, "packaged_tz_version", lambda: "9999z")
    windows.use_newest_zone_rules()
    assert zoneinfo.TZPATH == tzpath  # the operator's choice stands
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert "with `PYTHONTZPATH` set, from the database it names" in text


def test_the_readme_says_a_campaigns_deliveries_come_a_page_at_a_time(tmp_path: Path) -> None:
    """GET /campaigns/{id}/deliveries answers a page at a time (5c923ca); the Customer
    webhooks section said it "lists each delivery", as if all at once."""
    from server import create_app

    settings = dataclasses.replace(
        Settings(), config_path=tmp_path / "config.json", calls_db_path=tmp_path / "calls.db"
    )
    spec: dict[str, Any] = create_app(settings)[DOCUMENT].spec()
    route = spec["paths"]["/campaigns/{campaign_id}/deliveries"]["get"]
    assert {"limit", "after"} <= {p["name"] for p in route["parameters"]}
    text = " ".join(section(README.read_text(encoding="utf-8"), "Customer webhooks").split())
    assert (
        "for a campaign's own events, a page at a time: `?limit=`, `?after=` its `next_after`)"
        " lists each delivery" in text
    )
