"""Phone numbers: E.164 normalisation and the rules that keep calls away from toll fraud (pure)."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

import phonenumbers
from phonenumbers import PhoneNumberType

E164_PATTERN = r"^\+[1-9][0-9]{7,14}$"
_E164 = re.compile(E164_PATTERN.strip("^$"))
# Ignored anywhere in a number: spaces, dots, parentheses and dashes, the typographic ones
# too (a word processor's non-breaking hyphen U+2011, an en dash, a minus sign), and the
# invisible marks a copy from a document or contact card adds (Outlook's U+202A...U+202C
# around a number, direction marks, zero-width spaces, a byte order mark). "+34‑612‑345‑678"
# looked like the README's "+34-612-345-678" and was refused as "must be E.164".
SEPARATOR = r"[\s().\-\u2010-\u2015\u2212\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
_SEPARATORS = re.compile(SEPARATOR)
# A number written as a decimal: its digits and ".0" or ".00" (pandas, a spreadsheet's Number
# format), one dot and nothing else.
_DECIMAL = re.compile(r"\+?[0-9]+\.00?")
# After the "+": what `parse_e164` takes, separators and all (for documents: a client built
# from one must not refuse "+1 (415) 555-0100", nor send what the syntax check refuses).
DIGITS_SYNTAX = rf"{SEPARATOR}*[1-9](?:{SEPARATOR}*[0-9]){{7,14}}{SEPARATOR}*"
PHONE_SYNTAX = rf"^{SEPARATOR}*\+{DIGITS_SYNTAX}$"
_REFUSED_TYPES = {
    PhoneNumberType.PREMIUM_RATE: "premium-rate",
    PhoneNumberType.SHARED_COST: "shared-cost",
    # "Follow-me" numbers (UK 070, ...): charged like premium lines, a classic target of
    # revenue-share fraud, and no customer's own phone.
    PhoneNumberType.PERSONAL_NUMBER: "personal (follow-me)",
}


def load_all_metadata() -> None:
    """Load phonenumbers' metadata of every region now, not at the first number of each.

    phonenumbers loads a region's metadata (an import of its module) at the first number of
    it, holding `PhoneMetadata._metadata_lock`, which it does not release when the load
    raises: an import refused "Too many open files" (a burst of connections using every
    descriptor) left it held, and the next number of a region not loaded yet blocked the
    event loop for good, no request answered again. Loaded as the server starts, no request
    loads any (0.2 s, 3 MB); a load that fails then stops the start with its OSError."""
    metadata = phonenumbers.PhoneMetadata
    for region in phonenumbers.SUPPORTED_REGIONS:
        metadata.metadata_for_region(region)
    for region in phonenumbers.SUPPORTED_SHORT_REGIONS:
        metadata.short_metadata_for_region(region)
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        metadata.metadata_for_nongeo_region(code)


def compact_e164(raw: str) -> str | None:
    """`raw` without separators if that has E.164's syntax ("+" and 8 to 15 digits, the
    first not 0), else None; whether it is a phone number is `parse_e164`'s to say."""
    compact = _SEPARATORS.sub("", raw)
    return compact if _E164.fullmatch(compact) else None


def parse_e164(raw: object) -> phonenumbers.PhoneNumber:
    """A well-formed E.164 number (separators ignored), with no judgement on where it goes;
    ValueError if it is not one."""
    if not isinstance(raw, str):
        raise ValueError("must be a string in E.164 form, e.g. +14155550123")
    compact = compact_e164(raw)
    if compact is None:
        raise ValueError(_malformed(raw))
    if _DECIMAL.fullmatch(written := raw.strip()):
        # "+4930123456.0" (a number column read as a number, then written out by a
        # spreadsheet or pandas): its dot was a separator, and +49301234560 was dialled.
        decimal = written[written.index(".") :]
        raise ValueError(
            f"ends in {decimal!r}, the decimals of a number a spreadsheet or program read as a"
            f" number, not digits of the phone number: write it without the {decimal!r} (as text)"
        )
    try:
        return phonenumbers.parse(compact, None)
    except phonenumbers.NumberParseException as exc:
        why = {
            phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "no country has its code",
            phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short after its country code",
            phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
            phonenumbers.NumberParseException.TOO_LONG: "too long",
        }.get(exc.error_type, str(exc._msg).rstrip("."))
        raise ValueError(f"is not a phone number: {why}") from None


