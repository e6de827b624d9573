"""A customer webhook receiver for trying the service out: verifies each request's Standard
Webhooks signature and prints the event, one line each.

    CALLS_WEBHOOK_SECRET=whsec_... .venv/bin/python -m sandbox.receiver [--port 9000]

(`--secret whsec_...` works too, but a command line is every user's to read, in `ps`.)

Point the server at it (plain http on loopback needs CALLS_WEBHOOK_ALLOW_PRIVATE=1):

    CALLS_WEBHOOK_URL=http://127.0.0.1:9000/ CALLS_WEBHOOK_SECRET=whsec_... \\
        CALLS_WEBHOOK_ALLOW_PRIVATE=1 make run

A request whose signature does not verify (wrong secret, changed body, older than 5 minutes)
gets 401 and is printed as refused. Repeats of one event (same webhook-id) are marked, among
the latest 10,000 ids.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections import OrderedDict
from typing import TextIO

from aiohttp import web

from common.notify.signing import SECRET_ENV, WebhookVerificationError, parse_secrets, verify
from sandbox.util import port_argument

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024
# How many webhook-ids it remembers to mark repeats, the latest: it kept every id and every
# event's body (up to MAX_BODY_BYTES each) for as long as it ran, through a campaign too.
SEEN_IDS = 10_000


def describe(event: dict[str, object]) -> str:
    """One line for an event: its type, call (or campaign), status, and what the call said
    if it ended."""
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    about = data.get("call_id") or data.get("campaign_id")
    parts = [str(event.get("type")), str(about), f"status={data.get('status')}"]
    if event.get("type") == "call.report":
        transcript = data.get("transcript") or []
        parts.append(f"turns={len(transcript) if isinstance(transcript, list) else '?'}")
        if data.get("summary"):
            parts.append(f"summary={data.get('summary')!r}")
        if data.get("extracted"):
            parts.append(f"extracted={json.dumps(data.get('extracted'), ensure_ascii=False)}")
    return " ".join(parts)


class Receiver:
    """The receiving app: verify, remember ids, print."""

    def __init__(self, secret: str, out: TextIO = sys.stdout) -> None:
        self.secret = parse_secrets(secret)  # the server's value, a rotation's list too
        self.out = out
        self.seen: OrderedDict[str, None] = OrderedDict()  # the latest SEEN_IDS, oldest first

    async def handle(self, request: web.Request) -> web.Response:
        # The whole body (413 past MAX_BODY_BYTES): `content.read(n)` gives what has come
        # so far, and a large event arriving in pieces failed its signature check (401).
        body = await request.read()
        try:
            verify(self.secret, request.headers, body)
        except WebhookVerificationError as exc:
            print(f"refused: {exc}", file=self.out, flush=True)
            return web.Response(status=401)
        webhook_id = request.headers.get("webhook-id", "")
        again = " (again)" if webhook_id in self.seen else ""
        self.seen[webhook_id] = None
        self.seen.move_to_end(webhook_id)
        while len(self.seen) > SEEN_IDS:
            self.seen.popitem(last=False)
        event = json.loads(body)
        print(f"{webhook_id}{again} {describe(event)}", file=self.out, flush=True)
        return web.Response(status=204)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/{tail:.*}", self.handle)
        return app


async def serve(secret: str, host: str, port: int) -> None:
    runner = web.AppRunner(Receiver(secret).app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"receiving webhooks on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    # Raw: argparse ran the docstring's commands, each on lines of its own, together with
    # its sentences ("... CALLS_WEBHOOK_ALLOW_PRIVATE=1 make run A request whose ...").
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.receiver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # From the environment by default: a command line is every user's to read (`ps`, and
    # /proc/<pid>/cmdline), and README's `--secret $SECRET` showed the signing secret to all.
    parser.add_argument(
        "--secret",
        default=os.environ.get(SECRET_ENV) or None,
        help=f"the server's {SECRET_ENV} (default: ${SECRET_ENV}, which other users cannot"
        " read in `ps` as they can a command line)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_argument, default=9000)
    args = parser.parse_args(argv)
    if args.secret is None:
        parser.error(f"set {SECRET_ENV} (the server's), or give --secret")
    try:
        parse_secrets(args.secret)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(args.secret, args.host, args.port))
    except OSError as exc:  # the port taken (the README's 9000), the address not this machine's
        reason = exc.strerror or exc
        print(
            f"cannot listen on {args.host}:{args.port}: {reason} (give another --port or --host)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
