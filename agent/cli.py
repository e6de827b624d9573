"""`python -m agent dev|start|console|describe`.

`describe` is ours: it prints the session plan the agent would build for a call, offline and
without API keys. Every other command goes to livekit-agents' CLI, after checking that the
settings it needs are present (one clear line and exit code 2 otherwise, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from agent.config_source import (
    NoCallConfigError,
    SelectedConfig,
    load_call_record,
    select_config,
)
from agent.plan import plan_session
from common.config_store.model import CallConfig
from common.config_store.store import ConfigStore
from common.contracts import DispatchMetadata
from common.settings import (
    DEV_API_KEY,
    DEV_API_SECRET,
    Settings,
    SettingsError,
    load_settings,
)

EXIT_USAGE = 2

# Per command, the settings the worker cannot run without. `console` talks to the local
# terminal (a fake job, no LiveKit server), so it needs only the model providers' keys.
_MODEL_KEYS = ("OPENAI_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY")
_LIVEKIT_KEYS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
REQUIRED_SETTINGS: dict[str, tuple[str, ...]] = {
    "start": _LIVEKIT_KEYS + _MODEL_KEYS,
    "dev": _LIVEKIT_KEYS + _MODEL_KEYS,
    "console": _MODEL_KEYS,
}


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


class DescribeError(Exception):
    """`describe` cannot answer; the message is printed as is."""


def describe_call(
    settings: Settings,
    call_id: str,
    metadata_json: str | None = None,
    room_created_at: float | None = None,
) -> dict[str, Any]:
    """The plan the agent would build for `call_id`, as a JSON-ready dict.

    `metadata_json` is the dispatch metadata (as the server sends it); `room_created_at`
    defaults to now, i.e. a room created at the moment of asking.
    """
    snapshot = None
    if metadata_json is not None:
        try:
            parsed = json.loads(metadata_json)
        except ValueError as exc:
            raise DescribeError(f"--metadata is not valid JSON: {exc}") from None
        except RecursionError:
            raise DescribeError("--metadata is not valid JSON: nested too deeply") from None
        if not isinstance(parsed, dict):
            raise DescribeError("--metadata must be a JSON object")
        snapshot = DispatchMetadata.parse(metadata_json).config
    store = ConfigStore(settings.config_path, record_ttl_s=settings.config_record_ttl_s)
    record = asyncio.run(load_call_record(store, call_id))
    created_at = time.time() if room_created_at is None else room_created_at
    try:
        selected = select_config(call_id, record, snapshot, created_at)
    except NoCallConfigError as exc:
        stored = asyncio.run(_stored_config(settings, call_id))
        if stored is None:
            raise DescribeError(
                f"unknown call: {exc} (config file {settings.config_path},"
                f" calls database {settings.calls_db_path})"
            ) from None
        selected = stored
    plan = plan_session(selected.config, settings, call_id=call_id, source=selected.source)
    return {"reason": selected.reason, **plan.to_dict()}


async def _stored_config(settings: Settings, call_id: str) -> SelectedConfig | None:
    """The config kept with the call in the calls database (its config.json record is gone
    once the call is over), or None when the database does not know the call."""
    from common.storage.base import DatabaseError
    from common.storage.sqlite import SqliteCallStore

    if not settings.calls_db_path.is_file():
        return None
    try:
        db = await SqliteCallStore.open(settings.calls_db_path)
    except DatabaseError as exc:
        raise DescribeError(f"cannot read {settings.calls_db_path}: {exc}") from None
    try:
        call = await db.get_call(call_id, with_timeline=False)
    finally:
        await db.close()
    if call is None or call.config is None:
        return None
    return SelectedConfig(
        "calls-db",
        CallConfig.from_record(call.config),
        f"the call is {call.status.value}: its config.json record is gone, so this is the"
        " configuration stored with the call when it was placed",
    )


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
        type=float,
        help="room creation time, epoch seconds (default: now)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["describe"]:
        return describe_main(args[1:])
    if not args or args[0] in ("-h", "--help"):
        print(OWN_COMMANDS_HELP)
        args = ["--help"]
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    command = args[0] if args else ""
    # Asking for help needs no keys.
    missing = [] if "--help" in args else missing_settings(settings, command)
    if missing:
        print(
            f"agent: cannot run {command!r}: missing {', '.join(missing)} "
            "(set in the environment or .env)",
            file=sys.stderr,
        )
        return EXIT_USAGE

    # Imported here so `describe` and the checks above never load livekit-agents.
    from agent.worker import run_worker

    sys.argv = [sys.argv[0], *args]  # livekit-agents' CLI parses sys.argv
    run_worker(settings)
    return 0
