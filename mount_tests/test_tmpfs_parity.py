"""tmpfs's semantics that a filesystem regression run checks, each beside
a kernel tmpfs taking the same steps."""

import ctypes
import errno
import os
import stat
import subprocess
import sys
import time

import pytest

from holefs.mounttable import mount8_last_atime_wins

from support import MiB, drop_page_cache, kernel_version, wait_for


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


# Each change a read-only filesystem refuses, with what it got.
CHANGES = r"""
import errno, os, sys
from holefs import release
root = sys.argv[1]
f = os.path.join(root, "f")
def outcome(step):
    try:
        step()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
steps = {
    "open for writing": lambda: os.close(os.open(f, os.O_WRONLY)),
    "create": lambda: os.close(os.open(os.path.join(root, "g"), os.O_CREAT | os.O_WRONLY)),
    "mkdir": lambda: os.mkdir(os.path.join(root, "e")),
    "unlink": lambda: os.unlink(f),
    "rename": lambda: os.rename(f, os.path.join(root, "h")),
    "link": lambda: os.link(f, os.path.join(root, "h")),
    "symlink": lambda: os.symlink("f", os.path.join(root, "h")),
    "chmod": lambda: os.chmod(f, 0o600),
    "truncate": lambda: os.truncate(f, 0),
    "utime": lambda: os.utime(f, (1, 1)),
    "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
    "punch": lambda: release(f, 0, 4096, any_fs=True),
    "read": lambda: open(f, "rb").read(),
}
print(" ".join(f"{name.replace(' ', '_')}={outcome(step)}" for name, step in steps.items()))
"""


def remount(path, options):
    """mount(8)'s remount, as an administrator types it; its stderr, or ''."""
    result = subprocess.run(["mount", "-o", f"remount,{options}", str(path)],
                            capture_output=True, text=True, timeout=60)
    return result.stderr if result.returncode else ""


def flags(path):
    """The mount's per-mount flags that a remount may change."""
    with open("/proc/self/mountinfo") as f:
        fields = [line.split() for line in f if line.split()[4] == str(path)][-1]
    return sorted(set(fields[5].split(",")) & {"ro", "rw", "nosuid", "nodev", "noexec",
                                                 "noatime", "relatime"})


def test_remount_read_only_and_back_refuses_every_change_between(both):
    """Read-only live: every change refused with EROFS, reads go on, a file
    open for writing keeps the mount writable (EBUSY); and back to rw."""
    seen = {}
    for fs, root in both.items():
        (root / "f").write_bytes(b"data")
        with open(root / "f", "r+b"):
            busy = remount(root, "ro")
        assert remount(root, "ro") == ""
        read_only = "ro" in flags(root)
        refused = subprocess.run([sys.executable, "-c", CHANGES, root], capture_output=True,
                                 text=True, check=True).stdout.split()
        with open(root / "f", "rb") as f:
            data = f.read()
        assert remount(root, "rw") == ""
        (root / "g").write_bytes(b"again")
        seen[fs] = (bool(busy), read_only, refused, data, "rw" in flags(root),
                    (root / "g").read_bytes())
    assert seen["holefs"] == seen["tmpfs"]
    busy, read_only, refused, data, writable, written = seen["holefs"]
    assert busy and read_only and writable and (data, written) == (b"data", b"again")
    assert refused == [f"{step}={'ok' if step == 'read' else 'EROFS'}" for step in
                       ["open_for_writing", "create", "mkdir", "unlink", "rename", "link",
                        "symlink", "chmod", "truncate", "utime", "setxattr", "punch", "read"]]


def test_mount_flags_change_live(both):
    """noexec refuses exec, and nosuid, nodev and noatime show, until a
    remount takes them back; the data stays."""
    seen = {}
    for fs, root in both.items():
        script = root / "run"
        script.write_text("#!/bin/sh\necho ran\n")
        script.chmod(0o755)
        steps = []
        for options in ["noexec,nosuid,nodev,noatime", "exec,suid,dev,relatime",
                        "strictatime", "relatime"]:
            assert remount(root, options) == ""
            ran = subprocess.run(["sh", "-c", f"exec {script}"], capture_output=True, text=True)
            steps.append((flags(root), ran.stdout or ran.returncode))
        seen[fs] = steps
    assert seen["holefs"] == seen["tmpfs"]
    first, from_noatime, *rest = seen["holefs"]
    assert first == (["noatime", "nodev", "noexec", "nosuid", "rw"], 126)
    # mount(8) before util-linux 2.39 hands the kernel noatime with relatime,
    # and noatime wins; later ones let relatime replace it.
    assert from_noatime == ((["relatime", "rw"] if mount8_last_atime_wins() else
                             ["noatime", "rw"]), "ran\n")
    assert rest == [(["rw"], "ran\n"), (["relatime", "rw"], "ran\n")]


