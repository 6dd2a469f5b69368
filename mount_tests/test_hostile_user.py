"""A hostile local user against an allow_other, suid holefs, beside a
kernel tmpfs that takes the same steps.

holefs usually runs as root and serves every user of the machine, so each
step here is run by the unprivileged test user on both filesystems, and
what the user sees (modes, euids, errnos, counts) must be what tmpfs
shows; each test also names the outcome, so that both going wrong fails.
"""

import errno
import os
import socket
import stat
import subprocess
import sys

import hypothesis
import hypothesis.strategies as st
import pytest

from holefs import control
from holefs.mounttable import mount_flags, options_in_force
from holefs.options import OptionError, parse, remount

from support import MiB, Mount, as_user, assert_serves, daemon_log, force_unmount, run_holefs


@pytest.fixture
def both(mount_holefs, small_tmpfs, user):
    """Factory: {"holefs": path, "tmpfs": path} with the same -o options,
    suid and dev as fstab gives them, and every user let in; holefs also
    gets *holefs_only*, its own options."""
    made = {}

    def make(options="size=64M", holefs_only=""):
        holefs = mount_holefs(",".join(filter(None, [options, holefs_only,
                                                     "allow_other,suid,dev"])), name="holefs")
        made["mount"] = holefs
        size, _, rest = options.partition(",")
        return {"holefs": holefs.path,
                "tmpfs": small_tmpfs(size.partition("=")[2], options=rest)}
    make.mounts = made
    return make


def hostile(user, script, *args):
    """Run a Python *script* as the test user (root if None); its stdout,
    split in words."""
    cmd = [sys.executable, "-c", script, *map(str, args)]
    result = as_user(user, *cmd) if user is not None else \
        subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


# Each operation as the user, printing "ok" or the errno's name.
OUTCOMES = r"""
import array, ctypes, errno, fcntl, os, sys
libc = ctypes.CDLL(None, use_errno=True)
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
def flags(path, value=None):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        word = array.array("I", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, word)
        if value is None:
            return word[0]
        word[0] = value(word[0])
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, word)
    finally:
        os.close(fd)
def append(path):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"appended")
        os.fsync(fd)  # a cached write reaches holefs here
    finally:
        os.close(fd)
def fallocate(path, mode, offset, length, how=os.O_RDWR):
    fd = os.open(path, how)
    try:
        if libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)):
            raise OSError(ctypes.get_errno(), "fallocate")
    finally:
        os.close(fd)
def pwrite(path, direct=False):
    import mmap
    fd = os.open(path, os.O_WRONLY | (os.O_DIRECT if direct else 0))
    try:
        buf = mmap.mmap(-1, 4096)
        os.pwritev(fd, [buf], 0)
    finally:
        os.close(fd)
OPS = {
    "write": pwrite,
    "write_direct": lambda p: pwrite(p, direct=True),
    "allocate": lambda p: fallocate(p, 0, 0, 8192),
    "punch": lambda p: fallocate(p, 3, 0, 4096),
    "allocate_appending": lambda p: fallocate(p, 0, 0, 8192, os.O_WRONLY | os.O_APPEND),
    "punch_appending": lambda p: fallocate(p, 3, 0, 4096, os.O_WRONLY | os.O_APPEND),
    "truncate": lambda p: os.truncate(p, 1),
    "otrunc": lambda p: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC)),
    "chmod": lambda p: os.chmod(p, 0o777),
    "chown": lambda p: os.chown(p, os.getuid(), -1),
    "utime_now": lambda p: os.utime(p),
    "utime_set": lambda p: os.utime(p, (1, 1)),
    "unlink": os.unlink,
    "link": lambda p: os.link(p, p + ".link"),
    "stat": os.stat,
    "list": os.listdir,
    "read": lambda p: open(p, "rb").close(),
    "open_rw": lambda p: open(p, "r+b").close(),
    "mknod_fifo": lambda p: os.mknod(p, stat.S_IFIFO | 0o644),
    "mknod_chr": lambda p: os.mknod(p, stat.S_IFCHR | 0o644, os.makedev(1, 3)),
    "set_trusted": lambda p: os.setxattr(p, "trusted.x", b"1"),
    "set_security": lambda p: os.setxattr(p, "security.x", b"1"),
    "set_user": lambda p: os.setxattr(p, "user.x", b"1"),
    "set_system": lambda p: os.setxattr(p, "system.x", b"1"),
    "mode": lambda p: print(oct(stat.S_IMODE(os.stat(p).st_mode)), end=":"),
    "append": append,
    "rename": lambda p: os.rename(p, p + ".renamed"),
    "create": lambda p: open(p, "x").close(),
    "mkdir": os.mkdir,
    "rmdir": os.rmdir,
    "tmpfile": lambda p: os.close(os.open(p, os.O_TMPFILE | os.O_WRONLY, 0o600)),
    "flags": lambda p: print(hex(flags(p)), end=":"),
    "immutable": lambda p: flags(p, lambda f: f | 0x10),
    "mutable": lambda p: flags(p, lambda f: f & ~0x10),
    "append_only": lambda p: flags(p, lambda f: f | 0x20),
    "nodump_noatime": lambda p: flags(p, lambda f: f | 0x40 | 0x80),
    "sync_flag": lambda p: flags(p, lambda f: f | 0x8),
    "ioctl_other": lambda p: fcntl.ioctl(os.open(p, os.O_RDONLY), 0x5401, bytes(64)),
}
import stat
for arg in sys.argv[1:]:
    op, _, path = arg.partition(":")
    try:
        OPS[op](path)
        print("ok")
    except OSError as e:
        print(errno.errorcode[e.errno])
"""


