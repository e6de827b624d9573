"""An agent reads config.json and never writes it, not even one it finds missing."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import aiofiles.os
import pytest

from agent import worker
from agent.config_source import NO_RECORD, read_call_record
from common.config_store.store import ConfigStore, ConfigWriteError
from common.settings import Settings

CALL = "call-ab12cd34ef56"


@pytest.fixture
def job_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ConfigStore:
    """The store a job process of the agent reads its call's record with (its settings from
    the environment the worker exported)."""
    environ: dict[str, str] = {}
    worker.export_for_job_processes(Settings(config_path=tmp_path / "config.json"), environ)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(worker, "job_settings", functools.cache(worker.job_settings.__wrapped__))
    monkeypatch.setattr(
        worker, "job_config_store", functools.cache(worker.job_config_store.__wrapped__)
    )
    return worker.job_config_store()


async def test_a_job_that_finds_config_json_gone_as_it_reads_does_not_write_one(
    job_store: ConfigStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_call_record looked for config.json, then read it: one gone in between (removed,
    or moved aside by the server's write replacing an unreadable one) was taken for none
    yet, and the job wrote a config.json of its own with the defaults (the seed's
    auto-initialisation), under the server's writers' lock. An agent only reads."""
    config = tmp_path / "config.json"
    ConfigStore(config).update("Ann", "Hi", call_id="call-other")  # the server's file
    real_stat = aiofiles.os.stat

    async def then_gone(path: str | os.PathLike[str]) -> os.stat_result:
        found = await real_stat(path)
        config.unlink()  # right after the job looked
        return found

    monkeypatch.setattr(aiofiles.os, "stat", then_gone)
    record, why = await read_call_record(job_store, CALL)
    assert (record, why) == (None, NO_RECORD)
    assert not config.exists()
    assert not list(tmp_path.glob(".config.json.tmp-*"))


async def test_the_agents_store_refuses_every_write(job_store: ConfigStore, tmp_path: Path) -> None:
    """No agent code path can write config.json: the job's store refuses every write,
    saying why, and creates no file; reads still answer."""
    config = tmp_path / "config.json"
    for write in (
        lambda: job_store.update("Ann", "Hi", call_id=CALL),
        lambda: job_store.remove_call(CALL),
    ):
        with pytest.raises(ConfigWriteError, match="only reads config.json"):
            write()
    with pytest.raises(ConfigWriteError, match="only the server writes it"):
        await job_store.update_async("Ann", "Hi", call_id=CALL)
    with pytest.raises(ConfigWriteError):
        await job_store.remove_call_async(CALL)
    assert job_store.load()["caller_name"] == "Guest"  # the seed's defaults, no file made
    assert (await job_store.load_async())["caller_name"] == "Guest"
    assert not config.exists()
    ConfigStore(config).update("Ann", "Hi", call_id=CALL)  # the server writes it
    before = config.stat()
    assert (await job_store.load_async(call_id=CALL))["caller_name"] == "Ann"
    with pytest.raises(ConfigWriteError):
        await job_store.update_async("Bob", "Hi", call_id=CALL)
    after = config.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
