"""The per-call configuration model: fields, defaults, catalogues and validation.

One `CallConfig` is everything that makes one call different from another: who is called
(caller_name), what the agent is told (agent_instructions), how it speaks (tts_language,
tts_emotion), any extra context (additional_params), and what the agent does around the
conversation (`CallOptions`: the first message, what to do on voicemail, the post-call
analysis). It is shared by the server (which writes it) and the agent (which builds its
session from it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from common.json_values import check_plain_json
from common.text import checked_text, has_visible, is_unicode, quoted, visible_name

DEFAULT_CALLER_NAME = "Guest"
DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
DEFAULT_LANGUAGE = "en"
DEFAULT_EMOTION = "Calm"

MAX_NAME_CHARS = 200
MAX_INSTRUCTIONS_CHARS = 4000
MAX_ADDITIONAL_PARAMS_BYTES = 8 * 1024
# How deep additional_params may nest (objects and lists): deeper is no context an agent reads,
# and a few hundred levels break JSON encoders downstream (pydantic stops at 255).
MAX_ADDITIONAL_PARAMS_DEPTH = 32

T = TypeVar("T")

# Languages Deepgram's nova-3 serves that the installed Deepgram plugin does not declare yet
# (its `DeepgramLanguages` is a type hint: it sends any code as given), with the dates of
# Deepgram's changelog that added them to nova-3: 2025-11-04 bg cs fi hu vi, 2025-11-24 el ms ro
# sk, 2026-01-21 bn hr kn mr te tl, 2026-02-03 he ur, 2026-04-23 gu, 2026-08-05 pa. Cartesia's
# sonic-3 declares each.
NOVA3_UNDECLARED = frozenset(
    {"bg", "cs", "fi", "hu", "vi", "el", "ms", "ro", "sk", "bn", "hr", "kn", "mr", "te", "tl"}
    | {"he", "ur", "gu", "pa"}
)

# Languages that both speech services serve: Cartesia TTS (the plugin's `TTSLanguages`) and
# Deepgram STT (the plugin's `DeepgramLanguages`, and NOVA3_UNDECLARED). A test keeps this
# table in step with the plugins.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "pl": "Polish",
    "ja": "Japanese",
    "zh": "Chinese",
    "hi": "Hindi",
    "ko": "Korean",
    "ru": "Russian",
    "sv": "Swedish",
    "tr": "Turkish",
    "da": "Danish",
    "ta": "Tamil",
    "uk": "Ukrainian",
    "no": "Norwegian",
    "th": "Thai",
    "id": "Indonesian",
    "bg": "Bulgarian",
    "cs": "Czech",
    "el": "Greek",
    "fi": "Finnish",
    "hr": "Croatian",
    "hu": "Hungarian",
    "ms": "Malay",
    "ro": "Romanian",
    "sk": "Slovak",
    "vi": "Vietnamese",
    "tl": "Tagalog",
    "bn": "Bengali",
    "te": "Telugu",
    "kn": "Kannada",
    "mr": "Marathi",
    "he": "Hebrew",
    "ur": "Urdu",
    "gu": "Gujarati",
    "pa": "Punjabi",
}

# The seed's six emotions with the seed's own descriptions.
EMOTIONS: dict[str, str] = {
    "Calm": "Professional and composed",
    "Excited": "Energetic and enthusiastic",
    "Serious": "Formal and authoritative",
    "Friendly": "Warm and approachable",
    "Empathetic": "Caring and understanding",
    "Neutral": "Balanced and objective",
}

CORE_KEYS = ("caller_name", "agent_instructions", "tts_language", "tts_emotion")
OPTION_KEYS = ("first_message", "voicemail", "analysis")
# Keys that additional_params may not use: they would shadow the core fields, the options or
# the bookkeeping that config.json keeps next to them.
RESERVED_KEYS = frozenset(
    (
        *CORE_KEYS,
        *OPTION_KEYS,
        "last_updated",
        "written_at",
        "call_id",
        "calls",
        "additional_params",
    )
)

MAX_FIRST_MESSAGE_CHARS = 1000
MAX_VOICEMAIL_MESSAGE_CHARS = 1000
MAX_SUCCESS_CRITERIA_CHARS = 2000
MAX_FIELD_DESCRIPTION_CHARS = 500
MAX_ANALYSIS_FIELDS = 20
MAX_ENUM_VALUES = 50
FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def null_means_unset(schema: dict[str, Any]) -> None:
    """A model's JSON schema (its `json_schema_extra`) where each optional field also takes
    JSON null, as the model does ("not given"): /openapi.json gave `name`, `language`,
    `emotion`, `additional_params` and the voicemail `action` as no-null types, and a client
    checked against it refused the `null` the server takes."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name in required or any(alt.get("type") == "null" for alt in prop.get("anyOf", ())):
            continue
        meta = {key: prop.pop(key) for key in ("title", "description", "default") if key in prop}
        inner = dict(prop)
        prop.clear()
        prop.update(anyOf=[inner, {"type": "null"}], **meta)


