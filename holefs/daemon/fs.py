"""The FUSE adapters over a mount's state (holefs/state.py).

pyfuse3 runs each of `Operations`' handlers as a trio task.  `FastPath`
holds the handlers that the C shim calls synchronously, without trio,
under the contract written at the top of holefs/daemon/_shim.c; the
shim's worker threads call them beside trio's thread.  Each adapter takes
the mount's lock, calls one MountState method, and turns what it returns
into the reply: so every request is atomic.  Only remount awaits, in its
own task, between steps that each hold the lock; and a punch of more than
PUNCH_BATCH lets other requests in between its batches.

Every handler reports a failure by raising OSError; `guarded` turns it
into pyfuse3's FUSEError, and the shim does the same in C.

flush, fsync and fsyncdir are left to pyfuse3, which answers ENOSYS:
there is nothing to flush, and the kernel then stops asking.  The shim
answers release.
"""

import errno
import functools
import json
import logging
import os
import stat
import time

import pyfuse3

from .. import STATUS_XATTR as STATUS_XATTR_NAME
from .. import status
from .._fallocate import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from ..extents import PAGE
from ..mounttable import mount_flags
from ..state import MAX_FILE_SIZE, MountState, attributes
from . import _shim, bdi
from .handover import Handover
from .remount import Remount

log = logging.getLogger(__name__)

# Nothing changes behind the kernel's back: every change to the tree or to
# the data arrives as a request, and the kernel invalidates its own caches
# for them.  So it may cache names and attributes for a long time.
CACHE_TIMEOUT = 300.0
PUNCH_BATCH = 64 << 20  # bytes punched under the lock at a time: about 10 ms of it

STATUS_XATTR = STATUS_XATTR_NAME.encode()


def guarded(handler):
    """Turn what an async handler raises into a reply.  pyfuse3 ends its
    main loop, and with it the mount, on any exception but FUSEError: so
    OSError becomes its errno, and a bug becomes EIO with its traceback in
    the log.  Every handler that pyfuse3 calls goes through here."""
    @functools.wraps(handler)
    async def wrapper(self, *args):
        try:
            return await handler(self, *args)
        except pyfuse3.FUSEError:
            raise
        except OSError as e:
            log.debug("%s: %s", handler.__name__, e.strerror)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
    return wrapper


def locked(handler):
    """A pyfuse3 handler that runs whole under the mount's lock, guarded."""
    @functools.wraps(handler)
    async def under_lock(self, *args):
        with self.state.lock:
            return handler(self, *args)
    return guarded(under_lock)


