"""SQLite writes go on while every file descriptor is in use.

Seen on the real server.py under `ulimit -n 256` with 300 calls at once: writes failed
`calls database error: unable to open database file` (36 lines, 34 calls' failures not
recorded, agent reports answered 503), though calls.db and its log were open all along.
Writes queued together run in one transaction, each in a savepoint; SQLite keeps a
savepoint's journal in memory up to 64 KiB and then opens a temporary file for it (in
$TMPDIR, /var/tmp or /tmp, not beside calls.db): that open failed. Temporary files are now
kept in memory (`PRAGMA temp_store=MEMORY`): a write needs no descriptor beyond the
database's own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from common.calls.models import NewCall
from common.storage.sqlite import SqliteCallStore
from tests.helpers import FakeClock
from tests.unit.test_FW_livekit_out_of_descriptors import no_descriptor_left


async def test_writes_queued_together_need_no_new_descriptor(tmp_path: Path) -> None:
    store = await SqliteCallStore.open(tmp_path / "calls.db", FakeClock())
    try:
        config = {"instructions": "x" * 4000, "additional_params": {"note": "y" * 8000}}

        def call(n: int) -> NewCall:
            return NewCall(
                f"call-{n:012x}", "+14155557701", "Ann " + "z" * 190, "en", "Calm", config=config
            )

        await store.create_call(call(0))  # its connection and thread, opened
        with no_descriptor_left():
            await asyncio.gather(*(store.create_call(call(n)) for n in range(1, 61)))
        assert len(await store.list_calls(limit=100)) == 61
    finally:
        await store.close()
