"""The seed's Python API given arguments application code gets wrong: None where a call's id
is required."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import update_config


async def test_removing_the_record_of_no_call_is_refused_like_any_bad_call_id(
    default_store: update_config.ConfigStore, config_path: Path
) -> None:
    update_config.update_config(caller_name="A", call_id="call-1")
    message = "call_id must be a non-empty string"
    # Was False ("no such record"), where remove_call_config(5) was a ValueError.
    with pytest.raises(ValueError, match=message):
        update_config.remove_call_config(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        await update_config.remove_call_config_async(None)  # type: ignore[arg-type]
    assert list(json.loads(config_path.read_text())["calls"]) == ["call-1"]
    assert update_config.remove_call_config("call-1") is True
