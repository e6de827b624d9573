"""The agent's reports about its own call, delivered to the server in order, signed, retried.

A call produces a handful of reports (`AgentReport`: answered, each transcript turn, the
answering-machine verdict, the final report with the analysis). The server applies them by
(call id, seq), so a report may be sent again safely; it must never be skipped silently and a
later one must never overtake an earlier one. Hence one background task posts them strictly
in order, retrying what may succeed later (5xx, 429, network errors, timeouts) with
exponential backoff up to a deadline per POST, and moving on from what never will (400,
401, 404, 409, 413: one WARNING line). What could not be delivered is logged at ERROR.

Reports go several to a POST (a JSON array, common/contracts.py `batch_body`): each POST
takes what queued while the one before was out, and a turn is held back up to
`REPORT_LINGER_S` for what follows it; the answer, the answering-machine verdict, a
do-not-call request and the final report go at once, with whatever waits before them, as
does everything when `flush` or `aclose` is called. A call of 30 turns is then about ten
POSTs, not 33, and what the server shows of a live call's transcript is at most that late.
A batch the server refuses as malformed or too large (400, 413) is sent again one report at
a time, so one bad report never takes the others with it.

Each attempt is signed afresh (`common.signing.sign_body`, a room grant naming the call):
tokens live five minutes and a report may be retried for four.

With a spool (`agent.spool`, what the worker's jobs use), a POST is retried for as long as
the sender is open rather than given up after four minutes, and what is still pending when
it closes is written to the spool, which the worker sends again once the server is back: a
call's final report outlives an outage longer than its job.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from pydantic import ValidationError

from common.contracts import (
    MAX_REPORT_BYTES,
    MAX_REPORTS_PER_POST,
    AgentReport,
    AmdVerdict,
    CallReport,
    ReportKind,
    TranscriptTurn,
    batch_body,
)
from common.masking import redact
from common.signing import sign_body

if TYPE_CHECKING:
    from agent.spool import ReportSpool

logger = logging.getLogger(__name__)

# Answers that will not change however often the report is sent again.
PERMANENT_STATUSES: Final = frozenset({400, 401, 404, 409, 413})
# Refusals of a batch that may be one report's doing: its reports are sent again one by one.
SPLIT_ON: Final = frozenset({400, 413})
# Answers worth another attempt besides 5xx: rate limited, request timeout.
RETRYABLE_STATUSES: Final = frozenset({408, 429})
# How long flush/aclose wait by default for the queue to drain.
DEFAULT_FLUSH_TIMEOUT_S: Final = 30.0
# With a spool: how long `aclose` tries before it writes what is pending to the spool (then
# goes on trying, the file removed if they are delivered after all).
SPOOL_AFTER_S: Final = 5.0
# How long a turn may wait for the reports after it, to share their POST.
REPORT_LINGER_S: Final = 5.0
# Reports that go at once (with whatever waits before them). A verdict too: a machine's may
# be followed by the agent's hang-up at once, and the call is settled by what the server knows
# when its room finishes.
# Who signs this host's reports (their tokens' `name`): the server reads each agent host's
# clock apart from the others' (common.livekit.skew.SignerClocks).
AGENT_HOST: Final = socket.gethostname()
URGENT_KINDS: Final[frozenset[ReportKind]] = frozenset({"answered", "amd", "do_not_call", "final"})


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for one POST: `first_delay_s` doubling up to `max_delay_s`, each attempt
    bounded by `attempt_timeout_s`, giving up `deadline_s` after the POST's first attempt."""

    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    attempt_timeout_s: float = 10.0
    deadline_s: float = 240.0


@dataclass(frozen=True)
class _Queued:
    report: AgentReport
    body: bytes
    queued_at: float  # the event loop's clock


class _Retry(Exception):
    """This attempt failed in a way another attempt may not; the message says how."""


class _Refused(Exception):
    """The server refused the POST for good; the message says how."""

    def __init__(self, why: str, status: int) -> None:
        super().__init__(why)
        self.status = status


SessionFactory = Callable[[], aiohttp.ClientSession]


