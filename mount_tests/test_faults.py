"""Faults from outside: a full spill disk, a killed daemon, a stop under load."""

import errno
import os
import signal
import subprocess
import sys

import pytest

from holefs.extents import PAGE

from support import (
    HOLEFS,
    MiB,
    Mount,
    assert_serves,
    drop_page_cache,
    force_unmount,
    is_mounted,
    run_holefs,
    wait_for,
)

CONNECTION_GONE = {"ENOTCONN", "ECONNABORTED"}
EXIT_TIMEOUT = 15  # generous: a client still there after this is hung

# A client that loops on descriptor-based I/O until the mount goes away,
# checking every result, then prints the errno name and how many loops it
# completed.  Path lookups would fall through to the directory underneath
# after an unmount, so it makes none.
CLIENT = r"""
import errno, os, sys
import holefs
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
block = os.urandom(256 * 1024)
done = 0
try:
    while True:
        offset = (done % 16) * len(block)
        if os.pwrite(fd, block, offset) != len(block):
            sys.exit("short write")
        os.posix_fadvise(fd, offset, len(block), os.POSIX_FADV_DONTNEED)
        if os.pread(fd, len(block), offset) != block:
            sys.exit("read back differs")
        holefs.release(fd, offset, 4096)
        os.fstat(fd)
        done += 1
        if done == 1:
            print("running", flush=True)
except OSError as e:
    print(errno.errorcode[e.errno], done, flush=True)
"""


@pytest.fixture
def clients():
    """Start N I/O loops in a mounted directory; kill any left over at the end."""
    procs = []

    def start(directory, n=4):
        for i in range(n):
            p = subprocess.Popen([sys.executable, "-c", CLIENT, str(directory / f"client{i}")],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(p)
        for p in procs:
            assert p.stdout.readline() == "running\n", p.stderr.read()
        return procs

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_clients(procs, gone=CONNECTION_GONE):
    """Every client exits soon, cleanly, having seen the connection go."""
    for i, p in enumerate(procs):
        try:
            out, err = p.communicate(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"client {i} still running {EXIT_TIMEOUT}s after the daemon went")
        assert p.returncode == 0, f"client {i}: {err}"
        name, done = out.split()
        assert name in gone, f"client {i} got {name}"
        assert int(done) > 0


def test_full_spill_disk_gives_enospc_and_keeps_serving(mount_holefs, small_tmpfs):
    small_spill = small_tmpfs("8M", "spill")
    m = mount_holefs(f"size=256M,ram=1M,spill={small_spill}")
    path = m / "f"
    written = bytearray()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as e:
            while len(written) < 64 * MiB:
                block = os.urandom(MiB)
                written += block[:os.write(fd, block)]
    finally:
        os.close(fd)
    assert e.value.errno == errno.ENOSPC
    # Nearly all of the spill disk and the RAM budget hold file data.
    assert 7 * MiB <= len(written) <= 9 * MiB
    assert os.stat(path).st_size == len(written)
    assert path.read_bytes() == written
    drop_page_cache()
    assert path.read_bytes() == written, "what was written before ENOSPC reads back wrong"
    (m / "empty").touch()
    assert (m / "empty").read_bytes() == b""
    run_holefs("punch", str(path), "0", "4M")
    assert path.read_bytes() == bytes(4 * MiB) + written[4 * MiB:]
    assert_serves(m)


def test_full_spill_disk_under_the_writeback_cache_reaches_fsync(mount_holefs, small_tmpfs):
    """The page cache takes the writes; the writeback that finds no room is
    fsync's error, each page reads back as written or as zeros, and the
    file keeps the size that write(2) gave it."""
    small_spill = small_tmpfs("8M", "spill")
    m = mount_holefs(f"size=256M,ram=1M,spill={small_spill},writeback_cache")
    data = os.urandom(16 * MiB)
    fd = os.open(m / "f", os.O_WRONLY | os.O_CREAT)
    try:
        assert os.write(fd, data) == len(data)
        with pytest.raises(OSError) as e:
            os.fsync(fd)
        assert e.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    drop_page_cache()
    got = (m / "f").read_bytes()
    assert len(got) == len(data)
    pages = range(0, len(data), PAGE)
    assert all(got[i:i + PAGE] in (data[i:i + PAGE], bytes(PAGE)) for i in pages)
    stored = sum(got[i:i + PAGE] == data[i:i + PAGE] for i in pages) * PAGE
    assert 7 * MiB <= stored <= 9 * MiB
    os.unlink(m / "f")
    assert_serves(m)


@pytest.mark.parametrize("options", ["size=256M", "size=256M,writeback_cache"])
def test_kill_9_under_load(mount_holefs, clients, options):
    m = mount_holefs(options)
    pid = m.pid
    procs = clients(m.path)
    os.kill(pid, signal.SIGKILL)
    # Under the writeback cache a client may hear of it first from a
    # writeback that failed, which the kernel reports as EIO.
    wait_clients(procs, CONNECTION_GONE | ({"EIO"} if "writeback_cache" in options else set()))
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="daemon death")
    assert run_holefs("umount", str(m.path)).returncode == 0
    assert not is_mounted(m.path)
    assert_serves(mount_holefs("size=256M"))


