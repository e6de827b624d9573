"""The one check that text is text: no lone surrogate in it.

A str that holds one came from a JSON escape such as "\\ud800", or from bytes that were not
UTF-8 (aiohttp decodes headers and URLs with surrogateescape). It cannot be encoded, so no
database, log or file can store it; every input we keep is checked with `is_unicode`.
"""

from __future__ import annotations


def is_unicode(text: str) -> bool:
    """True unless `text` holds a lone surrogate (ASCII, the common case, costs no encoding)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
