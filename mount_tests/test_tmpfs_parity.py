"""tmpfs's semantics that a filesystem regression run checks, each beside
a kernel tmpfs taking the same steps."""

import ctypes
import os
import stat
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


def tree(root):
    """Each path under *root*: its type, and for a device its numbers."""
    out = []
    for parent, dirs, files in sorted(os.walk(root)):
        for name in sorted(dirs + files):
            st = os.lstat(os.path.join(parent, name))
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) \
                else f"chr{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" \
                if stat.S_ISCHR(st.st_mode) else "other"
            out.append(f"{os.path.relpath(os.path.join(parent, name), root)}:{kind}")
    return out


def test_overlayfs_takes_holefs_as_its_upper_layer(both, tmp_path):
    """Whiteouts (RENAME_WHITEOUT, unlink of a lower file), opaque
    directories, copy-up of a file with xattrs and rename of a directory
    (the work directory needs O_TMPFILE too)."""
    seen = {}
    for fs, upper in both.items():
        lower, merged = tmp_path / fs / "lower", tmp_path / fs / "merged"
        (lower / "dir").mkdir(parents=True)
        merged.mkdir()
        (lower / "a").write_text("low")
        (lower / "gone").write_text("x")
        (lower / "dir" / "b").write_text("b")
        os.setxattr(lower / "a", "user.kept", b"1")
        (upper / "up").mkdir()
        (upper / "work").mkdir()
        options = f"lowerdir={lower},upperdir={upper}/up,workdir={upper}/work,redirect_dir=on"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, merged], check=True)
        try:
            with open(merged / "a", "a") as f:
                f.write("+")
            os.unlink(merged / "gone")
            os.rename(merged / "dir", merged / "moved")
            (merged / "dir").mkdir()
            seen[fs] = (tree(merged), tree(upper / "up"), (merged / "a").read_text(),
                        os.getxattr(merged / "a", "user.kept"),
                        os.getxattr(upper / "up" / "dir", "trusted.overlay.opaque"))
        finally:
            subprocess.run(["umount", merged], check=True)
    assert seen["holefs"] == seen["tmpfs"]
    merged_tree, upper_tree, text, kept, opaque = seen["holefs"]
    assert merged_tree == ["a:file", "dir:dir", "moved:dir", "moved/b:file"]
    assert "gone:chr0:0" in upper_tree and (text, kept, opaque) == ("low+", b"1", b"y")