def say_dnc_lost(call_id: str, why: str) -> None:
    """The ERROR for a call whose do_not_call report is lost (`why`): the server alone puts
    the number on the do-not-call list, so someone must list it by hand."""
    logger.error(
        "call %s: the callee asked not to be called again, and the server was not told (%s):"
        " put the call's number on the do-not-call list with POST /dnc",
        call_id,
        why,
    )


class ReportSender:
    """Queues a call's reports with consecutive `seq` numbers and posts them in order.

    The enqueueing methods are synchronous (they are called from session event handlers) and
    never raise; the background task starts with the first report. With `url` None (no
    report URL in the dispatch, e.g. `console`) the sender does nothing but say so once.

    `session` is borrowed (not closed); otherwise `session_factory` (default: a plain
    `aiohttp.ClientSession`) makes one that `aclose` closes. `linger_s`: how long a turn or
    a verdict waits for company (0: every POST takes just what queued meanwhile).
    `spool`: retry each POST until `aclose`, then keep what is pending there (`agent.spool`);
    what `aclose` has not delivered within `spool_after_s` is written there at once, and the
    file removed should it be delivered after all.
    `give_up_level`: how what was not delivered is logged (the spool's passes, which try
    again, say it at INFO). `hold_back`: once a POST is given up, what waits after it is
    given up with it, not sent before it (the spool's passes: a final report delivered
    before the call's answer).
    With a spool or `hold_back`, a 401 (the server refused the signature: a key rotated on
    one side only, a clock far off) is retried, and kept in the spool, rather than refused
    for good: the reports arrive once the keys agree again, where they were lost.
    """

    def __init__(
        self,
        url: str | None,
        call_id: str,
        api_key: str,
        api_secret: str,
        *,
        session: aiohttp.ClientSession | None = None,
        session_factory: SessionFactory | None = None,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
        linger_s: float = REPORT_LINGER_S,
        spool: ReportSpool | None = None,
        spool_after_s: float = SPOOL_AFTER_S,
        give_up_level: int = logging.ERROR,
        hold_back: bool = False,
    ) -> None:
        self._url = url
        self._call_id = call_id
        self._api_key = api_key
        self._api_secret = api_secret
        self._session = session
        self._owns_session = session is None
        self._session_factory = session_factory or aiohttp.ClientSession
        self._clock = clock
        self._retry = retry or RetryPolicy()
        self._linger_s = linger_s
        self._spool = spool
        self._spool_after_s = spool_after_s
        self._give_up_level = give_up_level
        self._hold_back = hold_back
        self._unauthorized_retried = spool is not None or hold_back
        self._next_seq = 0
        self._waiting: collections.deque[_Queued] = collections.deque()
        self._current: list[_Queued] = []
        self._wake = asyncio.Event()  # a report queued, or a flush asks for everything now
        self._idle = asyncio.Event()  # nothing waits and nothing is being sent
        self._idle.set()
        self._flushing = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.delivered: list[int] = []
        """Sequence numbers the server accepted (2xx), in order; for tests and logs."""
        self.refused: list[int] = []
        """Sequence numbers the server refused for good (a 4xx, too_many_turns)."""
        self.dropped: list[int] = []
        """Sequence numbers given up: every attempt failed, or still pending at close."""
        self.spooled: list[int] = []
        """Sequence numbers still pending at close, kept in the spool to be sent again."""
        self.posts = 0
        """POSTs answered 2xx (a POST may carry several reports); for tests and logs."""
        if url is None:
            logger.info("call %s: no report URL in the dispatch; reports are not sent", call_id)

    @property
    def enabled(self) -> bool:
        return self._url is not None

    # ------------------------------------------------------------------------- enqueueing

    def answered(self, at: float) -> None:
        """The callee picked up at `at` (unix seconds)."""
        self._enqueue("answered", at=at)

    def turn(self, turn: TranscriptTurn) -> None:
        self._enqueue("turn", turn=turn)

    def amd(self, verdict: AmdVerdict) -> None:
        self._enqueue("amd", amd=verdict)

    def do_not_call(self, at: float) -> None:
        """The callee asked not to be called again: the server puts the number on its list."""
        self._enqueue("do_not_call", at=at)

    def final(self, report: CallReport) -> None:
        self._enqueue("final", final=report)

    def resend(self, report: AgentReport) -> None:
        """Queue a report made before (spooled by a job), keeping its `seq`."""
        if self._url is None or self._closed:
            return
        self._next_seq = max(self._next_seq, report.seq + 1)
        self._queue(self._url, report)

    def _enqueue(
        self,
        kind: ReportKind,
        *,
        at: float | None = None,
        turn: TranscriptTurn | None = None,
        amd: AmdVerdict | None = None,
        final: CallReport | None = None,
    ) -> None:
        if self._url is None:
            return
        if self._closed:
            logger.error(
                "call %s: %s report not sent: the sender is already closed", self._call_id, kind
            )
            return
        try:
            report = AgentReport(
                call_id=self._call_id,
                seq=self._next_seq,
                kind=kind,
                at=max(0.0, self._clock() if at is None else at),
                turn=turn,
                amd=amd,
                final=final,
            )
        except ValidationError as exc:
            logger.error(
                "call %s: %s report #%d not sent: it is invalid (%s)",
                self._call_id,
                kind,
                self._next_seq,
                _clip(str(exc)),
            )
            return
        self._next_seq += 1
        self._queue(self._url, report)

    def _queue(self, url: str, report: AgentReport) -> None:
        loop = asyncio.get_running_loop()
        self._waiting.append(_Queued(report, report.to_json(), loop.time()))
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            self._task = loop.create_task(self._run(url), name=f"reports-{self._call_id}")

    # ------------------------------------------------------------------------- delivery

    async def _run(self, url: str) -> None:
        while True:
            if not self._waiting:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._linger()
            if self._closed:  # closed meanwhile: a cancel can be lost in a wait ending
                return
            if not self._waiting:
                continue
            self._current = take_batch(self._waiting)
            try:
                await self._send(url, self._current)
            except Exception:  # a bug here must not stop the reports after it
                logger.exception("call %s: %s not delivered", self._call_id, _what(self._current))
                self._lost_to_a_bug()
            finally:
                self._current = []

    def _lost_to_a_bug(self) -> None:
        """What of the batch being sent an unexpected exception left neither delivered nor
        refused: dropped, as a POST given up is (a spool pass keeps its file for the next;
        a job says a do_not_call among them lost). Counted nowhere, a spool pass removed its
        file as delivered."""
        settled = {*self.delivered, *self.refused, *self.dropped}
        lost = [q for q in self._current if q.report.seq not in settled]
        self.dropped.extend(q.report.seq for q in lost)
        if self._hold_back:  # what follows goes after it, in a later pass
            self.dropped.extend(q.report.seq for q in self._waiting)
            self._waiting.clear()
        else:
            self._say_dnc_lost(lost, "its POST failed in the agent")

    async def _linger(self) -> None:
        """Hold a turn back, up to `linger_s` after it queued, until something that goes at
        once queues or a flush asks for everything."""
        loop = asyncio.get_running_loop()
        while (
            self._waiting
            and not self._flushing
            and not any(q.report.kind in URGENT_KINDS for q in self._waiting)
        ):
            left = self._waiting[0].queued_at + self._linger_s - loop.time()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    async def _send(self, url: str, batch: list[_Queued]) -> None:
        """Deliver one POST; a batch refused as malformed or too large goes again one by one."""
        status = await self._deliver(url, batch)
        if status is None:
            return
        if status in SPLIT_ON and len(batch) > 1:
            logger.info("call %s: sending those %d reports one by one", self._call_id, len(batch))
            for index, item in enumerate(batch):
                self._current = batch[index:]  # what a close now would leave undelivered
                await self._send(url, [item])
                if self._hold_back and item.report.seq in self.dropped:
                    self.dropped.extend(q.report.seq for q in batch[index + 1 :])
                    return
        else:
            self.refused.extend(q.report.seq for q in batch)
            self._say_dnc_lost(batch, f"refused for good, HTTP {status}" if status else "refused")

    async def _deliver(self, url: str, batch: list[_Queued]) -> int | None:
        """POST `batch` until the server takes it, or refuses it (then its status, or 0 when
        it is no HTTP answer), or the deadline passes."""
        loop = asyncio.get_running_loop()
        # With a spool, until the sender closes (what is pending then is spooled).
        deadline = loop.time() + (math.inf if self._spool else self._retry.deadline_s)
        delay = self._retry.first_delay_s
        attempts = 0
        body = batch[0].body if len(batch) == 1 else batch_body([q.body for q in batch])
        while True:
            attempts += 1
            timeout = max(0.1, min(self._retry.attempt_timeout_s, deadline - loop.time()))
            try:
                answer = await self._attempt(url, body, timeout)
            except _Refused as exc:
                logger.warning(
                    "call %s: %s refused by the server, not retried: %s",
                    self._call_id,
                    _what(batch),
                    exc,
                )
                return exc.status
            except _Retry as exc:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    logger.log(
                        self._give_up_level,
                        "call %s: %s not delivered: gave up after %d attempts"
                        " over %.0f s (last: %s)",
                        self._call_id,
                        _what(batch),
                        attempts,
                        self._retry.deadline_s,
                        exc,
                    )
                    self.dropped.extend(q.report.seq for q in batch)
                    if self._hold_back:  # what follows goes after it, in a later pass
                        self.dropped.extend(q.report.seq for q in self._waiting)
                        self._waiting.clear()
                    else:
                        self._say_dnc_lost(batch, f"not delivered after {attempts} attempts")
                    return None
                logger.log(
                    logging.INFO if attempts == 1 else logging.DEBUG,
                    "call %s: %s not delivered yet (%s); retrying",
                    self._call_id,
                    _what(batch),
                    exc,
                )
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, self._retry.max_delay_s)
            else:
                self.posts += 1
                self._taken(batch, answer)
                return None

    def _say_dnc_lost(self, items: list[_Queued], why: str) -> None:
        """An ERROR when `items`, lost, hold the callee's request not to be called again: the
        server alone puts the number on the do-not-call list, and the line that said the
        report was refused ("do_not_call report #4 refused", a WARNING among a call's other
        reports) left them to be called again, with nothing saying that someone must list
        the number by hand."""
        if any(q.report.kind == "do_not_call" for q in items):
            say_dnc_lost(self._call_id, why)

    def _taken(self, batch: list[_Queued], answer: Any) -> None:
        """The server took the POST: note what it kept (of a batch, each report's result)."""
        results = answer.get("results") if isinstance(answer, dict) and len(batch) > 1 else None
        if not isinstance(results, list) or len(results) != len(batch):
            self.delivered.extend(q.report.seq for q in batch)
            return
        for item, result in zip(batch, results, strict=True):
            outcome = result.get("result") if isinstance(result, dict) else None
            if outcome in ("applied", "duplicate"):
                self.delivered.append(item.report.seq)
            else:  # too_many_turns: the call keeps no more turns; sending it again won't help
                self.refused.append(item.report.seq)
                logger.warning(
                    "call %s: %s refused by the server, not retried: %s %s",
                    self._call_id,
                    _what([item]),
                    _clip(str(outcome)),
                    _error_text(result),
                )

    async def _attempt(self, url: str, body: bytes, timeout: float) -> Any:
        """One POST; returns the server's JSON answer (None if it has none) when it took it,
        else raises _Retry or _Refused."""
        token = sign_body(
            body, self._api_key, self._api_secret, room=self._call_id, signer=AGENT_HOST
        )
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            async with self._http().post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    # Read whole first: an answer cut off midway (a reset, a timeout) is
                    # retried as a lost one is (the server keeps each report once, by seq),
                    # not taken for another site's page.
                    answer = _json_from(await response.read())
                    if isinstance(answer, dict) and answer.get("status") == "success":
                        return answer
                    # Something else took it (a web site's catch-all, a proxy's page): counted
                    # delivered, every report was lost without a word.
                    raise _Refused(
                        f"HTTP {status}, but not the calls server's answer to a report: is the"
                        " report URL (PUBLIC_BASE_URL + /agent/reports) the calls server?",
                        status,
                    )
                doc = await _json_of(response)
                why = _error_text(doc)
                if 300 <= status < 400:  # an http:// URL a load balancer sends to https://
                    leads_to = response.headers.get("Location", "")
                    why = (
                        f"(the report URL redirects{f' to {_clip(leads_to)}' if leads_to else ''};"
                        " reports do not follow redirects: set PUBLIC_BASE_URL to where it leads)"
                    )
        except TimeoutError:
            raise _Retry(f"no answer within {timeout:.1f} s") from None
        except aiohttp.InvalidURL:
            raise _Refused("the report URL is not a valid URL", 0) from None
        except aiohttp.ClientError as exc:
            raise _Retry(f"{type(exc).__name__}: {_clip(str(exc))}") from None
        if status >= 500 or status in RETRYABLE_STATUSES:
            raise _Retry(f"HTTP {status} {why}".rstrip())
        if status == 404 and not _the_servers_error(doc):
            # Not the calls server's "unknown call" (its JSON error) but a proxy's page in front
            # of it: Traefik answers 404 while the server's container is being replaced (a
            # deploy, a restart). Refused for good, every report of those seconds was lost.
            raise _Retry(
                "HTTP 404, not the calls server's answer (a proxy in front of it while it is"
                " away? is the report URL, PUBLIC_BASE_URL + /agent/reports, the calls server?)"
            )
        if status == 401 and self._unauthorized_retried:  # kept until the keys agree again
            raise _Retry(f"HTTP 401 {why} (check LIVEKIT_API_KEY and LIVEKIT_API_SECRET)".rstrip())
        # The rest of 4xx (and 3xx: a report URL that redirects is misconfigured) will not
        # change by sending the same report again.
        raise _Refused(f"HTTP {status} {why}".rstrip(), status)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self._session_factory()
        return self._session

    # ------------------------------------------------------------------------- draining

    async def flush(self, timeout: float = DEFAULT_FLUSH_TIMEOUT_S) -> bool:
        """Send what waits now, and wait until every queued report is delivered or given
        up; False on timeout."""
        if self._task is None:
            return True
        self._flushing += 1
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._flushing -= 1
        return True

    async def aclose(self, timeout: float = DEFAULT_FLUSH_TIMEOUT_S) -> None:
        """Flush (bounded by `timeout`), then stop; what is still pending is logged at ERROR."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        kept: tuple[Path, set[int]] | None = None
        if self._spool is not None and not await self._drain(
            min(deadline, loop.time() + self._spool_after_s)
        ):
            # Not delivered within a few seconds (the server away): in the spool already while
            # they are still retried, so a process killed meanwhile (the worker's stop
            # timeout, out of memory) leaves them there; the file goes once they are delivered.
            kept = self._keep([*self._current, *self._waiting])
        await self._drain(deadline)
        self._closed = True  # from here (no await since the check) nothing more is queued
        pending = [*self._current, *self._waiting]
        self._waiting.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if pending and self._spool is not None:
            if kept is None or kept[1] != {q.report.seq for q in pending}:
                again = self._keep(pending)  # what is left of them, or more
                if again is not None:
                    if kept is not None:
                        kept[0].unlink(missing_ok=True)
                    kept = again
            if kept is not None:
                # (the file written early, if the last could not be: only what it holds)
                held = [q for q in pending if q.report.seq in kept[1]]
                logger.warning(
                    "call %s: %d reports not delivered within %.0f s, kept in the report spool;"
                    " the worker sends them again",
                    self._call_id,
                    len(held),
                    timeout,
                )
                self.spooled.extend(q.report.seq for q in held)
                pending = [q for q in pending if q.report.seq not in kept[1]]
        elif kept is not None:  # delivered after all
            kept[0].unlink(missing_ok=True)
        self.dropped.extend(q.report.seq for q in pending)
        if not self._hold_back:
            self._say_dnc_lost(pending, "not delivered before the job ended")
        if pending:
            # One line for them all: a line each was 51 ERRORs for a call of 50 turns whose
            # server was away and spool unwritable (a full disk), thousands for a long call.
            logger.log(
                self._give_up_level,
                "call %s: %s not delivered: still pending after %.0f s at shutdown",
                self._call_id,
                _what(pending, counted=True),
                timeout,
            )
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def _drain(self, until: float) -> bool:
        """Flush until the loop's time `until`; whether nothing is left to send."""
        loop = asyncio.get_running_loop()
        # Until nothing waits: an event's callback may queue a report as the flush ends.
        while await self.flush(max(0.0, until - loop.time())):
            if not self._waiting:
                return True
        return False

    def _keep(self, items: list[_Queued]) -> tuple[Path, set[int]] | None:
        """`items` written to the spool: the file, and the reports it holds."""
        if self._spool is None or self._url is None or not items:
            return None
        path = self._spool.save(self._url, self._call_id, [q.body for q in items])
        return None if path is None else (path, {q.report.seq for q in items})

    def abandon(self) -> None:
        """Stop now, sending nothing more and logging nothing (the sandbox stopping); what
        waits counts as dropped. A borrowed session stays open."""
        if self._closed:
            return
        self._closed = True
        self.dropped.extend(q.report.seq for q in [*self._current, *self._waiting])
        self._waiting.clear()
        if self._task is not None:
            self._task.cancel()


