"""Redaction and trimming of aiohttp's access log.

Request lines and headers are client text, and a client may put a phone number in a URL
(`GET /calls/+14155550123`, a query value) or in its User-Agent. Every run of 7+ digits in the
logged line keeps only its last 4, as `mask_phone` does for our own log lines; call ids
(`call-<12 hex>`) are left whole, so a line can be grepped for its call.

The embedded sandbox posts every webhook of every simulated call to us: its successful posts
would be most of the log, so they are dropped (failures stay).

A call is one request from the client and 13 or so from machines (LiveKit's webhooks, the
agent's reports), whose success the call's own lines already tell (`call ... dialing ->
ringing`, ...); health probes and metrics scrapes come every few seconds, whatever the
traffic. `CallsAccessLogger` writes those machines' successful requests only at
LOG_LEVEL=DEBUG, before aiohttp formats them (a line costs ~20 µs); their failures, and every
other request, are logged as before. While the database is down, LiveKit and the agents retry
every post and each gets a 503; and anyone may post unsigned requests there by the thousand:
those routes' failed answers (4xx, 5xx) are written at most once a minute per route and
status, per server, with how many were held back (the server's own line tells why, once a
minute too). Each field of an access line (the request line, Referer, User-Agent) is cut at
MAX_FIELD_CHARS.

A client may also put its API token where it is logged (`?access_token=...` in a URL, a
Referer holding one, a User-Agent): the server's secrets (CALLS_API_TOKEN and the others
the settings mark secret) are cut out of every line, as are the values of query parameters
named as credentials are (a token of another deployment), and as a call's fields that name or
describe its callee (`?name=...&dynamic_instruction=...`, refused: they go in the body).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, quote_plus

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_log import AccessLogger

from common.masking import redact, redact_cut, without_tokens
from handlers.http import ANSWER_ABORTED, shown_status
from handlers.keys import QUIET_ROUTES, REFUSALS

ACCESS_LOGGER = "aiohttp.access"
SERVER_LOGGER = "aiohttp.server"
SANDBOX_USER_AGENTS = frozenset({"LiveKit-Sandbox"})


# Whether the embedded sandbox's successful posts are left out (install's drop_sandbox).
_sandbox_posts_dropped: list[bool] = [False]


def _is_sandbox_post(request: web.BaseRequest, response: web.StreamResponse) -> bool:
    """A webhook or report the embedded sandbox posted that succeeded. By its User-Agent on a
    machines' route only: by the User-Agent alone, any client sending `LiveKit-Sandbox` had
    its API requests (calls placed, numbers added to the do-not-call list) left out of the
    log."""
    return (
        _sandbox_posts_dropped[0]
        and request.headers.get("User-Agent") in SANDBOX_USER_AGENTS
        and 200 <= response.status < 300
        and not request.get(ANSWER_ABORTED)
        and _from_machine(request)
    )


HIDDEN = "[redacted]"
# A query parameter whose name says it holds a credential (access_token, refresh_token,
# client_secret, X-Amz-Signature, api_key, key, sig, ...): its value is not logged. A
# parameter's name is found first and judged apart: one pattern for both backtracked over
# every place a credential word could sit in a long name without its `=`, and a Referer,
# User-Agent and request line of 8 KB of "&token" each (no token needed, any route) took
# 150 ms of the server's one thread per request, every other request waiting.
# (Brackets, raw or percent-encoded, in a name: a form serializer's nested field.)
_PARAMETER = re.compile(r"[?&;]([\w.\-\[\]%]*+)=")
_VALUE = re.compile(r"[^&;\s\"]++")
_CREDENTIAL_WORD = re.compile(r"token|secret|passw|signature|api[_\-]?key|auth|credential", re.I)
_CREDENTIAL_NAMES = frozenset(("key", "sig"))


# A call's fields that name or describe its callee, sent in a URL (refused: they go in the
# body), and a campaign's name: their values are not logged either. The log names a callee
# in the seed's line alone, and shows the instructions' first 80 characters at DEBUG only.
_CALLEE_FIELDS = frozenset(
    ("name", "dynamic_instruction", "first_message", "additional_params", "voicemail", "analysis")
)
# A field's object members as form serializers write them (qs, jQuery.param, Rails):
# `additional_params[acct]=`, `additional_params%5Bacct%5D=`, `voicemail.message=`: judged
# by the field's name before them (only the bare names were, and the account was logged).
_MEMBER = re.compile(r"\[|%5b|\.", re.I)


def _is_credential(name: str) -> bool:
    """Whether a query parameter's value is left out of the log: a credential's, or one of
    the callee's fields."""
    lowered = name.lower()
    return (
        lowered in _CREDENTIAL_NAMES
        or _MEMBER.split(lowered, maxsplit=1)[0] in _CALLEE_FIELDS
        or _CREDENTIAL_WORD.search(name) is not None
    )


