"""POST /agent/reports with several reports of one call in a JSON array (agent/reporting.py
sends what queued meanwhile in one POST): applied in order in one transaction, each with its
own result; refused whole, with nothing stored, when any of them could not be taken alone.
Real signed reports, the real app."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from common.contracts import MAX_REPORTS_PER_POST
from tests.conftest import AppFactory
from tests.integration.test_call_results import answered, report, shown
from tests.integration.test_report_limits import (
    HELLO,
    fields,
    fill_turns,
    post_text,
    stored_reports,
)
from tests.integration.test_webhooks import place, quiet_app


def turn(call_id: str, seq: int, text: str) -> dict[str, Any]:
    return report(call_id, seq, "turn", turn=dict(HELLO, text=text, at_s=float(seq)))


async def test_a_batch_is_applied_in_order_with_a_result_each(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    hello = turn(call_id, 1, "Hello Ann")
    batch = [
        answered(call_id, 0),
        hello,
        report(call_id, 2, "amd", amd={"category": "human", "reason": "llm"}),
        turn(call_id, 3, "Hi"),
        hello,  # the same report again in the batch: a duplicate (another under its seq is
        # kept after the call's last: a resumed job's, test_call_results.py)
    ]
    status, answer = await post_text(client, call_id, json.dumps(batch))
    assert status == 200, answer
    assert answer == {
        "status": "success",
        "results": [
            {"seq": 0, "result": "applied", "error": None},
            {"seq": 1, "result": "applied", "error": None},
            {"seq": 2, "result": "applied", "error": None},
            {"seq": 3, "result": "applied", "error": None},
            {"seq": 1, "result": "duplicate", "error": None},
        ],
    }
    call = await shown(client, call_id)
    assert call["status"] == "in_progress" and call["amd"] == "human"
    assert [t["text"] for t in call["transcript"]] == ["Hello Ann", "Hi"]
    # Sent again (the agent's retry after a lost answer): nothing changes.
    status, again = await post_text(client, call_id, json.dumps(batch[:4]))
    assert status == 200 and {r["result"] for r in again["results"]} == {"duplicate"}
    assert [seq for seq, _, _ in stored_reports(client, call_id)] == [0, 1, 2, 3]
    metrics = await (await client.get("/metrics")).text()
    assert 'agent_reports_total{result="applied"} 4.0' in metrics
    assert 'agent_reports_total{result="duplicate"} 5.0' in metrics


async def test_a_turn_beyond_the_limit_is_refused_alone_in_a_batch(
    start_app: AppFactory,
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    fill_turns(client, call_id)
    batch = [
        answered(call_id, 0),
        turn(call_id, 1, "one more"),
        report(call_id, 2, "final", final={}),
    ]
    status, answer = await post_text(client, call_id, json.dumps(batch))
    assert status == 200
    assert [(r["seq"], r["result"]) for r in answer["results"]] == [
        (0, "applied"),
        (1, "too_many_turns"),
        (2, "applied"),
    ]
    assert answer["results"][1]["error"] == (
        f"call {call_id} already holds 2,000 transcript turns; no more are kept"
    )
    call = await shown(client, call_id)
    assert call["status"] == "in_progress" and call["report_status"] == "complete"
    assert "one more" not in [t["text"] for t in call["transcript"]]


async def test_a_batch_any_of_whose_reports_is_refused_stores_nothing(
    start_app: AppFactory,
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    other = await place(client)
    good = [answered(call_id, 0), turn(call_id, 1, "Hello")]

    bad_turn = dict(turn(call_id, 2, "x"), turn={"role": "robot", "text": "x", "at_s": 0})
    status, answer = await post_text(client, call_id, json.dumps([*good, bad_turn]))
    assert status == 400 and answer["error"] == "not a list of agent reports"
    assert fields(answer) == ["2.turn.role"]

    # A token covers one call: a report of another call in its batch refuses the batch.
    status, answer = await post_text(client, call_id, json.dumps([*good, answered(other, 0)]))
    assert status == 409 and other in answer["error"]

    for size in (0, MAX_REPORTS_PER_POST + 1):
        batch = [turn(call_id, seq, f"t{seq}") for seq in range(size)]
        status, answer = await post_text(client, call_id, json.dumps(batch))
        assert status == 400 and answer["error"] == "not a list of agent reports"

    status, answer = await post_text(client, call_id, json.dumps([good[0], [good[1]]]))
    assert status == 400 and fields(answer) == ["1"]

    assert stored_reports(client, call_id) == [] and stored_reports(client, other) == []
    assert (await shown(client, call_id))["status"] == "dialing"
    # The most a POST may hold is taken.
    batch = [turn(call_id, seq, f"t{seq}") for seq in range(MAX_REPORTS_PER_POST)]
    status, answer = await post_text(client, call_id, json.dumps(batch))
    assert status == 200 and len(answer["results"]) == MAX_REPORTS_PER_POST


async def test_a_report_of_another_call_is_refused_naming_it_safely(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The 409 and its log line repeated the report's call id raw: a terminal escape or a
    bidi override in it (a call id of up to 100 characters of any kind) reached both."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    stray = "\x1b[2J\u202e" + "x" * 90
    with caplog.at_level(logging.WARNING, logger="handlers.reports"):
        status, answer = await post_text(client, call_id, json.dumps([answered(stray, 0)]))
    assert status == 409, answer
    shown = "'\ufffd[2J\ufffd" + "x" * 35 + "\u2026'"
    assert answer["error"] == f"the report's token does not cover call {shown}"
    (line,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert line == f"agent report for call {shown} refused: its token covers {call_id!r}"


async def test_a_batch_for_a_call_the_server_does_not_know_is_404(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    unknown = "call-000000000000"
    status, answer = await post_text(client, unknown, json.dumps([answered(unknown, 0)] * 2))
    assert status == 404 and stored_reports(client, unknown) == []


async def test_an_answer_a_verdict_or_a_do_not_call_counts_once_a_call(
    start_app: AppFactory,
) -> None:
    """Each is one fact of the call: reported again under other seqs (an agent gone wrong, or
    a leaked secret), it added a timeline line each time: 51,000 of them made the call's GET
    7 MB and held the event loop a second."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    verdict = {"category": "human", "reason": "llm"}
    for kind, body in (("answered", {}), ("amd", {"amd": verdict}), ("do_not_call", {})):
        first = 100 * (1 + len(kind))
        batch = [
            dict(report(call_id, first + i, kind), **body) for i in range(MAX_REPORTS_PER_POST)
        ]
        status, answer = await post_text(client, call_id, json.dumps(batch))
        assert status == 200
        results = [r["result"] for r in answer["results"]]
        assert results == ["applied"] + ["duplicate"] * (MAX_REPORTS_PER_POST - 1), kind
        # The same seq again is still taken as the duplicate it is.
        status, again = await post_text(client, call_id, json.dumps(batch[0]))
        assert (status, again["result"]) == (200, "duplicate")
    timeline = (await shown(client, call_id))["timeline"]
    agents = [e["event"] for e in timeline if e["event"].startswith("agent_")]
    assert sorted(agents) == ["agent_amd", "agent_answered", "agent_do_not_call"]


async def test_a_seq_is_a_whole_number_not_a_boolean_text_or_float(
    start_app: AppFactory,
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    for seq in (True, "8", 7.0):
        sent = dict(answered(call_id, 0), seq=seq)
        status, answer = await post_text(client, call_id, json.dumps(sent))
        assert status == 400 and fields(answer) == ["seq"], (seq, answer)
    assert stored_reports(client, call_id) == []


async def test_the_details_of_an_error_are_bounded(start_app: AppFactory) -> None:
    """A signed 1 MiB report of 96,000 unknown keys was answered with 5 MB of details."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    sent = dict(answered(call_id, 0), **{f"k{i}": 1 for i in range(3000)})
    status, answer = await post_text(client, call_id, json.dumps(sent))
    assert status == 400 and len(answer["details"]) == 1001
    assert answer["details"][-1] == {"field": "", "error": "and 2,000 more"}