class _NullIsUnset(BaseModel):
    """An object of the request whose keys given as JSON null mean "not given", as they do
    for the call's own fields (`{"voicemail": {"action": null}}` was a 422)."""

    model_config = ConfigDict(json_schema_extra=null_means_unset)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class VoicemailPolicy(_NullIsUnset):
    """What the agent does when an answering machine picks up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["hang_up", "leave_message"] = "hang_up"
    message: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=MAX_VOICEMAIL_MESSAGE_CHARS,
            description="What to say after the beep (required to leave a message), with a "
            "word to say: emoji, symbols, punctuation and markup alone are not spoken",
        ),
    ] = None

    @model_validator(mode="after")
    def _message_when_leaving_one(self) -> VoicemailPolicy:
        # (zero-width characters alone are no message: the machine would record silence)
        if self.action == "leave_message" and not (self.message and has_visible(self.message)):
            raise ValueError("a message is required to leave one")
        return self


class AnalysisField(_NullIsUnset):
    """One value to extract from the conversation after the call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["string", "number", "integer", "boolean", "enum"]
    description: Annotated[str, Field(max_length=MAX_FIELD_DESCRIPTION_CHARS)] = ""
    enum: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=200)]] | None,
        Field(min_length=1, max_length=MAX_ENUM_VALUES, description="The values, for enum"),
    ] = None
    required: StrictBool = False  # "no" is no boolean (pydantic's lax mode read it as false)

    @model_validator(mode="after")
    def _enum_with_enum(self) -> AnalysisField:
        if self.type == "enum" and not self.enum:
            raise ValueError("an enum field needs its values in `enum`")
        if self.type != "enum" and self.enum is not None:
            raise ValueError("`enum` is only for fields of type enum")
        if self.enum is not None and len(set(self.enum)) != len(self.enum):
            raise ValueError("`enum` values must all be different")
        return self


def _field_name(name: str) -> str:
    """A field's name, checked as its key (beside its spec's other problems: checked once the
    whole request was valid, a bad name was said only after every other error was fixed)."""
    if not FIELD_NAME.fullmatch(name):
        raise ValueError(f"field names must match {FIELD_NAME.pattern}: {quoted(name)}")
    return name


def _analysis_schema(schema: dict[str, Any]) -> None:
    """AnalysisRequest's JSON schema: a field given as null is not given (`_fields_given`),
    and field names are FIELD_NAME's. /openapi.json said neither: `{"fields": {"x": null}}`,
    which the server takes, was invalid by it, and `{"fields": {"Bad Name": ...}}`, which
    the server refuses (422), valid."""
    fields = schema["properties"]["fields"]
    fields["additionalProperties"] = {"anyOf": [fields["additionalProperties"], {"type": "null"}]}
    fields["propertyNames"] = {"pattern": f"^{FIELD_NAME.pattern}$"}
    null_means_unset(schema)


