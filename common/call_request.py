"""Validation of `POST /calls/outbound` bodies into an `OutboundCall` (pure).

The seed's body is `{phone_number, name, dynamic_instruction, language, emotion}`; we add an
optional `additional_params` object. Every problem is reported field by field, so a client
can fix them all at once.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberType

from common.call_config import (
    DEFAULT_CALLER_NAME,
    DEFAULT_EMOTION,
    DEFAULT_LANGUAGE,
    MAX_INSTRUCTIONS_CHARS,
    MAX_NAME_CHARS,
    normalize_emotion,
    normalize_language,
    validate_additional_params,
)

FIELDS = frozenset(
    {
        "phone_number",
        "name",
        "dynamic_instruction",
        "language",
        "emotion",
        "additional_params",
        "ringing_timeout_s",
        "max_duration_s",
    }
)
# Per-call limits a request may set (seconds); the settings give the defaults.
RINGING_TIMEOUT_RANGE = (5, 120)
MAX_DURATION_RANGE = (30, 3600)
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_SEPARATORS = re.compile(r"[\s().\-]")
_REFUSED_TYPES = {
    PhoneNumberType.PREMIUM_RATE: "premium-rate",
    PhoneNumberType.SHARED_COST: "shared-cost",
}


@dataclass(frozen=True)
class FieldError:
    field: str
    error: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "error": self.error}


@dataclass(frozen=True)
class OutboundCall:
    phone_number: str
    name: str = DEFAULT_CALLER_NAME
    dynamic_instruction: str | None = None
    language: str = DEFAULT_LANGUAGE
    emotion: str = DEFAULT_EMOTION
    additional_params: dict[str, Any] = field(default_factory=dict)
    ringing_timeout_s: int | None = None
    max_duration_s: int | None = None


class InvalidCall(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.error}" for e in errors))
        self.errors = errors


def normalize_phone(
    raw: object, allowed_countries: tuple[str, ...] = (), *, strict: bool = False
) -> str:
    """E.164 (`+` and 8-15 digits), normalised by phonenumbers; raise ValueError if refused.

    `strict` (a real LiveKit is configured): numbers phonenumbers cannot validate are refused.
    Without it (the sandbox) they are accepted, so the seed's made-up examples keep working,
    but never to get around a rule: the premium/shared-cost block holds for every number that
    starts with (or is the start of) a blocked number, and a number whose region cannot be
    determined is never inside `allowed_countries`.
    """
    if not isinstance(raw, str):
        raise ValueError("must be a string in E.164 form, e.g. +14155550123")
    compact = _SEPARATORS.sub("", raw)
    if not _E164.fullmatch(compact):
        raise ValueError("must be E.164: '+' then 8 to 15 digits, e.g. +14155550123")
    try:
        parsed = phonenumbers.parse(compact, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"is not a phone number ({exc})") from None
    number = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    valid = phonenumbers.is_valid_number(parsed)
    kind = _refused_kind(parsed) if valid else _refused_kind_nearby(parsed)
    if kind is not None:
        raise ValueError(f"{kind} numbers are not called")
    if not valid and _may_reach_emergency(parsed):
        raise ValueError("emergency numbers are not called")
    if strict and not valid:
        raise ValueError("is not a valid phone number for its country")
    if allowed_countries:
        region = _region(parsed, valid)
        if region not in allowed_countries:
            where = (
                f"country {region}" if region else "the number's country cannot be determined; it"
            )
            raise ValueError(f"{where} is not allowed; allowed: {', '.join(allowed_countries)}")
    return number


def _refused_kind(parsed: phonenumbers.PhoneNumber) -> str | None:
    return _REFUSED_TYPES.get(phonenumbers.number_type(parsed))


# Digits tried to lengthen a short invalid number into a valid one of a blocked type.
_FILLERS = "0123456789"


def _refused_kind_nearby(parsed: phonenumbers.PhoneNumber) -> str | None:
    """The blocked type of a valid number that `parsed` (invalid) starts with or begins.

    An over-long premium number (a blocked one plus digits) is still routed to the premium
    line by many carriers, and a cut-short one may be completed by the trunk: both are refused.
    Only the national lengths the country's numbers can have are tried.
    """
    country = parsed.country_code or 0
    national = phonenumbers.national_significant_number(parsed)
    prefix = f"+{country}"
    for length in sorted(_national_lengths(country), reverse=True):
        if length < len(national):
            candidates: Iterable[str] = (national[:length],)
        elif length > len(national):
            candidates = (national + f * (length - len(national)) for f in _FILLERS)
        else:
            continue
        for candidate in candidates:
            kind = _kind_of(prefix + candidate)
            if kind is not None:
                return kind
    return None


@functools.cache
def _national_lengths(country_code: int) -> frozenset[int]:
    """Every national number length any region of `country_code` uses."""
    lengths: set[int] = set()
    for region in phonenumbers.region_codes_for_country_code(country_code):
        metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
            country_code, region
        )
        if metadata is not None and metadata.general_desc is not None:
            lengths.update(metadata.general_desc.possible_length)
    return frozenset(n for n in lengths if n > 0)


def _kind_of(candidate: str) -> str | None:
    try:
        parsed = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        return None
    return _refused_kind(parsed) if phonenumbers.is_valid_number(parsed) else None


def _may_reach_emergency(parsed: phonenumbers.PhoneNumber) -> bool:
    """Whether an invalid number starts with an emergency code of its country (+1 911...).

    Valid numbers are subscriber numbers (a French +33 1 12... is a Paris line, not 112), so
    this is asked only of numbers phonenumbers cannot vouch for.
    """
    national = phonenumbers.national_significant_number(parsed)
    return any(
        phonenumbers.connects_to_emergency_number(national, region)
        for region in phonenumbers.region_codes_for_country_code(parsed.country_code or 0)
    )


def _region(parsed: phonenumbers.PhoneNumber, valid: bool) -> str | None:
    """The number's ISO region, or None when it cannot be determined.

    A valid number's region is known. An invalid one's only when its country code belongs to
    one region alone: "+1" is shared by the US, Canada and the Caribbean, "+44" by the UK and
    the Crown Dependencies, and leading digits of an invalid number prove nothing.
    """
    if valid:
        return phonenumbers.region_code_for_number(parsed)
    regions = phonenumbers.region_codes_for_country_code(parsed.country_code or 0)
    return regions[0] if len(regions) == 1 and regions[0] != "001" else None


def _has_control_chars(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


# Format characters (zero-width, bidi controls), separators and combining marks show nothing
# on their own: a name made only of them is no name to greet anybody by.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp", "Mn", "Me", "Co", "Cn"})


def _has_visible_chars(text: str) -> bool:
    return any(unicodedata.category(ch) not in _INVISIBLE_CATEGORIES for ch in text)


def _optional_seconds(
    body: dict[str, Any], name: str, bounds: tuple[int, int], errors: list[FieldError]
) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append(FieldError(name, f"must be a whole number of seconds from {low} to {high}"))
        return None
    return value


def _optional_text(
    body: dict[str, Any], name: str, limit: int, errors: list[FieldError], *, single_line: bool
) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(FieldError(name, "must be a string"))
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates such as JSON "\ud800"
        errors.append(FieldError(name, "must be valid Unicode text"))
        return None
    if len(value) > limit:
        errors.append(FieldError(name, f"must be at most {limit} characters"))
        return None
    if single_line and _has_control_chars(value):
        errors.append(FieldError(name, "must not contain control characters"))
        return None
    return value


def _or_default(value: object, default: str) -> object:
    """JSON null means "not given", as for every other optional field."""
    return default if value is None else value


def parse_outbound_call(
    body: object, allowed_countries: tuple[str, ...] = (), *, strict_numbers: bool = False
) -> OutboundCall:
    """Validate a decoded JSON body; raise InvalidCall listing every problem.

    `strict_numbers`: refuse numbers phonenumbers cannot validate (a real LiveKit is in use).
    """
    if not isinstance(body, dict):
        raise InvalidCall([FieldError("body", "must be a JSON object")])
    errors: list[FieldError] = [
        FieldError(str(key), "unknown field") for key in body if key not in FIELDS
    ]
    phone = ""
    if "phone_number" not in body:
        errors.append(FieldError("phone_number", "is required"))
    else:
        try:
            phone = normalize_phone(body["phone_number"], allowed_countries, strict=strict_numbers)
        except ValueError as exc:
            errors.append(FieldError("phone_number", str(exc)))
    name = _optional_text(body, "name", MAX_NAME_CHARS, errors, single_line=True)
    if name is not None and not name.strip():
        errors.append(FieldError("name", f"must be 1 to {MAX_NAME_CHARS} characters"))
    elif name is not None and not _has_visible_chars(name):
        errors.append(FieldError("name", "must contain at least one visible character"))
    instruction = _optional_text(
        body, "dynamic_instruction", MAX_INSTRUCTIONS_CHARS, errors, single_line=False
    )
    language, emotion = DEFAULT_LANGUAGE, DEFAULT_EMOTION
    try:
        language = normalize_language(_or_default(body.get("language"), DEFAULT_LANGUAGE))
    except ValueError as exc:
        errors.append(FieldError("language", str(exc).replace("tts_language ", "language ")))
    try:
        emotion = normalize_emotion(_or_default(body.get("emotion"), DEFAULT_EMOTION))
    except ValueError as exc:
        errors.append(FieldError("emotion", str(exc).replace("tts_emotion ", "emotion ")))
    params: dict[str, Any] = {}
    try:
        params = validate_additional_params(body.get("additional_params"))
    except ValueError as exc:
        errors.append(FieldError("additional_params", str(exc)))
    ringing = _optional_seconds(body, "ringing_timeout_s", RINGING_TIMEOUT_RANGE, errors)
    duration = _optional_seconds(body, "max_duration_s", MAX_DURATION_RANGE, errors)
    if errors:
        raise InvalidCall(errors)
    return OutboundCall(
        phone_number=phone,
        name=name.strip() if name else DEFAULT_CALLER_NAME,
        dynamic_instruction=instruction,
        language=language,
        emotion=emotion,
        additional_params=params,
        ringing_timeout_s=ringing,
        max_duration_s=duration,
    )
