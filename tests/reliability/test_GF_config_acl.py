"""config.json's ACL through the writes that replace it: an operator lets an agent of another
user read the file with `setfacl -m u:agent:r config.json` (instead of giving it a group).

Each write creates config.json anew and kept its mode only: the agent lost access at the next
call's write, and the mode's group bits, which on a file with an ACL are the ACL's mask (0640
shown for `u:agent:r` on a 0600 file), then gave the file's own group the read access that
the ACL had given the agent alone.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import struct
from pathlib import Path

import pytest

from common.update_config import ConfigStore
from tests.processes import NOBODY, as_nobody, reachable_directory

ACL_XATTR = "system.posix_acl_access"
_UNDEFINED_ID = 0xFFFFFFFF
# POSIX ACL entry tags, as the kernel's xattr holds them.
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20


def acl_reading_for(uid: int) -> bytes:
    """`setfacl -m u:<uid>:r` on a file of mode 0600: owner rw, that user r, group and others
    nothing, mask r (the group bits `ls -l` shows: 0640)."""
    entries = [
        (_USER_OBJ, 6, _UNDEFINED_ID),
        (_USER, 4, uid),
        (_GROUP_OBJ, 0, _UNDEFINED_ID),
        (_MASK, 4, _UNDEFINED_ID),
        (_OTHER, 0, _UNDEFINED_ID),
    ]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def give_acl(config: Path, uid: int) -> None:
    try:
        os.setxattr(config, ACL_XATTR, acl_reading_for(uid))
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip(f"no POSIX ACLs on the file system of {config}")
        raise


def test_the_acl_and_other_extended_attributes_stay_through_every_write(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    store = ConfigStore(config)
    store.update("Alice", call_id="call-a")
    give_acl(config, NOBODY)
    acl = os.getxattr(config, ACL_XATTR)
    assert config.stat().st_mode & 0o777 == 0o640  # the mask, shown as the group's bits
    with_user_attr = True
    try:
        os.setxattr(config, "user.backup", b"nightly")
    except OSError:  # tmpfs before Linux 6.6 takes no user.* attributes
        with_user_attr = False

    store.update("Bob", call_id="call-b")
    asyncio.run(store.update_async("Carol", call_id="call-c"))

    assert os.getxattr(config, ACL_XATTR) == acl  # was gone: the group could read the file
    assert config.stat().st_mode & 0o777 == 0o640
    if with_user_attr:
        assert os.getxattr(config, "user.backup") == b"nightly"


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_a_user_the_acl_lets_read_still_reads_after_the_next_write() -> None:
    with reachable_directory("gf-acl-") as where:
        config = where / "config.json"
        store = ConfigStore(config)
        store.update("Alice", call_id="call-a")
        give_acl(config, NOBODY)
        read = "import sys; open(sys.argv[1]).read()"
        first = as_nobody(read, str(config))
        if first.returncode != 0 and "Permission denied" not in first.stderr:
            pytest.skip(f"nobody cannot run python here: {first.stderr.strip()[-200:]}")
        assert first.returncode == 0, first.stderr

        store.update("Bob", call_id="call-b")  # the next call's write

        again = as_nobody(read, str(config))
        assert again.returncode == 0, again.stderr  # was: Permission denied


def test_a_copy_set_aside_keeps_the_acl_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable config.json is kept aside by a hard link; where none can be made (a file
    system without them, another user's file under protected_hardlinks), by a copy, which had
    the mode only: its group bits (the ACL's mask) let the file's group read it."""
    config = tmp_path / "config.json"
    config.write_text('{"caller_name": "Alice", ')  # cut short
    config.chmod(0o600)
    give_acl(config, NOBODY)
    acl = os.getxattr(config, ACL_XATTR)

    def no_hard_links(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    ConfigStore(config).update("Bob")

    (aside,) = tmp_path.glob("config.json.corrupt-*")
    assert aside.read_text() == '{"caller_name": "Alice", '
    assert os.getxattr(aside, ACL_XATTR) == acl
    assert os.getxattr(config, ACL_XATTR) == acl


def test_writes_go_through_where_the_os_has_no_extended_attributes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "listxattr")  # as on macOS
    store = ConfigStore(tmp_path / "config.json")
    store.update("Alice")
    store.update("Bob")
    assert store.load()["caller_name"] == "Bob"
