"""-o writeback_cache: the kernel's page cache takes writes and hands them
to holefs later.  What the kernel then owns (i_size, mtime, partial pages,
O_APPEND) must come out as on tmpfs, accounting must be exact once the
data is written back, and what does not fit must still reach the writer."""

import errno
import os
import subprocess
import sys

import pytest

from holefs import release

from support import MiB, drop_page_cache

# Each step of a program that a page cache serves differently from the
# daemon, printed as one line; then everything again from the filesystem.
STEPS = r"""
import os, sys, time
os.chdir(sys.argv[1])
out = []
fd = os.open("f", os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, b"a" * 100)
out.append(("size after write", os.fstat(fd).st_size))
os.pwrite(fd, b"b" * 10, 10_000)             # extends past a hole
out.append(("size after pwrite past EOF", os.fstat(fd).st_size))
os.pwrite(fd, b"c" * 7, 4090)                # a partial page across a page edge
appender = os.open("f", os.O_WRONLY | os.O_APPEND)
os.write(appender, b"tail")
os.close(appender)
out.append(("size after O_APPEND", os.fstat(fd).st_size))
before = os.fstat(fd)
time.sleep(0.02)
os.pwrite(fd, b"d", 50)
after = os.fstat(fd)
out.append(("mtime and ctime moved", after.st_mtime_ns > before.st_mtime_ns and
            after.st_ctime_ns > before.st_ctime_ns))
os.fsync(fd)
out.append(("blocks after fsync", os.fstat(fd).st_blocks))
out.append(("hole", os.lseek(fd, 0, os.SEEK_HOLE), os.lseek(fd, 8192, os.SEEK_DATA)))
os.close(fd)
for line in out:
    print(*line)
"""


def test_what_the_kernel_owns_comes_out_as_on_tmpfs(mount_holefs, small_tmpfs):
    roots = {"holefs": mount_holefs("size=64M,writeback_cache").path,
             "tmpfs": small_tmpfs("64M")}
    seen = {}
    for fs, root in roots.items():
        ran = subprocess.run([sys.executable, "-c", STEPS, root], capture_output=True,
                             text=True, check=True)
        drop_page_cache("3")
        data = (root / "f").read_bytes()
        seen[fs] = (ran.stdout.splitlines(), os.stat(root / "f").st_size, data)
    assert seen["holefs"] == seen["tmpfs"]
    lines, size, data = seen["holefs"]
    assert lines[:4] == ["size after write 100", "size after pwrite past EOF 10010",
                         "size after O_APPEND 10014", "mtime and ctime moved True"]
    assert data[:100] == b"a" * 50 + b"d" + b"a" * 49
    assert data[4090:4097] == b"c" * 7 and data[10_000:] == b"b" * 10 + b"tail"


def test_a_write_that_does_not_fit_reaches_fsync_and_close(mount_holefs):
    """write(2) is taken by the page cache; the writeback that finds no room
    is the writer's error at fsync, and again at close for a writer that
    never fsynced, and is logged."""
    m = mount_holefs("size=1M,writeback_cache")
    script = ("import errno, os, sys\n"
              "def outcome(step):\n"
              "    try:\n"
              "        step()\n"
              "        return 'ok'\n"
              "    except OSError as e:\n"
              "        return errno.errorcode[e.errno]\n"
              "fd = os.open(sys.argv[1] + '/a', os.O_CREAT | os.O_WRONLY, 0o644)\n"
              "print(outcome(lambda: os.write(fd, b'x' * (2 << 20))), "
              "outcome(lambda: os.fsync(fd)), outcome(lambda: os.close(fd)))\n"
              "fd = os.open(sys.argv[1] + '/b', os.O_CREAT | os.O_WRONLY, 0o644)\n"
              "print(outcome(lambda: os.write(fd, b'y' * (2 << 20))), "
              "outcome(lambda: os.close(fd)))\n")
    ran = subprocess.run([sys.executable, "-c", script, m.path], capture_output=True,
                         text=True, check=True)
    with_fsync, without = ran.stdout.splitlines()
    assert with_fsync.split()[1:] == ["ENOSPC", "ok"]
    assert without.split()[1] == "ENOSPC"


def test_reserve_still_fails_growth_at_ftruncate(mount_holefs):
    m = mount_holefs("size=1M,reserve,writeback_cache")
    with open(m / "f", "wb") as f:
        with pytest.raises(OSError) as refused:
            os.ftruncate(f.fileno(), 2 * MiB)
        assert refused.value.errno == errno.ENOSPC
        os.ftruncate(f.fileno(), MiB // 2)
    assert os.stat(m / "f").st_blocks * 512 == MiB // 2


def test_punch_frees_at_once(mount_holefs):
    m = mount_holefs("size=64M,writeback_cache")
    fd = os.open(m / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"z" * (8 * MiB))
        os.fsync(fd)
        used = m.status()["used"]
        release(fd, 0, 4 * MiB)
        assert (used, m.status()["used"]) == (8 * MiB, 4 * MiB)
        assert os.fstat(fd).st_blocks * 512 == 4 * MiB
    finally:
        os.close(fd)