def outcomes(user, *steps):
    """What the user gets from each (op, path) step."""
    return hostile(user, OUTCOMES, *(f"{op}:{path}" for op, path in steps))


def mode(path):
    return oct(stat.S_IMODE(os.lstat(path).st_mode))


@pytest.mark.parametrize("cache", ["", "writeback_cache"])
def test_an_overwritten_setuid_file_runs_as_its_writer(both, user, cache):
    """The kernel cached the mode; holefs cleared the bit behind it and
    must tell it, or exec honours the stale bit and the user is root.
    With the writeback cache, the kernel clears it itself."""
    seen = {}
    for fs, root in both(holefs_only=cache).items():
        sid = root / "sid"
        sid.write_bytes(open("/usr/bin/id", "rb").read())
        sid.chmod(0o4777)
        os.stat(sid)  # the kernel caches the mode now
        assert outcomes(user, ("write", sid)) == ["ok"]
        # The write put a page of zeros at the start: put the program back.
        result = hostile(user, "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); "
                         "os.pwrite(fd, open('/usr/bin/id', 'rb').read(), 0)", sid)
        assert result == []
        seen[fs] = (as_user(user, str(sid), "-u").stdout.strip(), mode(sid),
                    hostile(user, "import os, sys; print(oct(os.stat(sys.argv[1]).st_mode))",
                            sid))
    assert seen["holefs"] == seen["tmpfs"] == \
        (str(user.pw_uid), "0o777", [oct(stat.S_IFREG | 0o777)])


SETID_CASES = ["write", "write_direct", "allocate", "punch", "truncate", "otrunc"]


@pytest.mark.parametrize("cache", ["", "writeback_cache"])
@pytest.mark.parametrize("bits", [0o6777, 0o2666])
def test_writes_by_another_user_clear_the_set_id_bits(both, user, bits, cache):
    """Buffered and O_DIRECT writes, fallocate, punch, truncate and an
    O_TRUNC open, each by a user outside the file's group; with 2666 the
    set-group-ID bit goes because the user is not in the group."""
    seen = {}
    for fs, root in both(holefs_only=cache).items():
        for op in SETID_CASES:
            (root / op).write_bytes(bytes(8192))
            (root / op).chmod(bits)
            os.stat(root / op)
        assert outcomes(user, *((op, root / op) for op in SETID_CASES)) == \
            ["ok"] * len(SETID_CASES)
        seen[fs] = {op: hostile(user, "import os, sys; print(oct(os.stat(sys.argv[1]).st_mode "
                                "& 0o7777))", root / op)[0] for op in SETID_CASES}
    assert seen["holefs"] == seen["tmpfs"] == dict.fromkeys(SETID_CASES, oct(bits & 0o777))


