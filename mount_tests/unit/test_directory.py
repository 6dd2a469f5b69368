"""A directory's cookies, rename's whiteout and the atime rules, without a mount."""

import errno
import stat

import pytest

from holefs.directory import FIRST_COOKIE, Entries
from holefs.inodeflags import NOATIME
from holefs.namespace import (
    RELATIME_AGE_NS,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RENAME_WHITEOUT,
    Namespace,
)


def names_since(entries, cookie):
    return [name for _, name, _ in entries.since(cookie)]


def test_cookies_keep_their_place_while_names_come_and_go():
    entries = Entries()
    for i in range(100):
        entries[b"f%d" % i] = i
    cookies = {name: cookie for cookie, name, _ in entries.since(0)}
    assert cookies[b"f0"] == FIRST_COOKIE
    middle = cookies[b"f49"]
    for i in range(0, 90, 3):
        del entries[b"f%d" % i]  # past the compaction threshold
    entries[b"new"] = "n"
    entries[b"f1"] = "replaced"  # an existing name keeps its cookie
    after = names_since(entries, middle)
    assert after[0] == b"f50" and after[-1] == b"new"
    assert b"f51" not in after and len(entries) == 71
    assert dict((name, cookie) for cookie, name, _ in entries.since(0))[b"f1"] == cookies[b"f1"]


def test_whiteout_is_a_device_of_the_caller_in_the_old_name():
    ns = Namespace(10, 0o755, 0, 0)
    f = ns.create(ns.root, b"f", stat.S_IFREG | 0o644, 0, 0)
    ns.rename(ns.root, b"f", ns.root, b"g", RENAME_WHITEOUT | RENAME_NOREPLACE, owner=(7, 8))
    whiteout = ns.lookup(ns.root, b"f")
    assert (whiteout.mode, whiteout.rdev, whiteout.uid, whiteout.gid) == (stat.S_IFCHR, 0, 7, 8)
    assert ns.lookup(ns.root, b"g") is f and ns.used_inodes == 3
    with pytest.raises(OSError) as e:
        ns.rename(ns.root, b"g", ns.root, b"f", RENAME_WHITEOUT | RENAME_EXCHANGE)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("flags,files,dirs", [
    (["rw", "relatime"], "relatime", "relatime"),
    (["rw"], "strictatime", "strictatime"),
    (["rw", "noatime"], "noatime", "noatime"),
    (["ro", "relatime"], "noatime", "noatime"),
    (["rw", "nodiratime", "relatime"], "relatime", "noatime"),
])
def test_atime_rules_follow_the_mount_flags(flags, files, dirs):
    ns = Namespace(100, 0o1777, 0, 0)
    ns.follow_mount_flags(flags)
    assert (ns.file_atime, ns.dir_atime) == (files, dirs)


def test_relatime_moves_atime_behind_a_change_or_a_day_old():
    inode = Namespace(100, 0o1777, 0, 0).root
    inode.atime_ns, inode.mtime_ns, inode.ctime_ns = 10, 20, 20
    assert inode.access_moves_atime("relatime", 30)
    inode.atime_ns = 25
    assert not inode.access_moves_atime("relatime", 30)
    assert inode.access_moves_atime("relatime", 25 + RELATIME_AGE_NS)
    assert inode.access_moves_atime("strictatime", 30)
    assert not inode.access_moves_atime("noatime", 25 + RELATIME_AGE_NS)
    inode.flags = NOATIME
    assert not inode.access_moves_atime("strictatime", 30)
