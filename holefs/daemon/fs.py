"""The FUSE operations: request handlers over the namespace and store.

pyfuse3 runs each of `Operations`' handlers as a trio task.  `FastPath`
holds the handlers that the C shim calls synchronously, without trio:
read, write, fallocate, lseek, lookup, getattr, statx, create, tmpfile
and unlink, chattr's flags, the dropping of set-ID bits, and holefs's own
ioctls (handed to `Remount`), under the contract written at the top of
holefs/daemon/_shim.c; the shim's worker threads call them beside trio's
thread.  So every handler holds the mount's lock (state.MountState) while
it runs, and every request is atomic.  Only remount awaits, in its own
task, between steps that each hold the lock.

Every handler reports a failure by raising OSError; `fuse_errors` turns it
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
from .. import acl, inodeflags, status
from .._fallocate import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
from ..credentials import CAP_FSETID, has_capability, in_group
from ..extents import PAGE
from ..logtext import quoted
from ..mounttable import mount_flags
from ..quota import OverQuota
from ..ratelimit import RateLimitedLog
from ..tiers import NoSpace
from . import _shim, bdi
from .remount import Remount
from .state import MountState

log = logging.getLogger(__name__)

# Nothing changes behind the kernel's back: every change to the tree or to
# the data arrives as a request, and the kernel invalidates its own caches
# for them.  So it may cache names and attributes for a long time.
CACHE_TIMEOUT = 300.0

SEEK_DATA = 3
SEEK_HOLE = 4
MAX_FILE_SIZE = (1 << 63) - 1
PUNCH_BATCH = 64 << 20  # bytes punched under the lock at a time: about 10 ms of it

STATUS_XATTR = STATUS_XATTR_NAME.encode()
SECURITY_CAPABILITY = b"security.capability"
# system.* holds only the POSIX ACLs, as on tmpfs.
XATTR_NAMESPACES = (b"user.", b"trusted.", b"security.", acl.ACCESS, acl.DEFAULT)


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
    wrapper.guarded = True
    return wrapper


def fuse_errors(handler):
    """A handler that runs whole under the mount's lock, guarded."""
    @functools.wraps(handler)
    async def locked(self, *args):
        with self.state.lock:
            return handler(self, *args)
    return guarded(locked)


def served(handler):
    """Run a fast-path handler under the lock, and log at debug level each
    error that it reports (a name handler's inode shows as its fh)."""
    @functools.wraps(handler)
    def wrapper(self, fh, *args):
        try:
            with self.lock:
                return handler(self, fh, *args)
        except OSError as e:
            shown = [len(a) if isinstance(a, (memoryview, _shim.Spliced)) else a for a in args]
            log.debug("%s fh=%d %s: %s", handler.__name__, fh, shown, e.strerror)
            raise
    return wrapper


