"""The seam between holefs and libfuse: what INIT settles, on every libfuse.

libfuse's defaults differ between 3.14 and 3.17, and between hosts: root
with CAP_SYS_RESOURCE (an ordinary host) gets spliced receive, root here
does not.  These tests hold holefs to what it sets itself.
"""

import array
import errno
import fcntl
import mmap
import os
import pathlib
import subprocess

import pytest

from holefs import inodeflags, release
from holefs.daemon.mount import shim_not_engaged

from support import MiB, as_nobody, drop_page_cache, kernel_version, run_holefs

PIPE_MAX_SIZE = "/proc/sys/fs/pipe-max-size"


def write_and_read_back(tmp_path, target, size, block):
    """dd random bytes onto *target* in writes of *block*; holefs must give
    them back once the page cache is dropped."""
    pattern = tmp_path / "pattern"
    pattern.write_bytes(os.urandom(size))
    dd = subprocess.run(["dd", f"if={pattern}", f"of={target}", f"bs={block}"],
                        capture_output=True, text=True, timeout=120)
    assert dd.returncode == 0, dd.stderr
    drop_page_cache()
    assert target.read_bytes() == pattern.read_bytes()


def test_the_fast_path_protocol_is_the_shims_list():
    """One list of handler names, the shim's: the typed protocol and the
    handler object hold to it."""
    from holefs import options
    from holefs.daemon import _shim
    from holefs.daemon.fs import FastPath
    from holefs.daemon.protocol import FastPathHandlers
    from holefs.namespace import Namespace
    from holefs.state import MountState
    from holefs.tiers import Store, open_ram_tier
    typed = {name for name in vars(FastPathHandlers) if not name.startswith("_")}
    assert typed == set(_shim.HANDLERS)
    handlers = FastPath(MountState(Namespace(100, 0o755, 0, 0),
                                   Store(limit=16, ram_budget=16, ram=open_ram_tier()),
                                   options.parse("")))
    assert all(callable(getattr(handlers, name)) for name in _shim.HANDLERS)


