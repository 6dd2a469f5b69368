"""The fixtures: mounts of holefs and of tmpfs that are cleaned up whatever
happens, the test user, and C helpers built once.  What tests import is in
support.py."""

import contextlib
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile

import pytest

from holefs.cli import log_file

from support import HELPERS, USER, Mount, daemon_log, force_unmount, is_mounted, run_holefs


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
    """Factory: mount holefs with the given -o options; unmounted afterwards.

    A test whose daemon logged a traceback fails: the request that raised
    it was answered EIO, which the test may not have looked at (as s3ql's
    pytest_checklogs does).
    """
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
        m.daemon_pid = m.pid
        mounts.append(m)
        return m

    yield mount
    tracebacks = []
    for m in mounts:
        force_unmount(m.path)
        with contextlib.suppress(FileNotFoundError):
            logged = daemon_log(m.daemon_pid, m.path)
            if "Traceback" in logged:
                tracebacks.append(f"{m.path}:\n{logged[-3000:]}")
            os.unlink(log_file(str(m.path)))
    if tracebacks:
        pytest.fail("the daemon logged a traceback:\n" + "\n".join(tracebacks))


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