def attributes(inode):
    """What stat shows of an inode: (ino, mode, nlink, uid, gid, rdev, size,
    blocks, atime_ns, mtime_ns, ctime_ns), as the shim and pyfuse3 take it."""
    if inode.is_dir:
        size = (len(inode.entries) + 2) * 20  # as tmpfs counts
    else:
        size = inode.size
    blocks = inode.extents.held_pages * (PAGE // 512) if inode.extents is not None else 0
    return (inode.id, inode.mode, inode.nlink, inode.uid, inode.gid, inode.rdev, size, blocks,
            inode.atime_ns, inode.mtime_ns, inode.ctime_ns)


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = True

    def __init__(self, state: MountState, mountpoint):
        super().__init__()
        self.state = state
        self.ns, self.store = state.ns, state.store  # never replaced
        self.mountpoint = mountpoint
        self.remount = Remount(state, mountpoint)
        self.fast = FastPath(state, control=self.remount.submit)

    @property
    def options(self):
        return self.state.options

    # Attributes ---------------------------------------------------------

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

    def _entry(self, inode):
        """Reply to a request that gives the kernel a new reference."""
        inode.lookups += 1
        return self._attr(inode)

    @fuse_errors
    def setattr(self, inode_id, attr, fields, fh, ctx):
        inode = self.ns[inode_id]
        # tmpfs lets an append-only file's times be set to now; pyfuse3
        # gives a time set to now as any other, so holefs refuses both.
        # But under the writeback cache the kernel sends the mtime and
        # ctime of the writes it cached, and only those, alone.
        if self.options.writeback_cache and fields.update_mtime and not (
                fields.update_atime or fields.update_size or fields.update_mode or
                fields.update_uid or fields.update_gid):
            inodeflags.check_times_of_writes(inode.flags)
        else:
            inodeflags.check_unchanged(inode.flags)
        if fields.update_uid or fields.update_gid:
            # First, as it may fail: the new owner's quota may have no room.
            self.ns.chown(inode, attr.st_uid if fields.update_uid else inode.uid,
                          attr.st_gid if fields.update_gid else inode.gid, ctx.pid)
        if fields.update_size:
            if attr.st_size <= inode.size:
                # As tmpfs does, this also drops space reserved past EOF.
                self.fast.truncate(inode, attr.st_size)
            else:
                self.fast.grow(inode, attr.st_size, "truncate", ctx.pid)
            inode.size = attr.st_size
            inode.touch()
        if fields.update_mode:
            inode.mode = stat.S_IFMT(inode.mode) | stat.S_IMODE(attr.st_mode)
            access = (inode.xattrs or {}).get(acl.ACCESS)
            if access is not None:
                # The same size, so the charge for it stays as it is.
                inode.xattrs[acl.ACCESS] = acl.build(acl.chmod(acl.parse(access), inode.mode))
        if fields.update_atime:
            inode.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            inode.mtime_ns = attr.st_mtime_ns
        inode.touch(modified=False)
        if fields.update_ctime:
            inode.ctime_ns = attr.st_ctime_ns
        return self._attr(inode)

    # Names --------------------------------------------------------------

    async def forget(self, inode_list):
        # forget gets no reply, so an error here is only logged.
        try:
            with self.state.lock:
                self._forget(inode_list)
        except Exception:
            log.exception("forget failed")

    def _forget(self, inode_list):
        for inode_id, count in inode_list:
            inode = self.ns.inodes.get(inode_id)
            if inode is not None:
                inode.lookups -= count
                self.fast.release_if_unused(inode)

    def _make(self, parent_id, name, mode, ctx, rdev=0, target=None):
        return self.fast.make(parent_id, name, mode, ctx.uid, ctx.gid, ctx.umask, ctx.pid,
                              rdev, target)

    @fuse_errors
    def mknod(self, parent_id, name, mode, rdev, ctx):
        return self._entry(self._make(parent_id, name, mode, ctx, rdev))

    @fuse_errors
    def mkdir(self, parent_id, name, mode, ctx):
        return self._entry(self._make(parent_id, name, stat.S_IFDIR | mode, ctx))

    @fuse_errors
    def symlink(self, parent_id, name, target, ctx):
        return self._entry(self._make(parent_id, name, stat.S_IFLNK | 0o777, ctx,
                                      target=target))

    @fuse_errors
    def readlink(self, inode_id, ctx):
        inode = self.ns[inode_id]
        if inode.target is None:
            raise OSError(errno.EINVAL, "not a symlink")
        return inode.target

    @fuse_errors
    def link(self, inode_id, new_parent_id, new_name, ctx):
        inode = self.ns[inode_id]
        self.ns.link(inode, self.ns[new_parent_id], new_name)
        return self._entry(inode)

    @fuse_errors
    def rmdir(self, parent_id, name, ctx):
        self.fast.release_if_unused(self.ns.rmdir(self.ns[parent_id], name))

    @fuse_errors
    def rename(self, old_parent_id, old_name, new_parent_id, new_name, flags, ctx):
        replaced = self.ns.rename(self.ns[old_parent_id], old_name,
                                  self.ns[new_parent_id], new_name, flags, (ctx.uid, ctx.gid),
                                  ctx.pid)
        if replaced is not None:
            self.fast.release_if_unused(replaced)

    # Directories --------------------------------------------------------

    @fuse_errors
    def opendir(self, inode_id, ctx):
        """The handle is the inode number: readdir reads the directory as
        it is then, from the kernel's cookie (holefs/directory.py)."""
        if not self.ns[inode_id].is_dir:
            raise OSError(errno.ENOTDIR, "not a directory")
        return inode_id

    @fuse_errors
    def readdir(self, handle, start, token):
        directory = self.ns[handle]
        for cookie, name, inode in ((1, b".", directory), (2, b"..", directory.parent)):
            if start < cookie and not pyfuse3.readdir_reply(token, name, self._attr(inode),
                                                            cookie):
                return
        for cookie, name, inode in directory.entries.since(start):
            if not pyfuse3.readdir_reply(token, name, self._attr(inode), cookie):
                return
            inode.lookups += 1  # readdirplus: the kernel now references it
        directory.note_access(self.ns.dir_atime)

    # File data ----------------------------------------------------------

    @fuse_errors
    def open(self, inode_id, flags, ctx):
        inode = self.ns[inode_id]
        inodeflags.check_open(inode.flags, flags)
        if flags & os.O_TRUNC and (inode.size or inode.extents):
            # INIT asks the kernel for atomic O_TRUNC: ours to do.  As on
            # tmpfs, it also drops space reserved past EOF of an empty file.
            self.fast.truncate(inode, 0)
            inode.size = 0
            inode.touch()
        # A read served from the page cache never reaches holefs: when the
        # next read is due to move atime, the kernel drops the cache, so
        # that the read comes here.
        reads = flags & os.O_ACCMODE != os.O_WRONLY
        due = reads and inode.access_moves_atime(self.ns.file_atime, time.time_ns())
        return pyfuse3.FileInfo(fh=inode_id, keep_cache=not due)

    # Extended attributes ------------------------------------------------

    @fuse_errors
    def setxattr(self, inode_id, name, value, ctx):
        if name == STATUS_XATTR:
            raise OSError(errno.EPERM, "read-only attribute")
        inode = self.ns[inode_id]
        inodeflags.check_unchanged(inode.flags)
        if not name.startswith(XATTR_NAMESPACES):
            # As tmpfs and ext4: a name in no namespace would fail later,
            # when the file is copied to them.
            raise OSError(errno.EOPNOTSUPP, "not in the user, trusted or security namespace")
        if name == acl.ACCESS:
            self._set_access_acl(inode, value, ctx)
            return
        if name == acl.DEFAULT:
            if not inode.is_dir:
                raise OSError(errno.EACCES, "a default ACL is for directories")
            acl.parse(value)
        self.ns.set_xattr(inode, name, value)

    def _set_access_acl(self, inode, value, ctx):
        """The mode follows the ACL, which is kept only where the mode
        cannot say it; the kernel checked that the caller owns the file."""
        keeps_setgid = in_group(inode.gid, ctx.gid, ctx.pid) or \
            has_capability(ctx.pid, CAP_FSETID)
        mode, kept = acl.set_access(value, inode.mode, keeps_setgid)
        if kept is not None:
            self.ns.set_xattr(inode, acl.ACCESS, kept)
        elif acl.ACCESS in (inode.xattrs or {}):
            self.ns.remove_xattr(inode, acl.ACCESS)
        inode.mode = mode
        inode.touch(modified=False)
        self.fast.invalidate(inode.id)

    @fuse_errors
    def getxattr(self, inode_id, name, ctx):
        inode = self.ns[inode_id]
        if name.startswith(STATUS_XATTR):
            return json.dumps(self.status(inode, name[len(STATUS_XATTR):])).encode()
        try:
            return inode.xattrs[name]
        except (KeyError, TypeError):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None

    @fuse_errors
    def listxattr(self, inode_id, ctx):
        return list(self.ns[inode_id].xattrs or ())

    @fuse_errors
    def removexattr(self, inode_id, name, ctx):
        inode = self.ns[inode_id]
        inodeflags.check_unchanged(inode.flags)
        self.ns.remove_xattr(inode, name)

    # The filesystem -----------------------------------------------------

    @fuse_errors
    def statfs(self, ctx):
        store = self.store
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = PAGE
        data.f_blocks = store.limit
        data.f_bfree = store.limit - store.used
        data.f_bavail = store.available()
        data.f_files = self.ns.max_inodes
        data.f_ffree = data.f_favail = self.ns.free_inodes
        data.f_namemax = 255
        return data

    def status(self, inode, part=b""):
        """What `holefs status` shows: the mount for the root, else the file
        (holefs/status.py)."""
        if inode is self.ns.root and not part:
            return self.usage()
        try:
            return status.of_file(self.store, inode, part)
        except LookupError:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None

    def usage(self):
        daemon = {
            "pid": os.getpid(),
            "libfuse": _shim.libfuse()["version"],
            "capabilities": _shim.negotiated(),
            "splicing": _shim.splicing(),
            "page_cache": {"writeback_cache": self.options.writeback_cache,
                           **(bdi.dirty_limit(self.state.bdi) if self.state.bdi else {})},
        }
        return status.of_mount(self.store, self.ns, self.options,
                               mount_flags(self.mountpoint), daemon)


def no_control(pending, inode, cmd, data, uid, pid):
    raise OSError(errno.ENOTTY, "no control requests here")


class FastPath:
    """The handlers that the C shim calls directly: see holefs/daemon/_shim.c.

    The data handlers get the file handle that open and create return,
    which holefs makes the inode number; none may await, and write must not
    keep the memoryview it gets.

    With *reserve* (-o reserve), a file that grows takes all its new space
    at once, so that a full filesystem fails the call that grew it, and not
    a later writeback that no program waits for.
    """

    def __init__(self, state: MountState, invalidate=_shim.invalidate_attributes,
                 control=None, reply_from_tiers=_shim.reply_from_tiers):
        self.ns, self.store, self.lock = state.ns, state.store, state.lock  # never replaced
        self.reserve = state.options.reserve  # fixed for the mount's life
        self.invalidate = invalidate  # of the kernel's cached attributes, by inode number
        self.control = control or no_control  # holefs's own ioctls: Remount.submit
        self.reply_from_tiers = reply_from_tiers  # of the READ being served
        self._refusals = RateLimitedLog(log)

    @served
    def lookup(self, parent_id, name):
        """The attributes of the entry, which the kernel now references, or
        None for a negative entry, which it may cache."""
        try:
            inode = self.ns.lookup(self.ns[parent_id], name)
        except FileNotFoundError:
            return None
        return self._referenced(inode)

    @served
    def getattr(self, inode_id):
        return attributes(self.ns[inode_id])

    @served
    def statx(self, inode_id):
        """The attributes, and the birth time, which only statx shows."""
        inode = self.ns[inode_id]
        return attributes(inode), inode.btime_ns

    @served
    def create(self, parent_id, name, mode, uid, gid, umask, pid):
        """Make a regular file; its inode number is the file handle."""
        return self._referenced(self.make(parent_id, name, mode, uid, gid, umask, pid))

    @served
    def tmpfile(self, parent_id, mode, uid, gid, umask, pid):
        """Make a regular file with no name (O_TMPFILE), for linkat to name."""
        return self._referenced(self.make(parent_id, None, mode, uid, gid, umask, pid))

    def make(self, parent_id, name, mode, uid, gid, umask, caller, rdev=0, target=None):
        """A new inode, with the ACLs that it inherits, or the umask applied:
        INIT asks the kernel to leave the umask to holefs (DONT_MASK), as
        the VFS does where a filesystem has ACLs.  The caller's pid is for
        its quota exemption."""
        parent = self.ns[parent_id]
        mode, access, default = acl.new_inode((parent.xattrs or {}).get(acl.DEFAULT), mode,
                                              umask)
        xattrs = {key: value for key, value in ((acl.ACCESS, access), (acl.DEFAULT, default))
                  if value is not None}
        return self.ns.create(parent, name, mode, uid, gid, rdev, target, xattrs, caller)

    @served
    def unlink(self, parent_id, name):
        self.release_if_unused(self.ns.unlink(self.ns[parent_id], name))

    @staticmethod
    def _referenced(inode):
        """The attributes of a reply that gives the kernel a new reference."""
        inode.lookups += 1
        return attributes(inode)

    def release_if_unused(self, inode):
        """Free an inode and its data once no name and no kernel reference
        is left."""
        if self.ns.drop_if_unused(inode) and inode.extents is not None:
            self._charged(inode, self.store.free_all)

    def _charged(self, inode, change, *args, **kwargs):
        """Make *change*, a Store method, to inode's map, and charge the
        pages it takes or frees to the quotas of the file's owner and group."""
        quotas = self.ns.quotas
        if not quotas.limits:
            return change(inode.extents, *args, **kwargs)
        before = inode.extents.held_pages
        try:
            return change(inode.extents, *args, **kwargs)
        finally:
            quotas.charge_pages(inode.uid, inode.gid, inode.extents.held_pages - before)

    def _quota_room(self, inode, length, caller):
        """The pages that a request of *length* bytes may add to inode's
        map, by its owners' quotas."""
        return self.ns.quotas.page_room(inode.uid, inode.gid, length // PAGE + 2, caller)

    def truncate(self, inode, size):
        self._charged(inode, self.store.truncate, size)

    def grow(self, inode, end, how, caller):
        """Under reserve, take the space from EOF to *end* now, or refuse."""
        if self.reserve and end > inode.size:
            length = end - inode.size
            try:
                self._charged(inode, self.store.reserve, inode.size, length,
                              quota=self._quota_room(inode, length, caller))
            except OSError as e:
                self.refused(how, inode, inode.size, end - inode.size, e)
                raise

    def refused(self, how, inode, offset, length, error):
        """Log a request, or the part of one, that found no room."""
        path = self.ns.path_of(inode)
        why = getattr(error, "why", None)
        self._refusals.warning(
            "%s refused: inode %d%s, %d bytes at offset %d: %s%s%s",
            how, inode.id, "" if path is None else f" ({quoted(path)})",
            length, offset, error.strerror, f" ({why})" if why else "",
            "; the program learns of it only if it checks msync, fsync or close"
            if how == "writeback" else "")

    @served
    def read(self, fh, offset, length, splice=False):
        """The bytes; or, with *splice*, None once the reply has gone out
        from the tier files themselves."""
        inode = self.ns[fh]
        length = min(length, inode.size - offset)
        inode.note_access(self.ns.file_atime)
        if length <= 0:
            return b""
        if splice:
            # Under the lock, so that no slot of the reply is reused before
            # the kernel holds its pages (READ REPLIES in holefs/daemon/_shim.c).
            self.reply_from_tiers(self.store.segments(inode.extents, offset, length))
            return None
        return self.store.read(inode.extents, offset, length)

    @served
    def write(self, fh, offset, data, writeback=False, pid=0):
        inode = self.ns[fh]
        if inode.flags:
            if isinstance(data, _shim.Spliced):
                data = bytes(data)  # check_write may compare it
            inodeflags.check_write(inode.flags, offset, inode.size, lambda: writeback and
                                   self._holds(inode, offset, data[:inode.size - offset]))
        end = offset + len(data)
        if end > MAX_FILE_SIZE:
            raise OSError(errno.EFBIG, "file too large")
        if not writeback:
            written = self._store(inode, offset, data, writeback, pid)
            inode.size = max(inode.size, offset + written)
            inode.touch()
            return written
        held = inode.extents.held_pages
        try:
            return self._store(inode, offset, data, writeback, pid)
        finally:
            # The kernel moved i_size to *end* when it took the write, and
            # keeps it: the size stays the one it shows, and what did not
            # fit reads as zeros.
            inode.size = max(inode.size, end)
            inode.touch()
            if inode.extents.held_pages != held:
                # No write(2) of the program's waits for a writeback, so the
                # kernel keeps the attributes it had: tell it that st_blocks
                # moved.
                self.invalidate(inode.id)

    def _store(self, inode, offset, data, writeback, pid):
        """Store what fits of a write; refusals are logged, and a short
        writeback is an error."""
        how = "writeback" if writeback else "write"
        try:
            self.grow(inode, offset + len(data), how, pid)
        except OSError:
            if writeback and offset < inode.size:
                # What lies within the reserved size has its pages: keep it.
                kept = data[:inode.size - offset]
                self._charged(inode, self.store.write, offset, kept,
                              quota=self._quota_room(inode, len(kept), pid))
            raise
        quota = self._quota_room(inode, len(data), pid)
        held = inode.extents.held_pages
        try:
            written = self._charged(inode, self.store.write, offset, data, quota=quota)
        except OSError as e:
            self.refused(how, inode, offset, len(data), e)
            raise
        if written < len(data):
            fit = f"only the first {written} bytes fit"
            short = OverQuota(f"{quota.why}: {fit}") \
                if inode.extents.held_pages - held >= quota.pages else NoSpace(fit)
            self.refused(how, inode, offset + written, len(data) - written, short)
            if writeback:
                # The kernel takes a short count from writeback as success:
                # only an error reaches msync, fsync and close.
                raise short
        return written

    def _holds(self, inode, offset, data):
        """Whether the file holds *data* at *offset* already."""
        return self.store.read(inode.extents, offset, len(data)) == data

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
        inode = self.ns[fh]
        if inode.extents is None:
            raise OSError(errno.ENODEV, "not a regular file")
        end = offset + length
        if offset < 0 or length <= 0:
            raise OSError(errno.EINVAL, "negative offset or empty range")
        if end > MAX_FILE_SIZE:
            raise OSError(errno.EFBIG, "file too large")
        inodeflags.check_fallocate(inode.flags, keeps_data=mode & ~FALLOC_FL_KEEP_SIZE == 0)
        if not mode & FALLOC_FL_KEEP_SIZE:
            self.grow(inode, end, "fallocate", pid)
        if mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE:
            self._charged(inode, self.store.punch, offset, length)
        elif mode & ~FALLOC_FL_KEEP_SIZE in (0, FALLOC_FL_ZERO_RANGE):
            try:
                self._charged(inode, self.store.reserve, offset, length,
                              zero=bool(mode & FALLOC_FL_ZERO_RANGE),
                              quota=self._quota_room(inode, length, pid))
            except OSError as e:
                self.refused("fallocate", inode, offset, length, e)
                raise
        else:
            raise OSError(errno.EOPNOTSUPP, "unsupported fallocate mode")
        if not mode & FALLOC_FL_KEEP_SIZE and end > inode.size:
            inode.size = end
        inode.touch()

    @served
    def drop_setid(self, inode_id, uid, gid, pid, request):
        """A *request* ("write", "setattr", "open" or "fallocate") by the
        caller (*uid*, *gid*, process *pid*) that the VFS would clear
        set-ID bits for: clear them, and tell the kernel.

        That is set-user-ID and security.capability on anything but a
        directory, and set-group-ID if the file is group-executable or the
        caller is not in its group and lacks CAP_FSETID.  The kernel marks
        a write or truncate only for a caller without CAP_FSETID; for a
        fallocate, which it does not mark, holefs asks /proc, as tmpfs
        would."""
        inode = self.ns[inode_id]
        mode = inode.mode
        capability = bool(inode.xattrs) and SECURITY_CAPABILITY in inode.xattrs
        if stat.S_ISDIR(mode) or not (mode & (stat.S_ISUID | stat.S_ISGID) or capability):
            return
        if not inodeflags.may_drop_setid(inode.flags, request):
            return
        if request == "fallocate" and has_capability(pid, CAP_FSETID):
            return
        dropped = mode & ~stat.S_ISUID
        if mode & stat.S_IXGRP or (mode & stat.S_ISGID and not in_group(inode.gid, gid, pid)
                                   and not has_capability(pid, CAP_FSETID)):
            dropped &= ~stat.S_ISGID
        if capability:
            self.ns.remove_xattr(inode, SECURITY_CAPABILITY)
        if dropped != mode:
            inode.mode = dropped
            inode.touch(modified=False)
            # Under handle_killpriv_v2 the kernel keeps the mode it cached
            # after a write, and exec would honour the bits: see the rule in
            # holefs/daemon/_shim.c.
            self.invalidate(inode.id)

    @served
    def get_flags(self, inode_id, as_xflags):
        """chattr's flags of the inode, as FS_IOC_GETFLAGS or (*as_xflags*)
        FS_IOC_FSGETXATTR gives them."""
        flags = self.ns[inode_id].flags
        return inodeflags.to_xflags(flags) if as_xflags else flags

    @served
    def set_flags(self, inode_id, flags, as_xflags):
        """Set chattr's flags.  The kernel checked the caller; the new ctime
        is pushed to it (the rule in _shim.c)."""
        inode = self.ns[inode_id]
        inode.flags = inodeflags.from_xflags(flags) if as_xflags else inodeflags.settable(flags)
        inode.touch(modified=False)
        self.invalidate(inode.id)

    @served
    def lseek(self, fh, offset, whence):
        inode = self.ns[fh]
        if inode.extents is None or whence not in (SEEK_DATA, SEEK_HOLE):
            raise OSError(errno.EINVAL, "only SEEK_DATA and SEEK_HOLE come here")
        if not 0 <= offset < inode.size:
            raise OSError(errno.ENXIO, "offset at or past EOF")
        if whence == SEEK_DATA:
            found = inode.extents.seek_data(offset)
            if found is None or found >= inode.size:
                raise OSError(errno.ENXIO, "no data past offset")
            return found
        return min(inode.extents.seek_hole(offset), inode.size)
