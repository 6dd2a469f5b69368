"""The handlers driven without a mount, through a small fake request
context, as s3ql's t3_fs_api.py drives its Operations: what pyfuse3 and
the shim would be told, and that a bug becomes EIO and a log line rather
than the end of the daemon.  (It loads the shim, so it is no unit test.)"""

import errno
import logging
import stat
import types

import pyfuse3
import pytest

from holefs import options
from holefs.daemon.fs import Operations
from holefs.namespace import Namespace
from holefs.state import MountState
from holefs.tiers import Store, open_ram_tier

ROOT = pyfuse3.ROOT_INODE


def ctx(uid=0, gid=0):
    return types.SimpleNamespace(uid=uid, gid=gid, pid=0, umask=0o022)


@pytest.fixture
def ops():
    store = Store(limit=256, ram_budget=256, ram=open_ram_tier())
    yield Operations(MountState(Namespace(100, 0o1777, 0, 0), store,
                                options.parse("size=1M")), "/nonexistent")
    store.close()


async def fuse_errno(call):
    with pytest.raises(pyfuse3.FUSEError) as e:
        await call
    return e.value.errno


async def test_names_as_the_kernel_would_see_them(ops):
    d = await ops.mkdir(ROOT, b"d", 0o755, ctx(1000, 1000))
    assert stat.S_ISDIR(d.st_mode) and (d.st_uid, d.st_gid) == (1000, 1000)
    f = ops.fast.create(d.st_ino, b"f", stat.S_IFREG | 0o644, 1000, 1000, 0o022, 0)
    assert ops.fast.lookup(d.st_ino, b"f")[0] == f[0]
    assert ops.fast.lookup(d.st_ino, b"missing") is None  # a negative entry
    assert await fuse_errno(ops.rmdir(ROOT, b"d", ctx())) == errno.ENOTEMPTY
    await ops.rename(d.st_ino, b"f", ROOT, b"g", 0, ctx())
    await ops.rmdir(ROOT, b"d", ctx())
    assert ops.fast.lookup(ROOT, b"g")[0] == f[0]
    await ops.setxattr(f[0], b"user.k", b"v", ctx())
    assert await ops.getxattr(f[0], b"user.k", ctx()) == b"v"


async def test_a_bug_in_a_handler_is_eio_and_a_log_line(ops, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(ops.state.ns, "rmdir", broken)
    with caplog.at_level(logging.ERROR, logger="holefs"):
        assert await fuse_errno(ops.rmdir(ROOT, b"d", ctx())) == errno.EIO
    assert "rmdir failed" in caplog.text and "RuntimeError: a bug" in caplog.text
    assert (await ops.mkdir(ROOT, b"still", 0o755, ctx())).st_ino  # and serving goes on
