"""Give a range of a file's memory back: the library behind `holefs punch`."""

import mmap
import os

from . import _shim
from ._shim import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE


def release(target, offset, length, *, zero=False):
    """Free [offset, offset+length) of *target*, which then reads as zeros.

    *target* is an mmap.mmap (MAP_SHARED; uses madvise(MADV_REMOVE), and
    *offset* is relative to the mapping and must be page-aligned), an open
    file descriptor, or a path (both use fallocate(PUNCH_HOLE|KEEP_SIZE)).
    With zero=True the range is zeroed but stays allocated
    (FALLOC_FL_ZERO_RANGE), which needs a descriptor or a path.

    Errors are the kernel's OSError: EACCES for a private mapping, EINVAL
    for a misaligned mapping range, EOPNOTSUPP where the filesystem cannot
    punch.
    """
    if offset < 0 or length <= 0:
        raise ValueError("offset must be >= 0 and length > 0")
    mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE if zero else \
        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    if isinstance(target, mmap.mmap):
        if zero:
            raise TypeError("zeroing needs a file descriptor or a path, not a mapping")
        target.madvise(mmap.MADV_REMOVE, offset, length)
    elif isinstance(target, int):
        _shim.fallocate(target, mode, offset, length)
    else:
        fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
        try:
            _shim.fallocate(fd, mode, offset, length)
        finally:
            os.close(fd)