def _malformed(raw: str) -> str:
    """Why `raw` is no E.164 number: its syntax, and a digit of another script in it (a
    full-width `７` from a Japanese keyboard or a PDF, an Arabic-Indic `٧`), which looks like
    a digit and is not one of E.164's: "+1415555７７０５" was told to be "'+' then 8 to 15
    digits", which its sender could see it was."""
    why = "must be E.164: '+' then 8 to 15 digits, e.g. +14155550123"
    written = raw.strip()
    if _SCIENTIFIC.fullmatch(written):  # "4.15555E+09": told only the syntax, which
        # "+4155550000" would pass, and a number rebuilt so is not the one its row had
        return (
            f"{why}: this is a number in a spreadsheet's scientific notation, which drops its"
            " last digits; format the column as text and enter the numbers again"
        )
    marked = _FORMULA.fullmatch(written)
    if marked is not None and compact_e164(marked[1]) is not None:  # ="+14155550123"
        return (
            f"{why}: this is a spreadsheet formula of the number; write the number alone,"
            ' without the formula\'s =" and "'
        )
    if written.startswith("00") and compact_e164("+" + written[2:]) is not None:
        # "0044 20 7946 0958": an international call as dialled from Europe
        return f"{why}: write '+' in place of its leading 00, the international call prefix"
    plus_less = _plus_less(written)
    if plus_less is not None:  # "14155550123": a number column read as numbers lost its "+"
        return f"{why}: {plus_less}"
    # (A number and its extension are short: the pattern's cost grows as the square of a
    # run of spaces, 1.5 s for 8,000 of them.)
    extended = _EXTENSION.fullmatch(written) if len(written) <= _EXTENDED_CHARS else None
    if extended is not None and _valid(extended[1]):  # "+1 415 555 0123 ext. 45"
        return f"{why}: an extension is not dialled; remove it ({extended[2]!r} and after)"
    if written.startswith("'") and compact_e164(written[1:]) is not None:  # '+14155550123
        return (
            f"{why}: it starts with an apostrophe, a spreadsheet's mark for text, which is no"
            " part of the number; remove it"
        )
    other = next((ch for ch in raw if ch in _OTHER_PLUSES or _other_digit_or_separator(ch)), None)
    if other is None:
        return why
    if other in _OTHER_PLUSES:  # "＋14155557705" looks like "+14155557705" too
        return (
            f"must be E.164 with the plus sign '+': {other!r} (U+{ord(other):04X}) is a plus"
            " sign of another script or width; write it as +"
        )
    if not other.isdecimal():  # "+1 （415） 555－7705": the separators of a full-width keyboard
        ascii_form = unicodedata.normalize("NFKC", other)
        return (
            f"must be E.164: {other!r} (U+{ord(other):04X}) is a {ascii_form!r} of another width;"
            f" write it as {ascii_form} or leave it out"
        )
    return (
        f"must be E.164 with the digits 0-9: {other!r} (U+{ord(other):04X}) is a digit of"
        f" another script or width; write it as {unicodedata.decimal(other)}"
    )


# A number as a spreadsheet shows a long one ("4.15555E+09", "1,41556E+10" in a comma
# decimal locale): its digits past the sixth are gone.
_SCIENTIFIC = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]*)?[eE][+-]?[0-9]+")


