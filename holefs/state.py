"""One mount's served state, its one lock, and what requests do to it
(passthrough_hp's struct Fs is the model).

Nothing here knows about FUSE: the daemon's adapters (holefs/daemon/fs.py
for pyfuse3's handlers and the shim's, daemon/remount.py) take the lock,
call a method, and turn the result or the OSError into a reply.  So each
request's rules are tested without a mount (mount_tests/unit/test_state.py).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from . import acl, inodeflags
from ._fallocate import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
from .credentials import CAP_FSETID, has_capability, in_group
from .extents import PAGE, ExtentMap
from .logtext import quoted
from .namespace import Inode, Namespace
from .options import MountOptions
from .quota import OverQuota, Room
from .ratelimit import RateLimitedLog
from .tiers import NoSpace, Store, Tier

log = logging.getLogger("holefs")

SEEK_DATA = 3
SEEK_HOLE = 4
MAX_FILE_SIZE = (1 << 63) - 1
SECURITY_CAPABILITY = b"security.capability"
# system.* holds only the POSIX ACLs, as on tmpfs.
XATTR_NAMESPACES = (b"user.", b"trusted.", b"security.", acl.ACCESS, acl.DEFAULT)

Attributes: TypeAlias = tuple[int, int, int, int, int, int, int, int, int, int, int]


def attributes(inode: Inode) -> Attributes:
    """What stat shows of an inode: (ino, mode, nlink, uid, gid, rdev, size,
    blocks, atime_ns, mtime_ns, ctime_ns), as the shim and pyfuse3 take it."""
    if inode.entries is not None:
        size = (len(inode.entries) + 2) * 20  # as tmpfs counts
    else:
        size = inode.size
    blocks = inode.extents.held_pages * (PAGE // 512) if inode.extents is not None else 0
    return (inode.id, inode.mode, inode.nlink, inode.uid, inode.gid, inode.rdev, size, blocks,
            inode.atime_ns, inode.mtime_ns, inode.ctime_ns)


def _map(inode: Inode) -> ExtentMap:
    """A regular file's map: the kernel sends data requests for no other."""
    if inode.extents is None:
        raise OSError(errno.EINVAL, "not a regular file")
    return inode.extents


def _no_kernel(inode_id: int) -> None:
    """Before the mount there is no kernel cache to tell."""


