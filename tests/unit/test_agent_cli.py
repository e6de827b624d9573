"""`python -m agent`: the operator's `describe` view and the start-up settings check.

Run with a minimal environment: no API keys, CONFIG_PATH in tmp_path, working directory
tmp_path (so no developer `.env` is picked up); as real subprocesses (run_agent) for each way
the process ends (a plan printed, a settings error, a reader gone) and for livekit-agents'
help, the other checks by `main()` in this process (run_agent_here).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main, missing_settings
from common.config_store.model import AnalysisField, AnalysisRequest, CallOptions, VoicemailPolicy
from common.settings import DEV_API_KEY, Settings
from common.update_config import ConfigStore
from tests.processes import run_to_end

REPO = Path(__file__).resolve().parents[2]
CALL = "call-ab12cd34ef56"


def run_agent(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), **env}
    return run_to_end([sys.executable, "-m", "agent", *args], cwd, environ)


def run_agent_here(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """What run_agent answers, from `agent.cli.main(args)` in this process (a process start,
    about a second, saved): with exactly run_agent's environment, in `cwd`; its exit code (its
    return, or argparse's SystemExit), stdout and stderr. The environment (which main also
    writes: --url, --api-key), the working directory and sys.argv are restored after. For the
    checks that stop before livekit-agents' CLI: reaching it here is a failure, not a worker
    started in the test process (help, a start that gets past the checks, an exit code or
    stream of the process itself stay with run_agent)."""
    return _main_here(args, cwd, env, None)


def run_agent_to_livekit(
    args: list[str], cwd: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """run_agent_here, for a run that reaches livekit-agents' CLI: what main did before it
    (its output, exit code 0) and the arguments the CLI would parse (sys.argv[1:]), without
    livekit-agents' import (a process importing it took 5-7 s of a loaded suite)."""
    handed: list[str] = []
    return _main_here(args, cwd, env, handed), handed


