"""chattr's inode flags (FS_IOC_GETFLAGS and SETFLAGS): the four that
tmpfs keeps, and the VFS's rules for append-only and immutable inodes.

The kernel never learns a FUSE inode's flags (its i_flags stay 0), so none
of its own checks of them run: holefs makes each one where the request
arrives, in the VFS's order.  The kernel has checked, before SETFLAGS, that
the caller owns the file and, for these two, has CAP_LINUX_IMMUTABLE.
Each check raises OSError with the errno that the VFS gives.
"""

import errno
import os

from .errors import fail

IMMUTABLE = 0x10  # FS_IMMUTABLE_FL: no change at all, not even a new name
APPEND = 0x20     # FS_APPEND_FL: data may only be appended, and nothing else changes
NODUMP = 0x40     # FS_NODUMP_FL: kept for dump(8)
NOATIME = 0x80    # FS_NOATIME_FL: reads leave atime alone
SETTABLE = IMMUTABLE | APPEND | NODUMP | NOATIME  # tmpfs's SHMEM_FL_USER_MODIFIABLE
INHERITED = NODUMP | NOATIME                      # tmpfs's SHMEM_FL_INHERITED
FROZEN = IMMUTABLE | APPEND
# FS_IOC_FSGETXATTR's names for them (FS_XFLAG_*).
XFLAGS = {IMMUTABLE: 0x08, APPEND: 0x10, NOATIME: 0x40, NODUMP: 0x80}


def settable(flags):
    """*flags* for SETFLAGS, or EOPNOTSUPP for any that tmpfs does not keep."""
    if flags & ~SETTABLE:
        raise fail(errno.EOPNOTSUPP)
    return flags


def to_xflags(flags):
    return sum(xflag for flag, xflag in XFLAGS.items() if flags & flag)


def from_xflags(xflags):
    """The flags that *xflags* stand for, or EOPNOTSUPP for any other."""
    flags = sum(flag for flag, xflag in XFLAGS.items() if xflags & xflag)
    if xflags != to_xflags(flags):
        raise fail(errno.EOPNOTSUPP)
    return flags


def inherited(parent_flags):
    """The flags of a new inode in a directory with *parent_flags*."""
    return parent_flags & INHERITED


def check_unchanged(flags):
    """For a change of mode, owner, times, size or xattrs, and for the
    removal, rename or new name of the inode itself."""
    if flags & FROZEN:
        raise fail(errno.EPERM)


def check_addition(dir_flags):
    """For a new name in a directory: append-only directories take them."""
    if dir_flags & IMMUTABLE:
        raise fail(errno.EPERM)


def check_open(flags, open_flags):
    """An open for writing: none of an immutable file; of an append-only
    one, only with O_APPEND, and never O_TRUNC."""
    writing = open_flags & os.O_ACCMODE != os.O_RDONLY
    if flags & IMMUTABLE and (writing or open_flags & os.O_TRUNC):
        raise fail(errno.EPERM)
    if flags & APPEND and (open_flags & os.O_TRUNC or writing and not open_flags & os.O_APPEND):
        raise fail(errno.EPERM)


def check_write(flags, offset, size, rewrites_nothing=lambda: False):
    """A write at *offset* to a file of *size*: only at EOF when append-only
    (fcntl can drop O_APPEND, since the VFS does not see the flag), and
    none once immutable, even through a descriptor opened before.  The
    page cache writes back whole pages, so an append may come with bytes
    before EOF: *rewrites_nothing* says whether they are the file's own."""
    if flags & IMMUTABLE or flags & APPEND and offset != size and not (
            offset < size and rewrites_nothing()):
        raise fail(errno.EPERM)


def check_times_of_writes(flags):
    """The kernel's mtime and ctime for writes that it cached: as for a
    write, none once immutable."""
    if flags & IMMUTABLE:
        raise fail(errno.EPERM)


def check_fallocate(flags, keeps_data):
    """An fallocate: of an append-only file, only one that changes no data
    (allocation, with or without KEEP_SIZE)."""
    if flags & IMMUTABLE or flags & APPEND and not keeps_data:
        raise fail(errno.EPERM)


def may_drop_setid(flags, request):
    """Whether a *request* ("write", "setattr", "open" or "fallocate") that
    the kernel marks for clearing set-ID bits can succeed: only a write to
    an append-only file does.  The bits are cleared before the request is
    served, so a refused one must not clear them."""
    if flags & IMMUTABLE:
        return False
    return not flags & APPEND or request == "write"
