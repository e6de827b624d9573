"""Run the sandbox alone: ``python -m sandbox [--port 7880] [--webhook-url URL] [--time-scale 1]``.

The API key and secret come from ``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET``, read as the server
reads them (the environment over ``.env`` in the working directory), defaulting to the
project's development pair. Runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from common.host_header import is_loopback_host
from common.settings import (
    DEV_API_KEY,
    DEV_API_SECRET,
    MAX_SANDBOX_TIME_SCALE,
    SettingsError,
    TextLogFormatter,
    environment,
    http_url,
)
from sandbox.server import Sandbox
from sandbox.util import port_argument

logger = logging.getLogger(__name__)


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description="Loopback LiveKit stand-in (no phone is called)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=port_argument, default=7880, help="port (default 7880, 0 = any)"
    )
    parser.add_argument("--webhook-url", default=None, help="where to POST LiveKit webhooks")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiplies every simulated delay (0 = no delays; default 1.0)",
    )
    args = parser.parse_args(argv)
    # SANDBOX_TIME_SCALE's bounds: `nan` was taken, and every call it played stayed `dialing`
    # for good (its delays never ran out); `inf` alike.
    if not 0 <= args.time_scale <= MAX_SANDBOX_TIME_SCALE:
        parser.error(f"--time-scale must be a number from 0 to {MAX_SANDBOX_TIME_SCALE:g}")
    if args.webhook_url is not None:
        # taken, then every webhook of every call failed 5 times and was dropped, a WARNING
        # each ("NonHttpUrlClientError"), and no call settled by them
        try:
            http_url("--webhook-url", args.webhook_url)  # as the server checks its own URLs
        except SettingsError:
            parser.error(
                "--webhook-url must be an http:// or https:// URL with a host, such as"
                " http://127.0.0.1:8000/webhooks/livekit"
            )
    return args


async def _serve(args: argparse.Namespace, env: dict[str, str]) -> None:
    api_secret = env.get("LIVEKIT_API_SECRET") or DEV_API_SECRET
    if api_secret == DEV_API_SECRET and not is_loopback_host(args.host):
        logger.warning(
            "listening on %s with the public development keys: anyone who can reach it can"
            " use it and sign webhooks as it does (set LIVEKIT_API_KEY and LIVEKIT_API_SECRET,"
            " or keep --host on loopback)",
            args.host,
        )
    sandbox = Sandbox(
        api_key=env.get("LIVEKIT_API_KEY") or DEV_API_KEY,
        api_secret=api_secret,
        webhook_url=args.webhook_url,
        time_scale=args.time_scale,
        host=args.host,
        port=args.port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sandbox.start()
    try:
        await stop.wait()
    finally:
        await sandbox.stop()


def main(argv: list[str] | None = None) -> None:
    handler = logging.StreamHandler()  # its lines' times in UTC, as the server's
    handler.setFormatter(TextLogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    args = _parse_args(argv)
    try:  # the server's keys where the server reads them: a .env of its own (probe AU)
        env = environment()
    except SettingsError as exc:
        logger.critical("%s", exc)
        raise SystemExit(2) from None
    if args.webhook_url is None:
        logger.warning(
            "no --webhook-url: this sandbox sends no LiveKit webhook, so calls placed through"
            " it never settle by them (give the server's http://HOST:PORT/webhooks/livekit)"
        )
    try:
        asyncio.run(_serve(args, env))
    except OSError as exc:  # the port taken, the address not this machine's
        # os.strerror: asyncio's strerror says the address again, lower-cased ("error while
        # attempting to bind on address ('127.0.0.1', 7880): address already in use")
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        logger.critical(
            "cannot listen on %s:%s: %s (give another with --host/--port; --port 0 takes any"
            " free port)",
            args.host,
            args.port,
            reason,
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