def served(handler):
    """Run a fast-path handler under the lock, and log at debug level each
    error that it reports (a name handler's inode shows as its fh)."""
    @functools.wraps(handler)
    def wrapper(self, fh, *args):
        try:
            with self.state.lock:
                return handler(self, fh, *args)
        except OSError as e:
            shown = [len(a) if isinstance(a, (memoryview, _shim.Spliced)) else a for a in args]
            log.debug("%s fh=%d %s: %s", handler.__name__, fh, shown, e.strerror)
            raise
    return wrapper


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = True

    def __init__(self, state: MountState, mountpoint):
        super().__init__()
        self.state = state
        self.mountpoint = mountpoint
        self.remount = Remount(state, mountpoint)
        self.handover = Handover(state, self.remount)
        self.fast = FastPath(state, control=self.remount.submit)

    def _attr(self, inode):
        attr = pyfuse3.EntryAttributes()
        (attr.st_ino, attr.st_mode, attr.st_nlink, attr.st_uid, attr.st_gid, attr.st_rdev,
         attr.st_size, attr.st_blocks, attr.st_atime_ns, attr.st_mtime_ns,
         attr.st_ctime_ns) = attributes(inode)
        attr.generation = 0
        attr.entry_timeout = CACHE_TIMEOUT
        attr.attr_timeout = CACHE_TIMEOUT
        attr.st_blksize = PAGE
        return attr

    @locked
    def setattr(self, inode_id, attr, fields, fh, ctx):
        given = {name: getattr(attr, field) for name, field, update in (
            ("uid", "st_uid", fields.update_uid), ("gid", "st_gid", fields.update_gid),
            ("size", "st_size", fields.update_size), ("mode", "st_mode", fields.update_mode),
            ("atime_ns", "st_atime_ns", fields.update_atime),
            ("mtime_ns", "st_mtime_ns", fields.update_mtime),
            ("ctime_ns", "st_ctime_ns", fields.update_ctime)) if update}
        return self._attr(self.state.setattr(inode_id, ctx.pid, **given))

    # Names --------------------------------------------------------------

    async def forget(self, inode_list):
        # forget gets no reply, so an error here is only logged.
        try:
            with self.state.lock:
                self.state.forget(inode_list)
        except Exception:
            log.exception("forget failed")

    def _make(self, parent_id, name, mode, ctx, rdev=0, target=None):
        return self._attr(self.state.make(parent_id, name, mode, ctx.uid, ctx.gid, ctx.umask,
                                          ctx.pid, rdev, target))

    @locked
    def mknod(self, parent_id, name, mode, rdev, ctx):
        return self._make(parent_id, name, mode, ctx, rdev)

    @locked
    def mkdir(self, parent_id, name, mode, ctx):
        return self._make(parent_id, name, stat.S_IFDIR | mode, ctx)

    @locked
    def symlink(self, parent_id, name, target, ctx):
        return self._make(parent_id, name, stat.S_IFLNK | 0o777, ctx, target=target)

    @locked
    def readlink(self, inode_id, ctx):
        return self.state.readlink(inode_id)

    @locked
    def link(self, inode_id, new_parent_id, new_name, ctx):
        return self._attr(self.state.link(inode_id, new_parent_id, new_name))

    @locked
    def rmdir(self, parent_id, name, ctx):
        self.state.rmdir(parent_id, name)

    @locked
    def rename(self, old_parent_id, old_name, new_parent_id, new_name, flags, ctx):
        self.state.rename(old_parent_id, old_name, new_parent_id, new_name, flags,
                          ctx.uid, ctx.gid, ctx.pid)

    # Directories --------------------------------------------------------

    @locked
    def opendir(self, inode_id, ctx):
        return self.state.opendir(inode_id)

    @locked
    def readdir(self, handle, start, token):
        self.state.readdir(handle, start, lambda name, inode, cookie:
                           pyfuse3.readdir_reply(token, name, self._attr(inode), cookie))

    # File data ----------------------------------------------------------

    @locked
    def open(self, inode_id, flags, ctx):
        return pyfuse3.FileInfo(fh=inode_id, keep_cache=self.state.open(inode_id, flags))

    # Extended attributes ------------------------------------------------

    @locked
    def setxattr(self, inode_id, name, value, ctx):
        if name == STATUS_XATTR:
            raise OSError(errno.EPERM, "read-only attribute")
        self.state.set_xattr(inode_id, name, value, ctx.gid, ctx.pid)

    @locked
    def getxattr(self, inode_id, name, ctx):
        if name.startswith(STATUS_XATTR):
            return json.dumps(self.status(inode_id, name[len(STATUS_XATTR):])).encode()
        return self.state.get_xattr(inode_id, name)

    @locked
    def listxattr(self, inode_id, ctx):
        return self.state.list_xattrs(inode_id)

    @locked
    def removexattr(self, inode_id, name, ctx):
        self.state.remove_xattr(inode_id, name)

    # The filesystem -----------------------------------------------------

    @locked
    def statfs(self, ctx):
        store, ns = self.state.store, self.state.ns
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = PAGE
        data.f_blocks = store.limit
        data.f_bfree = store.limit - store.used
        data.f_bavail = store.available()
        data.f_files = ns.max_inodes
        data.f_ffree = data.f_favail = ns.free_inodes
        data.f_namemax = 255
        return data

    def status(self, inode_id, part=b""):
        """What `holefs status` shows: the mount for the root, else the file
        (holefs/status.py)."""
        if inode_id == pyfuse3.ROOT_INODE and not part:
            return self.usage()
        try:
            return status.of_file(self.state.store, self.state.ns[inode_id], part)
        except LookupError:
            raise OSError(errno.ENODATA, "no such status part") from None

    def usage(self):
        state = self.state
        daemon = {
            "pid": os.getpid(),
            "libfuse": _shim.libfuse()["version"],
            "capabilities": _shim.negotiated(),
            "splicing": _shim.splicing(),
            "page_cache": {"writeback_cache": state.options.writeback_cache,
                           **(bdi.dirty_limit(state.bdi) if state.bdi else {})},
        }
        return status.of_mount(state.store, state.ns, state.options,
                               mount_flags(self.mountpoint), daemon)