def take_batch(waiting: collections.deque[_Queued]) -> list[_Queued]:
    """The next POST's reports: the oldest waiting, and those after it while they fit
    (MAX_REPORTS_PER_POST, MAX_REPORT_BYTES with the array's brackets and commas)."""
    batch = [waiting.popleft()]
    size = len(batch[0].body) + 2
    while waiting and len(batch) < MAX_REPORTS_PER_POST:
        size += len(waiting[0].body) + 1
        if size > MAX_REPORT_BYTES:
            break
        batch.append(waiting.popleft())
    return batch


def _what(batch: list[_Queued], *, counted: bool = False) -> str:
    """How the logs name a POST's reports: `turn report #3`, `3 reports #3-#5 (turn, amd,
    final)`; `counted`, the kinds counted (`51 reports #0-#50 (answered, 50 turn)`), for any
    number of reports (a long call's named one by one made a line of thousands of words)."""
    first = batch[0].report
    if len(batch) == 1:
        return f"{first.kind} report #{first.seq}"
    if counted:
        counts = collections.Counter(q.report.kind for q in batch)
        kinds = ", ".join(kind if n == 1 else f"{n} {kind}" for kind, n in counts.items())
    else:
        kinds = _clip(", ".join(q.report.kind for q in batch), 80)
    return f"{len(batch)} reports #{first.seq}-#{batch[-1].report.seq} ({kinds})"


def _clip(text: str, limit: int = 200) -> str:
    """A server's or library's message on one short line, phone numbers masked (call ids
    kept whole)."""
    text = redact(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _json_of(response: aiohttp.ClientResponse) -> Any:
    """The answer's JSON, or None."""
    try:
        return _json_from(await response.read())
    except (aiohttp.ClientError, TimeoutError):
        return None


def _json_from(body: bytes) -> Any:
    """`body` as JSON, or None. One nested too deeply to parse (`[` 200,000 times, a proxy's
    or a broken server's answer) raised RecursionError through the sender: its batch was
    neither delivered, retried nor refused, and a spooled file of it removed as delivered."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _the_servers_error(doc: Any) -> bool:
    """Whether an error answer is the calls server's own: its JSON `{"status": "error", ...}`."""
    return isinstance(doc, dict) and doc.get("status") == "error"


def _error_text(doc: Any) -> str:
    """The server's short reason (`error` of its JSON answer), in parentheses, or ''."""
    error = doc.get("error") if isinstance(doc, dict) else None
    return f"({_clip(error)})" if isinstance(error, str) and error else ""
