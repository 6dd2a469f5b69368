"""tmpfs's semantics that a filesystem regression run checks, each beside
a kernel tmpfs taking the same steps."""

import ctypes
import os
import subprocess
import sys

import pytest

from conftest import drop_page_cache


@pytest.fixture
def both(mount_holefs, small_tmpfs):
    return {"holefs": mount_holefs("size=16M").path, "tmpfs": small_tmpfs("16M")}


TIMES_S = [17179869183, -17179869183, -1, 0, 1 << 62, (1 << 63) - 1, -(1 << 63)]


def test_times_across_the_whole_range_that_tmpfs_keeps(both):
    """Past 2262 and before 1970, read back after the caches are dropped,
    so that the daemon's own attributes answer, in another process."""
    seen = {}
    for fs, root in both.items():
        for i, seconds in enumerate(TIMES_S):
            path = root / f"f{i}"
            path.write_bytes(b"")
            os.utime(path, ns=(seconds * 10**9 + 5, seconds * 10**9 + 7))
        drop_page_cache("3")
        out = subprocess.run([sys.executable, "-c", "import os, sys\n"
                              "for p in sorted(os.listdir(sys.argv[1])):\n"
                              "    st = os.stat(os.path.join(sys.argv[1], p))\n"
                              "    print(p, st.st_atime_ns, st.st_mtime_ns)", root],
                             capture_output=True, text=True, check=True)
        seen[fs] = out.stdout
    assert seen["holefs"] == seen["tmpfs"]
    assert f"f0 {17179869183 * 10**9 + 5} {17179869183 * 10**9 + 7}" in seen["holefs"]
    assert f"f2 {-10**9 + 5} {-10**9 + 7}" in seen["holefs"]


def test_utime_omit_and_now_leave_and_set_as_on_tmpfs(both):
    libc = ctypes.CDLL(None, use_errno=True)
    UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
    timespecs = (ctypes.c_long * 4)(1 << 40, UTIME_OMIT, 0, UTIME_NOW)
    seen = {}
    for fs, root in both.items():
        path = root / "f"
        path.write_bytes(b"")
        os.utime(path, ns=(5, 7))
        assert libc.utimensat(-100, str(path).encode(), timespecs, 0) == 0
        drop_page_cache("3")
        st = os.stat(path)
        seen[fs] = (st.st_atime_ns, st.st_mtime_ns > 10**18)
    assert seen["holefs"] == seen["tmpfs"] == (5, True)


REWIND = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.opendir.restype = libc.readdir.restype = ctypes.c_void_p
libc.telldir.restype = ctypes.c_long
libc.readdir.argtypes = libc.rewinddir.argtypes = libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
class Dirent(ctypes.Structure):
    _fields_ = [("ino", ctypes.c_ulong), ("off", ctypes.c_long), ("reclen", ctypes.c_ushort),
                ("type", ctypes.c_ubyte), ("name", ctypes.c_char * 256)]
def names(d, limit=None):
    out = []
    while limit is None or len(out) < limit:
        p = libc.readdir(d)
        if not p:
            break
        out.append(ctypes.cast(p, ctypes.POINTER(Dirent)).contents.name.decode())
    return out
root = sys.argv[1]
d = libc.opendir(root.encode())
print(len(names(d)))
for i in range(int(sys.argv[2])):
    open(f"{root}/f{i:05}", "w").close()
libc.rewinddir(d)
print(len(names(d)))
libc.rewinddir(d)
first = names(d, 12)
pos = libc.telldir(d)
rest = names(d, 5)
for n in [n for n in first if n not in (".", "..")][:5] + rest[:1]:
    os.unlink(f"{root}/{n}")
for i in range(5):
    open(f"{root}/new{i}", "w").close()
libc.seekdir(d, pos)
again = names(d)
old = [n for n in again if not n.startswith("new")]
print(again[0] == rest[1], len(old), len(set(again)) == len(again))
"""


@pytest.mark.parametrize("files", [100, 10000])
def test_rewinddir_and_seekdir_follow_the_directory(both, files):
    """rewinddir shows the names created since opendir; seekdir to a
    telldir resumes after the same entry, with the removed names gone
    (whether names created meanwhile show is POSIX's to leave open)."""
    seen = {}
    for fs, root in both.items():
        (root / "d").mkdir()
        seen[fs] = subprocess.run([sys.executable, "-c", REWIND, root / "d", str(files)],
                                  capture_output=True, text=True, check=True).stdout.split()
    assert seen["holefs"] == seen["tmpfs"] == \
        ["2", str(files + 2), "True", str(files + 2 - 12 - 1), "True"]
