"""With the embedded sandbox's public API secret, signed webhooks and agent reports are taken
from this machine only (handlers/http.py `signed_by_whom_it_may_be`): anyone else could sign
them with the secret from the source."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from common.settings import DEV_API_SECRET, Settings
from handlers.errors import HttpError
from handlers.http import signed_by_whom_it_may_be
from handlers.keys import SETTINGS


def request(peer: str, local: str, secret: str = DEV_API_SECRET) -> web.Request:
    app = web.Application()
    app[SETTINGS] = Settings(livekit_api_secret=secret)
    transport = mock.Mock()
    names: dict[str, Any] = {"peername": (peer, 40000), "sockname": (local, 8000)}
    transport.get_extra_info.side_effect = lambda name, default=None: names.get(name, default)
    return make_mocked_request("POST", "/webhooks/livekit", app=app, transport=transport)


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.2", "0.0.0.0"),  # noqa: S104 - all of 127/8 is this machine
        ("::1", "::"),
        ("::ffff:127.0.0.1", "::"),  # IPv4 loopback on a dual-stack socket
        ("192.0.2.7", "192.0.2.7"),  # the machine posting to one of its own addresses
    ],
)
def test_this_machine_may_sign_with_the_public_secret(peer: str, local: str) -> None:
    signed_by_whom_it_may_be(request(peer, local))


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        ("203.0.113.9", "0.0.0.0"),  # noqa: S104
        ("203.0.113.9", "192.0.2.7"),
        ("::ffff:203.0.113.9", "::"),
        ("2001:db8::9", "2001:db8::1"),
    ],
)
def test_no_other_machine_may(peer: str, local: str) -> None:
    with pytest.raises(HttpError) as refused:
        signed_by_whom_it_may_be(request(peer, local))
    assert refused.value.status == 403


def test_a_real_secret_is_taken_from_anywhere() -> None:
    signed_by_whom_it_may_be(request("203.0.113.9", "0.0.0.0", "a-real-secret-" + "x" * 32))  # noqa: S104