def test_root_keeps_the_set_id_bits_where_cap_fsetid_lets_it(both):
    for root in both().values():
        f = root / "f"
        f.write_bytes(bytes(8192))
        f.chmod(0o6777)
        with open(f, "r+b") as fh:
            fh.write(b"x")
            os.posix_fallocate(fh.fileno(), 0, 16384)
        assert mode(f) == "0o6777", root


def test_chown_clears_set_id_on_every_type_but_directories(both, user):
    seen = {}
    for fs, root in both().items():
        made = {"file": root / "file", "fifo": root / "fifo", "chr": root / "chr",
                "socket": root / "socket", "dir": root / "dir", "via_link": root / "target"}
        made["file"].write_bytes(b"")
        made["via_link"].write_bytes(b"")
        os.mkfifo(made["fifo"])
        os.mknod(made["chr"], stat.S_IFCHR | 0o644, os.makedev(1, 3))
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(made["socket"]))
        made["dir"].mkdir()
        os.symlink("target", root / "link")
        for path in made.values():
            os.chmod(path, 0o6755)
            os.stat(path)
        for name, path in made.items():
            os.chown(root / "link" if name == "via_link" else path, user.pw_uid, -1)
        os.lchown(root / "link", user.pw_uid, -1)
        seen[fs] = {name: mode(path) for name, path in made.items()} | \
            {"link": mode(root / "link")}
    assert seen["holefs"] == seen["tmpfs"] == {
        "file": "0o755", "fifo": "0o755", "chr": "0o755", "socket": "0o755",
        "dir": "0o6755", "via_link": "0o755", "link": "0o777"}


def test_xattrs_are_charged_to_the_inode_budget(both, user):
    """tmpfs charges each xattr to nr_inodes * 1 KiB: with 2,000 inodes the
    32nd value of 64 KiB finds no room, and df shows the space as used."""
    counting = r"""
import errno, os, sys
path = sys.argv[1]
for i in range(1000):
    try:
        os.setxattr(path, f"user.{i}", bytes(65536))
    except OSError as e:
        print(i, errno.errorcode[e.errno], os.statvfs(path).f_ffree)
        break
"""
    paths = both("size=64M,nr_inodes=2000")
    mount = both.mounts["mount"]
    rss = mount.rss()
    seen = {}
    for fs, root in paths.items():
        (root / "f").write_bytes(b"")
        os.chown(root / "f", user.pw_uid, user.pw_gid)
        seen[fs] = hostile(user, counting, root / "f")
    assert seen["holefs"] == seen["tmpfs"] == ["31", "ENOSPC", "12"], seen
    assert mount.rss() - rss < 8 * MiB
    status = mount.status()
    assert status["inodes_free"] == 12 and status["xattr_used"] >= 31 * 65536
    # Removing them gives the budget back, to xattrs and to files.
    for root in paths.values():
        for i in range(31):
            os.removexattr(root / "f", f"user.{i}")
    assert os.statvfs(paths["holefs"]).f_ffree == os.statvfs(paths["tmpfs"]).f_ffree > 1990
    assert_serves(mount)


def test_a_sticky_directory_guards_other_users_files(both, user):
    steps = ["chmod", "chown", "utime_now", "utime_set", "unlink", "link", "open_rw"]
    seen = {}
    for fs, root in both().items():
        (root / "roots").write_bytes(b"x")
        (root / "roots").chmod(0o644)
        seen[fs] = outcomes(user, *((op, root / "roots") for op in steps))
        assert (root / "roots").exists()
    assert seen["holefs"] == seen["tmpfs"] == \
        ["EPERM", "EPERM", "EACCES", "EPERM", "EPERM", "EPERM", "EACCES"]


def test_privileged_namespaces_and_devices(both, user):
    steps = ["set_trusted", "set_security", "set_user", "set_system", "mknod_chr"]
    seen = {}
    for fs, root in both().items():
        (root / "mine").write_bytes(b"")
        os.chown(root / "mine", user.pw_uid, user.pw_gid)
        seen[fs] = outcomes(user, *((op, root / "mine") for op in steps[:-1]),
                            ("mknod_chr", root / "dev"), ("mknod_fifo", root / "fifo"))
    assert seen["holefs"] == seen["tmpfs"] == \
        ["EPERM", "EPERM", "ok", "ENOTSUP", "EPERM", "ok"]


