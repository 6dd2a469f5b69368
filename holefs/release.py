"""Give a range of a file's memory back: the library behind `holefs punch`."""

import errno
import mmap
import os

from ._fallocate import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocate
from .mounttable import filesystem_type


class NotOnHolefs(OSError):
    """release() was asked to punch a file elsewhere, without any_fs=True."""

    def __init__(self):
        super().__init__(errno.EOPNOTSUPP, "not on a holefs mount")


def release(target, offset, length, *, zero=False, any_fs=False):
    """Free [offset, offset+length) of *target*, which then reads as zeros.

    *target* is an mmap.mmap (MAP_SHARED; uses madvise(MADV_REMOVE)), an
    open file descriptor, or a path (both use fallocate(PUNCH_HOLE|KEEP_SIZE)).
    In a mapping, *offset* (relative to the mapping) and *length* must be
    whole pages: the kernel would round the length up and free more than
    asked.  With zero=True the range is zeroed but stays allocated
    (FALLOC_FL_ZERO_RANGE), which needs a descriptor or a path, and may
    fail with ENOSPC where punching would not.

    A path that is not on holefs is refused with NotOnHolefs, as punching
    it would destroy data without giving memory back, unless *any_fs*.  A
    descriptor is taken as it is: the check reads the mount table, which
    would cost a buffer pool that releases through one fd as much as the
    punch itself.

    Errors are OSError: EACCES for a private mapping, EOPNOTSUPP where the
    file is not on holefs or the filesystem cannot punch.
    """
    if offset < 0 or length <= 0:
        raise ValueError("offset must be >= 0 and length > 0")
    mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE if zero else \
        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    if isinstance(target, mmap.mmap):
        if zero:
            raise TypeError("zeroing needs a file descriptor or a path, not a mapping")
        if offset % mmap.PAGESIZE or length % mmap.PAGESIZE:
            raise ValueError(f"in a mapping, offset and length must be multiples of "
                             f"the page size, {mmap.PAGESIZE}")
        target.madvise(mmap.MADV_REMOVE, offset, length)
        return
    if isinstance(target, int):
        fallocate(target, mode, offset, length)
        return
    fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if not any_fs and filesystem_type(fd) != "fuse.holefs":
            raise NotOnHolefs()
        fallocate(fd, mode, offset, length)
    finally:
        os.close(fd)
