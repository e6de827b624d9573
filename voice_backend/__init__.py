"""The seed's import path (`voice_backend.outboundService.common.update_config`), kept so its
examples run unchanged. The code lives in common/ (see common/update_config.py)."""
