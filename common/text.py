"""Checks of text we keep: that it is text, and the rules for one line of it.

`is_unicode`: no lone surrogate. A str that holds one came from a JSON escape such as
"\\ud800", or from bytes that were not UTF-8 (aiohttp decodes headers and URLs with
surrogateescape). It cannot be encoded, so no database, log or file can store it; every input
we keep is checked with it.

`text_problem`: `is_unicode`, and no NUL (U+0000). A NUL is text, but PostgreSQL's text and
jsonb cannot hold one while SQLite can: kept, it was a 503 on PostgreSQL alone (which LiveKit
and the agent retry for ever). It is refused on both alike, as the input it is.

`checked_text` and `visible_name`: the rules of the API's text fields, the same for a call's
body, a campaign and the seed's Python API (a caller's name ends up in the agent's prompt and
in log lines, whichever way it came).

`shown_text`: input that was refused but is kept to say what was refused (an invalid campaign
row's number), made safe to store and show.

`has_spoken_word`: whether text the agent says word for word (a first message, a voicemail
message) leaves the text-to-speech anything to say.
"""

from __future__ import annotations

import re
import unicodedata

# Format characters (zero-width, bidi controls), separators and combining marks show nothing
# on their own: a name made only of them is no name to greet anybody by.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp", "Mn", "Me", "Co", "Cn"})
# Letters and symbols that draw nothing: the Hangul fillers, the blank braille pattern, the
# musical null notehead. A name of them alone looks empty wherever it is shown.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\U0001d159")

