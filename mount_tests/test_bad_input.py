"""Inputs at and past the limits: huge offsets, long names, big xattrs,
symlink loops and malformed mount options.

Many of these limits are the kernel's, checked before a request reaches
holefs; the tests pin down what a program sees either way, and that the
daemon keeps serving afterwards.  What test_posix.py, test_punch.py and
test_mount.py already cover (a long name on create, f_namemax, fallocate
ranges that overflow, the first malformed options) is not repeated.
"""

import ctypes
import errno
import os
import resource
import signal
import subprocess
import sys

import pytest

from holefs._fallocate import fallocate
from holefs.extents import PAGE

from support import assert_serves, force_unmount, is_mounted, run_holefs

MAX_OFFSET = (1 << 63) - 1  # the largest off_t, and the largest file size
ZERO_RANGE = 0x10
XATTR_SIZE_MAX = 65536
XATTR_LIST_MAX = 65536
MAXSYMLINKS = 40

libc = ctypes.CDLL(None, use_errno=True)


def errno_of(call, *args):
    """The errno name that a call fails with, or None if it succeeds."""
    try:
        call(*args)
    except OSError as e:
        return errno.errorcode[e.errno]
    return None


@pytest.fixture
def fd(fs):
    fd = os.open(fs / "f", os.O_RDWR | os.O_CREAT, 0o644)
    yield fd
    os.close(fd)


def test_io_whose_end_overflows_off_t_is_einval(fs, fd):
    """A range that ends past 2**63 - 1 is EINVAL (rw_verify_area), as on
    any Linux filesystem: it never reaches holefs, and nothing changes."""
    assert errno_of(os.pwrite, fd, b"x", MAX_OFFSET) == "EINVAL"
    assert errno_of(os.pwrite, fd, b"xy", MAX_OFFSET - 1) == "EINVAL"
    assert errno_of(os.pread, fd, 2, MAX_OFFSET - 1) == "EINVAL"
    st = os.fstat(fd)
    assert (st.st_size, st.st_blocks) == (0, 0)
    assert_serves(fs)


def test_truncate_to_the_largest_size_and_beyond(fs, fd):
    """2**63 - 1 is a valid size that costs nothing; 2**63 is a negative
    off_t in C, so EINVAL."""
    os.ftruncate(fd, MAX_OFFSET)
    st = os.fstat(fd)
    assert (st.st_size, st.st_blocks) == (MAX_OFFSET, 0)
    assert os.pread(fd, 4, MAX_OFFSET - 4) == bytes(4)
    assert libc.ftruncate(fd, ctypes.c_longlong(-(1 << 63))) == -1
    assert ctypes.get_errno() == errno.EINVAL
    assert os.fstat(fd).st_size == MAX_OFFSET
    os.ftruncate(fd, 0)
    assert_serves(fs)


