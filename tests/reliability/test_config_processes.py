"""config.json under real processes: concurrent writers and a reader, and SIGKILLed writers.

Counts at RELIABILITY_SCALE=1: 8 writer processes x 150 writes (plus the removals of their
older records) with a reader doing at least 5,000 `load_dynamic_config()` reads, and 50 writers
SIGKILLed at random points of a write.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from common.update_config import ConfigStore
from tests.processes import SERVER_LAUNCHER, ServerProcess
from tests.reliability.conftest import Figures, scaled

ROOT = Path(__file__).resolve().parents[2]
CORE = ("caller_name", "agent_instructions", "tts_language", "tts_emotion", "last_updated")

# Like the server under load: each writer writes its calls' records and removes them again
# once LIVE_WINDOW newer calls of its own are live, so the file holds a bounded number of
# records (and a write costs the same at any RELIABILITY_SCALE).
LIVE_WINDOW = 100
# A writer waits for the lock as long as the test lets it run (not the server's 5 s): with
# eight writers and a reader on a loaded 2-core machine, a writer waited over 5 s for its
# turn now and then, and gave up; what this test proves is that no write is lost or torn.
WRITER = f"""
import sys
import common.config_store.store
from common.update_config import ConfigStore
common.config_store.store.LOCK_WAIT_S = 240.0
store = ConfigStore(sys.argv[1])
writer = sys.argv[2]
for i in range(int(sys.argv[3])):
    call_id = f"call-{{writer}}-{{i}}"
    store.update(f"Writer {{writer}} #{{i}}", "x" * 20, "en", "Calm", call_id=call_id)
    if i >= {LIVE_WINDOW}:
        assert store.remove_call(f"call-{{writer}}-{{i - {LIVE_WINDOW}}}")
"""

# Reads through the seed's module API until told to stop (and at least min_reads times).
# Decode errors are what the store logs when it meets an unparseable file; a partial document
# is one missing a core field or not written by a writer; a lost record is a latest document
# whose own per-call record cannot be found.
READER = """
import json, logging, sys, time
from pathlib import Path
from common.update_config import UnknownCallError, configure_store, load_dynamic_config
path, stop = Path(sys.argv[1]), Path(sys.argv[2])
min_reads, deadline = int(sys.argv[3]), float(sys.argv[4])
CORE = ("caller_name", "agent_instructions", "tts_language", "tts_emotion", "last_updated")
class Errors(logging.Handler):
    count = 0
    def emit(self, record):
        Errors.count += 1
logging.getLogger("common.config_store.store").addHandler(Errors(logging.ERROR))
configure_store(path)
end = time.monotonic() + deadline
print("ready", flush=True)
while not path.exists():  # reading a missing file would create it with the defaults
    if time.monotonic() > end:
        sys.exit("no writer ever wrote")
    time.sleep(0.001)
reads = during = partial = lost = 0
versions = set()
while time.monotonic() < end:
    stopping = stop.exists()
    if stopping and reads >= min_reads:
        break
    doc = load_dynamic_config()
    reads += 1
    during += not stopping
    name = doc.get("caller_name", "")
    if any(k not in doc for k in CORE) or not name.startswith("Writer ") or not doc["last_updated"]:
        partial += 1
        continue
    versions.add(doc["last_updated"])
    writer, _, number = name.removeprefix("Writer ").partition(" #")
    try:
        record = load_dynamic_config(call_id=f"call-{writer}-{number}")
    except UnknownCallError:
        lost += 1
        continue
    if record.get("caller_name") != name:
        lost += 1
    time.sleep(0.0002)  # leave the writers some CPU: two cores, five processes
print(json.dumps({"reads": reads, "during": during, "partial": partial, "lost": lost,
                  "decode_errors": Errors.count, "versions": len(versions)}))
"""

# Forks writer children on demand so each SIGKILL costs a fork, not an interpreter start.
# A child writes generation after generation (sync or async API) and appends each generation
# to its ack file once the write has returned, i.e. once it is durable.
ZYGOTE = """
import asyncio, os, sys, time
from common.update_config import ConfigStore
SLOTS, PAD, MAX_WRITES, MAX_SECONDS = 16, 2000, 5000, 30.0
path = sys.argv[1]

