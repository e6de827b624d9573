"""Validation of `POST /calls/outbound` bodies, and phone-number masking for logs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.calls.errors import FieldError, InvalidCall
from common.calls.phone import PHONE_SYNTAX, e164, normalize_phone
from common.calls.request import FIELDS, OutboundCall, parse_outbound_call
from common.config_store.model import EMOTIONS, LANGUAGES, MAX_ADDITIONAL_PARAMS_BYTES
from common.masking import mask_phone
from tests.helpers import SEED_EXAMPLES, SEED_TEST_BODY


def errors_of(body: object, allowed: tuple[str, ...] = ()) -> dict[str, str]:
    """The field -> message map of the InvalidCall that `body` must raise."""
    with pytest.raises(InvalidCall) as info:
        parse_outbound_call(body, allowed)
    fields = [e.field for e in info.value.errors]
    assert len(fields) == len(set(fields)), "one error per field"
    return {e.field: e.error for e in info.value.errors}


def with_(**changes: object) -> dict[str, object]:
    body: dict[str, object] = dict(SEED_EXAMPLES[0])
    body.update(changes)
    return body


# ------------------------------------------------------------------ accepted bodies


@pytest.mark.parametrize("body", SEED_EXAMPLES, ids=["cricket", "spanish", "requests"])
def test_seed_examples_are_accepted_unchanged(body: dict[str, str]) -> None:
    call = parse_outbound_call(body)
    assert call == OutboundCall(
        phone_number=body["phone_number"],
        name=body["name"],
        dynamic_instruction=body["dynamic_instruction"],
        language=body["language"],
        emotion=body["emotion"],
        additional_params={},
    )


def test_seed_integration_body_without_instruction() -> None:
    call = parse_outbound_call(SEED_TEST_BODY)
    assert call.phone_number == "+1234567890"
    assert call.name == "Test User"
    assert call.dynamic_instruction is None
    assert (call.language, call.emotion) == ("en", "Calm")


def test_only_phone_number_takes_defaults() -> None:
    assert parse_outbound_call({"phone_number": "+34612345678"}) == OutboundCall(
        phone_number="+34612345678",
        name="Guest",
        dynamic_instruction=None,
        language="en",
        emotion="Calm",
        additional_params={},
    )


def test_null_optional_texts_take_defaults() -> None:
    body = {"phone_number": "+1234567890", "name": None, "dynamic_instruction": None}
    call = parse_outbound_call({**body, "additional_params": None})
    assert (call.name, call.dynamic_instruction, call.additional_params) == ("Guest", None, {})


def test_additional_params_are_kept() -> None:
    call = parse_outbound_call(with_(additional_params={"campaign_id": "CAMP123", "n": [1, 2]}))
    assert call.additional_params == {"campaign_id": "CAMP123", "n": [1, 2]}


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("+1 (234) 567-890", "+1234567890"),
        ("+34 612 34 56 78", "+34612345678"),
        ("+44.1234.567890", "+441234567890"),
        ("+12345678", "+12345678"),  # 8 digits
        ("+123456789012345", "+123456789012345"),  # 15 digits
    ],
)
def test_phone_separators_are_removed(raw: str, normalised: str) -> None:
    assert parse_outbound_call({"phone_number": raw}).phone_number == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "+34\u2011612\u2011345\u2011678",  # non-breaking hyphens (a word processor's)
        "+34 612\u2013345\u2013678",  # en dashes
        "+34\u2212612345678",  # a minus sign
        "\u202a+34 612 345 678\u202c",  # Outlook's embedding around a copied number
        "\u200e+34 612 345 678",  # a direction mark
        "\ufeff+34612345678\u200b",  # a byte order mark, a zero-width space
    ],
)
def test_typographic_dashes_and_invisible_marks_are_separators(raw: str) -> None:
    """Regression: a number copied from a document or a contact card, with typographic
    dashes or the invisible marks such a copy adds, looks like "+34-612-345-678" and was
    refused "must be E.164: '+' then 8 to 15 digits", which it seemed to be."""
    assert parse_outbound_call({"phone_number": raw}).phone_number == "+34612345678"
    assert e164(raw) == "+34612345678"  # the do-not-call list's key, the same
    assert re.fullmatch(PHONE_SYNTAX, raw)  # and /openapi.json's pattern says so


def test_name_is_stripped() -> None:
    assert parse_outbound_call(with_(name="  Alice  ")).name == "Alice"


def test_limits_are_inclusive() -> None:
    call = parse_outbound_call(with_(name="n" * 200, dynamic_instruction="i" * 4000))
    assert len(call.name) == 200
    assert call.dynamic_instruction is not None and len(call.dynamic_instruction) == 4000


def test_instruction_may_span_lines() -> None:
    text = "Line one.\nLine two.\tTabbed."
    assert parse_outbound_call(with_(dynamic_instruction=text)).dynamic_instruction == text


@pytest.mark.parametrize(
    ("language", "canonical"), [("ES", "es"), ("En", "en"), (" fr ", "fr"), ("JA", "ja")]
)
def test_language_is_case_insensitive_and_canonicalised(language: str, canonical: str) -> None:
    assert parse_outbound_call(with_(language=language)).language == canonical


@pytest.mark.parametrize(
    ("emotion", "canonical"),
    [("excited", "Excited"), ("CALM", "Calm"), ("empathetic ", "Empathetic")],
)
def test_emotion_is_case_insensitive_and_canonicalised(emotion: str, canonical: str) -> None:
    assert parse_outbound_call(with_(emotion=emotion)).emotion == canonical


# ------------------------------------------------------------------ phone number errors


def test_missing_phone_number() -> None:
    body = dict(SEED_EXAMPLES[0])
    del body["phone_number"]
    assert errors_of(body) == {"phone_number": "is required"}


@pytest.mark.parametrize(
    "phone",
    [
        "+1234567",  # 7 digits
        "+1234567890123456",  # 16 digits
        "+1234567abc",  # letters
        "+12345six890",
        "+0123456789",  # country codes never start with 0
        "",
        "+",
        "++1234567890",
        "+1234567890 ext 5",
    ],
)
def test_phone_not_e164(phone: str) -> None:
    assert errors_of(with_(phone_number=phone)) == {
        "phone_number": "must be E.164: '+' then 8 to 15 digits, e.g. +14155550123"
    }


@pytest.mark.parametrize("phone", [1234567890, None, ["+1234567890"], {"n": "+1"}, 1.5, True])
def test_phone_not_a_string(phone: object) -> None:
    assert errors_of(with_(phone_number=phone)) == {
        "phone_number": "must be a string in E.164 form, e.g. +14155550123"
    }


def test_phone_with_unknown_country_code() -> None:
    message = errors_of(with_(phone_number="+99912345678"))["phone_number"]
    assert message == "is not a phone number: no country has its code"  # not the library's


@pytest.mark.parametrize(
    ("phone", "kind"),
    [
        ("+19005551234", "premium-rate"),
        ("+449012345678", "premium-rate"),
        ("+34803123456", "premium-rate"),
        ("+34901123456", "shared-cost"),
        ("+33884012345", "shared-cost"),
        ("+447012345678", "personal (follow-me)"),  # UK 070: charged like a premium line
        ("+44701234567", "personal (follow-me)"),  # cut short: the trunk may complete it
    ],
)
def test_premium_and_shared_cost_numbers_refused(phone: str, kind: str) -> None:
    assert errors_of(with_(phone_number=phone)) == {
        "phone_number": f"{kind} numbers are not called"
    }


@pytest.mark.parametrize(
    ("phone", "what"),
    [
        # satellite (Iridium): valid, a MOBILE to phonenumbers
        ("+881234567890", "global mobile satellite system"),
        ("+870123456789", "Inmarsat satellite phones"),
        ("+8821234567", "international networks"),  # invalid
        ("+883123456789", "international networks"),
        ("+80012345678", "international freephone"),  # was called a network (probe AU)
        ("+979123456789", "international premium-rate service"),
    ],
)
def test_numbers_of_no_country_are_refused_valid_or_not(phone: str, what: str) -> None:
    """Satellite and international-network numbers have the highest per-minute rates there
    are, the ones revenue-share fraud dials; with no allow-list they were called."""
    code = phone[1:4]
    expected = f"numbers of no country (+{code}: {what}) are not called"
    assert errors_of(with_(phone_number=phone)) == {"phone_number": expected}
    with pytest.raises(ValueError, match=re.escape(expected)):
        normalize_phone(phone, strict=True)
    with pytest.raises(ValueError, match=re.escape(expected)):
        normalize_phone(phone, ("US",))


def test_country_allow_list_refuses_other_countries() -> None:
    message = errors_of(with_(phone_number="+14155550123"), ("ES",))["phone_number"]
    assert message == "country US is not allowed; allowed: ES"
    message = errors_of(with_(phone_number="+441234567890"), ("ES", "FR"))["phone_number"]
    assert message == "country GB is not allowed; allowed: ES, FR"


def test_country_allow_list_accepts_its_countries() -> None:
    call = parse_outbound_call(with_(phone_number="+34612345678"), ("ES",))
    assert call.phone_number == "+34612345678"
    assert normalize_phone("+14155550123", ("US", "ES")) == "+14155550123"


UNDETERMINED = "the number's country cannot be determined; it is not allowed; allowed: US"


@pytest.mark.parametrize(
    "phone",
    [
        "+1234567890",  # the seed's example: too short for NANP, so no region at all
        "+12465551234",  # Barbados area code, not a valid number: +1 alone says nothing
        "+4477009001234",  # over-long UK mobile: +44 is also Jersey, Guernsey, Man
    ],
)
def test_a_number_without_a_determined_region_is_never_inside_an_allow_list(phone: str) -> None:
    """Regression: an invalid number took its region from the country code alone, so an
    invalid Caribbean NANP number counted as US."""
    assert errors_of(with_(phone_number=phone), ("US",)) == {"phone_number": UNDETERMINED}


def test_a_valid_caribbean_number_is_not_us() -> None:
    message = errors_of(with_(phone_number="+18765551234"), ("US",))["phone_number"]
    assert message == "country JM is not allowed; allowed: US"


@pytest.mark.parametrize(
    ("phone", "kind"),
    [
        ("+190055512345", "premium-rate"),  # a US 900 number plus a digit
        ("+1900555123456", "premium-rate"),  # plus two
        ("+19005551", "premium-rate"),  # cut short: the trunk may complete it
        ("+4490123456789", "premium-rate"),  # a UK 09 number plus a digit
        ("+348031234567", "premium-rate"),  # Spanish 803 plus a digit
        ("+349011234567", "shared-cost"),  # Spanish 901 plus a digit
    ],
)
def test_blocked_prefixes_hold_for_invalid_numbers(phone: str, kind: str) -> None:
    """Regression: numbers phonenumbers cannot validate skipped the premium check."""
    assert errors_of(with_(phone_number=phone)) == {
        "phone_number": f"{kind} numbers are not called"
    }


def test_strict_numbers_refuse_what_cannot_be_validated() -> None:
    """With a real LiveKit, an invalid number is refused; the sandbox keeps the seed's."""
    for phone in ("+1234567890", "+34612345678", "+441234567890"):
        assert parse_outbound_call(with_(phone_number=phone)).phone_number == phone
    with pytest.raises(InvalidCall) as raised:
        parse_outbound_call(with_(phone_number="+1234567890"), strict_numbers=True)
    assert [e.to_json() for e in raised.value.errors] == [
        {"field": "phone_number", "error": "is not a valid phone number for its country"}
    ]
    assert parse_outbound_call(
        with_(phone_number="+14155550123"), strict_numbers=True
    ).phone_number == ("+14155550123")