def _main_here(
    args: list[str], cwd: Path, env: dict[str, str], handed_to_livekit: list[str] | None
) -> subprocess.CompletedProcess[str]:
    saved_environ, saved_argv = dict(os.environ), list(sys.argv)
    stdout, stderr = io.StringIO(), io.StringIO()

    def livekit_agents_cli(_settings: Settings) -> int:
        if handed_to_livekit is None:
            raise AssertionError(f"{args} reached livekit-agents' CLI: run it with run_agent")
        handed_to_livekit[:] = sys.argv[1:]
        return 0

    no_worker = types.ModuleType("agent.worker")
    no_worker.run_worker = livekit_agents_cli  # type: ignore[attr-defined]
    # Only this entry: patch.dict(sys.modules) would drop the modules main imported (numpy's,
    # which loads once per process).
    worker = sys.modules.get("agent.worker")
    sys.modules["agent.worker"] = no_worker
    os.environ.clear()
    os.environ.update({"PATH": saved_environ.get("PATH", ""), "PYTHONPATH": str(REPO), **env})
    try:
        with (
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse's usage errors
                assert isinstance(exc.code, int), exc.code
                code = exc.code
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        sys.argv[:] = saved_argv
        if worker is None:
            del sys.modules["agent.worker"]
        else:
            sys.modules["agent.worker"] = worker
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    ConfigStore(path).update(
        "Carlos García",
        "Eres un asistente de ventas. Ayuda al cliente con su pedido.",
        "es",
        "Calm",
        {"customer_tier": "Premium"},
        call_id=CALL,
    )
    return path


def test_describe_a_known_call(tmp_path: Path, config_file: Path) -> None:
    proc = run_agent(["describe", "--call-id", CALL], tmp_path, CONFIG_PATH=str(config_file))

    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["source"] == "config.json"
    assert plan["call_id"] == CALL
    assert plan["caller_name"] == "Carlos García"
    assert plan["instructions"].startswith("Eres un asistente de ventas.")
    assert "Call context: customer_tier: Premium" in plan["instructions"]
    assert plan["stt"] == {"provider": "deepgram", "model": "nova-3", "language": "es"}
    assert plan["llm"] == {"provider": "openai", "model": "gpt-4o-mini"}
    assert plan["tts"]["provider"] == "cartesia" and plan["tts"]["model"] == "sonic-3"
    assert (plan["tts"]["language"], plan["tts"]["emotion"]) == ("es", "calm")
    assert plan["tts"]["voice"]


def test_describe_into_a_reader_that_stopped_is_no_traceback(
    tmp_path: Path, config_file: Path
) -> None:
    """`python -m agent describe ... | head -8` ended in a BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    environ = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}
    with os.fdopen(write, "wb") as stdout:
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "describe", "--call-id", CALL],
            cwd=tmp_path,
            env=environ | {"CONFIG_PATH": str(config_file)},
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1
    assert proc.stderr == ""


def test_describe_shows_what_the_agent_does_around_the_conversation(tmp_path: Path) -> None:
    options = CallOptions(
        first_message="Hola Carlos, le llamo de la tienda.",
        voicemail=VoicemailPolicy(action="leave_message", message="Le llamaremos mañana."),
        analysis=AnalysisRequest(
            success_criteria="El cliente confirma el pedido.",
            fields={"order_id": AnalysisField(type="string", required=True)},
        ),
    )
    path = tmp_path / "config.json"
    ConfigStore(path).update("Carlos García", tts_language="es", call_id=CALL, options=options)

    proc = run_agent_here(["describe", "--call-id", CALL], tmp_path, CONFIG_PATH=str(path))

    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["first_message"] == "Hola Carlos, le llamo de la tienda."
    assert plan["voicemail"] == {"action": "leave_message", "message": "Le llamaremos mañana."}
    assert plan["analysis"] == {
        "summary": True,
        "success_criteria": "El cliente confirma el pedido.",
        "fields": {
            "order_id": {"type": "string", "description": "", "enum": None, "required": True}
        },
    }


def test_describe_a_call_without_options(tmp_path: Path, config_file: Path) -> None:
    proc = run_agent_here(["describe", "--call-id", CALL], tmp_path, CONFIG_PATH=str(config_file))
    plan = json.loads(proc.stdout)
    assert plan["first_message"] is None and plan["analysis"] is None
    assert plan["voicemail"] == {"action": "hang_up", "message": None}


def test_describe_an_unknown_call(tmp_path: Path, config_file: Path) -> None:
    proc = run_agent_here(
        ["describe", "--call-id", "call-000000000000"], tmp_path, CONFIG_PATH=str(config_file)
    )

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "unknown call" in proc.stderr and "call-000000000000" in proc.stderr
    assert f"(config file {config_file}, calls database {tmp_path / 'calls.db'})" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_describe_from_another_directory_says_where_it_looked_and_what_to_do(
    tmp_path: Path,
) -> None:
    """Probe AO: run from another directory, it said "unknown call" naming config.json and
    calls.db as relative paths, nothing more."""
    proc = run_agent_here(["describe", "--call-id", "call-000000000000"], tmp_path)
    assert proc.returncode == 2
    assert f"config file {tmp_path / 'config.json'}" in proc.stderr
    assert "neither exists: run it from the server's directory" in proc.stderr


@pytest.mark.parametrize("call_id", ["", "call-\udcff"], ids=["empty", "not-text"])
def test_describe_a_call_id_that_is_none_says_so(
    tmp_path: Path, config_file: Path, call_id: str
) -> None:
    proc = run_agent_here(
        ["describe", "--call-id", call_id], tmp_path, CONFIG_PATH=str(config_file)
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("--call-id: call_id must be") or "--call-id: " in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_describe_never_migrates_the_calls_database(tmp_path: Path, config_file: Path) -> None:
    """A look, not a change: a calls database of another schema version (an agent host on a
    newer release than its server) is left as it is, and config.json still answers."""
    older = tmp_path / "calls.db"
    with contextlib.closing(sqlite3.connect(older)) as db, db:
        db.execute("CREATE TABLE kept (a)")
    before = older.read_bytes()
    proc = run_agent_here(
        ["describe", "--call-id", CALL],
        tmp_path,
        CONFIG_PATH=str(config_file),
        CALLS_DB_PATH=str(older),
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["caller_name"] == "Carlos García"
    assert "older than this code's" in plan["reason"]
    assert older.read_bytes() == before
    with contextlib.closing(sqlite3.connect(older)) as db, db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["kept"]


def test_describe_with_dispatch_metadata_for_a_call_not_on_this_host(tmp_path: Path) -> None:
    metadata = {
        "call_id": CALL,
        "config": {"caller_name": "Emma Watson", "tts_emotion": "Serious", "call_id": CALL},
        "phone_number": "+441234567890",
    }
    proc = run_agent_here(
        ["describe", "--call-id", CALL, "--metadata", json.dumps(metadata)],
        tmp_path,
        CONFIG_PATH=str(tmp_path / "absent.json"),
    )

    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert (plan["source"], plan["caller_name"], plan["tts"]["emotion"]) == (
        "dispatch-metadata",
        "Emma Watson",
        "confident",
    )
    assert not (tmp_path / "absent.json").exists()


@pytest.mark.parametrize("moment", ["nan", "inf", "-inf", "0", "-1", "yesterday"])
def test_describe_refuses_a_room_creation_that_is_no_moment(
    tmp_path: Path, config_file: Path, moment: str
) -> None:
    """`nan` (and `inf`) passed every record as written before the room: the answer said
    config.json and "record written before the room was created", for any record."""
    proc = run_agent_here(
        ["describe", "--call-id", CALL, f"--room-created-at={moment}"],
        tmp_path,
        CONFIG_PATH=str(config_file),
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert (
        "argument --room-created-at: must be a moment in seconds since the epoch"
        f" (e.g. 1795676240.2), not {moment!r}"
    ) in proc.stderr


def test_describe_rejects_bad_metadata(tmp_path: Path) -> None:
    proc = run_agent_here(["describe", "--call-id", CALL, "--metadata", "{nope"], tmp_path)
    assert proc.returncode == 2
    assert "--metadata is not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


# `start`'s LiveKit and OpenAI keys, made up; a model the answering-machine detection knows
# (no warning of it).
LIVEKIT_AND_OPENAI = {
    "LIVEKIT_API_KEY": "APIkey",
    "LIVEKIT_API_SECRET": "secret-of-livekits-length-" + "x" * 8,
    "OPENAI_API_KEY": "sk-test",
    "OPENAI_MODEL": "gpt-4.1-mini",
}


def test_start_without_keys_names_what_is_missing(tmp_path: Path) -> None:
    proc = run_agent_here(
        ["start"],
        tmp_path,
        LIVEKIT_URL="wss://example.livekit.cloud",
        **LIVEKIT_AND_OPENAI,
    )

    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "agent: cannot run 'start': missing DEEPGRAM_API_KEY, CARTESIA_API_KEY "
        "(set in the environment or .env)"
    )


def test_start_with_the_sandboxs_dev_key_says_it_cannot_be_used(tmp_path: Path) -> None:
    """LIVEKIT_API_KEY set by hand to the sandbox's development key (copied from a sandbox's
    .env), with a real LIVEKIT_URL: the agent said it was "missing", though it was set."""
    proc = run_agent_here(
        ["start"],
        tmp_path,
        LIVEKIT_URL="wss://example.livekit.cloud",
        **{**LIVEKIT_AND_OPENAI, "LIVEKIT_API_KEY": DEV_API_KEY},
        DEEPGRAM_API_KEY="dg",
        CARTESIA_API_KEY="ca",
    )

    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "agent: cannot run 'start': missing LIVEKIT_API_KEY (set in the environment or .env;"
        " the sandbox's development LiveKit key and secret, the defaults, cannot be used with"
        " a real LiveKit)"
    )
    assert DEV_API_KEY not in proc.stderr


def test_start_warns_of_what_the_server_would(tmp_path: Path) -> None:
    """On an agent host (no server there to warn at its start), a misspelt name read as
    unset meant the default model and voice for every call, and a `${...}` secret taken as
    written failed every connection, without a word from `python -m agent start`."""
    (tmp_path / ".env").write_text(
        "OPENAI_MODLE=gpt-4.1-nano\n"
        "CARTESIA_VOICE_I=a0e99841-438c-4a64-b679-ae501e7d6091\n"
        "LIVEKIT_API_SECRET=${LK_SECRET}\n"
    )
    (tmp_path / ".env").chmod(0o600)  # a secret's file (one every user may read: a warning)
    proc = run_agent_here(["start"], tmp_path, LIVEKIT_URL="wss://example.livekit.cloud")

    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[:5] == [
        "agent: warning: LIVEKIT_API_SECRET (.env line 3) holds ${: .env is not expanded,"
        " the value is used as written",
        "agent: warning: OPENAI_MODLE (.env line 1) is no setting of this server: did you"
        " mean OPENAI_MODEL? (it is read as unset)",
        "agent: warning: CARTESIA_VOICE_I (.env line 2) is no setting of this server: did you"
        " mean CARTESIA_VOICE_ID? (it is read as unset)",
        "agent: warning: LIVEKIT_API_SECRET is 12 characters; LiveKit's are at least 32 but"
        " for livekit-server --dev's (is it the API key, or cut short?)",
        "agent: warning: OPENAI_MODEL is not among the models LiveKit evaluated its"
        " answering-machine detection with (livekit.agents.voice.amd's EVALUATED_LLM_MODELS):"
        " voicemail verdicts may be less reliable; set OPENAI_MODEL to one it evaluated, such"
        " as gpt-4.1-mini or gpt-4o (the default, gpt-4o-mini, is not one)",  # it is the default
    ]
    assert lines[5].startswith("agent: cannot run 'start': missing LIVEKIT_API_KEY")
    assert "gpt-4.1-nano" not in proc.stderr and "a0e99841" not in proc.stderr  # no values
    # Asking for help warns of nothing: livekit-agents' help itself is test_help_needs_no_keys'.
    help_proc, handed = run_agent_to_livekit(["start", "--help"], tmp_path)
    assert help_proc.returncode == 0 and "warning" not in help_proc.stderr
    assert handed == ["start", "--help"]


def test_a_model_amd_was_not_evaluated_with_is_said_once_at_start_not_on_every_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agent start` says once what livekit-agents' detector said on every call (see
    test_agent_answer's test of it), only for a model LiveKit did not evaluate."""
    from agent.cli import amd_evaluated, start_warnings

    monkeypatch.chdir(tmp_path)  # no .env here
    said = "OPENAI_MODEL is not among the models LiveKit evaluated"
    assert not amd_evaluated("gpt-4o-mini")
    assert any(said in w for w in start_warnings(Settings(openai_model="gpt-4o-mini")))
    for evaluated in ("gpt-4.1-mini", "GPT-4o", "openai/gpt-4.1"):
        assert amd_evaluated(evaluated)
        assert not any(said in w for w in start_warnings(Settings(openai_model=evaluated)))


