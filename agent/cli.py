"""`python -m agent dev|start|console|describe`.

`describe` is ours: it prints the session plan the agent would build for a call, offline and
without API keys. Every other command goes to livekit-agents' CLI, after checking that the
settings it needs are present (one clear line and exit code 2 otherwise, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import math
import os
import re
import socket
import sys
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from agent.config_source import (
    NoCallConfigError,
    SelectedConfig,
    read_call_record,
    resolve_call_id,
    select_config,
)
from agent.plan import plan_session
from agent.spool import ReportSpool
from common.calls.models import CallRecord
from common.config_store.store import ConfigStore
from common.contracts import DispatchMetadata
from common.settings import (
    DEV_API_KEY,
    DEV_API_SECRET,
    Settings,
    SettingsError,
    checkout_unread_warning,
    dotenv_warnings,
    ipv6_only_warning,
    load_settings,
)
from common.times import iso_time

# The checkout this worker runs from: its `.env` and config.json are read from the working
# directory, which a systemd unit without WorkingDirectory does not set to it.
CHECKOUT = Path(__file__).resolve().parent.parent

EXIT_USAGE = 2

# Per command, the settings the worker cannot run without. `console` talks to the local
# terminal (a fake job, no LiveKit server), so it needs only the model providers' keys.
_MODEL_KEYS = ("OPENAI_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY")
_LIVEKIT_KEYS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
REQUIRED_SETTINGS: dict[str, tuple[str, ...]] = {
    "start": _LIVEKIT_KEYS + _MODEL_KEYS,
    "dev": _LIVEKIT_KEYS + _MODEL_KEYS,
    # One job in a given room: without them it hung for ever, saying nothing.
    "connect": _LIVEKIT_KEYS + _MODEL_KEYS,
    "console": _MODEL_KEYS,
}


# Said after the missing settings when LIVEKIT_URL is one: `make agent` run beside a first
# `make run` (the embedded sandbox, LIVEKIT_URL unset) read as if calls needed a worker and
# LiveKit credentials, when the sandbox plays the agent itself.
SANDBOX_NEEDS_NO_WORKER = (
    ". Without LIVEKIT_URL, `make run` places calls on its embedded sandbox, which plays the"
    " agent itself: no worker is needed to try calls. This worker is for a real LiveKit"
    " (README: Running with a real LiveKit project)"
)


def missing_settings(settings: Settings, command: str) -> list[str]:
    """Names of the settings `command` needs that are unset (sandbox dev credentials count)."""
    present = {
        "LIVEKIT_URL": settings.livekit_url is not None,
        # The sandbox's dev credentials cannot authenticate against a real LiveKit.
        "LIVEKIT_API_KEY": settings.livekit_api_key != DEV_API_KEY,
        "LIVEKIT_API_SECRET": settings.livekit_api_secret != DEV_API_SECRET,
        "OPENAI_API_KEY": bool(settings.openai_api_key),
        "DEEPGRAM_API_KEY": bool(settings.deepgram_api_key),
        "CARTESIA_API_KEY": bool(settings.cartesia_api_key),
    }
    return [name for name in REQUIRED_SETTINGS.get(command, ()) if not present[name]]


# The port of livekit-agents' health/status server under `start` (AgentServer's production
# default; `dev` takes any free one).
HEALTH_PORT = 8081


def health_port_problem(host: str, port: int = HEALTH_PORT) -> str | None:
    """Why `start`'s health/status server cannot listen on `host`:`port`, or None. Taken (a
    second worker on the host), livekit-agents logged 'worker failed' with a traceback in a
    JSON line and exited 0: a supervisor restarting failed workers left it down."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _name, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
            probe.bind(address)
    except OSError as exc:
        # Only a port taken is another worker's doing: an address not of this host (a typo,
        # another machine's) was asked "is another agent worker running on this host?".
        hint = (
            "is another agent worker running on this host? (AGENT_HTTP_HOST sets its address)"
            if exc.errno == errno.EADDRINUSE
            else "set AGENT_HTTP_HOST to an address of this host (127.0.0.1, or 0.0.0.0 for"
            " every one), or a name that resolves to one"
        )
        return (
            f"cannot listen on {host or '*'}:{port} (the worker's health/status server):"
            f" {exc.strerror or exc}; {hint}"
        )
    return None