class AnalysisRequest(_NullIsUnset):
    """The post-call analysis the caller wants: a summary, a success verdict, fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_analysis_schema)

    summary: StrictBool = True
    success_criteria: Annotated[
        str | None,
        Field(
            max_length=MAX_SUCCESS_CRITERIA_CHARS,
            description="What a successful call achieves; the verdict is judged against it",
        ),
    ] = None
    fields: Annotated[
        dict[Annotated[str, AfterValidator(_field_name)], AnalysisField],
        Field(
            max_length=MAX_ANALYSIS_FIELDS,
            description=f"At most {MAX_ANALYSIS_FIELDS}; names match {FIELD_NAME.pattern}",
        ),
    ] = Field(default_factory=dict)

    @field_validator("success_criteria", mode="after")
    @classmethod
    def _blank_criteria_are_none(cls, value: str | None) -> str | None:
        """Blank criteria (spaces, zero-width characters) are none, as empty ones are: the
        agent asked its LLM for a success verdict "judged against" nothing, and the call
        showed one. (A NUL stays, to be refused as in any other text of the request.)"""
        if value is not None and not has_visible(value) and "\x00" not in value:
            return None
        return value

    @model_validator(mode="before")
    @classmethod
    def _fields_given(cls, data: Any) -> Any:
        """A field given as null is not given, like any other null of the request."""
        if isinstance(data, dict) and isinstance(data.get("fields"), dict):
            fields = {name: spec for name, spec in data["fields"].items() if spec is not None}
            return {**data, "fields": fields}
        return data


# OpenAI's structured outputs, in which the agent asks for the post-call analysis, take a
# schema of at most 1,000 enum values and 120,000 characters of property names, definition
# names and enum values (its guide's "Supported schemas"): past either, OpenAI refuses the
# request (HTTP 400) and the call's analysis, its summary too, is lost after every call.
ANALYSIS_SCHEMA_MAX_ENUM_VALUES = 1000
ANALYSIS_SCHEMA_MAX_CHARS = 120_000
# The names of the agent's schema besides the fields' (agent.analysis.build_response_model:
# summary, success, achieved, reason, extracted; a test holds the two together), counted as
# if all were asked for.
ANALYSIS_SCHEMA_OWN_CHARS = 37


def analysis_schema_size(request: AnalysisRequest) -> tuple[int, int]:
    """(enum values, characters of names and enum values) of the schema the agent sends for
    `request`, as OpenAI counts them: each enum field's values and its null (a field not
    stated is null), each field's name, and the schema's own names."""
    values = sum(len(spec.enum) + 1 for spec in request.fields.values() if spec.enum)
    chars = ANALYSIS_SCHEMA_OWN_CHARS + sum(
        len(name) + sum(map(len, spec.enum or ())) for name, spec in request.fields.items()
    )
    return values, chars


def analysis_schema_problem(request: AnalysisRequest) -> str | None:
    """Why OpenAI would refuse the schema of `request`'s analysis, or None."""
    values, chars = analysis_schema_size(request)
    if values > ANALYSIS_SCHEMA_MAX_ENUM_VALUES:
        return (
            f"fields: the enum fields hold {values:,} values in all, each counted with one more"
            " (null: not stated); the LLM's structured outputs take at most"
            f" {ANALYSIS_SCHEMA_MAX_ENUM_VALUES:,} in a schema, and the call's analysis would"
            " fail: fewer enum fields or values"
        )
    own = chars - ANALYSIS_SCHEMA_OWN_CHARS
    most = ANALYSIS_SCHEMA_MAX_CHARS - ANALYSIS_SCHEMA_OWN_CHARS
    if own > most:
        return (
            f"fields: their names and enum values come to {own:,} characters; the LLM's"
            f" structured outputs take at most {most:,} in a schema, and the call's analysis"
            " would fail: shorter or fewer enum values"
        )
    return None


