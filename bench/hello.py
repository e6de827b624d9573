"""The baseline server: a bare aiohttp hello-world handler, served the way server.py serves.

Same `web.run_app` defaults (access log on), same logging set-up (INFO, text), on 127.0.0.1.
Usage: `python -m bench.hello PORT`.
"""

from __future__ import annotations

import sys

from aiohttp import web

from common.settings import Settings, configure_logging


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello, world")


def main() -> None:
    port = int(sys.argv[1])
    configure_logging(Settings())
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