@pytest.mark.parametrize(
    ("phone", "digit"),
    [
        ("+1415555\uff17\uff17\uff10\uff15", "'\uff17' (U+FF17)"),
        ("+1415555\u0667705", "'\u0667' (U+0667)"),
    ],
)
def test_digits_of_another_script_are_named(phone: str, digit: str) -> None:
    """Full-width digits (a Japanese keyboard's, a PDF's) were refused as "must be E.164: '+'
    then 8 to 15 digits", which "+1415555７７０５" looks to be."""
    assert errors_of(with_(phone_number=phone)) == {
        "phone_number": f"must be E.164 with the digits 0-9: {digit} is a digit of another"
        " script or width; write it as 7"
    }


@pytest.mark.parametrize(
    "plus", ["\uff0b", "\ufe62", "\u207a", "\u208a", "\u2795", "\u02d6", "\ufb29"]
)
def test_a_plus_sign_of_another_script_is_named(plus: str) -> None:
    """A full-width plus (a Japanese keyboard's) or a superscript one (a PDF's) was refused
    as "must be E.164: '+' then 8 to 15 digits", which "＋14155557705" looks to be; digits of
    another width were already named."""
    assert errors_of(with_(phone_number=f"{plus}1 415 555 7705")) == {
        "phone_number": f"must be E.164 with the plus sign '+': {plus!r} (U+{ord(plus):04X}) is"
        " a plus sign of another script or width; write it as +"
    }


