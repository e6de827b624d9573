"""The per-call configuration model: defaults, catalogues, validation and record round trips."""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from livekit.plugins.cartesia import models as cartesia_models
from livekit.plugins.deepgram import models as deepgram_models

from common.config_store.model import (
    CORE_KEYS,
    DEFAULT_CALLER_NAME,
    DEFAULT_EMOTION,
    DEFAULT_INSTRUCTIONS,
    DEFAULT_LANGUAGE,
    EMOTIONS,
    LANGUAGES,
    MAX_ADDITIONAL_PARAMS_BYTES,
    MAX_INSTRUCTIONS_CHARS,
    MAX_NAME_CHARS,
    NOVA3_UNDECLARED,
    RESERVED_KEYS,
    CallConfig,
    normalize_emotion,
    normalize_language,
    validate_additional_params,
)
from common.config_store.store import ConfigStore

SEED_LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "nl", "pl", "ja", "zh")
SEED_EMOTIONS = ("Calm", "Excited", "Serious", "Friendly", "Empathetic", "Neutral")

# ------------------------------------------------------------------ defaults and limits


def test_documented_defaults_and_limits() -> None:
    assert (DEFAULT_CALLER_NAME, DEFAULT_INSTRUCTIONS) == ("Guest", "You are a helpful assistant.")
    assert (DEFAULT_LANGUAGE, DEFAULT_EMOTION) == ("en", "Calm")
    assert (MAX_NAME_CHARS, MAX_INSTRUCTIONS_CHARS) == (200, 4000)
    assert MAX_ADDITIONAL_PARAMS_BYTES == 8192


def test_create_with_nothing_takes_every_default() -> None:
    config = CallConfig.create()
    assert config == CallConfig(
        caller_name="Guest",
        agent_instructions="You are a helpful assistant.",
        tts_language="en",
        tts_emotion="Calm",
        additional_params={},
        call_id=None,
        written_at=None,
    )
    assert config == CallConfig()


def test_create_fills_only_missing_fields() -> None:
    config = CallConfig.create(caller_name="Alice", tts_emotion="excited", call_id="call-1")
    assert config.caller_name == "Alice"
    assert config.agent_instructions == DEFAULT_INSTRUCTIONS
    assert config.tts_language == DEFAULT_LANGUAGE
    assert config.tts_emotion == "Excited"
    assert config.call_id == "call-1"


def test_create_normalises_language_and_emotion() -> None:
    config = CallConfig.create(tts_language=" ES ", tts_emotion="SERIOUS")
    assert (config.tts_language, config.tts_emotion) == ("es", "Serious")


def test_create_copies_additional_params() -> None:
    params = {"campaign_id": "CAMP123"}
    config = CallConfig.create(additional_params=params)
    params["campaign_id"] = "changed"
    assert config.additional_params == {"campaign_id": "CAMP123"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"caller_name": 42}, "caller_name must be a string"),
        ({"agent_instructions": ["x"]}, "agent_instructions must be a string"),
        ({"tts_language": "xx"}, "unsupported tts_language 'xx'"),
        ({"tts_emotion": "Angry"}, "unsupported tts_emotion 'Angry'"),
        ({"additional_params": {"tts_language": "fr"}}, "may not use reserved keys: tts_language"),
    ],
)
def test_create_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CallConfig.create(**kwargs)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CallConfig().caller_name = "x"  # type: ignore[misc]


# ------------------------------------------------------------------ records


def test_to_flat_is_the_seed_document() -> None:
    config = CallConfig.create("Alice", "Be brief.", "fr", "Friendly", {"campaign_id": "C1"})
    assert config.to_flat(123.5) == {
        "caller_name": "Alice",
        "agent_instructions": "Be brief.",
        "tts_language": "fr",
        "tts_emotion": "Friendly",
        "campaign_id": "C1",
        "last_updated": 123.5,
    }


def test_to_record_adds_bookkeeping() -> None:
    config = CallConfig.create("Alice", additional_params={"k": [1, 2]}, call_id="call-ab12")
    record = config.to_record(99.0)
    assert record["call_id"] == "call-ab12"
    assert record["written_at"] == record["last_updated"] == 99.0
    assert record["additional_params"] == {"k": [1, 2]}
    assert record["k"] == [1, 2]  # flattened too, as in the seed's document
    assert set(CORE_KEYS) <= set(record)


@pytest.mark.parametrize(
    "config",
    [
        CallConfig.create(),
        CallConfig.create(
            "Carlos García",
            "Eres un asistente de ventas.",
            "es",
            "Calm",
            {"campaign_id": "CAMP123", "nested": {"a": [1, None, True]}, "ñ": "ü"},
            call_id="call-0123456789ab",
        ),
    ],
)
def test_from_record_round_trips_to_record(config: CallConfig) -> None:
    record = json.loads(json.dumps(config.to_record(1700000000.25)))  # as stored in config.json
    rebuilt = CallConfig.from_record(record)
    assert rebuilt == dataclasses.replace(config, written_at=1700000000.25)


