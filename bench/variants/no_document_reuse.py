"""Variant: the config writer never reuses the document it last wrote.

`ConfigStore._current_document` normally compares config.json with the bytes of our last write
and, when nobody else wrote since, mutates the document kept from that write. Here it always
parses the file again. The TTL bound of the last write is still passed on (it is valid whenever
the file is our last write), so the TTL skip is unaffected; line reuse needs the very record
objects of the last write, so a parsed document never reuses lines: the two go together.
"""

from __future__ import annotations

from pathlib import Path

from bench.variants._check import require
from common.config_store import store

require(store.ConfigStore, "_current_document", "_start_document")
require(store, "_read_bytes")


def _always_parse(
    self: store.ConfigStore, target: Path, erased: frozenset[bytes] = frozenset()
) -> tuple[store.Document, store._Written | None]:
    data = store._read_bytes(target)
    written, self._written = self._written, None  # re-armed only by a completed write
    same = data is not None and written is not None and data == written.data
    return self._start_document(data, target, erased), written if same else None


store.ConfigStore._current_document = _always_parse  # type: ignore[method-assign]