def test_a_device_on_a_nodev_mount_does_not_open(mount_holefs, small_tmpfs, user):
    seen = {}
    for fs, root in {"holefs": mount_holefs("size=16M,allow_other,nodev").path,
                     "tmpfs": small_tmpfs("16M", options="nodev")}.items():
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        seen[fs] = outcomes(user, ("read", root / "null"))
    assert seen["holefs"] == seen["tmpfs"] == ["EACCES"]


def test_files_in_a_directory_the_user_cannot_enter(both, user):
    seen = {}
    for fs, root in both().items():
        (root / "closed").mkdir(mode=0o700)
        (root / "closed" / "f").write_bytes(b"secret")
        seen[fs] = outcomes(user, ("stat", root / "closed" / "f"),
                            ("read", root / "closed" / "f"), ("list", root / "closed"),
                            ("stat", root / "closed"))
    assert seen["holefs"] == seen["tmpfs"] == ["EACCES", "EACCES", "EACCES", "ok"]


def test_a_file_name_cannot_forge_a_log_line(mount_holefs, user):
    """The daemon logs each refused write with the file's path: a name that
    holds a newline shows escaped, on the daemon's own line."""
    m = mount_holefs("size=1M,allow_other")
    forged = "WARNING write refused: forged by the user"
    name = f"x\n{forged}"
    filling = r"""
import os, sys
with open(sys.argv[1], "wb") as f:
    try:
        while True:
            f.write(bytes(65536))
            f.flush()
    except OSError as e:
        print(e.errno)
"""
    assert hostile(user, filling, m / name) == [str(errno.ENOSPC)]
    log = daemon_log(m.pid, m.path)
    assert "x\\nWARNING write refused" in log
    assert not any(line.startswith(forged) or line.endswith(forged) and "x\\n" not in line
                   for line in log.splitlines())


REMOUNT_VALUES = ["threads=²", "uid=²", "gid=²", "size=" + "9" * 5000, "nr_inodes=١٢",
                  "size=1\0G", "ram=\udcff", "size=", "=", "size=1G" * 1000,
                  "mode=0x777", "spill=", "ram=1G,size=64M", "\n" * 100]


def test_hostile_remount_and_status_values_leave_the_daemon_serving(mount_holefs, user):
    """Refused with a reason, by the owner or another user; the mount is as
    it was, and serves."""
    m = mount_holefs("size=64M,allow_other")
    before = m.status()
    for value in REMOUNT_VALUES:
        if "\0" not in value:  # no argument can hold one
            result = run_holefs("remount", str(m.path), "-o", value, check=False)
            assert result.returncode != 0 and "Traceback" not in result.stderr, value
        with pytest.raises(OSError) as refused:
            control.ask(m.path, control.REMOUNT, value)
        assert refused.value.errno in (errno.EINVAL, errno.ENOSPC, errno.E2BIG), value
    # What no holefs command sends: no NUL, a request of another size, or
    # another inode, from root and from the user.
    requests = [(control.REMOUNT, b"9" * control.TEXT_MAX, "."),
                (control.REMOUNT & ~(0x3FFF << 16) | (16 << 16),
                 b"size=1M\0".ljust(16, b"\0"), "."),
                (control.CHECK_REMOUNT, b"size=1M\0".ljust(control.TEXT_MAX, b"\0"), "d"),
                (control.REMOUNT | 0xFF, b"\0" * control.TEXT_MAX, ".")]
    os.mkdir(m.path / "d", 0o777)
    raw = ("import errno, fcntl, os, sys\n"
           "fd = os.open(os.path.join(sys.argv[1], sys.argv[4]), os.O_RDONLY)\n"
           "try:\n"
           "    print(fcntl.ioctl(fd, int(sys.argv[2]), bytearray.fromhex(sys.argv[3]), True))\n"
           "except OSError as e:\n    print(errno.errorcode[e.errno])")
    assert [hostile(None, raw, m.path, cmd, data.hex(), where)[0]
            for cmd, data, where in requests] == ["22", "ENOTTY", "ENOTTY", "ENOTTY"]
    for value in REMOUNT_VALUES[:4] + ["size=1M", "ro"]:
        data = os.fsencode(value)[:control.TEXT_MAX - 1].ljust(control.TEXT_MAX, b"\0")
        assert hostile(user, raw, m.path, control.REMOUNT, data.hex(), ".") == ["1"]  # EPERM
    for part in ["holefs.status.map." + "9" * 200, "holefs.status.map.-1",
                 "holefs.status.x", "holefs.status.map.²"]:
        with pytest.raises(OSError) as missing:
            os.getxattr(m.path, part)
        assert missing.value.errno == errno.ENODATA, part
    after = m.status()
    assert (after["options"], after["size"], after["pid"]) == \
        (before["options"], before["size"], before["pid"])
    assert "Traceback" not in daemon_log(m.pid, m.path)
    assert_serves(m)