@pytest.mark.parametrize(
    ("phone", "said"),
    [
        (
            "+1 \uff08415\uff09 555 7705",
            "'\uff08' (U+FF08) is a '(' of another width; write it as (",
        ),
        ("+1 415 555\uff0d7705", "'\uff0d' (U+FF0D) is a '-' of another width; write it as -"),
        (
            "+1\uff0e415\uff0e555\uff0e7705",
            "'\uff0e' (U+FF0E) is a '.' of another width; write it as .",
        ),
    ],
)
def test_a_separator_of_another_width_is_named(phone: str, said: str) -> None:
    """A full-width keyboard's parentheses, dashes and dots (its plus and digits were named)
    got "must be E.164: '+' then 8 to 15 digits", which "+1 （415） 555－7705" looks to be."""
    assert errors_of(with_(phone_number=phone)) == {
        "phone_number": f"must be E.164: {said} or leave it out"
    }


@pytest.mark.parametrize("phone", ["+44999999999", "+19115550123", "+4911212345678"])
def test_invalid_numbers_starting_with_an_emergency_code_are_refused(phone: str) -> None:
    assert errors_of(with_(phone_number=phone)) == {
        "phone_number": "emergency numbers are not called"
    }


def test_a_valid_subscriber_number_is_not_an_emergency_code() -> None:
    assert parse_outbound_call(with_(phone_number="+33112000000")).phone_number == "+33112000000"


@pytest.mark.parametrize(
    "name",
    ["\u200b", "\u200b \u200e", "\u0301", "\u3164", "\u2800\u2800", "\u115f\u1160", "\uffa0"],
)
def test_names_with_nothing_visible_are_refused(name: str) -> None:
    """Regression: a name of only zero-width or bidi-control characters was accepted, and
    one of Hangul fillers or blank braille (letters and symbols that draw nothing)."""
    assert errors_of(with_(name=name)) == {"name": "must contain at least one visible character"}


@pytest.mark.parametrize("name", ["\u202e\u202d", "\u2066\u2069"])
def test_names_of_bidi_overrides_only_are_refused(name: str) -> None:
    assert errors_of(with_(name=name)) == {
        "name": "must not contain line separators or bidi override characters"
    }


def test_names_with_marks_and_letters_are_fine() -> None:
    assert parse_outbound_call(with_(name="\u200fنور")).name == "\u200fنور"


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("ringing_timeout_s", 5, True),
        ("ringing_timeout_s", 120, True),
        ("ringing_timeout_s", 4, False),
        ("ringing_timeout_s", 121, False),
        ("ringing_timeout_s", 30.5, False),
        ("ringing_timeout_s", 20.0, True),  # json.dumps(20.0): an integer to JSON Schema
        ("max_duration_s", 1e300, False),
        ("ringing_timeout_s", True, False),
        ("ringing_timeout_s", "30", False),
        ("max_duration_s", "600", False),
        ("max_duration_s", "abc", False),
        ("max_duration_s", 30, True),
        ("max_duration_s", 3600, True),
        ("max_duration_s", 29, False),
        ("max_duration_s", 3601, False),
    ],
)
def test_per_call_limits(field: str, value: object, ok: bool) -> None:
    if ok:
        parsed = getattr(parse_outbound_call(with_(**{field: value})), field)
        assert parsed == value and type(parsed) is int
    else:
        low, high = (5, 120) if field == "ringing_timeout_s" else (30, 3600)
        # "30" is in range: its sender is told it is a string (only the range was said).
        sent_as = ", a JSON number, not a string" if isinstance(value, str) else ""
        assert errors_of(with_(**{field: value})) == {
            field: f"must be a whole number of seconds from {low} to {high}{sent_as}"
        }


# ------------------------------------------------------------------ name and instruction errors


def test_blank_name() -> None:
    assert errors_of(with_(name="")) == {"name": "must be 1 to 200 characters"}


@pytest.mark.parametrize("name", ["   ", "\u3000"])
def test_a_name_of_spaces_says_so(name: str) -> None:
    assert errors_of(with_(name=name)) == {"name": "must contain at least one visible character"}


