"""Variant: config.json is encoded from scratch on every write (no reuse of record lines).

`_encode(doc, known)` normally reuses the encoded line of every record that is the very object
it encoded last time, so a write encodes only the records it changed. Here `known` is always
None: every live call's record is encoded again on every write.
"""

from __future__ import annotations

from bench.variants._check import require
from common.config_store import store

require(store, "_encode")

_encode = store._encode


def _encode_all(
    doc: store.Document, known: store.RecordLines | None = None
) -> tuple[bytes, store.RecordLines]:
    return _encode(doc, None)


store._encode = _encode_all