def test_read_only_remount_with_a_new_size_and_a_size_while_read_only(mount_holefs):
    """tmpfs takes both in one mount(2): so does holefs, in its two steps."""
    m = mount_holefs("size=16M")
    (m / "f").write_bytes(bytes(MiB))
    assert remount(m.path, "ro,size=32M") == ""
    assert "ro" in flags(m.path) and os.statvfs(m.path).f_blocks * 4096 == 32 * MiB
    assert remount(m.path, "size=24M") == ""
    assert "ro" in flags(m.path) and os.statvfs(m.path).f_blocks * 4096 == 24 * MiB
    refused = remount(m.path, "rw,size=512k")
    assert "size=512.0 KiB is less than the 1.0 MiB in use" in refused
    assert "ro" in flags(m.path), "a refused remount must leave the flags as they were"
    assert m.status()["options"].endswith(",ro,nosuid,nodev,relatime")


DAY = 24 * 3600
COARSE_CLOCK_LAG = 0.02  # seconds: a tick at HZ=100, the coarsest kernel


def test_atime_as_relatime_strictatime_noatime_and_ro_move_it(both):
    """Whether each read moves atime, read through fresh opens as programs
    do, so that holefs serves from its page cache where it can."""
    def read(path):
        with open(path, "rb") as f:
            f.read()

    def moved(path, action, *, times=None):
        if times is not None:
            os.utime(path, times)
        before = os.stat(path).st_atime_ns
        time.sleep(0.02)  # tmpfs's clock moves by the tick
        action(path)
        return os.stat(path).st_atime_ns != before

    seen = {}
    for fs, root in both.items():
        f, d = root / "f", root / "d"
        f.write_bytes(b"x" * 10000)
        d.mkdir()
        now = int(time.time())
        steps = [moved(f, read, times=(1000, 2000)),       # relatime: behind mtime
                 moved(f, read),                            # past it now
                 moved(f, lambda p: p.write_bytes(b"y")) or moved(f, read),  # a write, then
                 moved(f, read, times=(now - 2 * DAY, now - 3 * DAY)),  # a day old
                 moved(d, os.listdir, times=(1000, 2000)),
                 moved(d, os.listdir)]
        assert remount(root, "strictatime") == ""
        steps += [moved(f, read), moved(f, read)]
        assert remount(root, "noatime") == ""
        steps += [moved(f, read, times=(1000, 2000)), moved(d, os.listdir, times=(1000, 2000))]
        assert remount(root, "strictatime") == "" and remount(root, "ro") == ""
        steps += [moved(f, read), moved(d, os.listdir)]
        assert remount(root, "rw,relatime") == ""
        seen[fs] = steps
    assert seen["holefs"] == seen["tmpfs"] == [True, False, True, True, True, False,
                                               True, True, False, False, False, False]


@pytest.mark.parametrize("threads", ["threads=2", "threads=0"])
def test_buffered_reads_see_asynchronous_direct_writes(mount_holefs, small_tmpfs, cprog,
                                                       threads):
    """xfstests' aio-dio-invalidate-readahead: readahead races each aio
    O_DIRECT write; once it completes, the page cache holds the new bytes
    (with workers, and with trio's thread alone)."""
    roots = {"holefs": mount_holefs(f"size=16M,{threads}").path, "tmpfs": small_tmpfs("16M")}
    stale = {fs: subprocess.run([cprog("aio_dio_readahead"), root / "f", "100"],
                                capture_output=True, text=True, check=True).stdout.split()
             for fs, root in roots.items()}
    assert stale == {"holefs": ["0"], "tmpfs": ["0"]}