# What a user might type, and what a hostile one might add.
OPTION_WORDS = ["size", "ram", "nr_inodes", "nr_blocks", "threads", "uid", "gid", "mode",
                "spill", "reserve", "ro", "suid", "debug", "=", ",", "0x", "0", "1", "9",
                "k", "e", "%", "²", "١", "-", " ", "\n", "\0", "\udcff", "9" * 60]
REMOUNT_TEXT = st.lists(st.sampled_from(OPTION_WORDS), max_size=12).map("".join)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """One mount for all the examples: the daemon must outlive them all."""
    path = tmp_path_factory.mktemp("fuzzed")
    options = "size=64M,nr_inodes=4000"
    run_holefs("mount", str(path), "-o", options)
    m = Mount(path)
    yield m, options
    force_unmount(path)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(value=REMOUNT_TEXT | st.binary(max_size=300).map(os.fsdecode))
def test_random_remount_values_are_refused_or_applied_as_the_parser_says(fuzzed, value):
    """Each value either changes the mount as the option parser says it
    would, or is refused with the mount unchanged; the daemon serves on."""
    m, options = fuzzed
    before = m.status()
    try:
        expected = remount(parse(options), value, options_in_force(str(m.path)))
    except OptionError:
        expected = None
    try:
        control.ask(m.path, control.REMOUNT, value)
    except OSError as e:
        hypothesis.event("refused")
        assert e.errno == errno.EINVAL and expected is None, (value, e)
        after = m.status()
        assert (after["options"], after["size"]) == (before["options"], before["size"]), value
    else:
        hypothesis.event("applied")
        assert expected is not None, value
        assert m.status()["options"] == expected.describe(mount_flags(str(m.path))), value
        control.ask(m.path, control.REMOUNT, options)
    name = "holefs.status." + value.replace("\0", "")[:200]
    try:
        os.getxattr(m.path, name)
    except OSError as e:
        assert e.errno in (errno.ENODATA, errno.ERANGE), (name, e)
    assert m.status()["pid"] == before["pid"]


def test_the_fuzzed_daemon_still_serves(fuzzed):
    m, _ = fuzzed
    assert_serves(m)
    assert "Traceback" not in daemon_log(m.pid, m.path)