def test_from_flat_seed_document_collects_extras() -> None:
    flat = CallConfig.create("Alice", additional_params={"campaign_id": "C1"}).to_flat(5.0)
    rebuilt = CallConfig.from_record(flat)
    assert rebuilt.caller_name == "Alice"
    assert rebuilt.additional_params == {"campaign_id": "C1"}  # last_updated is not an extra
    assert rebuilt.written_at is None and rebuilt.call_id is None


def test_from_record_prefers_its_additional_params_over_top_level_keys() -> None:
    record = {"caller_name": "Bob", "additional_params": {"a": 1}, "stray": 2}
    assert CallConfig.from_record(record).additional_params == {"a": 1}
    assert CallConfig.from_record({**record, "additional_params": {}}).additional_params == {}


def test_from_record_fills_missing_fields_with_defaults() -> None:
    rebuilt = CallConfig.from_record({"caller_name": "Bob", "call_id": "call-1", "written_at": 7})
    assert rebuilt == CallConfig("Bob", call_id="call-1", written_at=7.0)


def test_from_record_ignores_malformed_bookkeeping() -> None:
    rebuilt = CallConfig.from_record({"call_id": 12, "written_at": "yesterday"})
    assert (rebuilt.call_id, rebuilt.written_at) == (None, None)


def test_from_record_validates() -> None:
    with pytest.raises(ValueError, match="unsupported tts_emotion"):
        CallConfig.from_record({"tts_emotion": "Furious"})


# ------------------------------------------------------------------ catalogues


def plugin_languages() -> set[str]:
    cartesia = set(typing.get_args(cartesia_models.TTSLanguages))
    deepgram = set(typing.get_args(deepgram_models.DeepgramLanguages)) | NOVA3_UNDECLARED
    return {code for code in cartesia & deepgram if len(code) == 2}


def test_languages_are_what_both_plugins_serve() -> None:
    assert set(LANGUAGES) == plugin_languages()


def test_languages_include_the_seeds() -> None:
    assert set(SEED_LANGUAGES) <= set(LANGUAGES)
    assert all(code.islower() and len(code) == 2 for code in LANGUAGES)
    assert all(name and name[0].isupper() for name in LANGUAGES.values())


def test_emotions_are_the_seeds() -> None:
    assert tuple(EMOTIONS) == SEED_EMOTIONS
    assert EMOTIONS["Calm"] == "Professional and composed"
    assert all(EMOTIONS.values())


@pytest.mark.parametrize("code", sorted(LANGUAGES))
def test_every_language_normalises_in_any_case(code: str) -> None:
    assert normalize_language(code) == code
    assert normalize_language(code.upper()) == code
    assert normalize_language(f" {code.title()} ") == code


@pytest.mark.parametrize("emotion", SEED_EMOTIONS)
def test_every_emotion_normalises_in_any_case(emotion: str) -> None:
    assert normalize_emotion(emotion) == emotion
    assert normalize_emotion(emotion.lower()) == emotion
    assert normalize_emotion(f"  {emotion.upper()}") == emotion


@pytest.mark.parametrize(
    ("value", "code"),
    [("nb-NO", "no"), ("nb", "no"), ("NB_no", "no"), ("iw-IL", "he"), ("iw", "he")]
    + [("in_ID", "id"), ("fil-PH", "tl"), ("fil", "tl")]
    # Extensions and private use (from a one-letter subtag on) say nothing of the language.
    + [("en-US-u-hc-h12", "en"), ("de-DE-x-formal", "de"), ("en-u-nu-latn", "en")]
    + [("es-419-u-ca-gregory", "es"), ("EN-x-twain", "en")],
)
def test_another_code_of_a_language_is_its_catalogue_code(value: str, code: str) -> None:
    """Browsers set `nb-NO` for Norway, Java writes Hebrew `iw` and Indonesian `in`, Chrome
    Filipino `fil-PH`: each was a 422 though the catalogue has the language."""
    assert normalize_language(value) == code


@pytest.mark.parametrize(
    "value",
    ["xx", "xx-US", "en-", "english", "", None, 1, ["en"], "nn-NO"]
    + ["x-klingon", "i-klingon", "zh-yue-u-nu-hanidec", "en--u-x"],
)
def test_unknown_language_message_lists_the_catalogue(value: object) -> None:
    with pytest.raises(ValueError) as info:
        normalize_language(value)
    assert str(info.value) == (
        f"unsupported tts_language {value!r}; allowed: {', '.join(sorted(LANGUAGES))}"
    )


