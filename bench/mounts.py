"""The filesystems under test, each a context manager that always unmounts.

Each figure gets a fresh mount, so that no workload pays for the state an
earlier one left behind, and the memory figure starts from an idle daemon.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .tools import run

HOLEFS = pathlib.Path(sys.executable).with_name("holefs")
SIZE = "1G"


@dataclasses.dataclass
class Fs:
    """A live mount: where it is, the daemon serving it (None for the kernel),
    and whether its files live in a kernel tmpfs, whose memory is slab."""
    path: pathlib.Path
    pid: int = None
    on_tmpfs: bool = False


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
def holefs(more_options="", options=f"size={SIZE}"):
    """holefs mounted with -o *options* and *more_options*; `holefs mount`
    returns once it is live."""
    with mountpoint("holefs") as path:
        try:
            run([HOLEFS, "mount", path, "-o", ",".join(filter(None, [options, more_options]))],
                timeout=60)
            status = json.loads(run([HOLEFS, "status", path, "--json"], timeout=60))
            yield Fs(path, status["pid"])
        finally:
            quietly([HOLEFS, "umount", path])
            stop_daemons(path)


@contextlib.contextmanager
def holefs_spilling(ram, spill_parent, more_options=""):
    """holefs with a RAM budget of *ram*, spilling to a directory on local disk."""
    spill = tempfile.mkdtemp(prefix="bench-spill-", dir=spill_parent)
    try:
        with holefs(more_options, f"size={SIZE},ram={ram},spill={spill}") as fs:
            yield fs
    finally:
        shutil.rmtree(spill, ignore_errors=True)


@contextlib.contextmanager
def tmpfs():
    """A kernel tmpfs of the same size."""
    with mountpoint("tmpfs") as path:
        run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "bench-tmpfs", path], timeout=60)
        try:
            yield Fs(path, on_tmpfs=True)
        finally:
            quietly(["umount", path])


def raise_fd_limit():
    """In passthrough_hp's child: room for the fd it keeps per inode the kernel knows.

    The memory workload's files (a million with --million) exhaust a usual
    hard limit, and passthrough_hp only raises its soft limit to the hard
    one.  Without CAP_SYS_RESOURCE the hard limit stays, and the memory
    figure fails when it is reached.
    """
    limit = min(int(pathlib.Path("/proc/sys/fs/nr_open").read_text()), 1 << 20)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


@contextlib.contextmanager
def passthrough_hp(binary):
    """libfuse's passthrough_hp in the foreground, serving a fresh kernel tmpfs.

    Otherwise on its own defaults (see RESULTS.md): day-long timeouts,
    keep_cache, writeback cache, splice, up to 10 worker threads.
    """
    with tmpfs() as source, mountpoint("passthrough_hp") as path, \
            tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([binary, "--foreground", source.path, path],
                                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                                preexec_fn=raise_fd_limit)
        try:
            wait_mounted(path, proc, log)
            try:
                yield Fs(path, proc.pid, on_tmpfs=True)
            except (OSError, RuntimeError) as e:
                raise RuntimeError(f"{e} ({open_files(proc)})") from None
        finally:
            quietly(["fusermount3", "-u", path])
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()


def open_files(proc):
    """passthrough_hp's open files against its limit, or its exit status.

    It holds a file open per inode the kernel knows, and what it answers
    when it runs out (EBADF to a close) does not say so.
    """
    try:
        held = len(os.listdir(f"/proc/{proc.pid}/fd"))
        limit = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)[0]
    except OSError:
        return f"passthrough_hp exited with status {proc.poll()}"
    return f"passthrough_hp holds {held:,} of its {limit:,} open files"


def wait_mounted(path, proc, log, timeout=30.0):
    """Wait for passthrough_hp's mount; if it dies first, say what it said."""
    deadline = time.monotonic() + timeout
    while not is_mounted(path):
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError("passthrough_hp exited: "
                               + log.read().decode(errors="replace")[-300:])
        if time.monotonic() > deadline:
            raise RuntimeError("passthrough_hp did not mount in time")
        time.sleep(0.02)
