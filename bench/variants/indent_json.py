"""Variant: config.json written as the seed did, `json.dumps(doc, indent=2, ensure_ascii=False)`.

Instead of the line-per-record encoding (compact lines from the C encoder, unchanged records'
lines reused), the whole document is encoded by the pure-Python indenting encoder on every
write. The writer still keeps the document of its last write (that compares bytes, whatever
their format). Readers still work: `_record_from_line` trusts only its own framing (the file
must end with "\\n}\\n", which this one does not), so a per-call read parses the whole document.
"""

from __future__ import annotations

import json

from bench.variants._check import require
from common.config_store import store

require(store, "_encode")


def _encode_indented(
    doc: store.Document, known: store.RecordLines | None = None
) -> tuple[bytes, store.RecordLines]:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode(), {}


store._encode = _encode_indented