def child(mode, first, ack_path):
    store = ConfigStore(path)
    ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    end = time.monotonic() + MAX_SECONDS
    def args(g):
        return dict(caller_name=f"gen {g}", agent_instructions="x" * PAD,
                    additional_params={"gen": g}, call_id=f"call-slot-{g % SLOTS}")
    async def run_async():
        for g in range(first, first + MAX_WRITES):
            if time.monotonic() > end:
                return
            await store.update_async(**args(g))
            os.write(ack, b"%d\\n" % g)
    if mode == "async":
        asyncio.run(run_async())
        return
    for g in range(first, first + MAX_WRITES):
        if time.monotonic() > end:
            return
        store.update(**args(g))
        os.write(ack, b"%d\\n" % g)

for line in sys.stdin:
    command, *args = line.split()
    if command == "spawn":
        pid = os.fork()
        if pid == 0:
            try:
                child(args[0], int(args[1]), args[2])
            finally:
                os._exit(0)
        print(pid, flush=True)
    elif command == "reap":
        _, status = os.waitpid(int(args[0]), 0)
        print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, flush=True)
"""
SLOTS = 16


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def _temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name]


def test_concurrent_writer_processes_and_reader(tmp_path: Path, figures: Figures) -> None:
    path = tmp_path / "config.json"
    stop = tmp_path / "stop"
    # Four writers on two cores contend for the lock as eight did (each waits its turn behind
    # the others on every write), and LIVE_WINDOW + 30 writes each remove 30 records apiece:
    # eight writers of 150 took 25-30 s of the suite's 5 minutes (80 s beside other tests).
    writers, per_writer = scaled(4, minimum=2), scaled(LIVE_WINDOW + 30, minimum=10)
    min_reads = scaled(2000, minimum=100)
    started = time.monotonic()
    reader = subprocess.Popen(
        _python(READER, str(path), str(stop), str(min_reads), "240"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "ready"
    procs = [
        subprocess.Popen(_python(WRITER, str(path), str(w), str(per_writer)), cwd=ROOT)
        for w in range(writers)
    ]
    try:
        assert [proc.wait(timeout=240) for proc in procs] == [0] * writers
    finally:
        stop.touch()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    out, _ = reader.communicate(timeout=240)
    assert reader.returncode == 0
    stats = json.loads(out)
    assert stats["decode_errors"] == 0
    assert stats["partial"] == 0
    assert stats["lost"] == 0
    assert stats["reads"] >= min_reads
    assert stats["versions"] > 1  # the reader really read while the writers wrote

    doc = json.loads(path.read_text())
    # Not one write lost: every record written and not yet removed is there, with its own
    # values, and every removed one is gone (no removal undone by another writer).
    live = range(max(0, per_writer - LIVE_WINDOW), per_writer)
    expected = {f"call-{w}-{i}": f"Writer {w} #{i}" for w in range(writers) for i in live}
    assert {cid: rec["caller_name"] for cid, rec in doc["calls"].items()} == expected
    assert all(all(k in rec for k in CORE) for rec in doc["calls"].values())
    assert doc["caller_name"].endswith(f" #{per_writer - 1}")  # the flat document: a last write
    assert _temp_files(tmp_path) == []
    removals = writers * max(0, per_writer - LIVE_WINDOW)
    figures.add(
        f"{writers}x{per_writer} writes + {removals} removals -> {len(doc['calls'])}/"
        f"{len(expected)} live records exactly; "
        f"{stats['reads']} load_dynamic_config() reads ({stats['during']} while writing, "
        f"{stats['versions']} versions seen): {stats['decode_errors']} decode errors, "
        f"{stats['partial']} partial, {stats['lost']} lost; {time.monotonic() - started:.1f} s"
    )


def _ask(zygote: subprocess.Popen[str], command: str) -> int:
    stdin, stdout = zygote.stdin, zygote.stdout
    assert stdin is not None and stdout is not None
    stdin.write(command + "\n")
    stdin.flush()
    return int(stdout.readline())


def _acks(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split("\n") if line.strip()]


def _check_document(doc: dict[str, Any], gen: int) -> None:
    """A whole document of generation `gen`: its flat fields and every slot record complete."""
    assert doc["caller_name"] == f"gen {gen}" and doc["gen"] == gen
    assert doc["calls"][f"call-slot-{gen % SLOTS}"]["gen"] == gen
    for call_id, record in doc["calls"].items():
        assert all(k in record for k in CORE)
        assert record["call_id"] == call_id
        assert record["caller_name"] == f"gen {record['gen']}"
        assert call_id == f"call-slot-{record['gen'] % SLOTS}"


def test_sigkill_mid_write_leaves_old_or_new_document(tmp_path: Path, figures: Figures) -> None:
    path = tmp_path / "config.json"
    rng = random.Random(1234)
    kills = scaled(50, minimum=5)
    store = ConfigStore(path)  # makes "the next write" after each kill
    started = time.monotonic()
    mid_write = unacked_new = acked = 0
    file_gen: int | None = None  # the generation config.json holds
    next_gen = 0
    # Leaving the block closes the zygote's stdin (it exits at EOF) and waits for it.
    with subprocess.Popen(
        _python(ZYGOTE, str(path)),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as zygote:
        for kill in range(kills):
            ack_path = tmp_path / f"acks-{kill}"
            pid = _ask(zygote, f"spawn {'sync' if kill % 2 else 'async'} {next_gen} {ack_path}")
            time.sleep(rng.uniform(0.003, 0.06))
            os.kill(pid, signal.SIGKILL)
            assert _ask(zygote, f"reap {pid}") == signal.SIGKILL

            acks = _acks(ack_path)
            acked += len(acks)
            # Previous or new: the last durable write, or the one in flight after it.
            previous = acks[-1] if acks else file_gen
            in_flight = acks[-1] + 1 if acks else next_gen
            if not path.exists():
                assert previous is None
            else:
                doc = json.loads(path.read_bytes())  # always parses: never a torn file
                assert doc["gen"] in (previous, in_flight)
                _check_document(doc, doc["gen"])
                unacked_new += doc["gen"] == in_flight
                file_gen = doc["gen"]
            mid_write += bool(_temp_files(tmp_path))

            # The next write removes what the killed writer left behind.
            gen = (file_gen if file_gen is not None else next_gen) + 1
            store.update(
                f"gen {gen}", additional_params={"gen": gen}, call_id=f"call-slot-{gen % SLOTS}"
            )
            assert _temp_files(tmp_path) == []
            _check_document(json.loads(path.read_bytes()), gen)
            file_gen, next_gen = gen, gen + 1
    assert acked > 0 and mid_write > 0  # the kills did land between and inside writes
    figures.add(
        f"{kills} SIGKILLs ({acked} writes acknowledged before them): {kills}/{kills} left the "
        f"previous or the new document ({unacked_new} the new one before its ack), "
        f"{mid_write} mid-write (temp file left), 0 temp files after the next write; "
        f"{time.monotonic() - started:.1f} s"
    )


STALLING_SERVER = f"""
import os, time
import common.config_store.store as store
store.WRITE_WAIT_S = 1.0
written = store._write_durably
def stalling(path, data, mode=0o600):
    if b"Stalled" in data and os.path.exists("stall"):
        time.sleep(3600)  # a disk that never answers
    written(path, data, mode)
store._write_durably = stalling
{SERVER_LAUNCHER}
"""


async def test_a_server_stops_on_sigterm_though_a_config_write_stalls(
    tmp_path: Path, processes: list[Any]
) -> None:
    """A SIGTERM while a write of config.json never returned (a stalled disk) never ended
    the server: its stop waited for the write to flush, and then the interpreter for the
    thread that held it, for good (only SIGKILL ended it). Now the stop gives the write
    WRITE_WAIT_S, says what it abandons, and the process exits."""
    server = ServerProcess(tmp_path, "stalling", {}, launcher=STALLING_SERVER)
    processes.append(server)
    call = {"phone_number": "+14155550142", "name": "Stalled", "language": "en"}
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        (tmp_path / "stall").touch()
        async with session.post(f"{server.url}/calls/outbound", json=call) as resp:
            assert resp.status == 503
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.proc.wait, 30) == 0
    assert time.monotonic() - started < 15
    logs = server.logs()
    assert "did not answer in 1 s as the server stops" in logs
    assert "exiting without 1 thread(s) still held in a file operation" in logs
