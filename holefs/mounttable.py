"""What the kernel's mount table says about a path: for messages and checks."""

import os
import re


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