def test_name_too_long() -> None:
    assert errors_of(with_(name="n" * 201)) == {"name": "must be at most 200 characters"}


@pytest.mark.parametrize("name", ["Bob\nSmith", "Bob\x00", "Bob\x1b[31m", "Bob\rSmith", "\x7f"])
def test_name_with_control_characters(name: str) -> None:
    assert errors_of(with_(name=name)) == {"name": "must not contain control characters"}


@pytest.mark.parametrize(
    "name", ["Bob\u2028INFO forged", "Bob\u2029", "Bob \u202emoc.live", "\u2066Bob\u2069"]
)
def test_name_with_line_separators_or_bidi_overrides(name: str) -> None:
    assert errors_of(with_(name=name)) == {
        "name": "must not contain line separators or bidi override characters"
    }


@pytest.mark.parametrize("name", ["क्‍ष", "👨\u200d👩\u200d👧", "José", "שלום Bob", "محمد"])
def test_names_in_every_script_are_kept(name: str) -> None:
    """Joiners, marks and right-to-left scripts are text, not tricks."""
    assert parse_outbound_call(with_(name=name)).name == name


@pytest.mark.parametrize("name", [42, ["Bob"], {"first": "Bob"}, True])
def test_name_not_a_string(name: object) -> None:
    assert errors_of(with_(name=name)) == {"name": "must be a string"}


def test_instruction_too_long() -> None:
    assert errors_of(with_(dynamic_instruction="i" * 4001)) == {
        "dynamic_instruction": "must be at most 4000 characters"
    }


@pytest.mark.parametrize("text", ["\u200b", "\ufeff", "\u200b \u2060\n", "\u00ad", "\u0301"])
def test_texts_of_only_invisible_characters_are_blank(text: str) -> None:
    """Regression: blank was judged by str.strip() alone, so a zero-width space, a byte order
    mark or a soft hyphen (pasted from a page or a file) passed for text. The instructions
    were that instead of the default ones; a first message of it had the callee answer to
    silence; a voicemail message of it left a silent message. Now they are blank, as spaces
    are: the default instructions, and 422 for the two messages."""
    assert parse_outbound_call(with_(dynamic_instruction=text)).dynamic_instruction is None
    assert errors_of(with_(first_message=text)) == {
        "first_message": "must contain at least one visible character"
    }
    leave = {"action": "leave_message", "message": text}
    assert errors_of(with_(voicemail=leave)) == {"voicemail": "a message is required to leave one"}


@pytest.mark.parametrize("text", ["   ", "\n\t ", "\u00a0"])
def test_a_first_message_of_spaces_is_said_to_have_nothing_visible(text: str) -> None:
    """Regression: a first message of spaces was refused as no "1 to 1000 characters" (it
    has 3), while one of zero-width characters was said to hold nothing visible. Both are
    the message that says what is wrong; an empty one keeps its length message."""
    assert errors_of(with_(first_message=text)) == {
        "first_message": "must contain at least one visible character"
    }
    assert errors_of(with_(first_message="")) == {"first_message": "must be 1 to 1000 characters"}


@pytest.mark.parametrize("criteria", ["", "   ", "\u200b", "\n\u00ad"])
def test_blank_success_criteria_ask_for_no_verdict(criteria: str) -> None:
    """Regression: criteria of spaces (or zero-width characters) were kept, and the agent,
    which asks for a success verdict whenever they are not empty, had its LLM judge the call
    "against:" nothing; the call showed a verdict nobody asked for."""
    from agent.analysis import build_response_model

    call = parse_outbound_call(with_(analysis={"success_criteria": criteria}))
    assert call.analysis is not None and call.analysis.success_criteria is None
    model = build_response_model(call.analysis)
    assert model is not None and "success" not in model.model_fields
    kept = parse_outbound_call(with_(analysis={"success_criteria": " Agrees. "})).analysis
    assert kept is not None and kept.success_criteria == " Agrees. "


def test_texts_with_something_visible_are_kept() -> None:
    call = parse_outbound_call(
        with_(
            dynamic_instruction="\u200bBe brief.",
            first_message="\ufeffHola",
            voicemail={"action": "leave_message", "message": "\u00adBye"},
        )
    )
    assert call.dynamic_instruction == "\u200bBe brief."
    assert call.first_message == "\ufeffHola"
    assert call.voicemail is not None and call.voicemail.message == "\u00adBye"


def test_instruction_not_a_string() -> None:
    assert errors_of(with_(dynamic_instruction=["be nice"])) == {
        "dynamic_instruction": "must be a string"
    }


@pytest.mark.parametrize("field", ["name", "dynamic_instruction"])
def test_lone_surrogate_text_is_refused(field: str) -> None:
    body = json.loads('{"phone_number": "+1234567890", "%s": "Bob\\ud800"}' % field)  # noqa: UP031
    assert set(errors_of(body)) == {field}


NUL_CASES = [
    pytest.param({"dynamic_instruction": "Hi.\x00"}, "dynamic_instruction", "", id="instruction"),
    pytest.param({"first_message": "Hi\x00"}, "first_message", "", id="first-message"),
    pytest.param(
        {"voicemail": {"action": "leave_message", "message": "Call back\x00"}},
        "voicemail",
        "message ",
        id="voicemail-message",
    ),
    pytest.param(
        {"analysis": {"success_criteria": "\x00"}}, "analysis", "success_criteria ", id="criteria"
    ),
    pytest.param(
        {"analysis": {"fields": {"when": {"type": "string", "description": "a\x00"}}}},
        "analysis",
        "fields.when.description ",
        id="field-description",
    ),
    pytest.param(
        {"analysis": {"fields": {"next": {"type": "enum", "enum": ["ship", "x\x00"]}}}},
        "analysis",
        "fields.next.enum[1] ",
        id="enum-value",
    ),
    pytest.param(
        {"additional_params": {"order\x00": 1}}, "additional_params", "additional_params ", id="key"
    ),
    pytest.param(
        {"additional_params": {"a": [{"b": ["c", "d\x00"]}]}},
        "additional_params",
        "additional_params ",
        id="deep-value",
    ),
]