def _plus_less(written: str) -> str | None:
    """The hint for a number that lost its "+" (a spreadsheet, Excel first, reads a column of
    them as numbers: "+14155550123" comes back 14155550123, or 14155550123.0 from pandas):
    the number it would be with one, with its country when that is a valid number (when it
    is none, said so, not offered as the number meant). It is still refused: which country
    a bare number is of is no guess to dial on ("4155550123", a San Francisco number without
    its 1, is with a "+" a Swiss one). None for anything else (a national number starting
    with 0, letters, a "+" somewhere)."""
    decimal = _DECIMAL.fullmatch(written)
    digits = written[: written.index(".")] if decimal else _SEPARATORS.sub("", written)
    if not digits.isascii() or not digits.isdigit() or compact_e164("+" + digits) is None:
        return None
    number = "+" + digits
    drop = f" and without its {written[written.index('.') :]!r}" if decimal else ""
    national = _north_american(digits)
    if national is not None:
        # "(201) 577-0604", a US number as the US writes it: with a "+" it is +20 15 770604,
        # an Egyptian one, which the hint named alone ("did you mean +2015770604 (EG)?"):
        # followed, it called (or erased the data of) someone in another country.
        if _valid(number):
            return (
                f"did you mean {national} ({_region_of(national)}), written in its national"
                f" form, or {number} ({_region_of(number)}) without its '+'? write it with its"
                f" '+' and its country code{drop}"
            )
        return (
            f"did you mean {national} ({_region_of(national)})? it is written in its national"
            f" form: write it with its '+' and its country code{drop}"
        )
    if _valid(number):
        region = _region_of(number)
        return (
            f"did you mean {number} ({region})? spreadsheets drop the '+': write it with its"
            f" '+'{drop}, the column formatted as text"
        )
    # No country has `number`: a national form without a trunk prefix, most often (Spain's
    # "612345678", Italy's "3123456789"), which "did you mean +612345678?" made an Australian
    # number, one the server takes (well-formed) and dials.
    return (
        f"{number} (it with a '+') is no valid number: write '+', its country code and the"
        f" number{drop}"
    )


def _north_american(digits: str) -> str | None:
    """`digits` as a North American number written in its national form (ten digits, no
    country code: "2015770604"), in E.164, if it is a valid one; else None."""
    number = f"+1{digits}"
    return number if len(digits) == 10 and _valid(number) else None


