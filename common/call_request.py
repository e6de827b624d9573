"""Validation of `POST /calls/outbound` bodies into an `OutboundCall` (pure).

The seed's body is `{phone_number, name, dynamic_instruction, language, emotion}`; we add an
optional `additional_params` object. Every problem is reported field by field, so a client
can fix them all at once.
"""

from __future__ import annotations

import re
import unicodedata
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
    {"phone_number", "name", "dynamic_instruction", "language", "emotion", "additional_params"}
)
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


class InvalidCall(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.error}" for e in errors))
        self.errors = errors


def normalize_phone(raw: object, allowed_countries: tuple[str, ...] = ()) -> str:
    """E.164 (`+` and 8-15 digits), normalised by phonenumbers; raise ValueError if refused."""
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
    if phonenumbers.is_valid_number(parsed):
        kind = _REFUSED_TYPES.get(phonenumbers.number_type(parsed))
        if kind is not None:
            raise ValueError(f"{kind} numbers are not called")
        region = phonenumbers.region_code_for_number(parsed)
    else:
        region = phonenumbers.region_code_for_country_code(parsed.country_code or 0)
    if allowed_countries and region not in allowed_countries:
        raise ValueError(
            f"country {region or 'unknown'} is not allowed; allowed: {', '.join(allowed_countries)}"
        )
    return number


def _has_control_chars(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


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


def parse_outbound_call(body: object, allowed_countries: tuple[str, ...] = ()) -> OutboundCall:
    """Validate a decoded JSON body; raise InvalidCall listing every problem."""
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
            phone = normalize_phone(body["phone_number"], allowed_countries)
        except ValueError as exc:
            errors.append(FieldError("phone_number", str(exc)))
    name = _optional_text(body, "name", MAX_NAME_CHARS, errors, single_line=True)
    if name is not None and not name.strip():
        errors.append(FieldError("name", f"must be 1 to {MAX_NAME_CHARS} characters"))
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
    if errors:
        raise InvalidCall(errors)
    return OutboundCall(
        phone_number=phone,
        name=name.strip() if name else DEFAULT_CALLER_NAME,
        dynamic_instruction=instruction,
        language=language,
        emotion=emotion,
        additional_params=params,
    )
