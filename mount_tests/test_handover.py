"""`holefs restart`: a new daemon takes the running mount over, and the
processes that use it see nothing but a pause (holefs/daemon/handover.py)."""

import contextlib
import os
import subprocess
import sys

import pytest

from holefs.daemon.handover import address

from support import (
    HELPERS,
    HOLEFS,
    MiB,
    as_user,
    assert_serves,
    drop_page_cache,
    run_holefs,
    wait_for,
)

HOLDER = str(HELPERS / "holder.py")


def gone(pid):
    """The process has exited (a zombie that nobody reaped counts)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def restart(m):
    """Hand *m* over to a new daemon; check that the old one left."""
    old = m.pid
    result = run_holefs("restart", str(m.path), check=False)
    assert result.returncode == 0, result.stderr
    assert m.pid != old
    wait_for(lambda: gone(old), what=f"pid {old} to exit")


@contextlib.contextmanager
def holder(m, tmp_path):
    """A process with an open file being written, a MAP_SHARED mapping and
    its working directory in the mount; it checks what it wrote once
    stopped.  Yields a function that waits for it to make more rounds."""
    work = m / "work"
    work.mkdir()
    stop = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, HOLDER, str(work), str(stop)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n", proc.stderr.read()

    def rounds():
        return (work / "log").stat().st_size // 9

    def progress():
        then = rounds()
        wait_for(lambda: rounds() > then + 10, what="the holder to go on")

    try:
        yield progress
    finally:
        stop.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    made = int(out)
    assert made > 0
    drop_page_cache()
    check = subprocess.run([sys.executable, HOLDER, "--check", str(work), str(made)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("options", ["size=256M", "size=256M,threads=0",
                                     "size=64M,ram=4M,writeback_cache"])
def test_a_holder_sees_nothing_of_three_restarts(mount_holefs, tmp_path, options):
    m = mount_holefs(options)
    with holder(m, tmp_path) as progress:
        progress()
        for _ in range(3):
            restart(m)
            progress()
    assert_serves(m)


def test_the_new_daemon_serves_the_same_files(mount_holefs, tmp_path):
    """Names, links, xattrs, data in RAM and in spill, and usage."""
    m = mount_holefs(f"size=64M,ram=4M,spill={tmp_path}")
    data = os.urandom(12 * MiB)
    (m / "big").write_bytes(data)
    os.truncate(m / "big", 16 * MiB)
    (m / "dir").mkdir(mode=0o750)
    os.link(m / "big", m / "dir" / "link")
    os.symlink("big", m / "sym")
    os.setxattr(m / "dir", "user.note", b"kept")
    os.mkfifo(m / "fifo")
    before = m.status()
    df = os.statvfs(m.path)
    stats = {name: os.lstat(m / name) for name in ("big", "dir", "dir/link", "sym", "fifo")}
    restart(m)
    after = m.status()
    assert after.pop("pid") != before.pop("pid")
    for status in (before, after):  # the host's memory, not the mount's
        del status["page_cache"]["max_bytes"]
    assert after == before
    for name, st in stats.items():
        now = os.lstat(m / name)
        assert (now.st_ino, now.st_mode, now.st_nlink, now.st_size, now.st_blocks,
                now.st_mtime_ns, now.st_ctime_ns) == \
            (st.st_ino, st.st_mode, st.st_nlink, st.st_size, st.st_blocks,
             st.st_mtime_ns, st.st_ctime_ns), name
    drop_page_cache("3")
    assert (m / "dir" / "link").read_bytes() == data + bytes(4 * MiB)
    assert os.readlink(m / "sym") == "big"
    assert os.getxattr(m / "dir", "user.note") == b"kept"
    assert os.statvfs(m.path) == df
    assert m.tier_blocks("spill") > 0
    assert_serves(m)


def test_a_successor_that_cannot_read_the_state_is_refused(mount_holefs, tmp_path):
    """Its reason is told, and the old daemon serves on."""
    m = mount_holefs("size=64M")
    pid = m.pid
    newer = ("import sys; from holefs import snapshot; snapshot.VERSION += 1; "
             "from holefs.cli import main; sys.exit(main(['restart', sys.argv[1]]))")
    with holder(m, tmp_path) as progress:
        progress()
        result = subprocess.run([sys.executable, "-c", newer, str(m.path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "version" in result.stderr, result.stderr
        progress()
        assert m.pid == pid
    assert_serves(m)


def test_a_successor_that_dies_mid_hand_over_leaves_the_old_daemon_serving(
        mount_holefs, tmp_path):
    m = mount_holefs("size=64M")
    pid = m.pid
    dies = ("import os, sys; from holefs.daemon import handover; "
            "handover.receive(int(sys.argv[1])); os._exit(1)")
    with holder(m, tmp_path) as progress:
        progress()
        subprocess.run([sys.executable, "-c", dies, str(pid)], timeout=60, check=False)
        progress()
        assert m.pid == pid
        restart(m)  # and a hand-over still works after one failed
        progress()


def test_other_users_cannot_take_a_mount_over(mount_holefs, user):
    m = mount_holefs("size=64M,allow_other")
    pid = m.pid
    ask = ("import socket, sys; s = socket.socket(socket.AF_UNIX); "
           "s.connect('\\0' + sys.argv[1]); "
           "s.sendall(b'HANDOVER 1\\n'); print(s.recv(4096).decode())")
    result = as_user(user, sys.executable, "-c", ask, address(pid).lstrip("\0"))
    assert result.stdout.startswith("REFUSED only root or the mount's owner"), result
    result = as_user(user, HOLEFS, "restart", str(m.path))
    assert result.returncode != 0
    assert m.pid == pid
    assert_serves(m)


def test_a_hundred_restarts_under_load(mount_holefs, tmp_path):
    m = mount_holefs("size=256M")
    with holder(m, tmp_path) as progress:
        for _ in range(100):
            restart(m)
        progress()
