"""See voice_backend/__init__.py.

Imported as `common` itself, this is the project's common package: the seed's agent service
(`voice_backend/outboundService/services/agent_service.py`) writes `from common.update_config
import load_dynamic_config` and runs from `voice_backend/outboundService`, where `common` is
this directory. Its `update_config` (an alias of `common.update_config`) then imported itself,
and the agent stopped at its first line with a circular ImportError.
"""

from pathlib import Path

if __name__ == "common":  # not `voice_backend.outboundService.common`
    # The checkout's common/: every `common.*` module is found there, as from the checkout.
    __path__ = [str(Path(__file__).resolve().parents[3] / "common")]
