"""The kernel's mount table: what it says about a path, who keeps a mount
busy, changing a mount's flags, and taking a mount out of it."""

import ctypes
import errno
import os
import re
import signal
import subprocess

MS_REMOUNT = 32


def _unescape(field):
    """The kernel writes a space in a mount table path as \\040, and so on."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def filesystem_type(path_or_fd):
    """The type, as mountinfo names it, of the filesystem that holds a path
    or an open file ("fuse.holefs", "tmpfs", ...), or None."""
    dev = os.stat(path_or_fd).st_dev
    device = f"{os.major(dev)}:{os.minor(dev)}"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[2] == device:
                return fields[fields.index("-") + 1]
    return None


def mounted_on(path):
    """The type of the filesystem mounted on *path* (the topmost), or None.

    Unlike filesystem_type(), it needs no stat of *path*, which fails on a
    FUSE mount whose daemon is gone.
    """
    found = None
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if _unescape(fields[1]) == path:
                found = fields[2]
    return found


def _mountinfo(path):
    """The fields of the topmost mountinfo line for *path*, or None.  Reads
    no path, so a daemon may ask about its own mount."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if _unescape(fields[4]) == path:
                found = fields
    return found


def options_in_force(path):
    """The kernel's options for the mount on *path*, per mount (rw, nosuid,
    relatime) and per filesystem (user_id=0, allow_other): what mount(8)
    repeats ahead of the new options on a remount."""
    fields = _mountinfo(path)
    if fields is None:
        return set()
    return set(fields[5].split(",")) | set(fields[fields.index("-") + 3].split(","))


def mount_flags(path):
    """The flags that the kernel applied to the mount on *path*, in its
    order (rw, nosuid, nodev, relatime, ...), and allow_other if given;
    an ordinary user's FUSE mount is nosuid,nodev whatever it asked."""
    fields = _mountinfo(path)
    if fields is None:
        return []
    per_filesystem = fields[fields.index("-") + 3].split(",")
    return fields[5].split(",") + [flag for flag in per_filesystem if flag == "allow_other"]


def holders(path):
    """The processes that keep the mount on *path* busy, as {pid: (command,
    count)}, counting their open files, mapped files and working directory
    there.  Missing: those that the caller may not ptrace, such as other
    users' without CAP_SYS_PTRACE."""
    fields = _mountinfo(path)
    if fields is None:
        return {}
    mount_id = fields[0]
    major, minor = map(int, fields[2].split(":"))
    device = f"{major:02x}:{minor:02x}"  # as /proc/PID/maps writes it
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            count = _open_in(pid, mount_id) + _mapped_in(pid, device) \
                + (cwd == path or cwd.startswith(path + "/"))
            if count:
                with open(f"/proc/{pid}/comm") as f:
                    found[int(pid)] = (f.read().strip(), count)
        except OSError:
            continue  # gone, or not ours to look at
    return found


def _open_in(pid, mount_id):
    """How many of process *pid*'s descriptors are open on mount *mount_id*;
    fdinfo tells without a stat, which could wait on the mount's daemon."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                count += f"mnt_id:\t{mount_id}\n" in f
        except OSError:
            continue  # closed meanwhile
    return count


def _mapped_in(pid, device):
    """How many files of the filesystem on *device* process *pid* maps."""
    with open(f"/proc/{pid}/maps") as f:
        return len({line.split()[4] for line in f if line.split()[3] == device})


def unmount(path, lazy=False):
    """Unmount *path* through fusermount3, as umount(8) would (or detach
    it, with *lazy*); None if done, else the reason, as fusermount3 gives
    it ("Device or resource busy")."""
    result = subprocess.run(["fusermount3", "-u", *(["-z"] if lazy else []), path],
                            capture_output=True, text=True)
    if result.returncode == 0:
        return None
    if result.returncode < 0:
        return f"fusermount3 was killed by {signal.Signals(-result.returncode).name}"
    return result.stderr.strip().rpartition(": ")[2] or "fusermount3 failed"


def mount8_last_atime_wins():
    """Whether this machine's mount(8) lets a remount's last atime word win
    (options.kernel_flags): libmount does when it mounts by file
    descriptor, from util-linux 2.39 on."""
    try:
        libmount = ctypes.CDLL("libmount.so.1")
    except OSError:
        return False
    features = ctypes.POINTER(ctypes.c_char_p)()
    count = libmount.mnt_get_library_features(ctypes.byref(features))
    return b"fd-based-mount" in (features[i] for i in range(max(count, 0)))


def set_flags(path, flags):
    """Give the mount on *path* the mount(2) *flags* (options.kernel_flags),
    as mount(8) does for `-o remount`; the kernel syncs before it makes the
    filesystem read-only, and refuses with EBUSY while a file is open for
    writing."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(None, os.fsencode(path), None, ctypes.c_ulong(MS_REMOUNT | flags), None):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def is_stale(path):
    """True if *path* is a FUSE mount whose daemon is gone.

    statfs always reaches the daemon, where stat may be answered from the
    kernel's attribute cache.
    """
    try:
        os.statvfs(path)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False