@pytest.mark.parametrize(("changes", "field", "where"), NUL_CASES)
def test_a_nul_in_text_we_keep_is_refused(
    changes: dict[str, object], field: str, where: str
) -> None:
    """PostgreSQL's text cannot hold a NUL while SQLite's can: every text of a call is held
    to one rule, whichever database the server uses."""
    assert errors_of(with_(**changes)) == {field: f"{where}must not contain NUL characters"}


def test_the_same_texts_without_a_nul_are_kept() -> None:
    """A guard for NUL_CASES: each body is refused for its NUL alone."""
    for case in NUL_CASES:
        changes = json.loads(json.dumps(case.values[0]).replace("\\u0000", ""))
        parse_outbound_call(with_(**changes))


# ------------------------------------------------------------------ language and emotion errors


@pytest.mark.parametrize("language", ["xx", "english", "xx-US", "en-", "en US", "", 5])
def test_unknown_language_lists_allowed_values(language: object) -> None:
    message = errors_of(with_(language=language))["language"]
    assert message.startswith(f"unsupported language {language!r}; allowed: ")
    allowed = message.split("allowed: ", 1)[1].split(", ")
    assert allowed == sorted(LANGUAGES)
    assert {"en", "es", "fr", "de", "it", "pt", "nl", "pl", "ja", "zh"} <= set(allowed)


@pytest.mark.parametrize(
    ("tag", "language"),
    [("es-MX", "es"), ("pt_BR", "pt"), ("EN-us", "en"), ("zh-Hant-TW", "zh"), ("es-419", "es")],
)
def test_a_language_tag_with_a_region_or_script_is_its_language(tag: str, language: str) -> None:
    """As CRMs, browsers and Deepgram's own docs write them; before, `es-MX` was a 422."""
    assert parse_outbound_call(with_(language=tag)).language == language


@pytest.mark.parametrize("emotion", ["Angry", "", "calm!", 3])
def test_unknown_emotion_lists_allowed_values(emotion: object) -> None:
    message = errors_of(with_(emotion=emotion))["emotion"]
    assert message.startswith(f"unsupported emotion {emotion!r}; allowed: ")
    assert message.split("allowed: ", 1)[1].split(", ") == list(EMOTIONS)


@pytest.mark.parametrize("field", ["language", "emotion"])
def test_a_long_or_unprintable_language_or_emotion_is_quoted_cut_and_safe(field: str) -> None:
    """A 60 KB language (a body holds up to 64 KiB) came back whole in the 422, and with a
    campaign's 500-character cut its message lost the allowed values it ends with."""
    message = errors_of(with_(**{field: "\x1b[31m" + "x" * 60_000}))[field]
    assert len(message) < 300, len(message)
    assert message.startswith(f"unsupported {field} '\ufffd[31mxxx")
    assert "\u2026'; allowed: " in message and "\x1b" not in message
    assert errors_of(with_(**{field: list(range(20_000))}))[field].startswith(
        f"unsupported {field} [0, 1, 2"
    )


@pytest.mark.parametrize("field", ["language", "emotion"])
@pytest.mark.parametrize("char", ["\U000e0041", "\u200b", "\ue000"])
def test_a_language_or_emotion_of_escaped_characters_is_quoted_short(field: str, char: str) -> None:
    """repr writes a character it cannot print (a tag character, a zero-width space, one of
    private use) as an escape of 6 to 10 characters: 60 tag characters were quoted as 400,
    and a campaign row's message (cut at 500) lost the end of its "allowed: ..." list."""
    message = errors_of(with_(**{field: char * 60}))[field]
    quote = message.removeprefix(f"unsupported {field} ").split("; allowed: ")[0]
    assert len(quote) <= 43, quote
    assert quote.endswith("\u2026'") and len(message) < 300, message
    allowed = sorted(LANGUAGES) if field == "language" else list(EMOTIONS)
    assert message.split("; allowed: ", 1)[1].split(", ") == allowed


# ------------------------------------------------------------------ additional_params errors


@pytest.mark.parametrize("params", [[1, 2], "campaign=1", 5, True])
def test_additional_params_not_an_object(params: object) -> None:
    assert errors_of(with_(additional_params=params)) == {
        "additional_params": "additional_params must be a JSON object"
    }


@pytest.mark.parametrize("key", ["caller_name", "tts_language", "calls", "call_id", "last_updated"])
def test_additional_params_reserved_key(key: str) -> None:
    message = errors_of(with_(additional_params={key: "x", "fine": 1}))["additional_params"]
    assert message == f"additional_params may not use reserved keys: {key}"


def test_additional_params_too_large() -> None:
    # {"k":"..."} is 8 bytes of compact JSON around the value.
    just_fits = {"k": "v" * (MAX_ADDITIONAL_PARAMS_BYTES - 8)}
    assert len(json.dumps(just_fits, separators=(",", ":"))) == MAX_ADDITIONAL_PARAMS_BYTES
    assert parse_outbound_call(with_(additional_params=just_fits)).additional_params == just_fits
    too_big = {"k": "v" * (MAX_ADDITIONAL_PARAMS_BYTES - 7)}
    assert errors_of(with_(additional_params=too_big)) == {
        "additional_params": "additional_params is larger than 8192 bytes as JSON"
    }


