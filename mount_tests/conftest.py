"""Helpers that mount holefs for real and clean up, whatever happens."""

import contextlib
import ctypes
import os
import pathlib
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

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


@pytest.fixture(scope="session", autouse=True)
def outside_the_checkout(tmp_path_factory):
    """Work from outside the checkout, so that a Python a test starts imports
    the installed holefs, not the source tree in its current directory."""
    os.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def public_dir():
    """A directory that every user can reach, for mountpoints that tests
    also use as an unprivileged user."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="holefs-test-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mount_holefs(tmp_path, public_dir):
    """Factory: mount holefs with the given -o options; unmounted afterwards."""
    mounts = []

    def mount(options="", name="mnt"):
        path = public_dir / name
        path.mkdir(exist_ok=True)
        args = ["mount", str(path)] + (["-o", options] if options else [])
        result = run_holefs(*args, check=False)
        assert result.returncode == 0, result.stderr
        assert is_mounted(path)
        m = Mount(path)
        m.spill_dir = str(tmp_path)
        mounts.append(m)
        return m

    yield mount
    for m in mounts:
        force_unmount(m.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log_file(str(m.path)))


@pytest.fixture
def small_tmpfs(public_dir):
    """Factory: a tmpfs of our own, whose usage can be measured exactly and
    which fills up when we want it to."""
    mounted = []

    def make(size, name="tmpfs", options=""):
        path = public_dir / name
        path.mkdir()
        given = ",".join(filter(None, [f"size={size}", options]))
        subprocess.run(["mount", "-t", "tmpfs", "-o", given, "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture
def fs(mount_holefs):
    """A 256 MiB holefs with everything in RAM."""
    return mount_holefs("size=256M")


@pytest.fixture(scope="session")
def cprog(tmp_path_factory):
    """Compile mount_tests/helpers/NAME.c once per session; return its path."""
    built = {}
    out = tmp_path_factory.mktemp("cbin")

    def compile(name):
        if name not in built:
            exe = out / name
            subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(exe),
                            str(HELPERS / f"{name}.c")], check=True)
            built[name] = str(exe)
        return built[name]

    return compile


@pytest.fixture(scope="session")
def user():
    """The test user's passwd entry; created if missing."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", USER], check=True)
        return pwd.getpwnam(USER)


def as_user(user, *cmd, groups=()):
    """Run a command as the test user, with only the given extra groups."""
    ids = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                           *ids, *cmd], capture_output=True, text=True, timeout=60)