def test_init_settles_the_capabilities_holefs_relies_on(fs):
    status = fs.status()
    assert status["capabilities"] == {
        "splice_read": False,
        "splice_write": True,
        "splice_move": False,
        "auto_inval_data": False,
        "writeback_cache": False,
        "handle_killpriv": False,
        "handle_killpriv_v2": True,
        "atomic_o_trunc": True,
        "posix_acl": True,
        "dont_mask": True,
        "ioctl_dir": True,
        "allow_idmap": kernel_version() >= (6, 12),
    }
    built_against = subprocess.run(["pkg-config", "--modversion", "fuse3"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    assert status["libfuse"] == built_against


@pytest.fixture
def splice_receive_available():
    """Let any process size a pipe to 2 MiB, as CAP_SYS_RESOURCE does.

    libfuse then receives by splice unless INIT says otherwise: the path
    that root takes on an ordinary host.
    """
    with open(PIPE_MAX_SIZE) as f:
        saved = f.read()
    with open(PIPE_MAX_SIZE, "w") as f:
        f.write(str(2 * MiB))
    yield
    with open(PIPE_MAX_SIZE, "w") as f:
        f.write(saved)


def test_big_writes_when_libfuse_could_splice(splice_receive_available, mount_holefs, tmp_path):
    m = mount_holefs("size=512M")
    pid = m.pid
    dd = subprocess.run(["dd", "if=/dev/zero", f"of={m / 'zeros'}", "bs=1M", "count=256"],
                        capture_output=True, text=True, timeout=120)
    assert dd.returncode == 0, dd.stderr
    assert os.stat(m / "zeros").st_size == 256 * MiB
    assert os.stat(m / "zeros").st_blocks * 512 == 256 * MiB
    assert subprocess.run(["cmp", "-n", str(256 * MiB), "/dev/zero", str(m / "zeros")],
                          capture_output=True).returncode == 0

    write_and_read_back(tmp_path, m / "pattern", 32 * MiB, "1M")
    assert m.pid == pid and m.status()["capabilities"]["splice_read"] is False
    # holefs's workers receive by splice themselves (SPLICED RECEIVE in _shim.c)
    assert m.status()["splicing"]["receive"] is True


def set_flags(path, flags):
    """chattr's FS_IOC_SETFLAGS, without chattr (not on every fresh Debian)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, 0x40086602, array.array("I", [flags]))
    finally:
        os.close(fd)


def test_writes_received_by_splice(splice_receive_available, mount_holefs, tmp_path):
    """A WRITE's data goes from the workers' pipe into the slots: at any
    offset and size, through spill, into an append-only file, and up to a
    full filesystem, whose short write leaves the next request served."""
    m = mount_holefs(f"size=24M,ram=4M,spill={tmp_path}")
    assert m.status()["splicing"]["receive"] is True
    want = bytearray(16 * MiB)
    fd = os.open(m / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for offset, size in [(0, 3 * MiB), (65535, 8193), (5 * MiB + 1, MiB + 3),
                             (9 * MiB, 100), (10 * MiB - 4096, 2 * MiB)]:
            data = os.urandom(size)
            assert os.pwrite(fd, data, offset) == size
            want[offset:offset + size] = data
    finally:
        os.close(fd)
    del want[12 * MiB - 4096:]  # the end of the last write
    drop_page_cache()
    assert (m / "f").read_bytes() == want
    assert m.status()["spill_used"] > 0

    (m / "log").write_bytes(b"x" * 5000)
    set_flags(m / "log", inodeflags.APPEND)
    with open(m / "log", "ab") as f:
        f.write(b"y" * (3 * MiB))
    drop_page_cache()
    assert (m / "log").read_bytes() == b"x" * 5000 + b"y" * (3 * MiB)
    set_flags(m / "log", 0)

    fd = os.open(m / "big", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        written = 0
        with pytest.raises(OSError) as full:
            while True:
                written += os.write(fd, b"z" * MiB)
    finally:
        os.close(fd)
    assert full.value.errno == errno.ENOSPC and 0 < written < 24 * MiB
    assert (m / "f").read_bytes() == want


@pytest.mark.parametrize("pipes", ["1 MiB", "2 MiB"])
def test_reads_by_splice_and_by_copy_give_the_same_bytes(pipes, mount_holefs, tmp_path):
    """READ replies come spliced from the tier files where libfuse's pipe
    holds them, and copied where it does not: the same bytes either way,
    from RAM, spill and holes, in page cache reads and in unaligned direct
    reads."""
    with open(PIPE_MAX_SIZE) as f:
        saved = f.read()
    with open(PIPE_MAX_SIZE, "w") as f:
        f.write(str(MiB if pipes == "1 MiB" else 2 * MiB))
    try:
        m = mount_holefs(f"size=256M,ram=4M,spill={tmp_path}")
    finally:
        with open(PIPE_MAX_SIZE, "w") as f:
            f.write(saved)
    spliced = m.status()["splicing"]["replies_up_to"]
    # With 1 MiB pipes, readahead's 1 MiB READs are copied, smaller ones spliced.
    assert spliced == MiB if pipes == "2 MiB" else 0 < spliced < MiB
    want = bytearray(os.urandom(24 * MiB))
    want[3 * MiB + 100:9 * MiB - 7] = bytes(6 * MiB - 107)  # a hole, punched below
    with open(m / "f", "wb") as f:
        f.write(want)
        release(f.fileno(), 3 * MiB + 4096, 5 * MiB)
    assert m.status()["spill_used"] > 0
    with open(m / "tail", "wb") as f:  # the newest slot, written only at its start
        f.write(b"t" * 100)
        f.truncate(MiB)
    drop_page_cache()
    assert (m / "f").read_bytes() == want
    assert (m / "tail").read_bytes() == b"t" * 100 + bytes(MiB - 100)
    fd = os.open(m / "f", os.O_RDONLY | os.O_DIRECT)
    try:
        for offset, size in [(1, 2 * MiB), (65535, 300_000), (3 * MiB, MiB), (20 * MiB + 5, 8193)]:
            buf = mmap.mmap(-1, size)  # O_DIRECT wants an aligned buffer
            assert os.preadv(fd, [buf], offset) == size
            assert buf[:] == want[offset:offset + size], f"{size} bytes at {offset}"
    finally:
        os.close(fd)


# How each change reaches the file: by another user, who lacks CAP_FSETID
# and is not in the file's group unless given it as a supplementary group,
# or by root, who has CAP_FSETID.
APPEND = ["dd", "of={path}", "oflag=append", "conv=notrunc,nocreat", "status=none"]
SETID_CHANGES = {
    "write by another user": ((), APPEND),
    "write by another user in the group": ((0,), APPEND),
    "truncate by another user": ((), ["truncate", "-s", "4", "{path}"]),
    "O_TRUNC open by another user": ((), ["dd", "of={path}", "conv=nocreat", "status=none"]),
    "write by root": (None, APPEND),
    "chown by root": (None, ["chown", "0:0", "{path}"]),
}
SETID_OUTCOMES = {  # as tmpfs has them, for modes 6777 and 6767
    "write by another user": ("0o777", "0o767"),
    "write by another user in the group": ("0o777", "0o2767"),
    "truncate by another user": ("0o777", "0o767"),
    "O_TRUNC open by another user": ("0o777", "0o767"),
    "write by root": ("0o6777", "0o6767"),
    "chown by root": ("0o777", "0o2767"),
}


def run_as(groups, command):
    """Run *command* as root (*groups* None) or as nobody with *groups*."""
    if groups is None:
        return subprocess.run(command, input="exit 0\n", capture_output=True, text=True)
    return as_nobody(*command, input="exit 0\n", groups=groups)


@pytest.mark.parametrize("change", SETID_CHANGES)
@pytest.mark.parametrize("kind", ["holefs", "tmpfs"])
def test_set_id_bits_are_dropped_as_on_tmpfs(kind, change, mount_holefs, small_tmpfs):
    """With handle_killpriv_v2 the kernel leaves the dropping to holefs, marking
    the requests that need it; the outcome must be tmpfs's, bit for bit."""
    directory = mount_holefs("size=16M,allow_other").path if kind == "holefs" \
        else small_tmpfs("16M")
    groups, command = SETID_CHANGES[change]
    outcomes = []
    for mode in (0o6777, 0o6767):   # set-group-ID with and without group execute
        path = directory / f"setid-{mode:o}"
        path.write_bytes(b"#!/bin/sh\n")
        path.chmod(mode)
        os.stat(path)  # the kernel's cached attributes, as a program would have them
        result = run_as(groups, [arg.format(path=path) for arg in command])
        assert result.returncode == 0, result.stderr
        outcomes.append(oct(os.stat(path).st_mode & 0o7777))
    assert tuple(outcomes) == SETID_OUTCOMES[change]


def test_a_write_drops_security_capability(mount_holefs):
    m = mount_holefs("size=16M,allow_other")
    path = m.path / "capable"
    path.write_bytes(b"x")
    # A file capability (cap_net_raw+ep) in the VFS v2 layout.
    os.setxattr(path, "security.capability",
                bytes.fromhex("01000002") + bytes.fromhex("00200000") + bytes(12))
    with open(path, "r+b") as f:
        f.write(b"y")
    assert "security.capability" not in os.listxattr(path)
    assert path.read_bytes() == b"y"


def worker_threads(pid):
    """The shim's worker threads in daemon *pid*, each with the CPU ticks it used."""
    workers = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == "holefs-worker":
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            workers[task.name] = int(fields[11]) + int(fields[12])  # utime + stime
    return workers


@pytest.mark.parametrize("threads", [0, 3])
def test_worker_threads_serve_reads_and_writes(mount_holefs, tmp_path, threads):
    m = mount_holefs(f"size=64M,threads={threads}")
    assert f"threads={threads}" in m.status()["options"]
    before = worker_threads(m.pid)
    assert len(before) == threads
    write_and_read_back(tmp_path, m / "f", 16 * MiB, "4k")
    after = worker_threads(m.pid)
    assert after.keys() == before.keys()
    if threads:
        assert sum(after.values()) > sum(before.values()), "the workers served nothing"


def test_status_names_the_libfuse_it_runs_on(fs):
    out = run_holefs("status", str(fs.path)).stdout
    assert f"libfuse {fs.status()['libfuse']}" in out


def test_a_shim_that_did_not_engage_names_libfuse_and_the_entry_points():
    libfuse = {"version": "3.14.0", "entry_points": {
        "fuse_session_new@FUSE_3.0": True, "fuse_session_new_versioned@FUSE_3.17": False}}
    assert shim_not_engaged(libfuse, pyfuse3_first=False) == (
        "the C shim did not engage with libfuse 3.14.0: pyfuse3 called neither "
        "fuse_session_new@FUSE_3.0 nor fuse_session_new_versioned@FUSE_3.17 "
        "(this libfuse has no fuse_session_new_versioned@FUSE_3.17); "
        "without it there is no fallocate or SEEK_HOLE")
    assert "pyfuse3 was loaded before holefs" in shim_not_engaged(libfuse, pyfuse3_first=True)