@pytest.fixture
def foreground(tmp_path):
    """Factory: a `holefs mount -f` daemon, its log in a file; killed after."""
    daemons = []

    def start(options="size=256M"):
        mnt, log = tmp_path / "mnt", tmp_path / "daemon.log"
        mnt.mkdir()
        with open(log, "w") as f:
            daemon = subprocess.Popen([HOLEFS, "mount", "-f", str(mnt), "-o", options],
                                      stderr=f)
        daemons.append((daemon, mnt))
        wait_for(lambda: is_mounted(mnt) or daemon.poll() is not None, what="mount")
        assert is_mounted(mnt), log.read_text()
        return daemon, mnt, log

    yield start
    for daemon, mnt in daemons:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        force_unmount(mnt)


def test_sigterm_on_an_idle_mount_unmounts(foreground):
    daemon, mnt, log = foreground()
    (mnt / "f").write_bytes(b"gone with the mount")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, log.read_text()
    assert not is_mounted(mnt)
    assert "INFO SIGTERM received, unmounting" in log.read_text()
    assert f"INFO unmounted {mnt}" in log.read_text()


def test_sigterm_on_a_busy_mount_keeps_serving_its_holder(foreground):
    daemon, mnt, log = foreground()
    data = os.urandom(4 * MiB)
    (mnt / "held").write_bytes(data)
    fd = os.open(mnt / "held", os.O_RDWR)
    try:
        daemon.send_signal(signal.SIGTERM)
        wait_for(lambda: "still serving" in log.read_text(), what="the daemon to say why")
        assert f"{mnt} is busy, held by " in log.read_text()
        assert f"[{os.getpid()}] (1 file)" in log.read_text()
        assert f"'holefs umount -l {mnt}'" in log.read_text()
        assert daemon.poll() is None and is_mounted(mnt)
        # The holder reads from the daemon, not from its page cache.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, len(data), 0) == data
        assert os.pwrite(fd, b"still here", 0) == 10
        assert_serves(Mount(mnt))
        # As with umount(8), the next signal after the holder closes unmounts.
    finally:
        os.close(fd)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, log.read_text()
    assert not is_mounted(mnt)


def test_sigterm_under_load_keeps_serving(foreground, clients):
    """Clients that loop on open files see no error and no short or wrong
    result from a SIGTERM; once they are gone, SIGTERM unmounts."""
    daemon, mnt, log = foreground()
    procs = clients(mnt)
    daemon.send_signal(signal.SIGTERM)
    wait_for(lambda: "still serving" in log.read_text(), what="the daemon to say why")
    assert f"{mnt} is busy, held by " in log.read_text()
    assert log.read_text().count("(1 file)") == len(procs)
    for p in procs:
        assert p.poll() is None, p.stderr.read()
        p.kill()
        p.wait()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, log.read_text()
    assert not is_mounted(mnt)