# What a single line of text must not hold besides control characters: Unicode's line and
# paragraph separators (a log viewer breaks the line there) and the bidi embeddings, overrides
# and isolates (they reorder what a log line shows). Joiners and marks stay: scripts need them.
_LINE_OR_BIDI = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_unicode(text: str) -> bool:
    """True unless `text` holds a lone surrogate (ASCII, the common case, costs no encoding)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def repaired_text(text: str) -> str:
    """`text` with each lone surrogate as U+FFFD (a surrogate pair split in two code points
    joined again): what a broken STT or LLM string ("\\ud83d", half an emoji) leaves is kept
    rather than refused with everything around it."""
    if is_unicode(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# What a text holding a lone surrogate (JSON "\ud800"; no UTF-8 can hold it) is told.
UNICODE_REFUSED = "must be valid Unicode text"


def text_problem(text: str) -> str | None:
    """Why `text` cannot be kept, as "must ..." for the caller to prefix with the field's
    name (a lone surrogate, a NUL); None when it can."""
    if not is_unicode(text):
        return UNICODE_REFUSED
    if "\x00" in text:
        return "must not contain NUL characters"
    return None


def shown_text(text: str, limit: int) -> str:
    """`text` as it may be kept and shown, whatever it holds: each control character (NUL
    among them: PostgreSQL's text cannot hold one), lone surrogate (no encoding can), line
    separator or bidi control (they break or reorder a log line) becomes U+FFFD, and text over
    `limit` characters is cut with an ellipsis. The rest stays, so a user can still find it."""
    clipped = text if len(text) <= limit else text[: max(limit - 1, 0)] + "\u2026"
    if clipped.isascii() and clipped.isprintable():  # the common case: nothing to replace
        return clipped
    return "".join("\ufffd" if _unshowable(ch) else ch for ch in clipped)


# A client's value quoted in an error message: enough to recognise it by (a language code, a
# field's name), short enough that the message's own advice (what is allowed) stays whole
# where a message is cut (a campaign's row errors, at 500 characters).
MAX_QUOTED_CHARS = 41  # 40 characters and an ellipsis, at most


def quoted(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """`value` as an error message repeats it: a string quoted as `repr` quotes it, made safe
    and cut by `shown_text` first; anything else as its `repr`, cut likewise."""
    if isinstance(value, str):
        # `repr` writes a character it cannot print as an escape of up to 10 characters
        # (`\U000e0041`): 40 of them quoted 400, and a campaign row's message lost its advice.
        # Fewer characters are kept until the quote is `limit` long at most.
        kept = min(len(value), limit)
        shown = repr(shown_text(value, limit))
        while len(shown) > limit + 2 and kept > 1:
            kept -= 1
            shown = repr(shown_text(value[:kept] + "\u2026", limit))
        return shown
    return shown_text(repr(value), limit)


def _unshowable(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs") or ch in _LINE_OR_BIDI


def checked_text(value: object, limit: int, *, single_line: bool) -> str:
    """A text field's checks, in the order a client should fix them; ValueError says which
    failed ("must be ...", for the caller to prefix with the field's name). Text of one line
    holds no control character; text of several lines holds no NUL (see `text_problem`)."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not is_unicode(value):  # lone surrogates such as JSON "\\ud800"
        raise ValueError("must be valid Unicode text")
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters")
    if single_line and any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("must not contain control characters")
    if "\x00" in value:  # the one control character text of several lines may not hold
        raise ValueError("must not contain NUL characters")
    if single_line and not _LINE_OR_BIDI.isdisjoint(value):
        raise ValueError("must not contain line separators or bidi override characters")
    return value


def has_visible(text: str) -> bool:
    """Whether `text` shows (or says) anything: a character that is not a format, control,
    separator or combining one, nor a letter that draws nothing. A zero-width space (U+200B),
    a byte order mark (U+FEFF) or a soft hyphen alone is as blank as spaces are."""
    return any(
        unicodedata.category(ch) not in _INVISIBLE_CATEGORIES and ch not in _BLANK_LETTERS
        for ch in text
    )


def visible_name(value: object, limit: int) -> str:
    """A name that is shown and logged as one line (a caller's, a campaign's), stripped."""
    name = checked_text(value, limit, single_line=True)
    if not name:
        raise ValueError(f"must be 1 to {limit} characters")
    if not has_visible(name):
        raise ValueError("must contain at least one visible character")
    return name.strip()


# What livekit-agents' default TTS text transforms (`filter_markdown`, `filter_emoji` in
# livekit/agents/voice/transcription/filters.py, on every `session.say` and reply) take out
# before Cartesia hears the text: the emoji blocks, with the variation selectors, the
# zero-width joiner and the keycap mark (`filter_emoji`); struck-through text, fenced code's
# fence and the word glued to it, and a link's or image's target (`filter_markdown`).
# Cartesia's own tags are acted on, not said (`<break time="30s"/>` is 30 s of silence).
_UNSPOKEN_EMOJI = re.compile(
    "[\U0001f000-\U0001fbff\u2600-\u27bf\u2b00-\u2bff\ufe00-\ufe0f\u200d\u20e3]"
)
_UNSPOKEN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")  # [text](url) and ![alt](url): the text
_UNSPOKEN_MARKDOWN = re.compile(r"`{3,4}\S*|~~(?!\s)[^~]*?(?<!\s)~~")
_UNSPOKEN_TAGS = re.compile(r"</?\s*(?:break|emotion|speed|volume|spell)\b[^<>]*>", re.IGNORECASE)

# Told of a text to be said that would be silence, after "must contain ...".
NOTHING_TO_SAY = (
    "must contain a word to say: emoji, symbols, punctuation, struck-through text and"
    " speech tags alone are not spoken, and the callee would hear silence"
)


def has_spoken_word(text: str) -> bool:
    """Whether `text`, said as is, gives the callee a word to hear: a letter or a digit
    (any script) once the agent's TTS pipeline has taken out what it does not say. "👋😊",
    "~~Hello~~", "..." or "♥" passed as a first message (something visible) and the callee,
    having picked up, heard nothing at all."""
    said = _UNSPOKEN_LINK.sub(r"\1", text)
    for unsaid in (_UNSPOKEN_MARKDOWN, _UNSPOKEN_EMOJI, _UNSPOKEN_TAGS):
        said = unsaid.sub("", said)
    return any(unicodedata.category(ch)[0] in "LN" and ch not in _FILLERS for ch in said)


# Letters by category that are blanks to read: the Hangul fillers (a "name" of U+3164 alone
# passed as a word, and the TTS said nothing).
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")