# How long `sandbox_problem` waits for LIVEKIT_URL's answer: no answer is no verdict.
SANDBOX_PROBE_TIMEOUT_S = 2.0
# What of that answer is read: a calls server's JSON error is a few hundred bytes.
PROBE_MAX_BYTES = 64 * 1024


def sandbox_problem(livekit_url: str, timeout_s: float = SANDBOX_PROBE_TIMEOUT_S) -> str | None:
    """Why a worker cannot register at `livekit_url`, when it is this project's sandbox
    (`python -m sandbox`, or a server's embedded one) or a calls server, or None. The sandbox
    plays the agent's part itself and hosts no worker: livekit-agents retried its 404 on
    /agent for ~2 minutes (16 tries), a WARNING each naming only the status, then exited;
    and so it did at a calls server's URL (PUBLIC_BASE_URL, or LiveKit's webhook URL, taken
    for LiveKit's). Any other answer, or none (LiveKit not up yet), is left to the worker's
    own retries."""
    # In a thread, waited for at most `timeout_s`: a name lookup is bounded by no timeout.
    found: list[str | None] = [None]

    def probe() -> None:
        found[0] = _sandbox_problem(livekit_url, timeout_s)

    prober = threading.Thread(target=probe, name="sandbox-probe", daemon=True)
    prober.start()
    prober.join(timeout_s)
    return found[0]


def _sandbox_problem(livekit_url: str, timeout_s: float) -> str | None:
    import urllib.error
    import urllib.request

    from sandbox.server import AGENT_PATH, SANDBOX_HEADER

    base = re.sub(r"^ws", "http", livekit_url.rstrip("/"), flags=re.IGNORECASE)
    if not base.lower().startswith(("http://", "https://")):
        return None
    # No proxy from the environment: the worker's websocket takes none either.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        try:
            with opener.open(base + AGENT_PATH, timeout=timeout_s) as answer:
                status, headers, body = answer.status, answer.headers, answer.read(PROBE_MAX_BYTES)
        except urllib.error.HTTPError as exc:
            status, headers, body = exc.code, exc.headers, exc.read(PROBE_MAX_BYTES)
    except (OSError, ValueError):  # refused, timed out, no such host, a URL urllib refuses
        return None
    if headers is not None and headers.get(SANDBOX_HEADER) == "no-agent-workers":
        return (
            f"LIVEKIT_URL ({livekit_url}) is this project's sandbox, which plays the agent's"
            " part itself and hosts no agent worker (calls placed through it need none): point"
            " LIVEKIT_URL at a real LiveKit server (`livekit-server --dev` locally), the call"
            " server's too"
        )
    if status == 404 and _calls_server_error(body):
        return (
            f"LIVEKIT_URL ({livekit_url}) is a calls server (this project's API answers there),"
            " not a LiveKit server: the worker registers with LiveKit, which dispatches the"
            " calls to it; set LIVEKIT_URL to the LiveKit server's URL, the one the calls"
            " server's LIVEKIT_URL has"
        )
    return None