def no_control(pending, inode, cmd, data, uid, pid):
    raise OSError(errno.ENOTTY, "no control requests here")


class FastPath:
    """The handlers that the C shim calls directly: see holefs/daemon/_shim.c.

    The data handlers get the file handle that open and create return,
    which holefs makes the inode number; none may await, and write must not
    keep the memoryview it gets.
    """

    def __init__(self, state: MountState, control=None,
                 reply_from_tiers=_shim.reply_from_tiers):
        self.state = state
        self.control = control or no_control  # holefs's own ioctls: Remount.submit
        self.reply_from_tiers = reply_from_tiers  # of the READ being served

    @served
    def lookup(self, parent_id, name):
        """The entry's attributes, or None for a negative entry."""
        inode = self.state.lookup(parent_id, name)
        return None if inode is None else attributes(inode)

    @served
    def getattr(self, inode_id):
        return attributes(self.state.ns[inode_id])

    @served
    def statx(self, inode_id):
        """The attributes, and the birth time, which only statx shows."""
        inode = self.state.ns[inode_id]
        return attributes(inode), inode.btime_ns

    @served
    def create(self, parent_id, name, mode, uid, gid, umask, pid):
        """Make a regular file; its inode number is the file handle."""
        return attributes(self.state.make(parent_id, name, mode, uid, gid, umask, pid))

    @served
    def tmpfile(self, parent_id, mode, uid, gid, umask, pid):
        """Make a regular file with no name (O_TMPFILE), for linkat to name."""
        return attributes(self.state.make(parent_id, None, mode, uid, gid, umask, pid))

    @served
    def unlink(self, parent_id, name):
        self.state.unlink(parent_id, name)

    @served
    def read(self, fh, offset, length, splice=False):
        """The bytes; or, with *splice*, None once the reply has gone out
        from the tier files themselves."""
        if not splice:
            return self.state.read(fh, offset, length)
        segments = self.state.read_segments(fh, offset, length)
        if not segments:
            return b""
        # Under the lock, so that no slot of the reply is reused before
        # the kernel holds its pages (READ REPLIES in holefs/daemon/_shim.c).
        self.reply_from_tiers(segments)
        return None

    @served
    def write(self, fh, offset, data, writeback=False, pid=0):
        return self.state.write(fh, offset, data, writeback, pid)

    def fallocate(self, fh, mode, offset, length, pid=0):
        """fallocate(2); a punch of more than PUNCH_BATCH frees a batch at a
        time under the lock, and lets other requests in between, as s3ql
        bounds its long operations."""
        if mode != FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE or length <= PUNCH_BATCH or \
                offset < 0 or offset + length > MAX_FILE_SIZE:
            return self._fallocate(fh, mode, offset, length, pid)
        for start in range(offset, offset + length, PUNCH_BATCH):
            self._fallocate(fh, mode, start, min(PUNCH_BATCH, offset + length - start), pid)
            time.sleep(0)  # the lock is free: let a waiting thread take it

    @served
    def _fallocate(self, fh, mode, offset, length, pid):
        self.state.fallocate(fh, mode, offset, length, pid)

    @served
    def drop_setid(self, inode_id, uid, gid, pid, request):
        self.state.drop_setid(inode_id, uid, gid, pid, request)

    @served
    def get_flags(self, inode_id, as_xflags):
        return self.state.get_flags(inode_id, as_xflags)

    @served
    def set_flags(self, inode_id, flags, as_xflags):
        self.state.set_flags(inode_id, flags, as_xflags)

    @served
    def lseek(self, fh, offset, whence):
        return self.state.lseek(fh, offset, whence)
