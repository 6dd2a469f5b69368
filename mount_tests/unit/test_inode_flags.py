"""chattr's flags and the VFS's rules for them, without a mount."""

import errno
import os

import pytest

from holefs import inodeflags
from holefs.inodeflags import APPEND, IMMUTABLE, NOATIME, NODUMP
from holefs.namespace import Namespace


def refused(check, *args):
    with pytest.raises(OSError) as e:
        check(*args)
    return e.value.errno


def test_xflags_stand_for_the_same_four_flags():
    for flags in range(0, 0x100, 0x10):
        assert inodeflags.from_xflags(inodeflags.to_xflags(flags)) == flags
    assert inodeflags.to_xflags(IMMUTABLE | NOATIME) == 0x08 | 0x40
    assert refused(inodeflags.from_xflags, 0x20) == errno.EOPNOTSUPP  # FS_XFLAG_SYNC


@pytest.mark.parametrize("flags", [0x1, 0x8, 0x100, 0x4000, 1 << 31])
def test_only_tmpfs_four_are_settable(flags):
    assert refused(inodeflags.settable, flags | NODUMP) == errno.EOPNOTSUPP


@pytest.mark.parametrize("open_flags,immutable,append_only", [
    (os.O_RDONLY, None, None),
    (os.O_WRONLY, errno.EPERM, errno.EPERM),
    (os.O_RDWR | os.O_APPEND, errno.EPERM, None),
    (os.O_WRONLY | os.O_APPEND | os.O_TRUNC, errno.EPERM, errno.EPERM),
    (os.O_RDONLY | os.O_TRUNC, errno.EPERM, errno.EPERM),
])
def test_opens(open_flags, immutable, append_only):
    for flags, expected in ((IMMUTABLE, immutable), (APPEND, append_only)):
        if expected is None:
            inodeflags.check_open(flags, open_flags)
        else:
            assert refused(inodeflags.check_open, flags, open_flags) == expected


def test_an_append_only_file_takes_writes_at_eof_and_allocation_only():
    inodeflags.check_write(APPEND, 10, 10)
    assert refused(inodeflags.check_write, APPEND, 0, 10) == errno.EPERM
    # A page written back whole: the bytes before EOF must be the file's own.
    inodeflags.check_write(APPEND, 0, 10, rewrites_nothing=lambda: True)
    assert refused(inodeflags.check_write, APPEND, 0, 10, lambda: False) == errno.EPERM
    assert refused(inodeflags.check_write, APPEND, 11, 10, lambda: True) == errno.EPERM
    assert refused(inodeflags.check_write, IMMUTABLE, 0, 10, lambda: True) == errno.EPERM
    inodeflags.check_times_of_writes(APPEND)
    assert refused(inodeflags.check_times_of_writes, IMMUTABLE) == errno.EPERM
    assert refused(inodeflags.check_write, IMMUTABLE, 10, 10) == errno.EPERM
    inodeflags.check_fallocate(APPEND, keeps_data=True)
    assert refused(inodeflags.check_fallocate, APPEND, False) == errno.EPERM
    assert inodeflags.may_drop_setid(APPEND, "write")
    assert not inodeflags.may_drop_setid(APPEND, "setattr")
    assert not inodeflags.may_drop_setid(IMMUTABLE, "write")
    assert inodeflags.may_drop_setid(NODUMP, "open")


def test_the_namespace_keeps_frozen_names_and_directories():
    ns = Namespace(100, 0o755, 0, 0)
    root = ns.root
    d = ns.create(root, b"d", 0o40755, 0, 0)
    f = ns.create(d, b"f", 0o100644, 0, 0)
    d.flags = APPEND | NOATIME
    assert ns.create(d, b"g", 0o100644, 0, 0).flags == NOATIME  # inherited; appending is fine
    assert refused(ns.unlink, d, b"f") == errno.EPERM
    assert refused(ns.rename, d, b"f", root, b"f") == errno.EPERM
    assert refused(ns.rename, root, b"d", root, b"e") == errno.EPERM  # its own name too
    d.flags = IMMUTABLE
    assert refused(ns.create, d, b"h", 0o100644, 0, 0) == errno.EPERM
    assert refused(ns.link, f, d, b"f2") == errno.EPERM
    assert refused(ns.create, d, b"f", 0o100644, 0, 0) == errno.EEXIST  # as may_create: first
    d.flags = 0
    f.flags = APPEND
    assert refused(ns.link, f, root, b"f2") == errno.EPERM
    assert refused(ns.unlink, d, b"f") == errno.EPERM
    f.flags = 0
    ns.unlink(d, b"f")