def test_additional_params_size_counts_utf8_bytes() -> None:
    params = {"k": "é" * (MAX_ADDITIONAL_PARAMS_BYTES // 2)}  # 2 bytes each in UTF-8
    assert "additional_params" in errors_of(with_(additional_params=params))


def test_additional_params_nan_refused() -> None:
    message = errors_of(with_(additional_params={"score": float("nan")}))["additional_params"]
    assert message.startswith("additional_params must be JSON-serialisable")


# ------------------------------------------------------------------ body-level errors


def test_unknown_top_level_field() -> None:
    assert errors_of(with_(phone="+1234567890")) == {"phone": "unknown field"}


def test_a_key_that_is_no_unicode_is_an_unknown_field() -> None:
    """A key with a lone surrogate (JSON "\\ud800", a campaign row's or a call's) was refused
    "body: Input should be a valid string, unable to parse raw data as a unicode string",
    naming no field of the request."""
    assert errors_of(with_(**{"\ud800x": 1})) == {"\ud800x": "unknown field"}


@pytest.mark.parametrize("body", [[SEED_EXAMPLES[0]], "hello", 42, None, True])
def test_body_not_an_object(body: object) -> None:
    assert errors_of(body) == {"body": "must be a JSON object"}


def test_all_errors_reported_together() -> None:
    body = {
        "name": 42,
        "dynamic_instruction": "i" * 4001,
        "language": "klingon",
        "emotion": "Angry",
        "additional_params": {"caller_name": "x"},
        "extra": 1,
    }
    with pytest.raises(InvalidCall) as info:
        parse_outbound_call(body)
    errors = info.value.errors
    assert [e.field for e in errors] == [
        "extra",
        "phone_number",
        "name",
        "dynamic_instruction",
        "language",
        "emotion",
        "additional_params",
    ]
    assert FieldError("phone_number", "is required") in errors
    assert errors[0].to_json() == {"field": "extra", "error": "unknown field"}
    message = str(info.value)
    assert message.startswith("extra: unknown field; phone_number: is required; name: ")
    assert all(f"{e.field}: {e.error}" in message for e in errors)
    assert isinstance(info.value, ValueError)


def test_fields_constant_matches_the_accepted_body() -> None:
    assert FIELDS == set(SEED_EXAMPLES[0]) | {
        "additional_params",
        "ringing_timeout_s",
        "max_duration_s",
        "first_message",
        "voicemail",
        "analysis",
        "webhook_url",
    }


# ------------------------------------------------------------------ property


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # json.loads accepts NaN and Infinity, so the handler can see them
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
valid_phones = st.sampled_from(["+1234567890", "+34612345678", "+441234567890", "+33612345678"])
phone_like = st.one_of(
    valid_phones,
    st.from_regex(r"\+[0-9 ()\-.]{5,18}", fullmatch=True),
    st.sampled_from(["+19005551234", "+99912345678", "+0123456789"]),
    json_values,
)
texts = st.one_of(
    st.text(max_size=50), st.text(min_size=195, max_size=205), st.text(max_size=5).map(str.upper)
)
body_fields = {
    "name": st.one_of(texts, json_values),
    "dynamic_instruction": st.one_of(texts, json_values),
    "language": st.one_of(st.sampled_from([*LANGUAGES, "EN", " es ", "xx"]), json_values),
    "emotion": st.one_of(st.sampled_from([*EMOTIONS, "calm", "Angry"]), json_values),
    "additional_params": st.one_of(
        st.dictionaries(st.text(max_size=12), json_values, max_size=4), json_values
    ),
}
plain_text = st.from_regex(r"[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ .'-]{0,40}", fullmatch=True)
good_fields = {
    "name": plain_text,
    "dynamic_instruction": st.text(max_size=200),
    "language": st.sampled_from([*LANGUAGES, "EN", " es "]),
    "emotion": st.sampled_from([*EMOTIONS, "calm", "EXCITED"]),
    "additional_params": st.dictionaries(st.text(max_size=12), json_values, max_size=4),
}
bodies = st.one_of(
    json_values,
    # Well-formed bodies with some fields wrong, so that both outcomes are exercised.
    st.fixed_dictionaries(
        {"phone_number": valid_phones},
        optional={k: st.one_of(v, v, v, body_fields[k]) for k, v in good_fields.items()},
    ),
    st.fixed_dictionaries(
        {}, optional={**body_fields, "phone_number": phone_like, "unexpected": json_values}
    ),
)


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(body=bodies, allowed=st.sampled_from([(), ("ES",), ("US", "GB")]))
def test_parse_returns_a_call_or_raises_invalid_call(
    body: object, allowed: tuple[str, ...]
) -> None:
    try:
        call = parse_outbound_call(body, allowed)
    except InvalidCall as exc:
        assert exc.errors
        assert all(isinstance(e.field, str) and e.error for e in exc.errors)
    else:
        assert isinstance(call, OutboundCall)
        assert call.phone_number.startswith("+") and call.phone_number[1:].isdigit()
        assert call.language in LANGUAGES and call.emotion in EMOTIONS
        assert 1 <= len(call.name) <= 200


# ------------------------------------------------------------------ masking


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+1234567890", "+1•••••7890"),
        ("+34612345678", "+3••••••5678"),
        ("+441234567890", "+4•••••••7890"),
        ("+12345678", "+1•••5678"),
    ],
)
def test_mask_phone(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


@pytest.mark.parametrize("number", ["", "+1", "+123456", "1234567"])
def test_mask_short_strings_entirely(number: str) -> None:
    assert mask_phone(number) == "•" * len(number)


@settings(database=None)
@given(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True))
def test_mask_keeps_last_four_digits_and_nothing_else(number: str) -> None:
    masked = mask_phone(number)
    assert len(masked) == len(number)
    assert masked.endswith(number[-4:])
    # Beyond the last four, only the '+' and the leading country digit survive.
    assert masked[:2] == number[:2]
    assert set(masked[2:-4]) == {"•"}
    assert sum(ch.isdigit() for ch in masked) == 5


