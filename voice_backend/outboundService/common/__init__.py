"""See voice_backend/__init__.py."""
