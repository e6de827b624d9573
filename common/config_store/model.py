"""The per-call configuration model: fields, defaults, catalogues and validation.

One `CallConfig` is everything that makes one call different from another: who is called
(caller_name), what the agent is told (agent_instructions), how it speaks (tts_language,
tts_emotion) and any extra context (additional_params). It is shared by the server (which
writes it) and the agent (which builds its session from it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CALLER_NAME = "Guest"
DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
DEFAULT_LANGUAGE = "en"
DEFAULT_EMOTION = "Calm"

MAX_NAME_CHARS = 200
MAX_INSTRUCTIONS_CHARS = 4000
MAX_ADDITIONAL_PARAMS_BYTES = 8 * 1024

# Languages that both installed speech plugins declare: Cartesia TTS (`TTSLanguages`) and
# Deepgram STT (`DeepgramLanguages`). A test keeps this table in step with the plugins.
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
# Keys that additional_params may not use: they would shadow the core fields or the
# bookkeeping that config.json keeps next to them.
RESERVED_KEYS = frozenset(
    (*CORE_KEYS, "last_updated", "written_at", "call_id", "calls", "additional_params")
)


def normalize_language(value: object) -> str:
    """Return the catalogue code for `value` (case-insensitive) or raise ValueError."""
    if isinstance(value, str) and value.strip().lower() in LANGUAGES:
        return value.strip().lower()
    raise ValueError(f"unsupported tts_language {value!r}; allowed: {', '.join(sorted(LANGUAGES))}")


_EMOTIONS_BY_LOWER = {name.lower(): name for name in EMOTIONS}


def normalize_emotion(value: object) -> str:
    """Return the capitalised catalogue emotion for `value` (case-insensitive) or raise."""
    if isinstance(value, str) and value.strip().lower() in _EMOTIONS_BY_LOWER:
        return _EMOTIONS_BY_LOWER[value.strip().lower()]
    raise ValueError(f"unsupported tts_emotion {value!r}; allowed: {', '.join(EMOTIONS)}")


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
    if any(not isinstance(k, str) for k in params):
        raise ValueError("additional_params keys must be strings")
    try:
        encoded = json.dumps(params, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"additional_params must be JSON-serialisable: {exc}") from None
    if len(encoded.encode()) > MAX_ADDITIONAL_PARAMS_BYTES:
        raise ValueError(
            f"additional_params is larger than {MAX_ADDITIONAL_PARAMS_BYTES} bytes as JSON"
        )
    return params


def _text(value: object, name: str, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


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
    ) -> CallConfig:
        """Validate and complete: a field not given takes its default, never another call's."""
        return cls(
            caller_name=_text(caller_name, "caller_name", DEFAULT_CALLER_NAME),
            agent_instructions=_text(
                agent_instructions, "agent_instructions", DEFAULT_INSTRUCTIONS
            ),
            tts_language=normalize_language(
                DEFAULT_LANGUAGE if tts_language is None else tts_language
            ),
            tts_emotion=normalize_emotion(DEFAULT_EMOTION if tts_emotion is None else tts_emotion),
            additional_params=validate_additional_params(additional_params),
            call_id=call_id,
            written_at=written_at,
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CallConfig:
        """Rebuild a config from a config.json record or a dispatch-metadata snapshot."""
        extra = record.get("additional_params")
        if extra is None:
            extra = {k: v for k, v in record.items() if k not in RESERVED_KEYS}
        written_at = record.get("written_at")
        call_id = record.get("call_id")
        return cls.create(
            record.get("caller_name"),
            record.get("agent_instructions"),
            record.get("tts_language"),
            record.get("tts_emotion"),
            extra,
            call_id=call_id if isinstance(call_id, str) else None,
            written_at=float(written_at) if isinstance(written_at, int | float) else None,
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
        return record