def test_birth_time_is_kept_through_changes(both):
    """statx's btime: set when the file is made, kept through writes, chmod,
    rename and utime, read again after the kernel's caches are dropped.
    FUSE passes it from Linux 6.6 (FUSE_STATX); before, statx has none."""
    seen = {}
    for fs, root in both.items():
        before = time.time()
        (root / "f").write_bytes(b"1")
        after = time.time()
        (root / "f").write_bytes(b"22")
        (root / "f").chmod(0o600)
        os.rename(root / "f", root / "g")
        os.utime(root / "g", (1, 1))
        drop_page_cache("3")
        out = subprocess.run(["stat", "-c", "%W %.9W %Y", root / "g"], capture_output=True,
                             text=True, check=True).stdout.split()
        # The kernel stamps times from its coarse clock, up to a tick
        # behind time.time().
        seen[fs] = (int(out[0]) != 0 and before - COARSE_CLOCK_LAG <= float(out[1]) <= after,
                    out[2])
    has_statx = kernel_version() >= (6, 6)
    assert seen == {"holefs": (has_statx, "1"), "tmpfs": (True, "1")}


def idmapped_bind(source, target, id_map):
    """Bind *source* on *target* as an idmapped mount, through a user
    namespace whose uid and gid maps are *id_map* ("0 1000 1": what
    is owned by 0 shows as owned by 1000); the errno
    of mount_setattr(2) if the filesystem refuses, else None."""
    libc = ctypes.CDLL(None, use_errno=True)
    SYS_open_tree, SYS_move_mount, SYS_mount_setattr = 428, 429, 442
    OPEN_TREE_CLONE, AT_EMPTY_PATH, MOUNT_ATTR_IDMAP, MOVE_MOUNT_F_EMPTY_PATH = \
        1, 0x1000, 0x100000, 4
    holder = subprocess.Popen(["unshare", "--user", "sleep", "60"])
    try:
        wait_for(lambda: os.readlink(f"/proc/{holder.pid}/ns/user") !=
                 os.readlink("/proc/self/ns/user"), what="the user namespace")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{holder.pid}/{name}", "w") as f:
                f.write(id_map)
        userns = os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY)
    finally:
        holder.kill()
        holder.wait()
    tree = libc.syscall(SYS_open_tree, -100, os.fsencode(source),
                        OPEN_TREE_CLONE | os.O_CLOEXEC)
    assert tree >= 0, os.strerror(ctypes.get_errno())
    try:
        attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_IDMAP, 0, 0, userns)
        if libc.syscall(SYS_mount_setattr, tree, b"", AT_EMPTY_PATH, attr,
                        ctypes.sizeof(attr)) != 0:
            return ctypes.get_errno()
        assert libc.syscall(SYS_move_mount, tree, b"", -100, os.fsencode(target),
                            MOVE_MOUNT_F_EMPTY_PATH) == 0, os.strerror(ctypes.get_errno())
        return None
    finally:
        os.close(tree)
        os.close(userns)


def test_idmapped_mounts(both, tmp_path):
    """A container's bind with an idmap: owners show mapped through it, and
    what it makes is owned by the mapped ids underneath; FUSE allows it
    from Linux 6.12, where the daemon says so."""
    seen = {}
    for fs, root in both.items():
        (root / "d").mkdir(mode=0o777)
        (root / "d" / "own").write_bytes(b"x")
        os.chown(root / "d" / "own", 1000, 1000)
        view = tmp_path / fs
        view.mkdir()
        # Swap ids 0 and 1000: the kernel refuses writes where an owner is unmapped.
        refused = idmapped_bind(root / "d", view, "0 1000 1\n1000 0 1")
        if refused is not None:
            seen[fs] = errno.errorcode[refused]
            continue
        try:
            (view / "new").write_bytes(b"y")
            (view / "sub").mkdir()
            os.symlink("own", view / "link")
            shown = os.stat(view / "own")
            underneath = [(os.lstat(root / "d" / n).st_uid, os.lstat(root / "d" / n).st_gid)
                          for n in ("new", "sub", "link")]
            seen[fs] = ((shown.st_uid, shown.st_gid), underneath,
                        (view / "own").read_bytes())
        finally:
            subprocess.run(["umount", view], check=True)
    idmapped = ((0, 0), [(1000, 1000)] * 3, b"x")
    assert seen == {"holefs": idmapped if kernel_version() >= (6, 12) else "EINVAL",
                    "tmpfs": idmapped}
