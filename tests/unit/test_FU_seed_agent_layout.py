"""The seed's agent service, laid out as the seed lays it out, imports the seed's functions.

The seed's `voice_backend/outboundService/services/agent_service.py` writes
`from common.update_config import load_dynamic_config`: its `common` is
`voice_backend/outboundService/common`, found because the agent runs from
`voice_backend/outboundService` (`python -m services.agent_service dev`, or a test runner rooted
there). Here that `common` was the alias package of the seed's other import path, whose
`update_config` imports `common.update_config`: itself. The agent stopped at its first line,
`ImportError: cannot import name 'load_dynamic_config' from 'common.update_config'
(.../voice_backend/outboundService/common/update_config.py)`, a circular import that names no
cause.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
OUTBOUND_SERVICE = CHECKOUT / "voice_backend" / "outboundService"

# What the seed's agent does with the config (its "Agent Service" example), and proof of which
# module it got: the project's own, the one the server writes with.
AGENT = """
import common.update_config as seeds
from common.update_config import get_config_value, load_dynamic_config, update_config
import voice_backend.outboundService.common.update_config as aliased

config = load_dynamic_config()
print(json.dumps({
    "caller_name": config.get("caller_name", "Guest"),
    "tts_language": config.get("tts_language", "en"),
    "tts_emotion": get_config_value("tts_emotion", default="Calm"),
    "campaign_id": get_config_value("campaign_id", "DEFAULT"),
    "module": seeds.__file__,
    "one_module": seeds is aliased,
}))
"""


def run_from_the_seeds_agent_directory(code: str, config_path: Path) -> dict[str, object]:
    env = {
        **os.environ,
        "CONFIG_PATH": str(config_path),
        # the checkout after the working directory, as for a project not installed
        "PYTHONPATH": str(CHECKOUT),
    }
    done = subprocess.run(  # noqa: S603 - fixed arguments
        [sys.executable, "-c", f"import json\n{code}"],
        cwd=OUTBOUND_SERVICE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    said: dict[str, object] = json.loads(done.stdout)
    return said


def test_the_seeds_agent_reads_what_the_server_wrote(tmp_path: Path) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(
        json.dumps(
            {
                "caller_name": "Carlos García",
                "agent_instructions": "Eres un asistente de ventas.",
                "tts_language": "es",
                "tts_emotion": "Calm",
                "campaign_id": "SUMMER2024",
                "last_updated": 1699999999.123,
            }
        ),
        encoding="utf-8",
    )

    said = run_from_the_seeds_agent_directory(AGENT, config_path)

    assert said == {
        "caller_name": "Carlos García",
        "tts_language": "es",
        "tts_emotion": "Calm",
        "campaign_id": "SUMMER2024",
        "module": str(CHECKOUT / "common" / "update_config.py"),
        "one_module": True,
    }


def test_the_seeds_agent_writes_as_the_server_does(tmp_path: Path) -> None:
    config_path = tmp_path / "config.json"
    code = (
        "from common.update_config import update_config\n"
        "print(json.dumps(update_config(caller_name='John Doe', tts_emotion='Excited')))"
    )

    said = run_from_the_seeds_agent_directory(code, config_path)

    assert said["caller_name"] == "John Doe"
    written = json.loads(config_path.read_text(encoding="utf-8"))
    assert written["tts_emotion"] == "Excited"
    assert written["calls"] == {}  # the project's store wrote it, not a copy of the seed's