class CallOptions(BaseModel):
    """What the agent does around the conversation; part of the call's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_message: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=MAX_FIRST_MESSAGE_CHARS,
            description="Said first when the callee answers, without waiting for the LLM",
        ),
    ] = None
    voicemail: VoicemailPolicy = Field(default_factory=VoicemailPolicy)
    analysis: AnalysisRequest | None = None

    def to_record(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CallOptions:
        """The options of a record; ValueError if they are invalid (a record whose voicemail
        policy or analysis request does not read is not the call's config: defaults in their
        place would drop the message to leave, or the analysis asked for)."""
        values = {k: record[k] for k in OPTION_KEYS if record.get(k) is not None}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise ValueError(f"invalid options ({problems})") from None


# A language tag with subtags (BCP 47: `es-MX`, `pt_BR`, `zh-Hant-TW`, `es-419`), as CRMs
# and browsers write them: the speech services are told the language alone.
_SUBTAGS = re.compile(r"([a-z]{2,3})((?:[-_][a-z0-9]{2,8})+)")
# A first subtag of three letters is an extended language (BCP 47's extlang: no region or
# script has three letters), another language than the first: `zh-yue` is Cantonese, `zh-hak`
# Hakka, `zh-min-nan` Min Nan, each taken as `zh` and called in Mandarin. Those that are the
# first language's standard form are that language.
_SAME_LANGUAGE_EXTLANGS = frozenset({("zh", "cmn"), ("ms", "zsm")})
_EXTLANG = re.compile(r"[-_]([a-z]{3})(?:[-_]|$)")
# Other codes of a language in the catalogue, as browsers and older systems send them: `nb`
# (Norwegian Bokmal, what browsers and phones set for Norway: `nb-NO`), Java's and old
# ISO 639's `iw` (Hebrew) and `in` (Indonesian), and `fil` (Filipino, Chrome's `fil-PH`),
# the standard form of Tagalog. Nynorsk (`nn`) is not Bokmal, and is refused.
_ALIASES = {"nb": "no", "iw": "he", "in": "id", "fil": "tl"}
# A tag's extensions and private use start at a one-letter subtag (BCP 47's singleton:
# `en-US-u-hc-h12`, as JavaScript's Intl writes a locale, `de-DE-x-formal`): they say
# nothing of the language and are left out.
_SINGLETON = re.compile(r"[-_][a-z0-9][-_][a-z0-9]")


def normalize_language(value: object) -> str:
    """Return the catalogue code for `value` (case-insensitive; a tag with subtags, `es-MX`,
    is its language, `es`, unless they name another language, `zh-yue`; another code of a
    language, `nb-NO`, is its catalogue code, `no`) or raise ValueError."""
    if isinstance(value, str):
        code = value.strip().lower()
        if (singleton := _SINGLETON.search(code, 2)) is not None:  # not at its start: `x-...`
            code = code[: singleton.start()]
        tagged = _SUBTAGS.fullmatch(code)
        if tagged is not None:
            code = tagged.group(1)
            extlang = _EXTLANG.match(tagged.group(2))
            if extlang is not None and (code, extlang.group(1)) not in _SAME_LANGUAGE_EXTLANGS:
                code = ""  # another language: refused, not called in this one
        code = _ALIASES.get(code, code)
        if code in LANGUAGES:
            return code
    raise ValueError(
        f"unsupported tts_language {quoted(value)}; allowed: {', '.join(sorted(LANGUAGES))}"
    )


_EMOTIONS_BY_LOWER = {name.lower(): name for name in EMOTIONS}


def normalize_emotion(value: object) -> str:
    """Return the capitalised catalogue emotion for `value` (case-insensitive) or raise."""
    if isinstance(value, str) and value.strip().lower() in _EMOTIONS_BY_LOWER:
        return _EMOTIONS_BY_LOWER[value.strip().lower()]
    raise ValueError(f"unsupported tts_emotion {quoted(value)}; allowed: {', '.join(EMOTIONS)}")


def validate_additional_params(value: object) -> dict[str, Any]:
    """Check extra parameters: a JSON object of at most 8 KiB using no reserved key."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("additional_params must be a JSON object")
    params = dict(value)
    reserved = sorted(str(k) for k in params if k in RESERVED_KEYS)
    if reserved:
        raise ValueError(f"additional_params may not use reserved keys: {', '.join(reserved)}")
    try:
        check_plain_json(
            params, max_bytes=MAX_ADDITIONAL_PARAMS_BYTES, max_depth=MAX_ADDITIONAL_PARAMS_DEPTH
        )
    except ValueError as exc:
        raise ValueError(f"additional_params {exc}") from None
    # A copy of what was checked: the caller may change its own objects before the write.
    copied: dict[str, Any] = json.loads(json.dumps(params))
    return copied


def instructions_text(value: object) -> str | None:
    """The agent's instructions, checked; None when blank (the default applies then: an
    agent with empty instructions would not be the one the API shows)."""
    text = checked_text(value, MAX_INSTRUCTIONS_CHARS, single_line=False)
    return text if has_visible(text) else None  # zero-width characters alone are blank too


def _named(name: str, value: object, check: Callable[[object], T]) -> T:
    """`check(value)`, its ValueError naming the field."""
    try:
        return check(value)
    except ValueError as exc:
        raise ValueError(f"{name} {exc}") from None


def _caller_name(value: object) -> str:
    return visible_name(value, MAX_NAME_CHARS)


