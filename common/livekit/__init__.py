"""LiveKit's server API as this service uses it: dispatch, SIP dial, rooms (see client.py)."""
