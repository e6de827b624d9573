"""config.json under real processes: concurrent writers and readers, and SIGKILLed writers."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

SCALE = float(os.environ.get("RELIABILITY_SCALE", "1"))
ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from common.update_config import ConfigStore
store = ConfigStore(sys.argv[1])
for i in range(int(sys.argv[3])):
    store.update(f"Writer {sys.argv[2]} #{i}", "x" * 200, "en", "Calm",
                 call_id=f"call-{sys.argv[2]}-{i}")
"""

READER = """
import json, sys, time
from pathlib import Path
path, stop = Path(sys.argv[1]), Path(sys.argv[2])
reads = errors = partial = 0
from common.update_config import ConfigStore
store = ConfigStore(path)
while not stop.exists() or reads < int(sys.argv[3]):
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        continue
    try:
        doc = json.loads(raw)
    except ValueError:
        errors += 1
        continue
    if not isinstance(doc, dict) or not {"caller_name", "calls", "last_updated"} <= doc.keys():
        partial += 1
    store.load()  # the seed's load_dynamic_config path too
    reads += 1
print(json.dumps({"reads": reads, "errors": errors, "partial": partial}))
"""

ASYNC_WRITER = """
import asyncio, sys
from common.update_config import ConfigStore
store = ConfigStore(sys.argv[1])
async def main():
    i = 0
    while True:
        await asyncio.gather(*(store.update_async(f"Gen {i} {k}", call_id=f"call-{i}-{k}")
                               for k in range(3)))
        i += 1
asyncio.run(main())
"""


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def test_concurrent_writer_processes_and_reader(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    stop = tmp_path / "stop"
    writers, per_writer = max(4, int(4 * SCALE)), max(50, int(250 * SCALE))
    min_reads = int(1000 * SCALE)
    reader = subprocess.Popen(
        _python(READER, str(path), str(stop), str(min_reads)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    procs = [
        subprocess.Popen(_python(WRITER, str(path), str(w), str(per_writer)), cwd=ROOT)
        for w in range(writers)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    stop.touch()
    out, _ = reader.communicate(timeout=120)
    stats = json.loads(out)
    assert stats["errors"] == 0
    assert stats["partial"] == 0
    assert stats["reads"] >= min_reads
    calls = json.loads(path.read_text())["calls"]
    expected = {f"call-{w}-{i}" for w in range(writers) for i in range(per_writer)}
    assert set(calls) == expected  # not one record lost
    assert all(
        calls[c]["caller_name"] == f"Writer {c.split('-')[1]} #{c.split('-')[2]}" for c in calls
    )


def test_sigkill_mid_write_leaves_old_or_new_document(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    rng = random.Random(1234)
    kills = max(30, int(30 * SCALE))
    previous_generations = -1
    for _ in range(kills):
        proc = subprocess.Popen(_python(ASYNC_WRITER, str(path)), cwd=ROOT)
        time.sleep(0.15 + rng.random() * 0.25)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if not path.exists():
            continue
        doc = json.loads(path.read_text())  # always parses: old or new document, never torn
        assert isinstance(doc["calls"], dict)
        for record in doc["calls"].values():
            assert {"caller_name", "call_id", "written_at"} <= record.keys()
        previous_generations = max(previous_generations, len(doc["calls"]))
    assert previous_generations > 0  # writes did land between kills
    # Temp files a killed writer left behind go away on the next write.
    from common.update_config import ConfigStore

    ConfigStore(path).update("After", call_id="call-after")
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    assert json.loads(path.read_text())["calls"]["call-after"]["caller_name"] == "After"