@pytest.mark.parametrize("value", ["Happy", "", None, 0])
def test_unknown_emotion_message_lists_the_catalogue(value: object) -> None:
    with pytest.raises(ValueError) as info:
        normalize_emotion(value)
    assert str(info.value) == (
        f"unsupported tts_emotion {value!r}; allowed: "
        "Calm, Excited, Serious, Friendly, Empathetic, Neutral"
    )


# ------------------------------------------------------------------ additional_params


def test_additional_params_none_is_empty() -> None:
    assert validate_additional_params(None) == {}


def test_additional_params_valid_object_is_returned_as_a_copy() -> None:
    params: dict[str, Any] = {"a": 1, "b": {"c": [True, None, 1.5, "é"]}}
    result = validate_additional_params(params)
    assert result == params
    assert result is not params


def test_reserved_keys() -> None:
    assert RESERVED_KEYS == {
        "caller_name",
        "agent_instructions",
        "tts_language",
        "tts_emotion",
        "last_updated",
        "written_at",
        "call_id",
        "calls",
        "additional_params",
        "first_message",
        "voicemail",
        "analysis",
    }


@pytest.mark.parametrize("key", sorted(RESERVED_KEYS))
def test_each_reserved_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match=f"^additional_params may not use reserved keys: {key}$"):
        validate_additional_params({key: 1, "fine": 2})


def test_all_reserved_keys_are_listed_sorted() -> None:
    with pytest.raises(ValueError) as info:
        validate_additional_params({"calls": 1, "call_id": 2, "ok": 3})
    assert str(info.value) == "additional_params may not use reserved keys: call_id, calls"


@pytest.mark.parametrize("value", [[("a", 1)], "a=1", 1, 1.5, True])
def test_additional_params_must_be_an_object(value: object) -> None:
    with pytest.raises(ValueError, match="^additional_params must be a JSON object$"):
        validate_additional_params(value)


def test_additional_params_keys_must_be_strings() -> None:
    with pytest.raises(ValueError, match="^additional_params keys must be strings$"):
        validate_additional_params({1: "one"})


@pytest.mark.parametrize(
    "params",
    [{"n": float("nan")}, {"n": float("inf")}, {"s": {1, 2}}, {"o": object()}, {"b": b"x"}],
)
def test_additional_params_must_be_json_serialisable(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="^additional_params must be JSON-serialisable"):
        validate_additional_params(params)


def test_an_integer_no_default_python_reads_is_refused_by_a_writer_that_could(
    config_path: Path,
) -> None:
    """The seed's update_config in a process that raised Python's limit on integer digits
    (PYTHONINTMAXSTRDIGITS=0, sys.set_int_max_str_digits(0)) wrote {"n": 10**5000} (5,001
    digits, 5 KB: under the 8 KiB limit), and every other process's json.loads refused
    config.json whole: the seed's load_dynamic_config() read the defaults ('Guest'), and the
    server's next write set the file aside, every live call's record with it
    (UnknownCallError for a call still live). Refused before the write, as a NaN is."""
    ConfigStore(config_path).update("Live Call", call_id="call-live")
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(ValueError, match="more than 4300 digits"):
            ConfigStore(config_path).update("Script", additional_params={"n": 10**5000})
        ConfigStore(config_path).update("Script", additional_params={"n": 10**4299})
    finally:
        sys.set_int_max_str_digits(limit)
    reader = ConfigStore(config_path)  # a process with the default limit
    assert reader.load()["caller_name"] == "Script"
    assert reader.load(call_id="call-live")["caller_name"] == "Live Call"
    with pytest.raises(ValueError, match="^additional_params must not hold an integer"):
        validate_additional_params({"n": -(10**4300)})


def test_additional_params_size_limit_is_8_kib_of_utf8_json() -> None:
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))  # compact, as clients send
    exactly = {"k": "x" * (MAX_ADDITIONAL_PARAMS_BYTES - overhead)}
    assert validate_additional_params(exactly) == exactly
    with pytest.raises(ValueError, match="larger than 8192 bytes"):
        validate_additional_params({"k": "x" * (MAX_ADDITIONAL_PARAMS_BYTES - overhead + 1)})
    # Non-ASCII counts in UTF-8 bytes, not characters: 3 bytes each.
    with pytest.raises(ValueError, match="larger than 8192 bytes"):
        validate_additional_params({"k": "€" * (MAX_ADDITIONAL_PARAMS_BYTES // 3)})
    assert validate_additional_params({"k": "€" * ((MAX_ADDITIONAL_PARAMS_BYTES - overhead) // 3)})


def test_the_seed_functions_take_a_language_tag_as_its_language(config_path: Path) -> None:
    """update_config(tts_language="es-MX") writes `es`, as POST /calls/outbound takes it."""
    store = ConfigStore(config_path)
    assert store.update("Ana", tts_language="es-MX", call_id="call-1")["tts_language"] == "es"
    assert store.load(call_id="call-1")["tts_language"] == "es"