def _hide_credential_values(text: str) -> str:
    """`text` with the value of each credential-named parameter as HIDDEN. Another
    parameter's value is read on (a Referer's `?next=/login?access_token=...`)."""
    out: list[str] = []
    kept_from = 0
    for found in _PARAMETER.finditer(text):
        if found.start() < kept_from or not _is_credential(found.group(1)):
            continue  # inside a value hidden already, or no credential's name
        value = _VALUE.match(text, found.end())
        if value is not None:
            out += [text[kept_from : found.end()], HIDDEN]
            kept_from = value.end()
    return "".join(out) + text[kept_from:] if out else text


# Shorter secrets (livekit-server --dev's is `secret`) would cut ordinary words out of lines.
MIN_HIDDEN_CHARS = 8
# The server's secrets, as install() was given them, each also as a URL writes it (the request
# line is logged percent-encoded: review AR saw `Tok%2Ben%2F...` logged whole); longest first,
# so that a secret holding another is cut whole.
_secrets: list[str] = []


def _set_secrets(secrets: Iterable[str]) -> None:
    forms = set()
    for secret in secrets:
        if len(secret) >= MIN_HIDDEN_CHARS:
            forms.update({secret, quote(secret, safe=""), quote(secret), quote_plus(secret)})
    _secrets[:] = sorted(forms, key=len, reverse=True)


def hide_credentials(text: str) -> str:
    """`text` without the server's secrets, in any of their URL forms, and without the values
    of credential-named query parameters."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, HIDDEN)
    return _hide_credential_values(text)


class RedactAccessLog(logging.Filter):
    @staticmethod
    def _clean(text: str) -> str:
        return redact(hide_credentials(text))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._clean(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        headers = getattr(record, "request_header", None)
        if isinstance(headers, dict):  # JSON logs may carry the headers as fields
            record.request_header = {k: self._clean(str(v)) for k, v in headers.items()}
        return True


# A request line of 8 KB and as much again in its Referer and User-Agent made each line 24 KB:
# unsigned requests filled the disk at 24 MB/s. Enough of each is kept to tell what it was:
# each field of the line (the request line, Referer, User-Agent), as it goes into the line
# and into the record's fields, is cut at MAX_FIELD_CHARS (CallsAccessLogger._format_line).
MAX_FIELD_CHARS = 300


def _clipped(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters once its numbers are masked (`redact_cut`: a
    number across the cut showed the digits before it, `%2B141555…`), saying how many more
    it had."""
    if len(text) <= limit:
        return text  # masked with the rest of the line (RedactAccessLog)
    return f"{redact_cut(text, limit)}… ({len(text) - limit} more characters)"


def _read_for(limit: int) -> int:
    """How much of a text cut at `limit` is cleaned of credentials: what `redact_cut` reads
    of it (4 × `limit`), and a secret's length more, so that a secret begun in there is found
    whole. The rest is never shown: cleaning it too, an 8 KB Referer, User-Agent and request
    line of `=&` (4,000 empty parameters each) cost the loop 23 ms a request, any route, no
    token: 44 a second held every other request (/healthz 0.3 s), 8 KB of `a` 5 ms."""
    return 4 * limit + (len(_secrets[0]) if _secrets else 0)