def _region_of(number: str) -> str:
    """The region of a valid E.164 `number` ("US")."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(number, None)) or "?"


def _valid(raw: str) -> bool:
    """Whether `raw` is a valid number (E.164's syntax and its country's rules)."""
    compact = compact_e164(raw)
    try:
        return compact is not None and phonenumbers.is_valid_number(
            phonenumbers.parse(compact, None)
        )
    except phonenumbers.NumberParseException:
        return False


# A number and its extension, as a CRM or a signature writes one ("+1 415 555 0123 ext. 45").
_EXTENDED_CHARS = 64
_EXTENSION = re.compile(r"(.+?)\s*(ext\.?|extension|x|#)\s*[0-9]+", re.IGNORECASE)
# A number a spreadsheet is told to keep as text, ="+14155550123" (how many exports write one).
_FORMULA = re.compile(r'=\s*"([^"]*)"')


# The characters that look like E.164's "+" and are not it: full-width (a Japanese or
# Chinese keyboard), small, superscript and subscript (a PDF or word processor), heavy (an
# emoji keyboard), the modifier letter and Hebrew's alternative plus sign.
_OTHER_PLUSES = frozenset("\uff0b\ufe62\u207a\u208a\u2795\u02d6\ufb29")


def _other_digit_or_separator(ch: str) -> bool:
    """A digit of another script or width, or a full-width, small, superscript or subscript
    form of a separator that is ignored ("（", "－", "．"): written as such, it is ignored too."""
    if ch.isascii():
        return False
    return ch.isdecimal() or unicodedata.normalize("NFKC", ch) in _ASCII_SEPARATORS


_ASCII_SEPARATORS = frozenset("().-")


def e164(raw: object) -> str:
    """`raw` as E.164, in its current form (how calls and the do-not-call list key numbers);
    ValueError if malformed."""
    return _formatted(current_form(parse_e164(raw)))


def well_formed_e164(raw: str) -> str | None:
    """`raw` as a number is looked up by (POST /calls/erase): E.164 in its current form, or,
    well formed but no country's (+999 ..., a made-up number the sandbox takes), without its
    separators; None when it is no E.164 at all (a spreadsheet's "+4930123456.0" either:
    its dot is no separator)."""
    try:
        return e164(raw)
    except ValueError:
        if _DECIMAL.fullmatch(raw.strip()):
            return None
        return compact_e164(raw)


def written_e164(raw: object) -> str:
    """`raw` as E.164 exactly as written (no current form): a key stored before numbers were
    keyed in their current form; ValueError if malformed."""
    return _formatted(parse_e164(raw))


def _formatted(parsed: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


MEXICO = 52


def current_form(parsed: phonenumbers.PhoneNumber) -> phonenumbers.PhoneNumber:
    """The number as it is dialled today. A Mexican mobile in its old form (+52 1 and ten
    digits, dropped in 2019 but still in many lists) is the valid number without the 1: one
    person has one key, so a do-not-call entry in either form holds for calls in either."""
    if parsed.country_code == MEXICO and not phonenumbers.is_valid_number(parsed):
        national = phonenumbers.national_significant_number(parsed)
        if len(national) == 11 and national.startswith("1"):
            current = phonenumbers.parse(f"+{MEXICO}{national[1:]}", None)
            if phonenumbers.is_valid_number(current):
                return current
    return parsed


def listed_forms(number: str) -> tuple[str, str] | tuple[str]:
    """The do-not-call keys of `number` (E.164, current form): itself, and for a Mexican
    number its old mobile form (+52 1 ...), which releases before every number was keyed in
    its current form stored as written (an agent's report on a call placed that way)."""
    if number.startswith(f"+{MEXICO}") and len(number) == 13:
        return number, f"+{MEXICO}1{number[3:]}"
    return (number,)


def erased_forms(number: str) -> tuple[str, ...]:
    """What an erasure of `number` (E.164, current form) looks up: its listed forms, and the
    digits an invalid campaign row keeps of it when written without its "+" (row_digits):
    each form without it ("4930123456" from a spreadsheet, its message naming +4930123456
    and quoting what else the row had wrong, which an erasure of +4930123456 left as it
    was), with an international call prefix ("0049 30 123456", "011 49 30 123456"), and in
    its national form ("030 123456", "(415) 555-0123"): whoever else's number those digits
    may be, the row is one nobody calls, and its errors may quote this callee's data."""
    forms = listed_forms(number)
    digits = [form[1:] for form in forms if form.startswith("+")]
    prefixed = [f"{prefix}{form}" for form in digits for prefix in _INTERNATIONAL_PREFIXES]
    return tuple(dict.fromkeys((*forms, *digits, *prefixed, *_national_digits(number))))


# International call prefixes a list may write a number with: Europe's and most of the
# world's 00 (which parse_e164's hint names), and North America's 011.
_INTERNATIONAL_PREFIXES = ("00", "011")
# The most digits a number written without its "+" holds: 15 and a prefix of 3.
_MAX_ROW_DIGITS = 18


def _national_digits(number: str) -> tuple[str, ...]:
    """The digits of `number` (E.164) as its own country writes it: its national
    significant number, and its national form (with a trunk prefix: "030 123456" for
    +4930123456); none for a number of no country."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return ()
    if phonenumbers.region_code_for_country_code(parsed.country_code or 0) == "ZZ":
        return ()
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    found = (
        phonenumbers.national_significant_number(parsed),
        "".join(c for c in national if c.isascii() and c.isdigit()),
    )
    return tuple(dict.fromkeys(d for d in found if d))


def row_digits(raw: str) -> str | None:
    """The digits of a number written without its "+", separators and all ("1 415 555 0123"
    from a spreadsheet, "001 415 555 0123" with an international call prefix, "(415)
    555-0123" in national form), as an invalid campaign row keeps it, so that an erasure of
    the number finds it (erased_forms); None for anything else (a spreadsheet's decimal,
    "14155550123.0", whose dot is no separator, stays as written)."""
    written = raw.strip()
    if _DECIMAL.fullmatch(written):
        return None
    digits = _SEPARATORS.sub("", written)
    if not digits.isascii() or not digits.isdigit() or len(digits) > _MAX_ROW_DIGITS:
        return None
    return digits


def normalize_phone(
    raw: object, allowed_countries: tuple[str, ...] = (), *, strict: bool = False
) -> str:
    """E.164 (`+` and 8-15 digits), normalised by phonenumbers in its current form (`e164`);
    raise ValueError if refused.

    `strict` (a real LiveKit is configured): numbers phonenumbers cannot validate are refused.
    Without it (the sandbox) they are accepted, so the seed's made-up examples keep working,
    but never to get around a rule: the premium/shared-cost block holds for every number that
    starts with (or is the start of) a blocked number, and a number whose region cannot be
    determined is never inside `allowed_countries`.
    """
    parsed = current_form(parse_e164(raw))
    number = _formatted(parsed)
    if _global_service(parsed.country_code or 0):
        raise ValueError(
            f"numbers of no country (+{parsed.country_code}: "
            f"{_GLOBAL_SERVICES.get(parsed.country_code or 0, 'a global service')}) are not called"
        )
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


# What the global country codes phonenumbers knows are (ITU), for the refusal's message.
_GLOBAL_SERVICES = {
    800: "international freephone",
    808: "international shared-cost service",
    870: "Inmarsat satellite phones",
    878: "universal personal telecommunications",
    881: "global mobile satellite system",
    882: "international networks",
    883: "international networks",
    888: "international humanitarian services",
    979: "international premium-rate service",
}


def _global_service(country_code: int) -> bool:
    """Whether `country_code` belongs to no country: satellite phones (+870, +881),
    international networks (+882, +883), international freephone, shared-cost and premium
    lines (+800, +808, +979). Their per-minute rates are the highest there are, which is why
    revenue-share fraud dials them; no customer list needs them. Valid or not."""
    return phonenumbers.region_codes_for_country_code(country_code) == ("001",)


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
        pattern.match(national) is not None
        and (prefix_allowed or pattern.fullmatch(national) is not None)
        for pattern, prefix_allowed in _emergency_patterns(parsed.country_code or 0)
    )


@functools.cache
def _emergency_patterns(country_code: int) -> tuple[tuple[re.Pattern[str], bool], ...]:
    """The emergency codes of `country_code`'s regions, as `connects_to_emergency_number`
    reads them (a code, or a code and more digits where the region lets a call go on after
    one), each distinct one once: asking each of +1's 25 regions in turn made an invalid
    number three to four times dearer to check than a valid one (a campaign of 100,000 such
    rows took ~2 minutes to be refused)."""
    patterns: dict[tuple[str, bool], None] = {}
    for region in phonenumbers.region_codes_for_country_code(country_code):
        metadata = phonenumbers.PhoneMetadata.short_metadata_for_region(region, None)
        desc = metadata.emergency if metadata is not None else None
        if desc is not None and desc.national_number_pattern:
            exact = region in _EXACT_EMERGENCY_REGIONS
            patterns[(desc.national_number_pattern, not exact)] = None
    return tuple((re.compile(pattern), prefix) for pattern, prefix in patterns)


# Where phonenumbers holds that only the code itself reaches emergency services (its
# shortnumberinfo's own list, which it does not export).
_EXACT_EMERGENCY_REGIONS = frozenset({"BR", "CL", "NI"})


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
