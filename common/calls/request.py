"""`POST /calls/outbound` bodies: the `OutboundCall` model and its validation (pure).

The seed's body is `{phone_number, name, dynamic_instruction, language, emotion}`; we add
optional `additional_params`, `ringing_timeout_s` and `max_duration_s`. The model is the one
place the fields, limits and messages are written: the handler validates with it, the OpenAPI
document is generated from it, and campaign rows are validated with it too. Every problem is
reported field by field, so a client can fix them all at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from common.calls.errors import FieldError, InvalidCall
from common.calls.phone import PHONE_SYNTAX, normalize_phone
from common.config_store.model import (
    DEFAULT_CALLER_NAME,
    DEFAULT_EMOTION,
    DEFAULT_LANGUAGE,
    EMOTIONS,
    LANGUAGES,
    MAX_ADDITIONAL_PARAMS_BYTES,
    MAX_ADDITIONAL_PARAMS_DEPTH,
    MAX_FIRST_MESSAGE_CHARS,
    MAX_INSTRUCTIONS_CHARS,
    MAX_NAME_CHARS,
    RESERVED_KEYS,
    AnalysisRequest,
    CallOptions,
    VoicemailPolicy,
    analysis_schema_problem,
    instructions_text,
    normalize_emotion,
    normalize_language,
    null_means_unset,
    validate_additional_params,
)
from common.notify.guard import MAX_URL_LENGTH, check_url
from common.text import (
    NOTHING_TO_SAY,
    UNICODE_REFUSED,
    checked_text,
    has_spoken_word,
    has_visible,
    text_problem,
    visible_name,
)

if TYPE_CHECKING:
    from common.settings import Settings

# What check_url can take, for /openapi.json (documented as any string, "ftp://x",
# "https:host" and " https://host" were valid by it): http(s), a host, no credentials, no
# fragment, no whitespace or backslash. Public addresses only is checked at request time.
WEBHOOK_URL_SYNTAX = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s\\/?#@]+(?:[/?][^\s\\#]*)?$"
# Per-call limits a request may set (seconds); the settings give the defaults.
RINGING_TIMEOUT_RANGE = (5, 120)
MAX_DURATION_RANGE = (30, 3600)


def _seconds(value: object, bounds: tuple[int, int]) -> int | None:
    if value is None:
        return None
    low, high = bounds
    if isinstance(value, float) and value.is_integer():  # 20.0 (Python's json.dumps of a
        value = int(value)  # float): an integer, as JSON Schema's "integer" counts it (probe AP)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        # "20" is in range: told only the range, its sender could not see what was wrong.
        sent_as = ", a JSON number, not a string" if isinstance(value, str) else ""
        raise ValueError(f"must be a whole number of seconds from {low} to {high}{sent_as}")
    return value


class OutboundCall(BaseModel):
    """One call to place. JSON null in an optional field means "not given"."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=null_means_unset)

    phone_number: Annotated[
        str,
        Field(
            description="E.164: '+' then 8 to 15 digits (spaces, dots, dashes and parentheses "
            "are ignored). Refused (422): premium-rate, shared-cost and personal numbers, "
            "numbers of no country (+800, +808, +870, +881-+883, +979), emergency numbers, "
            "numbers on the do-not-call list, and regions outside CALLS_ALLOWED_COUNTRIES.",
            # The document's pattern takes separators ("+1 (415) 555-0100" is taken): it is
            # not checked by pydantic, whose message would replace ours. The number the call
            # shows is E.164 (CallView).
            json_schema_extra={
                "examples": ["+1234567890", "+1 (415) 555-0100"],
                "pattern": PHONE_SYNTAX,
            },
        ),
    ]
    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_NAME_CHARS,
            description=f"How the agent addresses the callee; default {DEFAULT_CALLER_NAME}",
        ),
    ] = DEFAULT_CALLER_NAME
    dynamic_instruction: Annotated[
        str | None,
        Field(max_length=MAX_INSTRUCTIONS_CHARS, description="The agent's instructions"),
    ] = None
    language: Annotated[
        str,
        Field(
            description=(
                "TTS/STT language (ISO 639-1, case-insensitive; a tag with a region or script,"
                " es-MX, is its language); default en"
            ),
            json_schema_extra={"enum": sorted(LANGUAGES)},
        ),
    ] = DEFAULT_LANGUAGE
    emotion: Annotated[
        str,
        Field(
            description="TTS emotion (case-insensitive); default Calm",
            json_schema_extra={"enum": list(EMOTIONS)},
        ),
    ] = DEFAULT_EMOTION
    additional_params: Annotated[
        dict[str, Any],
        Field(
            description=f"Extra context for the agent, at most {MAX_ADDITIONAL_PARAMS_BYTES} "
            "bytes as compact JSON in UTF-8 (no spaces, no \\u escapes), nested at most "
            f"{MAX_ADDITIONAL_PARAMS_DEPTH} levels deep; may not use the reserved keys "
            f"{', '.join(sorted(RESERVED_KEYS))}",
        ),
    ] = Field(default_factory=dict)
    ringing_timeout_s: Annotated[
        int | None,
        Field(
            ge=RINGING_TIMEOUT_RANGE[0],
            le=RINGING_TIMEOUT_RANGE[1],
            description="How long the phone rings; default CALL_RINGING_TIMEOUT_S",
        ),
    ] = None
    max_duration_s: Annotated[
        int | None,
        Field(
            ge=MAX_DURATION_RANGE[0],
            le=MAX_DURATION_RANGE[1],
            description="The longest the call may last, counted from the dial, ringing "
            "included: at least the ringing timeout; default CALL_MAX_DURATION_S",
        ),
    ] = None
    first_message: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=MAX_FIRST_MESSAGE_CHARS,
            description="Said first when the callee answers, without waiting for the LLM; "
            "it must hold a word to say (a letter or digit: emoji, symbols, punctuation, "
            "struck-through text and speech tags alone are not spoken); default: a greeting "
            "by name",
        ),
    ] = None
    voicemail: Annotated[
        VoicemailPolicy | None,
        Field(description="On an answering machine: hang_up (default) or leave_message"),
    ] = None
    analysis: Annotated[
        AnalysisRequest | None,
        Field(
            description="Post-call analysis: summary, success verdict, extracted fields; "
            'default {"summary": true}. Its enum fields hold at most 1,000 values in all, each'
            " field counting one more, and its fields' names and enum values at most 119,963"
            " characters: OpenAI's structured outputs refuse a larger schema"
        ),
    ] = None
    webhook_url: Annotated[
        str | None,
        Field(
            max_length=MAX_URL_LENGTH,
            description="Where this call's events are POSTed (overrides CALLS_WEBHOOK_URL): "
            "https, on a public address; only on a server with CALLS_WEBHOOK_SECRET set "
            "(refused otherwise)",
            json_schema_extra={"pattern": WEBHOOK_URL_SYNTAX},
        ),
    ] = None

    def options(self) -> CallOptions:
        """What the agent does around the conversation, as the call's config holds it."""
        return CallOptions(
            first_message=self.first_message,
            voicemail=self.voicemail or VoicemailPolicy(),
            # Every call gets a summary unless it asks otherwise ({"summary": false}).
            analysis=self.analysis if self.analysis is not None else AnalysisRequest(),
        )

    @field_validator("phone_number", mode="before")
    @classmethod
    def _phone(cls, value: object, info: ValidationInfo) -> str:
        context = info.context or {}
        return normalize_phone(
            value,
            context.get("allowed_countries", ()),
            strict=context.get("strict_numbers", False),
        )

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> str:
        return DEFAULT_CALLER_NAME if value is None else visible_name(value, MAX_NAME_CHARS)

    @field_validator("dynamic_instruction", mode="before")
    @classmethod
    def _instruction(cls, value: object) -> str | None:
        return None if value is None else instructions_text(value)

    @field_validator("language", mode="before")
    @classmethod
    def _language(cls, value: object) -> str:
        try:
            return normalize_language(DEFAULT_LANGUAGE if value is None else value)
        except ValueError as exc:
            raise ValueError(str(exc).replace("tts_language ", "language ")) from None

    @field_validator("emotion", mode="before")
    @classmethod
    def _emotion(cls, value: object) -> str:
        try:
            return normalize_emotion(DEFAULT_EMOTION if value is None else value)
        except ValueError as exc:
            raise ValueError(str(exc).replace("tts_emotion ", "emotion ")) from None

    @field_validator("first_message", mode="before")
    @classmethod
    def _first_message(cls, value: object) -> str | None:
        if value is None:
            return None
        text = checked_text(value, MAX_FIRST_MESSAGE_CHARS, single_line=False)
        if not text:
            raise ValueError(f"must be 1 to {MAX_FIRST_MESSAGE_CHARS} characters")
        # spaces or zero-width characters alone: the callee would hear nothing ("   " was
        # said to be no "1 to 1000 characters", which it is)
        if not has_visible(text):
            raise ValueError("must contain at least one visible character")
        # emoji or markup alone: visible, but the agent's TTS says none of it (`has_spoken_word`)
        if not has_spoken_word(text):
            raise ValueError(NOTHING_TO_SAY)
        return text

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _webhook_url(cls, value: object, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be a string")
        context = info.context or {}
        if not context.get("webhooks_enabled", False):
            raise ValueError(
                "customer webhooks are not enabled on this server (CALLS_WEBHOOK_SECRET is"
                " unset): its operator sets CALLS_WEBHOOK_SECRET to enable them; or leave"
                " webhook_url out"
            )
        return check_url(value, allow_private=context.get("allow_private_webhooks", False))

    @field_validator("voicemail", "analysis", mode="after")
    @classmethod
    def _storable_options(cls, value: BaseModel | None) -> BaseModel | None:
        """The options' texts (the voicemail message, the success criteria, the fields'
        descriptions and values) are kept with the call as its other texts are, so they are
        held to the same rule (`text_problem`: no lone surrogate, no NUL)."""
        found = None if value is None else _text_problem_in(value.model_dump())
        if found is not None:
            where, problem = found
            raise ValueError(f"{where} {problem}")
        return value

    @field_validator("analysis", mode="after")
    @classmethod
    def _analysis_fits(cls, value: AnalysisRequest | None) -> AnalysisRequest | None:
        """An analysis whose schema OpenAI refuses (`analysis_schema_problem`: 20 enum fields
        of 50 values, or 12 of 50 values of 200 characters) was taken, and every call's
        analysis failed after it, "the LLM API answered HTTP 400". (Checked on requests only:
        a record an older server wrote with one still reads, its call placed.)"""
        problem = None if value is None else analysis_schema_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("voicemail", mode="after")
    @classmethod
    def _message_only_to_leave(cls, value: VoicemailPolicy | None) -> VoicemailPolicy | None:
        """A message with `hang_up` would be dropped unsaid: the caller meant to leave one,
        or sent a message by mistake. (Checked on requests only: a record an older server
        wrote with one still reads.)"""
        if value is not None and value.action == "hang_up" and value.message is not None:
            raise ValueError(
                'a message is left only with action "leave_message"; with "hang_up" (the'
                " default) the agent hangs up on an answering machine and says nothing"
            )
        return value

    @field_validator("voicemail", mode="after")
    @classmethod
    def _message_said(cls, value: VoicemailPolicy | None) -> VoicemailPolicy | None:
        """A message of emoji or markup alone is left as silence on the machine, as the
        first message would be said (`has_spoken_word`). (Checked on requests only, as
        above.)"""
        if value is not None and value.message is not None and not has_spoken_word(value.message):
            raise ValueError(f"message {NOTHING_TO_SAY}")
        return value

    @field_validator("additional_params", mode="before")
    @classmethod
    def _params(cls, value: object) -> dict[str, Any]:
        return validate_additional_params(value)

    @field_validator("ringing_timeout_s", mode="before")
    @classmethod
    def _ringing(cls, value: object) -> int | None:
        return _seconds(value, RINGING_TIMEOUT_RANGE)

    @field_validator("max_duration_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> int | None:
        return _seconds(value, MAX_DURATION_RANGE)


def _text_problem_in(value: object, where: str = "") -> tuple[str, str] | None:
    """The first text in `value` (an option model's dump: a few levels of objects and lists,
    with keys the model checked) that cannot be kept: where it is, and why."""
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else (where, problem)
    if isinstance(value, dict):
        items = [(f"{where}.{key}" if where else str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"{where}[{index}]", item) for index, item in enumerate(value)]
    else:
        return None
    for inner, item in items:
        found = _text_problem_in(item, inner)
        if found is not None:
            return found
    return None


FIELDS = frozenset(OutboundCall.model_fields)


# What an option that takes an object looks like, for the error of one given as something else
# (`"voicemail": "hang_up"` got pydantic's "Input should be a valid dictionary or instance of
# VoicemailPolicy", naming a class of ours and no shape the client could send).
_OBJECT_SHAPES = {
    "voicemail": '{"action": "hang_up"} or {"action": "leave_message", "message": "…"}',
    "analysis": '{"summary": true, "success_criteria": "…", "fields": {…}}',
    "fields": '{"<name>": {"type": "string", "description": "…"}}',
}
_FIELD_SHAPE = '{"type": "string", "description": "…"}'


def _object_expected(loc: tuple[int | str, ...]) -> str:
    if len(loc) >= 2 and loc[-2] == "fields":  # one analysis field's spec, whatever its name
        shape: str | None = _FIELD_SHAPE
    else:
        shape = _OBJECT_SHAPES.get(str(loc[-1])) if loc else None
    return "must be a JSON object" + (f", e.g. {shape}" if shape is not None else "")


def field_errors(error: ValidationError) -> list[FieldError]:
    """Our field-by-field details from pydantic's: unknown fields first, then in field order."""
    unknown, known = [], []
    for item in error.errors(include_url=False):
        loc = item["loc"][:-1] if item["loc"][-1:] == ("[key]",) else item["loc"]  # a dict's key
        where = ".".join(str(part) for part in loc) or "body"
        if item["type"] == "extra_forbidden":
            unknown.append(FieldError(where, "unknown field"))
        elif item["type"] == "string_unicode" and not loc and isinstance(item["input"], str):
            # A key with a lone surrogate (JSON "\ud800"): no field's name, so an unknown
            # one; pydantic stops at it, and said "body: Input should be a valid string".
            unknown.append(FieldError(item["input"], "unknown field"))
        elif item["type"] == "string_unicode":
            # A lone surrogate in `voicemail` or `analysis` (a value, or a key of theirs):
            # pydantic's "Input should be a valid string" was said of a string.
            known.append(FieldError(where, UNICODE_REFUSED))
        elif item["type"] == "missing":
            known.append(FieldError(where, "is required"))
        elif item["type"] in ("model_type", "dict_type"):
            known.append(FieldError(where, _object_expected(loc)))
        else:
            known.append(FieldError(where, str(item["msg"]).removeprefix("Value error, ")))
    return unknown + known


def parse_outbound_call(
    body: object,
    allowed_countries: tuple[str, ...] = (),
    *,
    strict_numbers: bool = False,
    webhooks_enabled: bool = False,
    allow_private_webhooks: bool = False,
    default_ringing_timeout_s: int | None = None,
    default_max_duration_s: int | None = None,
) -> OutboundCall:
    """Validate a decoded JSON body; raise InvalidCall listing every problem.

    `strict_numbers`: refuse numbers phonenumbers cannot validate (a real LiveKit is in use).
    `webhooks_enabled`: a call may name its own webhook_url (the server signs webhooks).
    `default_ringing_timeout_s`, `default_max_duration_s`: the server's limits for a call
    that sets none (CALL_RINGING_TIMEOUT_S, CALL_MAX_DURATION_S), to refuse a ringing
    timeout the call's max duration would cut (see `_limits_problem`).
    """
    if not isinstance(body, dict):
        raise InvalidCall([FieldError("body", "must be a JSON object")])
    context = {
        "allowed_countries": allowed_countries,
        "strict_numbers": strict_numbers,
        "webhooks_enabled": webhooks_enabled,
        "allow_private_webhooks": allow_private_webhooks,
    }
    try:
        call = OutboundCall.model_validate(body, context=context)
    except ValidationError as exc:
        raise InvalidCall(field_errors(exc)) from None
    problem = _limits_problem(call, default_ringing_timeout_s, default_max_duration_s)
    if problem is not None:
        raise InvalidCall([problem])
    return call


def _limits_problem(
    call: OutboundCall, default_ringing_s: int | None, default_max_s: int | None
) -> FieldError | None:
    """A ringing timeout longer than the call's max duration: LiveKit counts
    max_call_duration from the dial, ringing included, so the line was cut at the max
    duration, still ringing (`{"ringing_timeout_s": 120, "max_duration_s": 30}` rang 30 s
    and ended no_answer, "max_duration_s reached before an answer"), and the call was
    accepted without a word. Named on the field the request set (max_duration_s first)."""
    ringing = call.ringing_timeout_s or default_ringing_s
    longest = call.max_duration_s or default_max_s
    if ringing is None or longest is None or ringing <= longest:
        return None
    ringing_from = "" if call.ringing_timeout_s else " (CALL_RINGING_TIMEOUT_S)"
    longest_from = "" if call.max_duration_s else " (CALL_MAX_DURATION_S)"
    where = (
        "max_duration_s"
        if call.max_duration_s or not call.ringing_timeout_s
        else "ringing_timeout_s"
    )
    return FieldError(
        where,
        f"the ringing timeout{ringing_from}, {ringing} s, is longer than max_duration_s"
        f"{longest_from}, {longest} s, which LiveKit counts from the dial, ringing included:"
        f" the call would be cut while ringing; set max_duration_s to {ringing} or more, or"
        f" ringing_timeout_s to {longest} or less",
    )


@dataclass(frozen=True)
class RequestRules:
    """The server's rules for a call body: the one way a body becomes an `OutboundCall`, for
    `POST /calls/outbound` and for every campaign row alike."""

    allowed_countries: tuple[str, ...] = ()
    strict_numbers: bool = False
    webhooks_enabled: bool = False
    allow_private_webhooks: bool = False
    # The limits of a call that sets none: a request's must not ring longer than it may last.
    default_ringing_timeout_s: int | None = None
    default_max_duration_s: int | None = None

    @classmethod
    def of(cls, settings: Settings) -> RequestRules:
        return cls(
            settings.calls_allowed_countries,
            strict_numbers=not settings.uses_sandbox,
            webhooks_enabled=settings.calls_webhook_secret is not None,
            allow_private_webhooks=settings.calls_webhook_allow_private,
            default_ringing_timeout_s=settings.call_ringing_timeout_s,
            default_max_duration_s=settings.call_max_duration_s,
        )

    def parse(self, body: object) -> OutboundCall:
        return parse_outbound_call(
            body,
            self.allowed_countries,
            strict_numbers=self.strict_numbers,
            webhooks_enabled=self.webhooks_enabled,
            allow_private_webhooks=self.allow_private_webhooks,
            default_ringing_timeout_s=self.default_ringing_timeout_s,
            default_max_duration_s=self.default_max_duration_s,
        )