def written_at_of(record: object) -> float | None:
    """A record's `written_at` in seconds, or None where it has none that is a finite number
    (NaN compares false with everything: such a record would pass for any room, and never
    grow old enough to be pruned)."""
    value = record.get("written_at") if isinstance(record, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer of 400 digits
        return None
    return seconds if math.isfinite(seconds) else None


def checked_call_id(value: object) -> str | None:
    """A record's key in config.json: a non-empty string (an int would write `5: {...}`,
    which is not JSON, and the next writer would set the whole file aside)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError("call_id must be a non-empty string")
    if not is_unicode(value):  # a lone surrogate: config.json could not hold it
        raise ValueError("call_id must be valid Unicode text")
    return value


# The longest call id a record may be written for: the longest an agent can report on
# (AgentReport.call_id). A record's id is repeated in config.json at every write and in the
# log line of each update: a 100,000-character id was taken, and one holding a newline
# wrote a forged line into the log ("call abc\nFAKE ERROR ...").
MAX_CALL_ID_CHARS = 100


def new_call_id(value: object) -> str | None:
    """`checked_call_id` for a record to write: also one line of at most MAX_CALL_ID_CHARS
    (no control character, line separator or bidi override). Reads and removals take any id
    `checked_call_id` takes, so a record an earlier release wrote can still be read and
    dropped."""
    checked = checked_call_id(value)
    if checked is None:
        return None
    return _named("call_id", checked, _call_id_text)


def _call_id_text(value: object) -> str:
    return checked_text(value, MAX_CALL_ID_CHARS, single_line=True)


def required_call_id(value: object) -> str:
    """`checked_call_id` for what needs a call: None is refused too (remove_call_config(None)
    answered False, "no such record", where remove_call_config(5) was a ValueError)."""
    checked = checked_call_id(value)
    if checked is None:
        raise ValueError("call_id must be a non-empty string")
    return checked


@dataclass(frozen=True)
class CallConfig:
    """A complete, validated configuration for one call."""

    caller_name: str = DEFAULT_CALLER_NAME
    agent_instructions: str = DEFAULT_INSTRUCTIONS
    tts_language: str = DEFAULT_LANGUAGE
    tts_emotion: str = DEFAULT_EMOTION
    additional_params: dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None
    written_at: float | None = None
    options: CallOptions = field(default_factory=CallOptions)

    @classmethod
    def create(
        cls,
        caller_name: str | None = None,
        agent_instructions: str | None = None,
        tts_language: str | None = None,
        tts_emotion: str | None = None,
        additional_params: Mapping[str, Any] | None = None,
        *,
        call_id: str | None = None,
        written_at: float | None = None,
        options: CallOptions | None = None,
    ) -> CallConfig:
        """Validate and complete: a field not given takes its default, never another call's."""
        return cls(
            caller_name=DEFAULT_CALLER_NAME
            if caller_name is None
            else _named("caller_name", caller_name, _caller_name),
            agent_instructions=(
                None
                if agent_instructions is None
                else _named("agent_instructions", agent_instructions, instructions_text)
            )
            or DEFAULT_INSTRUCTIONS,
            tts_language=normalize_language(
                DEFAULT_LANGUAGE if tts_language is None else tts_language
            ),
            tts_emotion=normalize_emotion(DEFAULT_EMOTION if tts_emotion is None else tts_emotion),
            additional_params=validate_additional_params(additional_params),
            call_id=new_call_id(call_id),
            written_at=written_at,
            options=options or CallOptions(),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CallConfig:
        """Rebuild a config from a config.json record or a dispatch-metadata snapshot."""
        extra = record.get("additional_params")
        if extra is None:
            extra = {k: v for k, v in record.items() if k not in RESERVED_KEYS}
        call_id = record.get("call_id")
        return cls.create(
            record.get("caller_name"),
            record.get("agent_instructions"),
            record.get("tts_language"),
            record.get("tts_emotion"),
            extra,
            call_id=call_id if isinstance(call_id, str) else None,
            written_at=written_at_of(record),
            options=CallOptions.from_record(record),
        )

    def to_flat(self, last_updated: float) -> dict[str, Any]:
        """The seed's flat document: core fields, extra params flattened in, last_updated."""
        doc: dict[str, Any] = {
            "caller_name": self.caller_name,
            "agent_instructions": self.agent_instructions,
            "tts_language": self.tts_language,
            "tts_emotion": self.tts_emotion,
        }
        doc.update(self.additional_params)
        doc["last_updated"] = last_updated
        return doc

    def to_record(self, written_at: float) -> dict[str, Any]:
        """A per-call record: the flat document plus call_id, written_at and the extras."""
        record = self.to_flat(written_at)
        record["call_id"] = self.call_id
        record["written_at"] = written_at
        record["additional_params"] = dict(self.additional_params)
        record.update(self.options.to_record())
        return record