def _calls_server_error(body: bytes) -> bool:
    """Whether `body` is a calls server's JSON error (handlers.schemas.ErrorBody: `status`
    "error", an `error` text and a `details` list), which no LiveKit answers."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return (
        isinstance(doc, dict)
        and doc.get("status") == "error"
        and isinstance(doc.get("error"), str)
        and isinstance(doc.get("details"), list)
    )


def start_warnings(settings: Settings, *, check_spool: bool = True) -> list[str]:
    """The settings that start but are likely mistakes, as the server warns of them: `.env`'s
    (a name close to a setting's, one given twice, `${` not expanded) and a LiveKit secret
    shorter than LiveKit's. The server's own (the SIP trunk's) are not the worker's.
    `check_spool`: whether AGENT_REPORT_SPOOL_DIR is usable, which makes it if missing: not
    for a command that stops for a missing setting (it left an empty `agent-reports/` in
    whatever directory `make agent` was first tried from)."""
    warnings = dotenv_warnings()
    # Its .env only: a worker reads the server's config.json where it finds it, and falls
    # back to each call's snapshot (the checkout's config.json, made by `make run`, is no
    # sign of a mistake on an agent host).
    unread = checkout_unread_warning(CHECKOUT, [], "agent worker")
    if unread is not None:  # first: the missing settings said below may be in that .env
        warnings.insert(0, unread)
    if (short := settings.short_secret_warning()) is not None:
        warnings.append(short)
    warnings += voice_id_warnings(settings)
    if not amd_evaluated(settings.openai_model):
        warnings.append(
            "OPENAI_MODEL is not among the models LiveKit evaluated its answering-machine"
            " detection with (livekit.agents.voice.amd's EVALUATED_LLM_MODELS): voicemail"
            " verdicts may be less reliable; set OPENAI_MODEL to one it evaluated, such as"
            " gpt-4.1-mini or gpt-4o (the default, gpt-4o-mini, is not one)"
        )
    if check_spool and (spool := ReportSpool(settings.agent_report_spool_dir).problem()):
        warnings.append(spool)
    if (ipv6_only := ipv6_only_warning("AGENT_HTTP_HOST", settings.agent_http_host)) is not None:
        warnings.append(ipv6_only)  # its health/status server, which a container's checks ask
    return warnings


# What Cartesia's voice ids look like (a UUID, as play.cartesia.ai and its API show them).
_CARTESIA_VOICE_ID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def voice_id_warnings(settings: Settings) -> list[str]:
    """The voices that are no Cartesia voice id: a voice's name ("Katie") or its page's URL
    pasted in its place was taken, and every call speaking with it failed at its first words
    (the callee heard nothing, and the call ended failed). Warnings, without the values."""
    problem = (
        "is not a Cartesia voice id (8-4-4-4-12 hexadecimal digits, as play.cartesia.ai shows"
        " them; not a voice's name or its page's address): calls speaking with it fail at their"
        " first words"
    )
    warnings = []
    if not _CARTESIA_VOICE_ID.fullmatch(settings.cartesia_voice_id):
        warnings.append(f"CARTESIA_VOICE_ID {problem}")
    for language, voice in settings.cartesia_voice_ids:
        if not _CARTESIA_VOICE_ID.fullmatch(voice):
            warnings.append(f"CARTESIA_VOICE_IDS: the voice for {language} {problem}")
    return warnings


def amd_evaluated(model: str) -> bool:
    """Whether LiveKit's answering-machine detection was evaluated with `model`, by its own
    rule (amd.detector._warn_if_not_evaluated: the name, or part of an evaluated one's)."""
    from livekit.agents.voice.amd.detector import EVALUATED_LLM_MODELS  # (heavy: only here)

    name = model.lower()
    return any(name == known.lower() or name in known.lower() for known in EVALUATED_LLM_MODELS)


class DescribeError(Exception):
    """`describe` cannot answer; the message is printed as is."""


def describe_call(
    settings: Settings,
    call_id: str,
    metadata_json: str | None = None,
    room_created_at: float | None = None,
) -> dict[str, Any]:
    """The plan the agent would build for `call_id`, as a JSON-ready dict, chosen as the
    worker chooses (`select_config`).

    `metadata_json` is the dispatch metadata (as the server sends it); without it, the config
    stored with the call in the calls database stands for the dispatch's snapshot (the server
    stores the very snapshot it dispatches). `room_created_at` defaults to the call's creation
    in that database (its room is created after it), else to now.
    """
    snapshot = None
    if metadata_json is not None:
        snapshot = _dispatched_snapshot(metadata_json, call_id)
    store = ConfigStore(
        settings.config_path, record_ttl_s=settings.config_record_ttl_s, read_only=True
    )
    try:
        record, no_record = asyncio.run(read_call_record(store, call_id))
    except ValueError as exc:  # no call id at all ("", bytes that are not text)
        raise DescribeError(f"--call-id: {exc}") from None
    unreachable = None  # the database is only a help: config.json may answer without it
    try:
        call = asyncio.run(_call_in_database(settings, call_id))
    except DescribeError as exc:
        call, unreachable = None, str(exc)
    if room_created_at is None:
        room_created_at = call.created_at if call is not None else time.time()
    # Only without --metadata: metadata given without a config that reads is what the worker
    # would be dispatched with (no snapshot), not the config the calls database stored.
    from_database = metadata_json is None and call is not None and call.config is not None
    if from_database:
        assert call is not None and call.config is not None  # noqa: S101 - from_database
        snapshot = call.config
    try:
        selected = select_config(call_id, record, snapshot, room_created_at, no_record=no_record)
    except NoCallConfigError as exc:
        if from_database and call is not None and call.data_erased_at is not None:
            # Its name and instructions were erased on request: that config is no session.
            # It said "unknown call: ... dispatch snapshot is invalid: caller_name must be
            # 1 to 200 characters", for a call the calls database has.
            raise DescribeError(
                f"call {call_id!r} is {call.status.value} and its personal data was erased"
                f" at {iso_time(call.data_erased_at)}: the"
                " name, instructions and messages it was placed with are gone, so there is no"
                " session to describe"
            ) from None
        # With --metadata, the job that dispatch would start is what is described: the worker
        # refuses it. It was "unknown call", for a call the calls database has.
        what = "unknown call" if metadata_json is None else "the agent would refuse this job"
        raise DescribeError(
            f"{what}: {exc} ({_where(settings)})" + (f"; {unreachable}" if unreachable else "")
        ) from None
    if from_database and selected.source == "dispatch-metadata":
        assert call is not None  # noqa: S101 - from_database
        selected = SelectedConfig(
            "calls-db",
            selected.config,
            f"{selected.reason}: the call is {call.status.value}, and this is the configuration"
            " stored with the call when it was placed, the snapshot its dispatch carried",
        )
    reason = selected.reason
    if unreachable is not None:
        reason += f" ({unreachable}: the room's creation was taken as now)"
    plan = plan_session(selected.config, settings, call_id=call_id, source=selected.source)
    return {"reason": reason, **plan.to_dict()}


def _dispatched_snapshot(metadata_json: str, call_id: str) -> dict[str, Any] | None:
    """--metadata's config snapshot, refused as the worker refuses a dispatch naming another
    call (it would build this room's session from that call's config)."""
    try:
        parsed = json.loads(metadata_json)
    except ValueError as exc:
        raise DescribeError(f"--metadata is not valid JSON: {exc}") from None
    except RecursionError:
        raise DescribeError("--metadata is not valid JSON: nested too deeply") from None
    if not isinstance(parsed, dict):
        raise DescribeError("--metadata must be a JSON object")
    metadata = DispatchMetadata.parse(metadata_json)
    try:
        resolve_call_id(metadata, call_id)
    except NoCallConfigError as exc:
        raise DescribeError(f"the agent would refuse this job: {exc}") from None
    return metadata.config


def _where(settings: Settings) -> str:
    """Where it looked, as absolute paths, with a hint when neither file is there: run from
    another directory, the relative defaults named files that do not exist (probe AO)."""
    config = os.path.abspath(settings.config_path)
    if settings.database_url is not None:
        return f"config file {config}, calls database DATABASE_URL"
    database = os.path.abspath(settings.calls_db_path)
    where = f"config file {config}, calls database {database}"
    if not settings.config_path.exists() and not settings.calls_db_path.exists():
        where += (
            "; neither exists: run it from the server's directory (where its .env is), or set"
            " CONFIG_PATH and CALLS_DB_PATH as the server has them"
        )
    return where


async def _call_in_database(settings: Settings, call_id: str) -> CallRecord | None:
    """The call as the calls database has it (PostgreSQL with DATABASE_URL, else SQLite),
    or None when there is none (a missing calls.db is not created) or it does not know it."""
    from common.storage.base import DatabaseError  # not imported by the worker's commands
    from common.storage.selected import open_store

    if settings.database_url is None and not settings.calls_db_path.is_file():
        return None
    try:
        db = await open_store(settings, migrate=False)  # a look: no schema change
    except DatabaseError as exc:
        raise DescribeError(f"cannot read the calls database: {exc}") from None
    try:
        return await db.get_call(call_id, with_timeline=False)
    finally:
        await db.close()


def _epoch_seconds(text: str) -> float:
    """--room-created-at: a moment, in seconds since the epoch. `nan` compares false with
    every record's time (each then read as written before the room, `inf` too), and 0 or
    less is no room's creation (the worker reads 0 as unknown)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a moment in seconds since the epoch (e.g. 1795676240.2), not {text!r}"
        )
    return value


def describe_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent describe",
        description="Print, as JSON, the session plan the agent would build for a call.",
    )
    parser.add_argument("--call-id", required=True, help="the call id (= room name)")
    parser.add_argument(
        "--metadata", help='dispatch metadata JSON: {"call_id", "config", "phone_number"}'
    )
    parser.add_argument(
        "--room-created-at",
        type=_epoch_seconds,
        help="room creation time, epoch seconds (default: the call's creation in the calls"
        " database, else now)",
    )
    args = parser.parse_args(argv)
    try:
        # Without the start-up check of CONFIG_PATH's file: describe only reads it, and says
        # what a job would do with a config.json it cannot read (use the snapshot).
        settings = load_settings(config_file_read=False)
        doc = describe_call(settings, args.call_id, args.metadata, args.room_created_at)
    except (SettingsError, DescribeError) as exc:
        print(f"agent describe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(json.dumps(doc, indent=2, ensure_ascii=False), flush=True)
    except BrokenPipeError:
        # The reader stopped reading (`| head`): no traceback for that. Python flushes stdout
        # once more at exit, which would raise again: it goes to /dev/null instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


OWN_COMMANDS_HELP = """\
Commands of this project (besides livekit-agents' own, listed below):
  describe   Print the session plan the agent would build for a call, as JSON, offline:
             python -m agent describe --call-id <call id>   (--help for its options)
"""


# livekit-agents' options for the LiveKit connection, and the settings they stand for.
CONNECTION_OPTIONS = {
    "--url": "LIVEKIT_URL",
    "--api-key": "LIVEKIT_API_KEY",
    "--api-secret": "LIVEKIT_API_SECRET",
}


def options_as_environment(args: list[str], environ: MutableMapping[str, str]) -> None:
    """Put livekit-agents' --url, --api-key and --api-secret into `environ` as the settings
    they stand for, so that the worker, its checks and its jobs all use them. The options
    went to livekit-agents alone: the worker registered with them, while its jobs signed
    their reports with the environment's key and secret (after a rotation, an old .env): the
    server refused every report (401), and calls kept no answer, transcript or analysis."""
    for index, arg in enumerate(args):
        if arg == "--":
            return
        name, equals, value = arg.partition("=")
        if name not in CONNECTION_OPTIONS:
            continue
        if not equals:
            if index + 1 >= len(args):
                continue  # livekit-agents' CLI says what is missing
            value = args[index + 1]
        environ[CONNECTION_OPTIONS[name]] = value


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["describe"]:
        return describe_main(args[1:])
    if not args or args[0] in ("-h", "--help"):
        print(OWN_COMMANDS_HELP)
        args = ["--help"]
    options_as_environment(args, os.environ)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    command = args[0] if args else ""
    # Asking for help needs no keys.
    missing = [] if "--help" in args else missing_settings(settings, command)
    if command in REQUIRED_SETTINGS and "--help" not in args:
        # What the server warns of at its start, for this worker's own .env (often on a host
        # with no server): a misspelt name is read as unset, `${...}` is taken as written.
        for warning in start_warnings(settings, check_spool=not missing):
            print(f"agent: warning: {warning}", file=sys.stderr)
    connects = command in ("start", "dev", "connect") and "--help" not in args
    # Set by hand to the sandbox's development pair (copied from a sandbox's .env), it
    # was said "missing", though it was set.
    dev = {"LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"} & set(missing)
    if connects and dev and settings.livekit_url is not None:
        # LIVEKIT_URL pointed at `make run`'s sandbox, with its keys (the defaults): told to
        # set a LiveKit's key and secret and the providers' keys, and only once all were set
        # that the URL was the sandbox, where no worker is needed.
        problem = sandbox_problem(settings.livekit_url)
        if problem is not None:
            print(f"agent: {problem}", file=sys.stderr)
            return EXIT_USAGE
    if missing:
        print(
            f"agent: cannot run {command!r}: missing {', '.join(missing)} "
            "(set in the environment or .env"
            + (
                "; the sandbox's development LiveKit key and secret, the defaults, cannot be"
                " used with a real LiveKit)"
                if dev
                else ")"
            )
            + (SANDBOX_NEEDS_NO_WORKER if "LIVEKIT_URL" in missing else ""),
            file=sys.stderr,
        )
        return EXIT_USAGE

    if connects and settings.livekit_url is not None:  # unset: missing_settings said so
        problem = sandbox_problem(settings.livekit_url)
        if problem is not None:
            print(f"agent: {problem}", file=sys.stderr)
            return EXIT_USAGE
    if command == "start" and "--help" not in args:
        problem = health_port_problem(settings.agent_http_host)
        if problem is not None:
            print(f"agent: {problem}", file=sys.stderr)
            return EXIT_USAGE

    # Imported here so `describe` and the checks above never load livekit-agents.
    from agent.worker import run_worker

    sys.argv = [sys.argv[0], *args]  # livekit-agents' CLI parses sys.argv
    return run_worker(settings)
