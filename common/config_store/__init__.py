"""config.json: the per-call configuration model and its durable store (see store.py)."""