class MountState:
    """The state that a mount's requests read and change.

    Fields, all guarded by *lock* unless said otherwise:
      ns       the namespace: inodes, names, xattrs, quotas, lookup counts.
      store    the pages: the RAM and spill tiers and the slots of each
               file's map.  Invariant: store.used <= store.limit, and each
               file's pages are charged to its owners' quotas.
      options  the options in force, replaced whole by remount() and never
               changed in place.  Invariant: store's limits and ns's limits
               are the ones it gives.
      bdi      the mount's backing device in sysfs (daemon/bdi.py), set
               once after INIT and read without the lock.
      invalidate  tells the kernel that an inode's cached attributes are
               stale: a change that holefs makes on its own is not real
               until then.  Set once at mount (the shim's); no lock.

    The lock rule: take the GIL first, then *lock*; hold it for one request,
    or one batch of a long one (a punch of more than PUNCH_BATCH, moving RAM
    to spill after ram= shrank), and never across an await.  A spliced READ
    reply goes out under it, because a slot must not be reused before the
    kernel holds its pages (READ REPLIES in _shim.c); every other reply
    goes out after it is let go.  Every method below expects the lock held.

    With options.reserve (fixed for the mount's life), a file that grows
    takes all its new space at once, so that a full filesystem fails the
    call that grew it, and not a later writeback that no program waits for.
    """

    def __init__(self, ns: Namespace, store: Store, options: MountOptions,
                 invalidate: Callable[[int], None] = _no_kernel) -> None:
        self.ns = ns
        self.store = store
        self.options = options
        self.bdi: str | None = None
        self.invalidate = invalidate
        self.lock = threading.Lock()
        self._refusals = RateLimitedLog(log)

    def remount(self, new: MountOptions, spill: Tier | None, flags: Iterable[str]) -> None:
        """Put *new* options in force, with *spill* if they turn spill on,
        whatever changed since they were planned without the lock:
        ValueError, and nothing changed, if what is in use now exceeds
        them.  *flags* are the mount's flags that the kernel applied."""
        charged = self.ns.charged_inodes
        if new.nr_inodes and new.nr_inodes < charged:
            raise ValueError(f"nr_inodes={new.nr_inodes} is less than the {charged} "
                             "inodes in use, xattrs counted")
        self.store.resize(new.size // PAGE, new.ram // PAGE, spill)
        self.ns.max_inodes = new.nr_inodes
        self.ns.set_quota_limits(new.quotas)
        self.ns.follow_mount_flags(flags)
        self.options = new

    # Names --------------------------------------------------------------

    @staticmethod
    def referenced(inode: Inode) -> Inode:
        """*inode*, in a reply that gives the kernel a new reference."""
        inode.lookups += 1
        return inode

    def lookup(self, parent_id: int, name: bytes) -> Inode | None:
        """The entry, which the kernel now references, or None for a
        negative entry, which it may cache."""
        try:
            inode = self.ns.lookup(self.ns[parent_id], name)
        except FileNotFoundError:
            return None
        return self.referenced(inode)

    def make(self, parent_id: int, name: bytes | None, mode: int, uid: int, gid: int,
             umask: int, caller: int, rdev: int = 0, target: bytes | None = None) -> Inode:
        """A new inode, referenced, with the ACLs that it inherits, or the
        umask applied: INIT asks the kernel to leave the umask to holefs
        (DONT_MASK), as the VFS does where a filesystem has ACLs.  No name
        is O_TMPFILE's.  The caller's pid is for its quota exemption."""
        parent = self.ns[parent_id]
        mode, access, default = acl.new_inode((parent.xattrs or {}).get(acl.DEFAULT), mode,
                                              umask)
        xattrs = {key: value for key, value in ((acl.ACCESS, access), (acl.DEFAULT, default))
                  if value is not None}
        return self.referenced(
            self.ns.create(parent, name, mode, uid, gid, rdev, target, xattrs, caller))

    def link(self, inode_id: int, parent_id: int, name: bytes) -> Inode:
        inode = self.ns[inode_id]
        self.ns.link(inode, self.ns[parent_id], name)
        return self.referenced(inode)

    def unlink(self, parent_id: int, name: bytes) -> None:
        self._release_if_unused(self.ns.unlink(self.ns[parent_id], name))

    def rmdir(self, parent_id: int, name: bytes) -> None:
        self._release_if_unused(self.ns.rmdir(self.ns[parent_id], name))

    def rename(self, old_parent_id: int, old_name: bytes, new_parent_id: int,
               new_name: bytes, flags: int, uid: int, gid: int, caller: int) -> None:
        replaced = self.ns.rename(self.ns[old_parent_id], old_name, self.ns[new_parent_id],
                                  new_name, flags, (uid, gid), caller)
        if replaced is not None:
            self._release_if_unused(replaced)

    def forget(self, counts: Iterable[tuple[int, int]]) -> None:
        """The kernel dropped references: (inode number, count) pairs."""
        for inode_id, count in counts:
            inode = self.ns.inodes.get(inode_id)
            if inode is not None:
                inode.lookups -= count
                self._release_if_unused(inode)

    def _release_if_unused(self, inode: Inode) -> None:
        """Free an inode and its data once no name and no kernel reference
        is left."""
        if self.ns.drop_if_unused(inode) and inode.extents is not None:
            self._charged(inode, self.store.free_all)

    def readlink(self, inode_id: int) -> bytes:
        target = self.ns[inode_id].target
        if target is None:
            raise OSError(errno.EINVAL, "not a symlink")
        return target

    # Directories --------------------------------------------------------

    def opendir(self, inode_id: int) -> int:
        """The handle is the inode number: readdir reads the directory as
        it is then, from the kernel's cookie (holefs/directory.py)."""
        if not self.ns[inode_id].is_dir:
            raise OSError(errno.ENOTDIR, "not a directory")
        return inode_id

    def readdir(self, handle: int, start: int,
                reply: Callable[[bytes, Inode, int], bool]) -> None:
        """Give *reply* (name, inode, cookie) each entry past *start* until
        it returns False: the entries are readdirplus's, which the kernel
        then references."""
        directory = self.ns[handle]
        for cookie, name, inode in ((1, b".", directory), (2, b"..", directory.parent)):
            if start < cookie and not reply(name, inode, cookie):
                return
        for cookie, name, inode in directory.entries.since(start):
            if not reply(name, inode, cookie):
                return
            self.referenced(inode)
        directory.note_access(self.ns.dir_atime)

    # Attributes ---------------------------------------------------------

    def setattr(self, inode_id: int, caller: int, *, uid: int | None = None,
                gid: int | None = None, size: int | None = None, mode: int | None = None,
                atime_ns: int | None = None, mtime_ns: int | None = None,
                ctime_ns: int | None = None) -> Inode:
        """Change what is given, as SETATTR asks."""
        inode = self.ns[inode_id]
        # tmpfs lets an append-only file's times be set to now; pyfuse3
        # gives a time set to now as any other, so holefs refuses both.
        # But under the writeback cache the kernel sends the mtime and
        # ctime of the writes it cached, and only those, alone.
        if self.options.writeback_cache and mtime_ns is not None and \
                (atime_ns, size, mode, uid, gid) == (None,) * 5:
            inodeflags.check_times_of_writes(inode.flags)
        else:
            inodeflags.check_unchanged(inode.flags)
        if uid is not None or gid is not None:
            # First, as it may fail: the new owner's quota may have no room.
            self.ns.chown(inode, inode.uid if uid is None else uid,
                          inode.gid if gid is None else gid, caller)
        if size is not None:
            if size <= inode.size:
                # As tmpfs does, this also drops space reserved past EOF.
                self._truncate(inode, size)
            else:
                self._grow(inode, size, "truncate", caller)
            inode.size = size
            inode.touch()
        if mode is not None:
            inode.mode = stat.S_IFMT(inode.mode) | stat.S_IMODE(mode)
            access = (inode.xattrs or {}).get(acl.ACCESS)
            if access is not None:
                # The same size, so the charge for it stays as it is.
                inode.xattrs[acl.ACCESS] = acl.build(acl.chmod(acl.parse(access), inode.mode))
        if atime_ns is not None:
            inode.atime_ns = atime_ns
        if mtime_ns is not None:
            inode.mtime_ns = mtime_ns
        inode.touch(modified=False)
        if ctime_ns is not None:
            inode.ctime_ns = ctime_ns
        return inode

    def drop_setid(self, inode_id: int, uid: int, gid: int, pid: int, request: str) -> None:
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

    def get_flags(self, inode_id: int, as_xflags: bool) -> int:
        """chattr's flags of the inode, as FS_IOC_GETFLAGS or (*as_xflags*)
        FS_IOC_FSGETXATTR gives them."""
        flags = self.ns[inode_id].flags
        return inodeflags.to_xflags(flags) if as_xflags else flags

    def set_flags(self, inode_id: int, flags: int, as_xflags: bool) -> None:
        """Set chattr's flags.  The kernel checked the caller; the new ctime
        is pushed to it (the rule in _shim.c)."""
        inode = self.ns[inode_id]
        inode.flags = inodeflags.from_xflags(flags) if as_xflags else inodeflags.settable(flags)
        inode.touch(modified=False)
        self.invalidate(inode.id)

    # Extended attributes ------------------------------------------------

    def set_xattr(self, inode_id: int, name: bytes, value: bytes, gid: int,
                  caller: int) -> None:
        inode = self.ns[inode_id]
        inodeflags.check_unchanged(inode.flags)
        if not name.startswith(XATTR_NAMESPACES):
            # As tmpfs and ext4: a name in no namespace would fail later,
            # when the file is copied to them.
            raise OSError(errno.EOPNOTSUPP, "not in the user, trusted or security namespace")
        if name == acl.ACCESS:
            self._set_access_acl(inode, value, gid, caller)
            return
        if name == acl.DEFAULT:
            if not inode.is_dir:
                raise OSError(errno.EACCES, "a default ACL is for directories")
            acl.parse(value)
        self.ns.set_xattr(inode, name, value)

    def _set_access_acl(self, inode: Inode, value: bytes, gid: int, caller: int) -> None:
        """The mode follows the ACL, which is kept only where the mode
        cannot say it; the kernel checked that the caller owns the file."""
        keeps_setgid = in_group(inode.gid, gid, caller) or has_capability(caller, CAP_FSETID)
        mode, kept = acl.set_access(value, inode.mode, keeps_setgid)
        if kept is not None:
            self.ns.set_xattr(inode, acl.ACCESS, kept)
        elif acl.ACCESS in (inode.xattrs or {}):
            self.ns.remove_xattr(inode, acl.ACCESS)
        inode.mode = mode
        inode.touch(modified=False)
        self.invalidate(inode.id)

    def get_xattr(self, inode_id: int, name: bytes) -> bytes:
        try:
            return self.ns[inode_id].xattrs[name]
        except (KeyError, TypeError):
            raise OSError(errno.ENODATA, "no such attribute") from None

    def list_xattrs(self, inode_id: int) -> list[bytes]:
        return list(self.ns[inode_id].xattrs or ())

    def remove_xattr(self, inode_id: int, name: bytes) -> None:
        inode = self.ns[inode_id]
        inodeflags.check_unchanged(inode.flags)
        self.ns.remove_xattr(inode, name)

    # File data ----------------------------------------------------------

    def open(self, inode_id: int, flags: int) -> bool:
        """Open for *flags*; whether the kernel may keep its page cache."""
        inode = self.ns[inode_id]
        inodeflags.check_open(inode.flags, flags)
        if flags & os.O_TRUNC and (inode.size or inode.extents):
            # INIT asks the kernel for atomic O_TRUNC: ours to do.  As on
            # tmpfs, it also drops space reserved past EOF of an empty file.
            self._truncate(inode, 0)
            inode.size = 0
            inode.touch()
        # A read served from the page cache never reaches holefs: when the
        # next read is due to move atime, the kernel drops the cache, so
        # that the read comes here.
        reads = flags & os.O_ACCMODE != os.O_WRONLY
        return not (reads and inode.access_moves_atime(self.ns.file_atime, time.time_ns()))

    def read(self, inode_id: int, offset: int, length: int) -> bytes | bytearray:
        emap, offset, length = self._readable(inode_id, offset, length)
        return self.store.read(emap, offset, length) if length > 0 else b""

    def read_segments(self, inode_id: int, offset: int,
                      length: int) -> list[tuple[int, int, int]]:
        """Where a read's bytes lie in the tier files (Store.segments), for
        a reply spliced from them; no segment at EOF."""
        emap, offset, length = self._readable(inode_id, offset, length)
        return self.store.segments(emap, offset, length) if length > 0 else []

    def _readable(self, inode_id: int, offset: int,
                  length: int) -> tuple[ExtentMap, int, int]:
        inode = self.ns[inode_id]
        emap = _map(inode)
        inode.note_access(self.ns.file_atime)
        return emap, offset, min(length, inode.size - offset)

    def write(self, inode_id: int, offset: int, data: Any, writeback: bool = False,
              pid: int = 0) -> int:
        """Store *data* (bytes, or the daemon's Spliced data) at *offset*;
        the bytes that fit.  A *writeback* of the kernel's page cache is
        all or an error."""
        inode = self.ns[inode_id]
        if inode.flags:
            if not isinstance(data, (bytes, memoryview)):
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
        held = _map(inode).held_pages
        try:
            return self._store(inode, offset, data, writeback, pid)
        finally:
            # The kernel moved i_size to *end* when it took the write, and
            # keeps it: the size stays the one it shows, and what did not
            # fit reads as zeros.
            inode.size = max(inode.size, end)
            inode.touch()
            if _map(inode).held_pages != held:
                # No write(2) of the program's waits for a writeback, so the
                # kernel keeps the attributes it had: tell it that st_blocks
                # moved.
                self.invalidate(inode.id)

    def _store(self, inode: Inode, offset: int, data: Any, writeback: bool, pid: int) -> int:
        """Store what fits of a write; refusals are logged, and a short
        writeback is an error."""
        how = "writeback" if writeback else "write"
        try:
            self._grow(inode, offset + len(data), how, pid)
        except OSError:
            if writeback and offset < inode.size:
                # What lies within the reserved size has its pages: keep it.
                kept = data[:inode.size - offset]
                self._charged(inode, self.store.write, offset, kept,
                              quota=self._quota_room(inode, len(kept), pid))
            raise
        quota = self._quota_room(inode, len(data), pid)
        held = _map(inode).held_pages
        try:
            written = self._charged(inode, self.store.write, offset, data, quota=quota)
        except OSError as e:
            self._refused(how, inode, offset, len(data), e)
            raise
        if written < len(data):
            fit = f"only the first {written} bytes fit"
            short = OverQuota(f"{quota.why}: {fit}") \
                if _map(inode).held_pages - held >= quota.pages else NoSpace(fit)
            self._refused(how, inode, offset + written, len(data) - written, short)
            if writeback:
                # The kernel takes a short count from writeback as success:
                # only an error reaches msync, fsync and close.
                raise short
        return written

    def _holds(self, inode: Inode, offset: int, data: Any) -> bool:
        """Whether the file holds *data* at *offset* already."""
        return self.store.read(_map(inode), offset, len(data)) == data

    def fallocate(self, inode_id: int, mode: int, offset: int, length: int,
                  pid: int = 0) -> None:
        """fallocate(2): reserve, ZERO_RANGE or PUNCH_HOLE, as *mode* says."""
        inode = self.ns[inode_id]
        if inode.extents is None:
            raise OSError(errno.ENODEV, "not a regular file")
        end = offset + length
        if offset < 0 or length <= 0:
            raise OSError(errno.EINVAL, "negative offset or empty range")
        if end > MAX_FILE_SIZE:
            raise OSError(errno.EFBIG, "file too large")
        inodeflags.check_fallocate(inode.flags, keeps_data=mode & ~FALLOC_FL_KEEP_SIZE == 0)
        if not mode & FALLOC_FL_KEEP_SIZE:
            self._grow(inode, end, "fallocate", pid)
        if mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE:
            self._charged(inode, self.store.punch, offset, length)
        elif mode & ~FALLOC_FL_KEEP_SIZE in (0, FALLOC_FL_ZERO_RANGE):
            try:
                self._charged(inode, self.store.reserve, offset, length,
                              zero=bool(mode & FALLOC_FL_ZERO_RANGE),
                              quota=self._quota_room(inode, length, pid))
            except OSError as e:
                self._refused("fallocate", inode, offset, length, e)
                raise
        else:
            raise OSError(errno.EOPNOTSUPP, "unsupported fallocate mode")
        if not mode & FALLOC_FL_KEEP_SIZE and end > inode.size:
            inode.size = end
        inode.touch()

    def lseek(self, inode_id: int, offset: int, whence: int) -> int:
        """SEEK_DATA and SEEK_HOLE; the kernel answers the others."""
        inode = self.ns[inode_id]
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

    def _truncate(self, inode: Inode, size: int) -> None:
        self._charged(inode, self.store.truncate, size)

    def _grow(self, inode: Inode, end: int, how: str, caller: int) -> None:
        """Under reserve, take the space from EOF to *end* now, or refuse."""
        if self.options.reserve and end > inode.size:
            length = end - inode.size
            try:
                self._charged(inode, self.store.reserve, inode.size, length,
                              quota=self._quota_room(inode, length, caller))
            except OSError as e:
                self._refused(how, inode, inode.size, end - inode.size, e)
                raise

    def _charged(self, inode: Inode, change: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> Any:
        """Make *change*, a Store method, to inode's map, and charge the
        pages it takes or frees to the quotas of the file's owner and group."""
        emap, quotas = _map(inode), self.ns.quotas
        if not quotas.limits:
            return change(emap, *args, **kwargs)
        before = emap.held_pages
        try:
            return change(emap, *args, **kwargs)
        finally:
            quotas.charge_pages(inode.uid, inode.gid, emap.held_pages - before)

    def _quota_room(self, inode: Inode, length: int, caller: int) -> Room:
        """The pages that a request of *length* bytes may add to inode's
        map, by its owners' quotas."""
        return self.ns.quotas.page_room(inode.uid, inode.gid, length // PAGE + 2, caller)

    def _refused(self, how: str, inode: Inode, offset: int, length: int,
                 error: OSError) -> None:
        """Log a request, or the part of one, that found no room."""
        path = self.ns.path_of(inode)
        why = getattr(error, "why", None)
        self._refusals.warning(
            "%s refused: inode %d%s, %d bytes at offset %d: %s%s%s",
            how, inode.id, "" if path is None else f" ({quoted(path)})",
            length, offset, error.strerror, f" ({why})" if why else "",
            "; the program learns of it only if it checks msync, fsync or close"
            if how == "writeback" else "")