def acl_view(path):
    """getfacl's view of a file, and its mode."""
    out = subprocess.run(["getfacl", "-cp", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return mode(path), sorted(line.split("\t")[0] for line in out.splitlines() if line)


def test_acls_are_enforced_and_keep_the_mode_in_step(both, user):
    seen = {}
    for fs, root in both().items():
        denied, granted = root / "denied", root / "granted"
        for path, mode_bits, entry in ((denied, 0o644, "---"), (granted, 0o600, "r")):
            path.write_bytes(b"x")
            path.chmod(mode_bits)
            subprocess.run(["setfacl", "-m", f"u:{user.pw_name}:{entry}", str(path)],
                           check=True)
        reads = outcomes(user, ("read", denied), ("read", granted))
        granted_acl = acl_view(granted)
        granted.chmod(0o604)  # a chmod takes the mask with it
        seen[fs] = (reads, granted_acl, acl_view(granted), outcomes(user, ("read", granted)))
    assert seen["holefs"] == seen["tmpfs"]
    reads, granted_acl, chmodded, after = seen["holefs"]
    assert reads == ["EACCES", "ok"]
    assert granted_acl == ("0o640", ["group::---", "mask::r--", "other::---", "user::rw-",
                                     f"user:{user.pw_name}:r--"])
    # With no group bits the kernel reads the mode alone: other may read.
    assert chmodded[0] == "0o604" and "mask::---" in chmodded[1] and after == ["ok"]


def test_default_acls_are_inherited_in_place_of_the_umask(both, user):
    seen = {}
    for fs, root in both().items():
        top = root / "top"
        top.mkdir()
        top.chmod(0o777)
        subprocess.run(["setfacl", "-d", "-m", f"u:{user.pw_name}:rwx,o::-", str(top)],
                       check=True)
        made = hostile(user, "import os, sys\nos.umask(0o077)\nd = sys.argv[1]\n"
                       "os.close(os.open(d + '/file', os.O_CREAT | os.O_WRONLY, 0o666))\n"
                       "os.mkdir(d + '/dir', 0o777)\nos.mkfifo(d + '/fifo', 0o666)\n"
                       "os.symlink('file', d + '/link')", top)
        assert made == []
        seen[fs] = {name: acl_view(top / name) for name in ("file", "dir", "fifo")} | \
            {"link": mode(top / "link")}
    assert seen["holefs"] == seen["tmpfs"]
    assert seen["holefs"]["file"] == ("0o660", ["group::rwx", "mask::rw-", "other::---",
                                                "user::rw-", f"user:{user.pw_name}:rwx"])
    assert "default:user:" + user.pw_name + ":rwx" in seen["holefs"]["dir"][1]


def test_the_umask_applies_without_a_default_acl(both, user):
    seen = {}
    for fs, root in both().items():
        hostile(user, "import os, sys\nos.umask(0o027)\nd = sys.argv[1]\n"
                "os.close(os.open(d + '/file', os.O_CREAT | os.O_WRONLY, 0o666))\n"
                "os.mkdir(d + '/dir', 0o777)\nos.mknod(d + '/fifo', 0o10666)", root)
        seen[fs] = [mode(root / name) for name in ("file", "dir", "fifo")]
    assert seen["holefs"] == seen["tmpfs"] == ["0o640", "0o750", "0o640"]


TMPFILE = r"""
import ctypes, errno, os, sys, tempfile
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400
def name(fd, path):
    if libc.linkat(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD, path.encode(),
                   AT_SYMLINK_FOLLOW):
        return errno.errorcode[ctypes.get_errno()]
    return "named"
root, closed = sys.argv[1:]
free = lambda: os.statvfs(root).f_ffree
start = free()
fd = os.open(root, os.O_TMPFILE | os.O_RDWR, 0o640)
os.write(fd, b"data")
st = os.fstat(fd)
print(st.st_nlink, oct(st.st_mode), len(os.listdir(root)), start - free())
print(name(fd, root + "/kept"), open(root + "/kept").read(), os.stat(root + "/kept").st_nlink)
print(name(fd, root + "/kept"), name(fd, root + "/again"))
os.close(fd)
os.link(root + "/kept", root + "/second")
print(start - free())
fd = os.open(root, os.O_TMPFILE | os.O_WRONLY | os.O_EXCL, 0o600)
print(name(fd, root + "/excl"))
os.close(fd)
with tempfile.TemporaryFile(dir=root) as f:
    f.write(b"x")
    f.seek(0)
    print(f.read().decode())
try:
    os.open(closed, os.O_TMPFILE | os.O_RDWR, 0o600)
except OSError as e:
    print(errno.errorcode[e.errno])
"""


def test_o_tmpfile_files_are_named_by_linkat_as_on_tmpfs(both, user):
    """An unnamed file counts as an inode while open, linkat from
    /proc/self/fd names it once (not with O_EXCL), and each extra hard
    link costs an inode, as on tmpfs."""
    seen = {}
    for fs, root in both("size=64M,nr_inodes=100").items():
        (root / "closed").mkdir(mode=0o755)
        seen[fs] = hostile(user, TMPFILE, root, root / "closed")
    assert seen["holefs"] == seen["tmpfs"] == [
        "0", "0o100640", "1", "1",
        "named", "data", "1",
        "EEXIST", "named",
        "3",
        "ENOENT",
        "x",
        "EACCES"], seen
    mount = both.mounts["mount"]
    assert mount.status()["inodes_used"] == 5  # root, closed, kept and its two more names
    assert_serves(mount)


FILE_CHANGES = ["open_rw", "append", "allocate_appending", "punch_appending", "otrunc",
                "truncate", "allocate", "punch", "chmod", "chown", "utime_set", "set_user",
                "link", "rename", "unlink"]


@pytest.mark.parametrize("cache", ["", "writeback_cache"])
def test_immutable_and_append_only_files_refuse_what_the_vfs_refuses(both, cache):
    """Root sets the flags; then every change of an immutable file fails,
    and of an append-only file all but appending (allocate and punch open
    it for writing without O_APPEND).  The writeback cache writes an
    append back with the page's bytes before it, and the times with it."""
    seen = {}
    for fs, root in both(holefs_only=cache).items():
        for flag in ("immutable", "append_only"):
            path = root / flag
            path.write_bytes(b"data")
            assert outcomes(None, (flag, path)) == ["ok"]
            seen[fs, flag] = outcomes(None, *((op, path) for op in FILE_CHANGES),
                                      ("flags", path))
            seen[fs, flag, "data"] = path.read_bytes()
    ok, no = "ok", "EPERM"
    for fs in ("holefs", "tmpfs"):
        assert seen[fs, "immutable"] == [no] * len(FILE_CHANGES) + ["0x10:ok"], fs
        assert seen[fs, "append_only"] == \
            [no, ok, ok, no, no, no, no, no, no, no, no, no, no, no, no, "0x20:ok"], fs
        assert seen[fs, "immutable", "data"] == b"data", fs
        assert seen[fs, "append_only", "data"].startswith(b"dataappended"), fs


def test_immutable_and_append_only_directories(both):
    seen = {}
    for fs, root in both().items():
        for flag in ("immutable", "append_only"):
            d = root / flag
            d.mkdir()
            (d / "old").write_bytes(b"")
            (d / "olddir").mkdir()
            (root / f"{flag}-outside").write_bytes(b"")
            assert outcomes(None, (flag, d)) == ["ok"]
            seen[fs, flag] = outcomes(
                None, ("create", d / "new"), ("mkdir", d / "newdir"), ("tmpfile", d),
                ("unlink", d / "old"), ("rmdir", d / "olddir"), ("rename", d / "old"),
                ("link", root / f"{flag}-outside"), ("set_user", d), ("chmod", d))
    ok, no = "ok", "EPERM"
    # os.link(p, p + ".link") names the outside file in the root: allowed.
    for fs in ("holefs", "tmpfs"):
        assert seen[fs, "immutable"] == [no, no, no, no, no, no, ok, no, no], fs
        assert seen[fs, "append_only"] == [ok, ok, ok, no, no, no, ok, no, no], fs


def test_nodump_and_noatime_are_kept_inherited_and_honoured(both):
    seen = {}
    for fs, root in both().items():
        d = root / "d"
        d.mkdir()
        assert outcomes(None, ("nodump_noatime", d), ("sync_flag", d)) == ["ok", "ENOTSUP"]
        (d / "f").write_bytes(b"data")
        os.utime(d / "f", ns=(1, 2))  # atime behind mtime: relatime would update it
        (d / "f").read_bytes()
        seen[fs] = (outcomes(None, ("flags", d), ("flags", d / "f")),
                    os.stat(d / "f").st_atime_ns)
    assert seen["holefs"] == seen["tmpfs"] == (["0xc0:ok", "0xc0:ok"], 1)


def test_only_the_owner_sets_flags_and_only_root_freezes(both, user):
    seen = {}
    for fs, root in both().items():
        (root / "roots").write_bytes(b"")
        (root / "mine").write_bytes(b"")
        os.chown(root / "mine", user.pw_uid, user.pw_gid)
        seen[fs] = outcomes(user, ("nodump_noatime", root / "roots"),
                            ("nodump_noatime", root / "mine"), ("immutable", root / "mine"),
                            ("append_only", root / "mine"), ("flags", root / "mine"),
                            ("ioctl_other", root / "mine"))
    assert seen["holefs"] == seen["tmpfs"] == \
        ["EPERM", "ok", "EPERM", "EPERM", "0xc0:ok", "ENOTTY"]