def test_start_warns_of_a_voice_that_is_no_cartesia_voice_id(tmp_path: Path) -> None:
    """A voice's name, or its page's address, pasted for its id was taken without a word, and
    every call speaking with it failed at its first words: the callee heard nothing."""
    proc = run_agent_here(
        ["start"],
        tmp_path,
        LIVEKIT_URL="wss://example.livekit.cloud",
        **LIVEKIT_AND_OPENAI,
        CARTESIA_VOICE_ID="Katie",
        CARTESIA_VOICE_IDS="es=https://play.cartesia.ai/voices/5c5ad5e7,fr=A0E99841-438c-4a64-b679-ae501e7d6091",
    )

    assert proc.returncode == 2  # the Deepgram and Cartesia keys are missing
    problem = (
        "is not a Cartesia voice id (8-4-4-4-12 hexadecimal digits, as play.cartesia.ai shows"
        " them; not a voice's name or its page's address): calls speaking with it fail at their"
        " first words"
    )
    assert proc.stderr.splitlines()[:2] == [
        f"agent: warning: CARTESIA_VOICE_ID {problem}",
        f"agent: warning: CARTESIA_VOICE_IDS: the voice for es {problem}",
    ]
    assert "Katie" not in proc.stderr and "5c5ad5e7" not in proc.stderr  # no values
    assert (
        "voice" not in run_agent_here(["start"], tmp_path, **LIVEKIT_AND_OPENAI).stderr
    )  # default