def test_null_language_and_emotion_take_the_defaults() -> None:
    call = parse_outbound_call({"phone_number": "+1234567890", "language": None, "emotion": None})
    assert (call.language, call.emotion) == ("en", "Calm")


def test_nulls_inside_voicemail_and_analysis_mean_not_given() -> None:
    """JSON null means "not given" in the call's fields; inside `voicemail` and `analysis` it
    was a 422 (`fields.a: null` with pydantic's "valid dictionary or instance of
    AnalysisField")."""
    call = parse_outbound_call(
        with_(
            voicemail={"action": None, "message": None},
            analysis={
                "summary": None,
                "success_criteria": None,
                "fields": {"a": None, "b": {"type": "string", "description": None}},
            },
        )
    )
    options = call.options()
    assert options.voicemail.action == "hang_up"
    assert options.analysis is not None and options.analysis.summary is True
    assert list(options.analysis.fields) == ["b"]
    assert parse_outbound_call(with_(analysis={"fields": None})).options().analysis is not None


@pytest.mark.parametrize(
    ("analysis", "field"),
    [
        ({"summary": "yes"}, "analysis.summary"),
        ({"summary": 0}, "analysis.summary"),
        ({"fields": {"a": {"type": "string", "required": "no"}}}, "analysis.fields.a.required"),
    ],
)
def test_analysis_booleans_are_booleans(analysis: dict[str, Any], field: str) -> None:
    """`"summary": "yes"` and `"required": "no"` were read as booleans (pydantic's lax mode),
    where integers are strict and the OpenAPI document says boolean."""
    assert errors_of(with_(analysis=analysis)) == {field: "Input should be a valid boolean"}


def test_a_bad_field_name_is_said_with_the_other_errors() -> None:
    """A field name outside [a-z][a-z0-9_]{0,39} was checked only once everything else in
    the request was valid: a body with a bad name and a bad type got the type's error alone,
    and the name's only after it was fixed, against "all problems at once" (probe BB)."""
    analysis = {"fields": {"Bad Name": {"type": "str"}, "ok": {"type": "string"}}}
    assert errors_of(with_(analysis=analysis, language="xx")) == {
        "language": errors_of(with_(language="xx"))["language"],
        "analysis.fields.Bad Name": "field names must match [a-z][a-z0-9_]{0,39}: 'Bad Name'",
        "analysis.fields.Bad Name.type": (
            "Input should be 'string', 'number', 'integer', 'boolean' or 'enum'"
        ),
    }
    specs: dict[str, Any] = {"a": {"type": "string"}, "B": {"type": "string"}, "c d": None}
    nulled = {"fields": specs}
    assert errors_of(with_(analysis=nulled)) == {
        "analysis.fields.B": "field names must match [a-z][a-z0-9_]{0,39}: 'B'"
    }


def test_a_long_bad_field_name_is_quoted_cut() -> None:
    """A 60 KB field name came back whole in its error's message (its detail's field, where
    the name is too, is cut by the answer at 200 characters): a 60 KB 422."""
    name = "\u202e" + "X" * 60_000
    (message,) = errors_of(with_(analysis={"fields": {name: {"type": "string"}}})).values()
    assert message == "field names must match [a-z][a-z0-9_]{0,39}: '\ufffd" + "X" * 39 + "\u2026'"


def test_an_option_given_as_no_object_is_told_its_shape() -> None:
    """`"voicemail": "hang_up"` (the action alone, as a new user writes it) got pydantic's
    "Input should be a valid dictionary or instance of VoicemailPolicy": the name of a class
    of ours, and no shape to send (probe BB)."""
    assert errors_of(with_(voicemail="hang_up", analysis=True)) == {
        "voicemail": 'must be a JSON object, e.g. {"action": "hang_up"} or'
        ' {"action": "leave_message", "message": "…"}',
        "analysis": 'must be a JSON object, e.g. {"summary": true, "success_criteria": "…",'
        ' "fields": {…}}',
    }
    fields: dict[str, Any] = {"a": "string", "voicemail": ["x"]}
    shape = 'must be a JSON object, e.g. {"type": "string", "description": "…"}'
    assert errors_of(with_(analysis={"fields": fields})) == {
        "analysis.fields.a": shape,
        "analysis.fields.voicemail": shape,  # a field's spec, whatever its name
    }
    assert errors_of(with_(analysis={"fields": "a,b"})) == {
        "analysis.fields": 'must be a JSON object, e.g. {"<name>": {"type": "string",'
        ' "description": "…"}}'
    }


def test_enum_values_are_all_different() -> None:
    analysis = {"fields": {"next": {"type": "enum", "enum": ["ship", "ship"]}}}
    assert errors_of(with_(analysis=analysis)) == {
        "analysis.fields.next": "`enum` values must all be different"
    }


@pytest.mark.parametrize(
    ("given", "keyed"),
    [
        ("+52 1 55 1234 5678", "+525512345678"),  # Mexico's old mobile form: the number now
        ("+525512345678", "+525512345678"),
        ("+52 1 999 123 4567", "+529991234567"),
        ("+5211234567890", "+5211234567890"),  # no valid number without the 1: kept as given
        ("+14155550123", "+14155550123"),
    ],
)
def test_the_do_not_call_key_of_a_number(given: str, keyed: str) -> None:
    """A list holding +52 1 ... never matched the call to the same mobile (+52 ...)."""
    assert e164(given) == keyed
    assert normalize_phone(keyed) == keyed
    assert normalize_phone(given) == keyed  # what a call to it is placed as


