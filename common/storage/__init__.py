"""The storage seam: `CallStore` (base.py) and its backends (sqlite.py, postgres.py)."""
