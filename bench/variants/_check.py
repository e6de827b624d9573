"""What every patch shares: make sure the attribute it replaces still exists."""

from __future__ import annotations


def require(owner: object, *names: str) -> None:
    """Raise RuntimeError unless `owner` has every one of `names` (the patch would be a no-op)."""
    missing = [name for name in names if not hasattr(owner, name)]
    if missing:
        raise RuntimeError(
            f"bench variant: {getattr(owner, '__name__', owner)!r} has no {', '.join(missing)}; "
            "the patch no longer matches the tree"
        )
