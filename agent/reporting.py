"""The agent's reports about its own call, delivered to the server in order, signed, retried.

A call produces a handful of reports (`AgentReport`: answered, each transcript turn, the
answering-machine verdict, the final report with the analysis). The server applies them by
(call id, seq), so a report may be sent again safely; it must never be skipped silently and a
later one must never overtake an earlier one. Hence one background task posts them strictly
in order, retrying what may succeed later (5xx, 429, network errors, timeouts) with
exponential backoff up to a deadline per report, and moving on from what never will (400,
401, 404, 409, 413: one WARNING line). What could not be delivered is logged at ERROR.

Each attempt is signed afresh (`common.signing.sign_body`, a room grant naming the call):
tokens live five minutes and a report may be retried for four.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
from pydantic import ValidationError

from common.contracts import AgentReport, AmdVerdict, CallReport, ReportKind, TranscriptTurn
from common.masking import redact
from common.signing import sign_body

logger = logging.getLogger(__name__)

# Answers that will not change however often the report is sent again.
PERMANENT_STATUSES: Final = frozenset({400, 401, 404, 409, 413})
# Answers worth another attempt besides 5xx: rate limited, request timeout.
RETRYABLE_STATUSES: Final = frozenset({408, 429})
# How long flush/aclose wait by default for the queue to drain.
DEFAULT_FLUSH_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for one report: `first_delay_s` doubling up to `max_delay_s`, each attempt
    bounded by `attempt_timeout_s`, giving up `deadline_s` after the report's first attempt."""

    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    attempt_timeout_s: float = 10.0
    deadline_s: float = 240.0


@dataclass(frozen=True)
class _Queued:
    report: AgentReport
    body: bytes


class _Retry(Exception):
    """This attempt failed in a way another attempt may not; the message says how."""


class _Refused(Exception):
    """The server refused the report for good; the message says how."""


SessionFactory = Callable[[], aiohttp.ClientSession]


class ReportSender:
    """Queues a call's reports with consecutive `seq` numbers and posts them in order.

    The enqueueing methods are synchronous (they are called from session event handlers) and
    never raise; the background task starts with the first report. With `url` None (no
    report URL in the dispatch, e.g. `console`) the sender does nothing but say so once.

    `session` is borrowed (not closed); otherwise `session_factory` (default: a plain
    `aiohttp.ClientSession`) makes one that `aclose` closes.
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
        self._next_seq = 0
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        self._current: _Queued | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.delivered: list[int] = []
        """Sequence numbers the server accepted (2xx), in order; for tests and logs."""
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
        self._queue.put_nowait(_Queued(report, report.to_json()))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(self._url), name=f"reports-{self._call_id}"
            )

    # ------------------------------------------------------------------------- delivery

    async def _run(self, url: str) -> None:
        while True:
            item = await self._queue.get()
            self._current = item
            try:
                await self._deliver(url, item)
            except Exception:  # a bug here must not stop the reports after it
                logger.exception(
                    "call %s: %s report #%d not delivered",
                    self._call_id,
                    item.report.kind,
                    item.report.seq,
                )
            finally:
                self._current = None
                self._queue.task_done()

    async def _deliver(self, url: str, item: _Queued) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry.deadline_s
        delay = self._retry.first_delay_s
        attempts = 0
        while True:
            attempts += 1
            timeout = max(0.1, min(self._retry.attempt_timeout_s, deadline - loop.time()))
            try:
                await self._attempt(url, item, timeout)
            except _Refused as exc:
                logger.warning(
                    "call %s: %s report #%d refused by the server, not retried: %s",
                    self._call_id,
                    item.report.kind,
                    item.report.seq,
                    exc,
                )
                return
            except _Retry as exc:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    logger.error(
                        "call %s: %s report #%d not delivered: gave up after %d attempts"
                        " over %.0f s (last: %s)",
                        self._call_id,
                        item.report.kind,
                        item.report.seq,
                        attempts,
                        self._retry.deadline_s,
                        exc,
                    )
                    return
                logger.log(
                    logging.INFO if attempts == 1 else logging.DEBUG,
                    "call %s: %s report #%d not delivered yet (%s); retrying",
                    self._call_id,
                    item.report.kind,
                    item.report.seq,
                    exc,
                )
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, self._retry.max_delay_s)
            else:
                self.delivered.append(item.report.seq)
                return

    async def _attempt(self, url: str, item: _Queued, timeout: float) -> None:
        """One POST; returns when the server took it, else raises _Retry or _Refused."""
        token = sign_body(item.body, self._api_key, self._api_secret, room=self._call_id)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            async with self._http().post(
                url,
                data=item.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    return
                why = await _error_text(response)
        except TimeoutError:
            raise _Retry(f"no answer within {timeout:.1f} s") from None
        except aiohttp.InvalidURL:
            raise _Refused("the report URL is not a valid URL") from None
        except aiohttp.ClientError as exc:
            raise _Retry(f"{type(exc).__name__}: {_clip(str(exc))}") from None
        if status >= 500 or status in RETRYABLE_STATUSES:
            raise _Retry(f"HTTP {status} {why}".rstrip())
        # The rest of 4xx (and 3xx: a report URL that redirects is misconfigured) will not
        # change by sending the same report again.
        raise _Refused(f"HTTP {status} {why}".rstrip())

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = self._session_factory()
        return self._session

    # ------------------------------------------------------------------------- draining

    async def flush(self, timeout: float = DEFAULT_FLUSH_TIMEOUT_S) -> bool:
        """Wait until every queued report is delivered or given up; False on timeout."""
        if self._task is None:
            return True
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = DEFAULT_FLUSH_TIMEOUT_S) -> None:
        """Flush (bounded by `timeout`), then stop; what is still pending is logged at ERROR."""
        if self._closed:
            return
        drained = await self.flush(timeout)
        self._closed = True
        pending = [] if drained else [*filter(None, [self._current]), *_drain(self._queue)]
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in pending:
            logger.error(
                "call %s: %s report #%d not delivered: still pending after %.0f s at shutdown",
                self._call_id,
                item.report.kind,
                item.report.seq,
                timeout,
            )
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None


def _clip(text: str, limit: int = 200) -> str:
    """A server's or library's message on one short line, phone numbers masked (call ids
    kept whole)."""
    text = redact(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _drain(queue: asyncio.Queue[_Queued]) -> list[_Queued]:
    items: list[_Queued] = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def _error_text(response: aiohttp.ClientResponse) -> str:
    """The server's short reason (`error` of its JSON answer), in parentheses, or ''."""
    try:
        doc = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError, TimeoutError):
        return ""
    error = doc.get("error") if isinstance(doc, dict) else None
    return f"({_clip(error)})" if isinstance(error, str) and error else ""