def _shown_field(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """A field of an access line: its credentials hidden, then cut at `limit` (`_clipped`),
    only what can be shown of it cleaned (`_read_for`)."""
    read = _read_for(limit)
    if len(text) <= read:
        return _clipped(hide_credentials(text), limit)
    shown = redact_cut(hide_credentials(text[:read]), limit)
    return f"{shown}… ({len(text) - limit} more characters)"


MALFORMED_REASON_CHARS = 200  # of the reason a malformed request's DEBUG line gives


class QuietMalformedRequests(logging.Filter):
    """A request aiohttp's HTTP parser refuses (a request line or header too long, a method
    that is not one, a body that is not the Content-Encoding it claims) gets its plain-text
    400 from aiohttp, which logs it as an ERROR with a traceback: any client could fill the
    log with them. Such a record becomes one DEBUG line, written only at LOG_LEVEL=DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True  # our own defects stay ERRORs with their tracebacks
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False  # not written: its reason is not cleaned for nothing (_read_for)
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        # The reason quotes the line refused: `Authorization : Bearer <token>` (a space before
        # the colon), or a token folded onto a line of its own, was logged whole.
        said = " ".join(str(error.message)[: 2 * _read_for(MALFORMED_REASON_CHARS)].split())
        reason = hide_credentials(without_tokens(said[: _read_for(MALFORMED_REASON_CHARS)]))
        record.msg = "malformed request from %s refused: %s"
        record.args = (remote, redact_cut(reason, MALFORMED_REASON_CHARS))
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        return True


def _replace_filter(name: str, new: logging.Filter) -> None:
    logger = logging.getLogger(name)
    for existing in [f for f in logger.filters if type(f) is type(new)]:
        logger.removeFilter(existing)
    logger.addFilter(new)


def install(*, drop_sandbox: bool = False, secrets: Iterable[str] = ()) -> None:
    """Put the filters on aiohttp's loggers (one each per process; the latest settings win).
    `secrets`: texts never to log (the settings' secrets)."""
    _set_secrets(secrets)
    _sandbox_posts_dropped[0] = drop_sandbox
    _replace_filter(ACCESS_LOGGER, RedactAccessLog())
    _replace_filter(SERVER_LOGGER, QuietMalformedRequests())


def _never_routed(request: web.BaseRequest) -> bool:
    """Whether the HTTP parser refused `request` before the app saw it (its DEBUG line, from
    QuietMalformedRequests, says why; an INFO access line would say only `UNKNOWN / 400`)."""
    if not isinstance(request, web.Request):
        return True
    try:
        request.match_info.route  # noqa: B018 - set once the app routed the request
    except AssertionError:
        return True
    return False


def _from_machine(request: web.BaseRequest) -> bool:
    """Whether `request` came to a machines' route (LiveKit's webhooks, agents' reports,
    probes: RouteDoc.log_success)."""
    if _never_routed(request):
        return False
    assert isinstance(request, web.Request)  # noqa: S101 - routed requests are
    return request.match_info.route in request.app.get(QUIET_ROUTES, ())


_REQUEST_START = AccessLogger.LOG_FORMAT_MAP["t"]


def _started_utc(took: float) -> str:
    """When the request came (`%t`), in UTC as the line's own time: aiohttp writes the
    machine's local time (`[08/Dec/2026:13:52:00 +1345]` on Chatham Island for 00:07 UTC), its
    offset read again on the hour and half hour only: a quarter of an hour an hour off after
    Chatham's clocks move at 02:45."""
    started = datetime.now(UTC) - timedelta(seconds=took)
    return started.strftime("[%d/%b/%Y:%H:%M:%S +0000]")


class CallsAccessLogger(AccessLogger):
    """aiohttp's access logger, quiet about machines' successful requests below DEBUG, and
    about their repeated failures (see the module's docstring)."""

    def _format_line(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        """aiohttp's fields of the line, each text cut at MAX_FIELD_CHARS (a field of quotes
        every 299 characters got past a cut made on the written line)."""
        # Credentials out before the cut: cut first, a token across it was logged up to it.
        # An answer that never reached its client shows `<status>-aborted` (ANSWER_ABORTED).
        return [
            (
                key,
                _started_utc(time)
                if key == _REQUEST_START
                else _shown_field(value)
                if isinstance(value, str)
                else shown_status(request, value)
                if key == "response_status" and request.get(ANSWER_ABORTED)
                else value,
            )
            for key, value in super()._format_line(request, response, time)
        ]

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        status = response.status
        if not self.logger.isEnabledFor(logging.DEBUG) and _never_routed(request):
            return  # the parser refused it: at DEBUG only, as its own line is
        if _is_sandbox_post(request, response):
            return  # most of the log otherwise, at DEBUG; its failures are logged
        if self.logger.isEnabledFor(logging.DEBUG) or not _from_machine(request):
            super().log(request, response, time)
        elif not 200 <= status < 300 or request.get(ANSWER_ABORTED):
            # a refusal (forged, by the thousand), a failure, or an answer never sent
            # Once a minute per route and status, per server (the app's REFUSALS): aiohttp
            # makes a logger per connection, and LiveKit and the agents open new ones.
            assert isinstance(request, web.Request)  # noqa: S101 - routed, as _from_machine says
            suffix = request.app[REFUSALS].due(f"{request.path} {shown_status(request, status)}")
            if suffix is not None:
                self._log_with(suffix, request, response, time)

    def _log_with(
        self, suffix: str, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        """The line, with `suffix` (how many like it were held back) at its end."""
        line_format = self._log_format
        self._log_format = line_format + suffix.replace("%", "%%")
        try:
            super().log(request, response, time)
        finally:
            self._log_format = line_format