@pytest.mark.parametrize(
    "voicemail", [{"action": "hang_up", "message": "Call us back"}, {"message": "Call us back"}]
)
def test_a_voicemail_message_that_would_never_be_said_is_refused(
    voicemail: dict[str, str],
) -> None:
    """Taken, it was dropped unsaid: the agent hangs up on an answering machine."""
    errors = errors_of({"phone_number": "+14155550123", "voicemail": voicemail})
    assert errors == {
        "voicemail": 'a message is left only with action "leave_message"; with "hang_up" (the'
        " default) the agent hangs up on an answering machine and says nothing"
    }
    kept = parse_outbound_call({"phone_number": "+14155550123", "voicemail": {"action": "hang_up"}})
    assert kept.voicemail is not None and kept.voicemail.message is None


def test_openapi_says_null_is_taken_where_the_server_takes_it() -> None:
    """Regression: the body's schema in /openapi.json gave `name`, `language`, `emotion`,
    `additional_params` (and inside voicemail and analysis, `action`, `summary`, `fields`,
    a field's `description` and `required`) as types without null, while the server takes
    null there as "not given": a client checked against the document refused a body the
    server places. Every optional property now says null, and the server takes each one."""
    field = {"type": "string", "description": None, "required": None}
    nulls: dict[str, Any] = {
        "OutboundCall": {key: None for key in FIELDS if key != "phone_number"},
        "VoicemailPolicy": {"voicemail": {"action": None}},
        "AnalysisRequest": {"analysis": {"summary": None, "fields": None}},
        "AnalysisField": {"analysis": {"fields": {"x": field}}},
    }
    spec = OutboundCall.model_json_schema(mode="validation")
    schemas = {"OutboundCall": spec, **spec["$defs"]}
    for name in nulls:
        schema = schemas[name]
        optional = set(schema["properties"]) - set(schema.get("required", ()))
        for key in optional:
            alternatives = schema["properties"][key].get("anyOf", ())
            assert {"type": "null"} in alternatives, (name, key)
    for body in nulls.values():
        parse_outbound_call({"phone_number": "+14155550123", **body})


def test_openapi_gives_the_first_message_its_least_length() -> None:
    """Regression: /openapi.json gave `first_message` a maxLength and no minLength, so "" was
    a valid body by the document while the server refuses it (422, "must be 1 to 1000
    characters"), as it refuses an empty voicemail message, whose schema says minLength 1."""
    schema = OutboundCall.model_json_schema(mode="validation")["properties"]["first_message"]
    (text,) = [alt for alt in schema["anyOf"] if alt.get("type") == "string"]
    assert (text["minLength"], text["maxLength"]) == (1, 1000)
    assert errors_of(with_(first_message="")) == {"first_message": "must be 1 to 1000 characters"}


@pytest.mark.parametrize(
    ("number", "named"),
    [
        ("+19005550123", "premium-rate"),
        ("+447012345678", "personal"),
        ("+80012345678", "no country (+800"),
        ("+870123456789", "+870"),
        ("+1911555012", "emergency"),
    ],
)
def test_openapi_names_each_kind_of_number_refused(number: str, named: str) -> None:
    """Regression: /openapi.json said only "Premium-rate and shared-cost numbers are
    refused", while personal numbers, numbers of no country (+800 freephone, +870
    satellite), emergency numbers and listed ones are refused too (422): a client building
    on the document took them for numbers the API calls."""
    description = OutboundCall.model_json_schema()["properties"]["phone_number"]["description"]
    assert "phone_number" in errors_of(with_(phone_number=number))
    assert named in description


def test_openapi_gives_additional_params_limits_as_the_server_counts_them() -> None:
    """Regression: /openapi.json said "at most 8192 bytes as JSON" and nothing of depth,
    while the server counts compact UTF-8 JSON (json.dumps' default, with spaces and \\u
    escapes, is larger) and refuses objects nested over 32 levels (422)."""
    schema = OutboundCall.model_json_schema()["properties"]["additional_params"]
    description = schema["description"]
    assert "8192 bytes as compact JSON in UTF-8" in description
    assert "nested at most 32 levels deep" in description
    deep: dict[str, Any] = {"a": 1}
    for _ in range(31):
        deep = {"a": deep}
    parse_outbound_call(with_(additional_params=deep))  # 32 levels
    assert "additional_params" in errors_of(with_(additional_params={"a": deep}))
    wide = {"a": "\u00e9" * 4090}  # 8,188 bytes compact in UTF-8; 24,556 by json.dumps
    parse_outbound_call(with_(additional_params=wide))


def _enum_fields(count: int, values: int, length: int = 3) -> dict[str, object]:
    return {
        f"f{i}": {"type": "enum", "enum": [f"{j:03d}".ljust(length, "x") for j in range(values)]}
        for i in range(count)
    }


def test_an_analysis_whose_schema_openai_refuses_is_refused() -> None:
    """Regression: 20 enum fields of 50 values (1,020 enum values with each field's null),
    or 12 of 50 values of 200 characters (120,026 characters of names and values), were taken,
    and OpenAI's structured outputs refuse such a schema (at most 1,000 values, 120,000
    characters): every call's analysis, its summary too, failed after the call."""
    too_many = errors_of(with_(analysis={"fields": _enum_fields(20, 50)}))
    assert too_many["analysis"].startswith("fields: the enum fields hold 1,020 values in all")
    too_long = errors_of(with_(analysis={"fields": _enum_fields(12, 50, 200)}))
    assert too_long["analysis"].startswith(
        "fields: their names and enum values come to 120,026 characters"
    )
    # At the limits: 19 fields of 50 values and one of 30 (1,000 with their nulls); 12 of
    # 50 values of 199 characters (119,426 characters).
    fields = _enum_fields(19, 50) | {"last": {"type": "enum", "enum": [str(j) for j in range(30)]}}
    assert parse_outbound_call(with_(analysis={"fields": fields})).analysis is not None
    assert parse_outbound_call(with_(analysis={"fields": _enum_fields(12, 50, 199)})).analysis