def test_start_with_its_health_port_taken_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A second worker on the host (8081 taken): livekit-agents logged 'worker failed' with a
    traceback and exited 0, so a supervisor restarting failed workers left it down."""
    from agent.cli import HEALTH_PORT

    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # taken already by another program: the same case
            taken.bind(("127.0.0.1", HEALTH_PORT))
            taken.listen()
        # In this process: the check stops it before livekit-agents' CLI (reaching it fails
        # the test), and the process's exit code is main's (test_bad_setting_stops_with_one_line);
        # as a process, it imported livekit-agents for its start-up warnings, 2-8 s.
        proc = run_agent_here(
            ["start"],
            tmp_path,
            LIVEKIT_URL="ws://127.0.0.1:1",
            **LIVEKIT_AND_OPENAI,
            DEEPGRAM_API_KEY="dg-test",
            CARTESIA_API_KEY="ca-test",
        )
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr)
    assert proc.stderr.strip() == (
        f"agent: cannot listen on 127.0.0.1:{HEALTH_PORT} (the worker's health/status server):"
        " Address already in use; is another agent worker running on this host?"
        " (AGENT_HTTP_HOST sets its address)"
    )
    assert "Traceback" not in proc.stdout + proc.stderr


def test_start_takes_livekits_connection_options_as_the_settings(tmp_path: Path) -> None:
    """livekit-agents' --url, --api-key and --api-secret went to it alone: without the
    variables the check said they were missing, and with other ones (an .env older than a
    key rotation) the worker registered with the options while its jobs signed their
    reports with the variables, every report refused by the server (401)."""
    secret = "rotated-secret-of-livekits-length-0123"
    proc = run_agent_here(
        ["start", "--url", "wss://example.livekit.cloud", "--api-key=APIkey"]
        + ["--api-secret", secret],
        tmp_path,
        LIVEKIT_API_SECRET="secret-before-the-rotation-0123456789",
        OPENAI_API_KEY="sk-test",
        OPENAI_MODEL="gpt-4.1-mini",
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "agent: cannot run 'start': missing DEEPGRAM_API_KEY, CARTESIA_API_KEY "
        "(set in the environment or .env)"
    )
    bad = run_agent_here(["start", "--url", "ftp://nowhere"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("agent: LIVEKIT_URL must start with")


def test_connection_options_reach_the_jobs_settings() -> None:
    from agent.cli import options_as_environment
    from common.settings import settings_from_env

    environ = {"LIVEKIT_API_KEY": "APIold", "LIVEKIT_API_SECRET": "old-secret-" + "x" * 30}
    args = ["start", "--api-key", "APInew", "--api-secret=new-secret-" + "y" * 30, "--url"]
    options_as_environment(args, environ)
    settings = settings_from_env(environ, config_file_read=False)
    assert (settings.livekit_api_key, settings.livekit_api_secret) == (
        "APInew",
        "new-secret-" + "y" * 30,
    )
    assert settings.livekit_url is None  # --url without its value: livekit-agents says so


def test_help_needs_no_keys(tmp_path: Path) -> None:
    proc = run_agent(["start", "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def test_bad_setting_stops_with_one_line(tmp_path: Path) -> None:
    proc = run_agent(["start"], tmp_path, LIVEKIT_URL="ftp://nowhere")
    assert proc.returncode == 2
    assert proc.stderr.startswith("agent: LIVEKIT_URL must start with")
    assert "Traceback" not in proc.stderr


def test_missing_settings_per_command() -> None:
    bare = Settings()
    assert missing_settings(bare, "start") == [
        "LIVEKIT_URL",
        "LIVEKIT_API_KEY",
        "LIVEKIT_API_SECRET",
        "OPENAI_API_KEY",
        "DEEPGRAM_API_KEY",
        "CARTESIA_API_KEY",
    ]
    assert missing_settings(bare, "console") == [
        "OPENAI_API_KEY",
        "DEEPGRAM_API_KEY",
        "CARTESIA_API_KEY",
    ]
    assert missing_settings(bare, "connect") == missing_settings(bare, "start")
    assert missing_settings(bare, "--help") == []
    full = Settings(
        livekit_url="wss://example.livekit.cloud",
        livekit_api_key="APIkey",
        livekit_api_secret="secret",
        openai_api_key="sk",
        deepgram_api_key="dg",
        cartesia_api_key="ca",
    )
    assert missing_settings(full, "dev") == []


def test_top_level_help_lists_describe(tmp_path: Path) -> None:
    """Regression: `python -m agent --help` listed only livekit-agents' own commands."""
    proc = run_agent(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "describe" in proc.stdout and "--call-id" in proc.stdout
    assert "start" in proc.stdout and "console" in proc.stdout  # livekit's, still listed
    # No command at all is `--help`: the same lines of ours, and livekit-agents asked for its
    # help as above (in this process: what follows is livekit-agents' alone).
    bare, handed = run_agent_to_livekit([], tmp_path)
    assert bare.returncode == 0, bare.stderr
    assert "describe" in bare.stdout and "--call-id" in bare.stdout
    assert handed == ["--help"]


STORED_SNAPSHOT = {
    "caller_name": "Emma Watson",
    "agent_instructions": "You are a customer support agent.",
    "tts_language": "en",
    "tts_emotion": "Serious",
    "additional_params": {"ticket": "T-1"},
    "ringing_timeout_s": 30,
    "max_duration_s": 600,
}


@pytest.fixture(params=["sqlite", "postgres"])
def calls_database(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The settings naming a calls database: calls.db, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        return {"DATABASE_URL": request.getfixturevalue("postgres_dsn")}
    return {"CALLS_DB_PATH": str(tmp_path / "calls.db")}


def record_call(database: dict[str, str]) -> None:
    """CALL in the calls database, placed with STORED_SNAPSHOT as the server places calls."""
    import asyncio

    from common.calls.models import NewCall
    from common.storage.postgres import PostgresCallStore
    from common.storage.sql import SqlCallStore
    from common.storage.sqlite import SqliteCallStore

    async def record() -> None:
        db: SqlCallStore
        if "DATABASE_URL" in database:
            db = await PostgresCallStore.open(database["DATABASE_URL"])
        else:
            db = await SqliteCallStore.open(Path(database["CALLS_DB_PATH"]))
        try:
            call = NewCall(
                CALL, "+441234567890", "Emma Watson", "en", "Serious", config=STORED_SNAPSHOT
            )
            await db.create_call(call)
        finally:
            await db.close()

    asyncio.run(record())


def describe_plan(tmp_path: Path, database: dict[str, str]) -> dict[str, Any]:
    """`python -m agent describe --call-id CALL` with tmp_path's config.json: its plan."""
    proc = run_agent_here(
        ["describe", "--call-id", CALL],
        tmp_path,
        CONFIG_PATH=str(tmp_path / "config.json"),
        **database,
    )
    assert proc.returncode == 0, proc.stderr
    plan: dict[str, Any] = json.loads(proc.stdout)
    return plan


def test_describe_a_finished_call_from_the_calls_database(
    tmp_path: Path, calls_database: dict[str, str]
) -> None:
    """A call that is over has no config.json record any more: describe uses the config
    stored with the call, and says so; with DATABASE_URL, from PostgreSQL (it read calls.db
    only, and answered "unknown call" for every call of a server on PostgreSQL)."""
    record_call(calls_database)
    plan = describe_plan(tmp_path, calls_database)
    assert plan["source"] == "calls-db"
    assert plan["reason"].startswith("no config.json record: the call is dialing")
    assert "stored with the call" in plan["reason"]
    assert plan["caller_name"] == "Emma Watson" and plan["tts"]["emotion"] == "confident"
    assert "Call context: ticket: T-1" in plan["instructions"]


def test_describe_a_call_while_config_json_is_no_json_object(tmp_path: Path) -> None:
    """The agent uses the dispatch snapshot when config.json cannot be read, and describe is
    what the README names for "the agent used the wrong config": it refused to answer at all,
    with the server's start-up error (CONFIG_PATH "names a file that is not a JSON object:
    the first call's config write would set it aside")."""
    database = {"CALLS_DB_PATH": str(tmp_path / "calls.db")}
    record_call(database)
    (tmp_path / "config.json").write_bytes(b"\x00" * 64)  # what a crash may leave

    plan = describe_plan(tmp_path, database)

    assert (plan["source"], plan["caller_name"]) == ("calls-db", "Emma Watson")


def test_describe_a_live_call_whose_record_was_rewritten_after_its_room_started(
    tmp_path: Path,
) -> None:
    """update_config(call_id=...) after the call was placed: the worker refuses that record
    (written after the room) and takes the dispatch's snapshot. describe took "now" for the
    room's creation, so any record passed, and it showed the late writer's config."""
    database = {"CALLS_DB_PATH": str(tmp_path / "calls.db")}
    record_call(database)
    ConfigStore(tmp_path / "config.json").update("Late Writer", tts_language="fr", call_id=CALL)
    plan = describe_plan(tmp_path, database)
    assert plan["source"] == "calls-db", plan
    assert plan["caller_name"] == "Emma Watson" and plan["tts"]["language"] == "en"
    assert "after the room was created" in plan["reason"]


def test_describe_a_live_call_from_its_record_written_before_the_call(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.json")
    store.update(
        "Emma Watson",
        "You are a customer support agent.",
        "en",
        "Serious",
        {"ticket": "T-1"},
        call_id=CALL,
    )  # as STORED_SNAPSHOT, the config the call was placed with
    database = {"CALLS_DB_PATH": str(tmp_path / "calls.db")}
    record_call(database)
    plan = describe_plan(tmp_path, database)
    assert (plan["source"], plan["caller_name"]) == ("config.json", "Emma Watson")
    # A record edited by hand since (its written_at kept) is not the call's config.
    document = json.loads((tmp_path / "config.json").read_text())
    document["calls"][CALL]["caller_name"] = "From The Record"
    (tmp_path / "config.json").write_text(json.dumps(document))
    plan = describe_plan(tmp_path, database)
    assert (plan["source"], plan["caller_name"]) == ("calls-db", "Emma Watson")
    assert "differs from the config the call was placed with" in plan["reason"]


def test_describe_refuses_metadata_naming_another_call_as_the_worker_does(
    tmp_path: Path,
) -> None:
    metadata = json.dumps({"call_id": "call-000000000000", "config": STORED_SNAPSHOT})
    proc = run_agent_here(
        ["describe", "--call-id", CALL, "--metadata", metadata],
        tmp_path,
        CONFIG_PATH=str(tmp_path / "absent.json"),
    )
    assert proc.returncode == 2, proc.stdout
    assert "the agent would refuse this job" in proc.stderr
    assert "call-000000000000" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("metadata", [{"call_id": CALL}, {"call_id": CALL, "config": "x"}])
def test_describe_with_metadata_without_a_config_describes_it_as_the_worker_would(
    tmp_path: Path, metadata: dict[str, Any]
) -> None:
    """Dispatch metadata without a config that reads: the worker has no snapshot then (and
    no record here, no session). describe put the calls database's config in its place and
    printed a plan, "the snapshot its dispatch carried", for a job the worker would refuse."""
    database = {"CALLS_DB_PATH": str(tmp_path / "calls.db")}
    record_call(database)
    proc = run_agent_here(
        ["describe", "--call-id", CALL, "--metadata", json.dumps(metadata)],
        tmp_path,
        CONFIG_PATH=str(tmp_path / "config.json"),
        **database,
    )
    assert proc.returncode == 2, proc.stdout
    assert "no config snapshot in the dispatch metadata" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The call is known (recorded above): what describe says is the worker's refusal. It
    # said "unknown call".
    assert "agent describe: the agent would refuse this job: " in proc.stderr
    assert "unknown call" not in proc.stderr


def test_describe_with_metadata_nested_too_deeply_is_one_line(tmp_path: Path) -> None:
    proc = run_agent_here(
        # 50,000 levels: too deep for every Python's parser (Python 3.13 reads 5,000)
        ["describe", "--call-id", CALL, "--metadata", "[" * 50_000 + "]" * 50_000],
        tmp_path,
        CONFIG_PATH=str(tmp_path / "absent.json"),
    )
    assert proc.returncode == 2
    assert "nested too deeply" in proc.stderr and "Traceback" not in proc.stderr


def test_describe_answers_from_config_json_when_the_database_is_unreachable(
    tmp_path: Path,
) -> None:
    """The worker never needs the calls database: describe answered "cannot read the calls
    database" for a call config.json has, whenever PostgreSQL was down."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ConfigStore(tmp_path / "config.json").update("Bob", call_id=CALL)
    plan = describe_plan(tmp_path, {"DATABASE_URL": f"postgresql://u:pw@127.0.0.1:{port}/db"})
    assert (plan["source"], plan["caller_name"]) == ("config.json", "Bob")
    assert "cannot read the calls database" in plan["reason"]
    assert "taken as now" in plan["reason"] and "pw" not in plan["reason"]


def test_a_report_spool_that_cannot_be_written_is_said_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AGENT_REPORT_SPOOL_DIR naming a file, or a directory the worker cannot write: the
    first word of it was an ERROR when a call's reports could not be kept, the reports lost."""
    from agent.cli import start_warnings

    monkeypatch.chdir(tmp_path)  # no .env here
    # Naming the file in its place: "(File exists)" named no path, and read as if a file
    # of the spool's were in the way.
    said = (
        f"AGENT_REPORT_SPOOL_DIR ({tmp_path / 'a-file'}) cannot be written ({tmp_path / 'a-file'}"
        " is a file, not a directory): the reports a job cannot"
    )
    (tmp_path / "a-file").write_text("")
    warnings = start_warnings(Settings(agent_report_spool_dir=tmp_path / "a-file"))
    assert any(w.startswith(said) for w in warnings), warnings
    assert not any("SPOOL" in w for w in start_warnings(Settings()))
    assert ((tmp_path / "agent-reports").stat().st_mode & 0o777) == 0o700  # made at start


def test_describe_a_call_whose_personal_data_was_erased_says_so(tmp_path: Path) -> None:
    """A call erased on request (POST /calls/{id}/erase) keeps a config without its name and
    instructions: describe answered "unknown call: ... dispatch snapshot is invalid:
    caller_name must be 1 to 200 characters", for a call the calls database has."""
    import sqlite3

    database = {"CALLS_DB_PATH": str(tmp_path / "calls.db")}
    record_call(database)
    erased = {**STORED_SNAPSHOT, "caller_name": "", "agent_instructions": ""}
    erased["additional_params"] = {}
    with (
        contextlib.closing(sqlite3.connect(database["CALLS_DB_PATH"])) as db,
        db,
    ):  # as erase_calls_now leaves it
        db.execute(
            "UPDATE calls SET status = 'completed', ended_at = 1796508543.0,"
            " data_erased_at = 1796508543.2, config = ? WHERE call_id = ?",
            (json.dumps(erased), CALL),
        )
    db.close()

    proc = run_agent_here(
        ["describe", "--call-id", CALL],
        tmp_path,
        CONFIG_PATH=str(tmp_path / "config.json"),
        **database,
    )

    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"agent describe: call '{CALL}' is completed and its personal data was erased at"
        " 2026-12-05T22:09:03.200Z: the name, instructions and messages it was placed with"
        " are gone, so there is no session to describe\n"
    )
