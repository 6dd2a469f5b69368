"""The filesystems under test, each a context manager that always unmounts.

Each figure gets a fresh mount, so that no workload pays for the state an
earlier one left behind, and the memory figure starts from an idle daemon.
"""

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

from .tools import cache_dir, run

HOLEFS = pathlib.Path(sys.executable).with_name("holefs")
SIZE = "1G"


@dataclasses.dataclass
class Fs:
    """A live mount: where it is, and the daemon serving it (None for the kernel)."""
    path: pathlib.Path
    pid: int = None


class PeerUnavailable(Exception):
    """pyfuse3's tmpfs.py cannot be had; the message says why."""


def is_mounted(path):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def quietly(cmd, timeout=60):
    """Run a clean-up step; one that fails or hangs must not stop the next."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run([str(c) for c in cmd], capture_output=True, timeout=timeout)


def daemons_serving(path):
    """Processes started with *path*, a unique temporary mountpoint, on their command line."""
    pids = []
    for proc in pathlib.Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and str(path) in (proc / "cmdline").read_bytes().decode(
                    errors="replace").split("\0"):
                pids.append(int(proc.name))
    return pids


def stop_daemons(path, timeout=15.0):
    """Wait for the daemons of an unmounted *path* to exit, and kill any that hang.

    A daemon that lingers would steal CPU from the next figure; one that
    hangs (its mount never came live) would stay forever.
    """
    deadline = time.monotonic() + timeout
    pids = daemons_serving(path)
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def last_resort_unmount(path):
    """Detach a mount that a clean unmount could not remove."""
    if is_mounted(path):
        quietly(["fusermount3", "-u", "-z", path])
    if is_mounted(path):
        quietly(["umount", "-l", path])


@contextlib.contextmanager
def mountpoint(name):
    """A temporary directory to mount on, removed (and unmounted) afterwards."""
    path = pathlib.Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        yield path
    finally:
        last_resort_unmount(path)
        with contextlib.suppress(OSError):
            path.rmdir()


@contextlib.contextmanager
def holefs(options=f"size={SIZE}"):
    """holefs mounted with -o *options*; `holefs mount` returns once it is live."""
    with mountpoint("holefs") as path:
        try:
            run([HOLEFS, "mount", path, "-o", options], timeout=60)
            status = json.loads(run([HOLEFS, "status", path, "--json"], timeout=60))
            yield Fs(path, status["pid"])
        finally:
            quietly([HOLEFS, "umount", path])
            stop_daemons(path)


@contextlib.contextmanager
def holefs_spilling(ram, spill_parent):
    """holefs with a RAM budget of *ram*, spilling to a directory on local disk."""
    spill = tempfile.mkdtemp(prefix="bench-spill-", dir=spill_parent)
    try:
        with holefs(f"size={SIZE},ram={ram},spill={spill}") as fs:
            yield fs
    finally:
        shutil.rmtree(spill, ignore_errors=True)


@contextlib.contextmanager
def tmpfs():
    """A kernel tmpfs of the same size."""
    with mountpoint("tmpfs") as path:
        run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "bench-tmpfs", path], timeout=60)
        try:
            yield Fs(path)
        finally:
            quietly(["umount", path])


def peer_script():
    """pyfuse3's own examples/tmpfs.py, for the installed pyfuse3, from its sdist.

    Downloaded into the cache on first use and never kept in the repository.
    """
    version = importlib.metadata.version("pyfuse3")
    script = cache_dir() / f"pyfuse3-{version}-tmpfs.py"
    if script.exists():
        return script
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        try:
            run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                 "--no-binary", ":all:", f"pyfuse3=={version}", "-d", tmp], timeout=300)
            sdist = next(pathlib.Path(tmp).glob("pyfuse3-*.tar.gz"))
            with tarfile.open(sdist) as tar:
                member = next(m for m in tar.getmembers()
                              if m.name.endswith("/examples/tmpfs.py"))
                data = tar.extractfile(member).read()
        except (RuntimeError, StopIteration, OSError, tarfile.TarError) as e:
            raise PeerUnavailable(f"cannot fetch pyfuse3 {version}'s tmpfs.py: {e}") from None
    script.write_bytes(data)
    return script


@contextlib.contextmanager
def peer(script):
    """pyfuse3's tmpfs.py serving a mountpoint in the foreground."""
    with mountpoint("peer") as path, tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, script, path],
                                stdout=subprocess.DEVNULL, stderr=log,
                                start_new_session=True)
        try:
            wait_mounted(path, proc, log)
            yield Fs(path, proc.pid)
        finally:
            quietly(["fusermount3", "-u", path])
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()


def wait_mounted(path, proc, log, timeout=30.0):
    """Wait for a foreground daemon's mount; if it dies first, say what it said."""
    deadline = time.monotonic() + timeout
    while not is_mounted(path):
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"tmpfs.py exited: {log.read().decode(errors='replace')[-300:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("tmpfs.py did not mount in time")
        time.sleep(0.02)
