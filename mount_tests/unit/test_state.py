"""What requests do to a mount's state, by MountState's methods, without a
mount or libfuse: the rules that the daemon's adapters only call."""

import errno
import os
import stat

import pytest

from holefs import options
from holefs._fallocate import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from holefs.extents import CHUNK, PAGE, ExtentMap
from holefs.namespace import ROOT_INODE, Namespace
from holefs.state import SEEK_DATA, SEEK_HOLE, MountState
from holefs.tiers import NoSpace, Store, open_ram_tier

REG = stat.S_IFREG | 0o644


@pytest.fixture
def told():
    """The inode numbers whose cached attributes the kernel was told of."""
    return []


def mounted(told, text="size=1M", pages=256):
    return MountState(Namespace(100, 0o1777, 0, 0), Store(pages, pages, open_ram_tier()),
                      options.parse(text), told.append)


@pytest.fixture
def state(told):
    state = mounted(told)
    yield state
    state.store.close()


def new_file(state, name=b"f", uid=1000, mode=REG):
    return state.make(ROOT_INODE, name, mode, uid, uid, 0o022, 0).id


def test_a_write_stores_what_fits_and_a_full_filesystem_refuses_the_rest(state):
    f = new_file(state)
    assert state.write(f, 0, b"a" * 600 * 1024) == 600 * 1024
    assert state.write(f, 600 * 1024, b"b" * 600 * 1024) == 424 * 1024  # 1 MiB in all
    with pytest.raises(NoSpace):
        state.write(f, 1 << 20, b"c")
    assert state.ns[f].size == 1 << 20
    assert state.read(f, 600 * 1024 - 1, 2) == b"ab"


def test_a_writeback_that_does_not_fit_is_an_error_and_keeps_the_kernels_size(state, told):
    f = new_file(state)
    with pytest.raises(NoSpace):
        state.write(f, 0, b"x" * (2 << 20), writeback=True)
    assert state.ns[f].size == 2 << 20  # as the kernel shows it; the rest reads as zeros
    assert told == [f]  # st_blocks moved behind a write(2) that did not wait


def test_under_reserve_the_call_that_grows_a_file_fails_and_not_its_writeback(told):
    state = mounted(told, "size=1M,reserve")
    try:
        f = new_file(state)
        with pytest.raises(NoSpace):
            state.setattr(f, 0, size=2 << 20)
        assert state.ns[f].size == 0
        state.setattr(f, 0, size=512 * 1024)
        assert state.store.used == 128  # taken at once
        assert state.write(f, 0, b"y" * 4096, writeback=True) == 4096
    finally:
        state.store.close()


def test_a_punch_frees_the_pages_and_keeps_the_size(state):
    f = new_file(state)
    state.write(f, 0, b"z" * (2 * CHUNK))
    state.fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, CHUNK)
    assert state.store.used == CHUNK // PAGE
    assert state.ns[f].size == 2 * CHUNK
    assert state.lseek(f, 0, SEEK_DATA) == CHUNK
    assert state.lseek(f, 0, SEEK_HOLE) == 0
    with pytest.raises(OSError) as e:
        state.fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, -1, 10)
    assert e.value.errno == errno.EINVAL


def test_an_unlinked_file_keeps_its_data_until_the_kernel_forgets_it(state):
    f = new_file(state)
    state.write(f, 0, b"d" * PAGE)
    state.unlink(ROOT_INODE, b"f")
    assert state.read(f, 0, 1) == b"d" and state.store.used == 1
    state.forget([(f, 1)])
    assert f not in state.ns.inodes and state.store.used == 0


def test_a_write_by_another_user_drops_set_id_bits_and_tells_the_kernel(state, told):
    f = new_file(state, mode=stat.S_IFREG | 0o6775)
    state.drop_setid(f, 2000, 2000, os.getpid(), "write")
    assert stat.S_IMODE(state.ns[f].mode) == 0o755  # the umask took 0o020
    assert told == [f]


def test_readdir_stops_where_the_reply_is_full_and_references_what_it_gave(state):
    files = [new_file(state, name) for name in (b"a", b"b", b"c")]
    given = []

    def reply(name, inode, cookie):
        given.append((name, cookie))
        return len(given) < 4

    state.readdir(ROOT_INODE, 0, reply)
    assert [name for name, _ in given] == [b".", b"..", b"a", b"b"]
    assert [state.ns[f].lookups for f in files] == [2, 1, 1]  # b did not fit: not given
    resume = given[2][1]  # the cookie of the last entry the kernel took
    given.clear()
    state.readdir(ROOT_INODE, resume, reply)
    assert [name for name, _ in given] == [b"b", b"c"]


def test_an_xattr_name_in_no_namespace_is_refused_and_a_missing_one_is_enodata(state):
    f = new_file(state)
    with pytest.raises(OSError) as e:
        state.set_xattr(f, b"nonsense.k", b"v", 0, 0)
    assert e.value.errno == errno.EOPNOTSUPP
    state.set_xattr(f, b"user.k", b"v", 0, 0)
    assert state.get_xattr(f, b"user.k") == b"v" and state.list_xattrs(f) == [b"user.k"]
    with pytest.raises(OSError) as e:
        state.get_xattr(f, b"user.missing")
    assert e.value.errno == errno.ENODATA


def test_a_remount_planned_without_the_lock_is_checked_again_under_it():
    """What is in use may grow between the plan and the lock: then nothing
    changes, and the remount is refused with the reason."""
    given = options.parse("size=1M,nr_inodes=10")
    state = MountState(Namespace(10, 0o1777, 0, 0), Store(256, 256, open_ram_tier()), given)
    try:
        planned = options.remount(given, "size=64k", "")
        state.store.write(ExtentMap(), 0, b"x" * 128 * 1024)  # grows meanwhile
        with pytest.raises(ValueError, match="in use"):
            state.remount(planned, None, ())
        assert (state.options, state.store.limit) == (given, 256)
        state.remount(options.remount(given, "size=512k", ""), None, ())
        assert (state.options.size, state.store.limit) == (512 * 1024, 128)
    finally:
        state.store.close()