def test_a_byte_just_below_2_63_is_stored_sparsely(fs, fd):
    offset = MAX_OFFSET - 1
    assert os.pwrite(fd, b"z", offset) == 1
    st = os.fstat(fd)
    assert (st.st_size, st.st_blocks) == (MAX_OFFSET, PAGE // 512)
    assert fs.status()["used"] == PAGE
    assert os.pread(fd, 1, offset) == b"z"
    assert os.pread(fd, 4096, offset - 4095) == bytes(4095) + b"z"
    assert os.lseek(fd, 0, os.SEEK_DATA) == offset // PAGE * PAGE
    assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
    file_map = fs.status(fs / "f")["map"]
    assert file_map[-1] == {"where": "ram", "start": offset // PAGE * PAGE, "length": PAGE}
    assert_serves(fs)


@pytest.mark.parametrize("mode", [0, ZERO_RANGE])
def test_fallocate_up_to_the_largest_size(fs, fd, mode):
    """Ending at 2**63 - 1 is allowed, and holds one page; one byte more is
    EFBIG."""
    assert errno_of(fallocate, fd, mode, MAX_OFFSET - 1, 2) == "EFBIG"
    assert os.fstat(fd).st_size == 0
    fallocate(fd, mode, MAX_OFFSET - 1, 1)
    st = os.fstat(fd)
    assert (st.st_size, st.st_blocks) == (MAX_OFFSET, PAGE // 512)
    assert_serves(fs)


def test_the_file_size_limit_gives_efbig(fs):
    """RLIMIT_FSIZE is how a process gets a smaller maximum file size:
    writing or truncating past it is EFBIG (with SIGXFSZ ignored)."""
    script = ("import errno, os, sys\n"
              "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
              "for call in (lambda: os.pwrite(fd, b'x', 1 << 20),\n"
              "             lambda: os.ftruncate(fd, 2 << 20)):\n"
              "    try:\n"
              "        call()\n"
              "        print('ok')\n"
              "    except OSError as e:\n"
              "        print(errno.errorcode[e.errno])\n")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    result = subprocess.run([sys.executable, "-c", script, str(fs / "f")], preexec_fn=limit,
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.split() == ["EFBIG", "EFBIG"], result.stderr
    assert os.stat(fs / "f").st_size == 0


@pytest.mark.parametrize("make", [
    lambda fs, name: os.mkdir(fs / name),
    lambda fs, name: os.symlink("target", fs / name),
    lambda fs, name: os.mknod(fs / name),
    lambda fs, name: os.link(fs / "existing", fs / name),
    lambda fs, name: os.rename(fs / "existing", fs / name),
], ids=["mkdir", "symlink", "mknod", "link", "rename"])
def test_names_longer_than_255_bytes(fs, make):
    """holefs refuses 256 bytes; the kernel itself refuses past 1024."""
    (fs / "existing").write_text("x")
    for length in (256, 1025):
        with pytest.raises(OSError) as e:
            make(fs, "n" * length)
        assert e.value.errno == errno.ENAMETOOLONG
    assert sorted(os.listdir(fs.path)) == ["existing"]
    longest = "é" * 127 + "n"  # 255 bytes in UTF-8
    make(fs, longest)
    assert longest in os.listdir(fs.path)


def test_xattr_limits(fs):
    f = fs / "f"
    f.write_text("")
    os.setxattr(f, "user.big", b"v" * XATTR_SIZE_MAX)
    assert os.getxattr(f, "user.big") == b"v" * XATTR_SIZE_MAX
    assert errno_of(os.setxattr, f, "user.bigger", b"v" * (XATTR_SIZE_MAX + 1)) == "E2BIG"
    longest = "user." + "n" * 250
    os.setxattr(f, longest, b"ok")
    assert os.getxattr(f, longest) == b"ok"
    assert errno_of(os.setxattr, f, longest + "n", b"no") == "ERANGE"
    assert errno_of(os.getxattr, f, longest + "n") == "ERANGE"
    assert sorted(os.listxattr(f)) == sorted(["user.big", longest])
    # More names than a listxattr buffer can ever hold.
    for i in range(XATTR_LIST_MAX // 250 + 1):
        os.setxattr(f, f"user.{i:04}" + "n" * 240, b"")
    assert errno_of(os.listxattr, f) == "E2BIG"
    assert os.getxattr(f, longest) == b"ok"
    assert_serves(fs)


def test_symlink_loops_give_eloop(fs):
    os.symlink("self", fs / "self")
    os.symlink("b", fs / "a")
    os.symlink("a", fs / "b")
    for name in ("self", "a", "b"):
        assert errno_of(os.stat, fs / name) == "ELOOP"
        assert errno_of(os.open, fs / name, os.O_RDONLY) == "ELOOP"
        assert errno_of(os.open, fs / name, os.O_RDWR | os.O_CREAT) == "ELOOP"
    assert os.readlink(fs / "a") == "b"
    # A chain: the kernel follows MAXSYMLINKS links and no more.
    (fs / "file").write_text("end")
    os.symlink("file", fs / "chain0")
    for i in range(1, MAXSYMLINKS + 1):
        os.symlink(f"chain{i - 1}", fs / f"chain{i}")
    assert (fs / f"chain{MAXSYMLINKS - 1}").read_text() == "end"
    assert errno_of(os.stat, fs / f"chain{MAXSYMLINKS}") == "ELOOP"
    assert errno_of(os.open, fs / "file", os.O_RDONLY | os.O_NOFOLLOW) is None
    assert errno_of(os.open, fs / "chain0", os.O_RDONLY | os.O_NOFOLLOW) == "ELOOP"
    assert_serves(fs)


@pytest.mark.parametrize("options,message", [
    ("bogus", "unknown option 'bogus'"),
    ("size=12q", "size=12q"),
    ("ram=2G,size=1G", "larger than size"),
    ("size=9999999p", "size=9999999p: larger than 8191p"),
    ("ram=0", "ram= must be at least 64k"),
    ("nr_inodes=5%", "nr_inodes=5%: % is not allowed here"),
    (f"nr_inodes={1 << 64}", "nr_inodes= must be at most"),
    ("mode=999", "mode=999: expected octal"),
    ("mode=", "option mode needs a value"),
    ("uid=4294967295", "uid=4294967295: larger than the largest id"),
    ("gid=nosuchgroup", "gid=nosuchgroup: no such group"),
    ("spill=", "option spill needs a value"),
    ("allow_other=1", "unknown option 'allow_other=1'"),
    ("fsname=a,b", "unknown option 'b'"),
])
def test_malformed_options_exit_2_with_one_line(tmp_path, options, message):
    try:
        result = run_holefs("mount", str(tmp_path), "-o", options, check=False)
    finally:
        force_unmount(tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("holefs: mount: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not is_mounted(tmp_path)
