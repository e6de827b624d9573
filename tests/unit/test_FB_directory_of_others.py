"""A 0644 `.env` under a directory that lets another group or user through is warned of.

b1bde59 took any directory on the way without o+x for one no other user may pass: a
`.env` of root's (0644, LIVEKIT_API_SECRET and CALLS_API_TOKEN in it) under a team's
directory 0750 root:ssl-cert was said nothing of, and `su postgres -c 'cat .../.env'`
(postgres in ssl-cert) printed both secrets; so was one under another user's 0700
directory. A directory stops others only when its group is the file's, and its owner the
file's (or root), as a home directory 0750 of its user's is.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from common.settings import dotenv_warnings
from tests.processes import reachable_directory

SECRET = "s3cretS3cretS3cretS3cretS3cretS3cret"


def other_user_and_group() -> tuple[int, int]:
    """A user and a group that are not this process's (root only can hand files to them)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user or group")
    user = next((u for u in pwd.getpwall() if u.pw_uid not in (0, os.geteuid())), None)
    group = next((g for g in grp.getgrall() if g.gr_gid not in (0, os.getegid())), None)
    if user is None or group is None:
        pytest.skip("no other user or group here")
    return user.pw_uid, group.gr_gid


@contextmanager
def dotenv_under(mode: int, uid: int, gid: int) -> Iterator[Path]:
    """A 0644 `.env` of this process's, in a directory of `mode` owned by uid:gid, under
    directories every user may pass through."""
    with reachable_directory() as top:
        checkout = top / "checkout"
        checkout.mkdir()
        path = checkout / ".env"
        path.write_text(f"LIVEKIT_API_SECRET={SECRET}\n")
        path.chmod(0o644)
        os.chown(checkout, uid, gid)
        checkout.chmod(mode)
        yield path


def test_a_directory_of_another_group_lets_its_members_read_the_secrets() -> None:
    _, other_group = other_user_and_group()
    with dotenv_under(0o750, os.geteuid(), other_group) as path:
        warned = dotenv_warnings(path)
    assert len(warned) == 1 and "LIVEKIT_API_SECRET" in warned[0]


def test_a_directory_of_another_user_lets_that_user_read_the_secrets() -> None:
    other_user, _ = other_user_and_group()
    with dotenv_under(0o700, other_user, os.getegid()) as path:
        warned = dotenv_warnings(path)
    assert len(warned) == 1 and "LIVEKIT_API_SECRET" in warned[0]


def test_a_directory_of_the_files_own_user_and_group_still_stops_others() -> None:
    other_user_and_group()
    with dotenv_under(0o750, os.geteuid(), os.getegid()) as path:
        assert dotenv_warnings(path) == []
