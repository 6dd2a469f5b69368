"""What the tests share besides fixtures: running holefs, mounts, users,
the page cache and the kernel's version.  Tests import it; conftest.py
holds the fixtures alone."""

import ctypes
import os
import pathlib
import subprocess
import sys
import time

import holefs
from holefs.cli import log_file
from holefs.status import read_status

HOLEFS = str(pathlib.Path(sys.executable).with_name("holefs"))
HELPERS = pathlib.Path(__file__).with_name("helpers")
MiB = 1 << 20
NOBODY = 65534
USER = "holefs-test-user"  # a system user that the tests create if missing


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old, new, flags):
    """rename(2) with flags, which os.rename cannot pass."""
    if _libc.renameat2(-100, os.fsencode(old), -100, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(old))


def run_holefs(*args, check=True, **kwargs):
    return subprocess.run([HOLEFS, *args], capture_output=True, text=True,
                          check=check, timeout=60, **kwargs)


def as_nobody(*cmd, input=None, groups=()):
    """Run a command as an unprivileged user, as a separate process, with
    *groups* as its supplementary groups."""
    def drop():
        os.setgroups(groups)
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    return subprocess.run(cmd, preexec_fn=drop, input=input, capture_output=True, text=True,
                          timeout=30)


def is_mounted(path):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def kernel_version():
    """The running kernel's (major, minor)."""
    return tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])


def drop_page_cache(what="1"):
    """Make the next reads of every file come from the daemon; with
    what="3", the next lookups and stats too (dentries and inodes)."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write(what)


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def force_unmount(path):
    """Remove a mount even if its daemon is dead or hung."""
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def daemon_log(pid, mountpoint):
    """What a background daemon logged: syslog's journal, or its log file."""
    if os.path.exists("/dev/log"):
        return subprocess.run(["journalctl", "--no-pager", "-o", "cat", f"_PID={pid}"],
                              capture_output=True, text=True).stdout
    with open(log_file(str(mountpoint))) as f:
        return f.read()


def assert_serves(m, name="still-serving"):
    """The daemon answers: a new file takes a write, a punch and a read."""
    data = os.urandom(3 * MiB)
    path = m / name
    path.write_bytes(data)
    holefs.release(str(path), MiB, MiB)
    assert path.read_bytes() == data[:MiB] + bytes(MiB) + data[2 * MiB:]
    path.unlink()


class Mount:
    """A live holefs mount, with a view of its daemon from the OS side."""

    def __init__(self, path):
        self.path = path

    def __truediv__(self, name):
        return self.path / name

    def status(self, path=None):
        return read_status(path or self.path)

    @property
    def pid(self):
        return self.status()["pid"]

    def tier_fd(self, kind):
        """The /proc path of the daemon's RAM memfd or spill file."""
        fd_dir = pathlib.Path(f"/proc/{self.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except FileNotFoundError:
                continue
            if kind == "ram" and target.startswith("/memfd:holefs-ram"):
                return fd
            if kind == "spill" and target.startswith(self.spill_dir) and "(deleted)" in target:
                return fd
        raise AssertionError(f"daemon has no {kind} tier open")

    def tier_blocks(self, kind="ram"):
        """Bytes the tier really holds, as the kernel counts them."""
        return os.stat(self.tier_fd(kind)).st_blocks * 512

    def rss(self):
        with open(f"/proc/{self.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no Rss line")

    def unmount(self):
        pid = self.pid if is_mounted(self.path) else None
        run_holefs("umount", str(self.path))
        assert not is_mounted(self.path)
        if pid:
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="daemon exit")


def as_user(user, *cmd, groups=()):
    """Run a command as the test user, with only the given extra groups."""
    ids = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                           *ids, *cmd], capture_output=True, text=True, timeout=60)
