"""The tree of inodes: names, links, modes and owners, with tmpfs's rules.

Nothing here knows about FUSE.  Errors are OSError with the errno that the
caller should see; fs.py turns them into FUSE replies.
"""

import errno
import math
import stat
import time

from . import inodeflags
from .directory import Entries
from .errors import fail
from .extents import ExtentMap
from .quota import Quotas

ROOT_INODE = 1
NAME_MAX = 255
# tmpfs (since Linux 6.6) charges inodes and xattrs to one budget of
# nr_inodes * BOGO_INODE_SIZE bytes: an inode takes BOGO_INODE_SIZE, an
# xattr simple_xattr_space() (fs/xattr.c).  With no nr_inodes limit,
# neither is limited.
BOGO_INODE_SIZE = 1024
XATTR_OVERHEAD = 40
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4
RELATIME_AGE_NS = 24 * 3600 * 10**9
# An inode's plain fields, as Namespace.to_value writes them; "id" first.
INODE_FIELDS = ("id", "mode", "uid", "gid", "nlink", "size", "rdev", "atime_ns", "mtime_ns",
                "ctime_ns", "btime_ns", "lookups", "flags")


class Inode:
    """One file, directory, symlink or special file."""

    __slots__ = ("id", "mode", "uid", "gid", "nlink", "size", "rdev",
                 "atime_ns", "mtime_ns", "ctime_ns", "btime_ns", "lookups",
                 "entries", "parent", "extents", "target", "xattrs", "flags")

    def __init__(self, id, mode, uid, gid, rdev=0):
        now = time.time_ns()
        self.id = id
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        self.nlink = 2 if stat.S_ISDIR(mode) else 0
        self.size = 0
        self.atime_ns = self.mtime_ns = self.ctime_ns = self.btime_ns = now
        self.lookups = 0
        self.entries = Entries() if stat.S_ISDIR(mode) else None
        self.parent = None
        self.extents = ExtentMap() if stat.S_ISREG(mode) else None
        self.target = None
        self.xattrs = None
        self.flags = 0  # chattr's: holefs/inodeflags.py

    @property
    def is_dir(self):
        return self.entries is not None

    def touch(self, modified=True):
        """Record a change: ctime always, mtime too when data changed."""
        now = time.time_ns()
        self.ctime_ns = now
        if modified:
            self.mtime_ns = now

    def access_moves_atime(self, rule, now):
        """Whether a read at *now* moves atime, under the mount's *rule*:
        "noatime", "strictatime", or "relatime", which moves it only when
        it is not past the last change, or is a day old, as Linux does."""
        if rule == "noatime" or self.flags & inodeflags.NOATIME:
            return False
        return rule == "strictatime" or self.atime_ns <= max(self.mtime_ns, self.ctime_ns) \
            or now - self.atime_ns >= RELATIME_AGE_NS

    def note_access(self, rule):
        now = time.time_ns()
        if self.access_moves_atime(rule, now):
            self.atime_ns = now


def xattr_space(name, value):
    """What an xattr costs in the inode budget, as tmpfs counts it."""
    return XATTR_OVERHEAD + len(name) + len(value)


class Namespace:
    """All inodes, by number, and the directory tree that names them.

    Invariants: xattr_bytes is the sum of xattr_space() over the xattrs of
    every inode in `inodes`; _orphans counts those that lost their last
    name (nlink 0, parent set), and _extra_links the names beyond the first
    of each non-directory.  With used_inodes they fill the budget of
    max_inodes * BOGO_INODE_SIZE, which df shows as free inodes.  Each
    inode in `inodes` but the orphans is charged to its owner and group in
    `quotas`.
    """

    def __init__(self, max_inodes, root_mode, uid, gid, quotas=None):
        self.max_inodes = max_inodes
        self.quotas = quotas or Quotas()
        self.file_atime = self.dir_atime = "relatime"  # what a read does to atime
        self.inodes = {}
        self.xattr_bytes = 0
        self._orphans = 0
        self._extra_links = 0
        self._next_id = ROOT_INODE
        root = self._new(root_mode | stat.S_IFDIR, uid, gid)
        root.parent = root
        self.root = root

    def to_value(self, slot_id):
        """Every inode and name, as a value; a file's chunks name their
        slots by *slot_id*(slot)."""
        def inode_value(inode):
            return {
                "fields": [getattr(inode, field) for field in INODE_FIELDS],
                "parent": inode.parent.id if inode.parent is not None else None,
                "target": inode.target.hex() if inode.target is not None else None,
                "xattrs": None if inode.xattrs is None else
                [[name.hex(), value.hex()] for name, value in inode.xattrs.items()],
                "chunks": None if inode.extents is None else
                [[index, slot_id(slot)] for index, slot in inode.extents],
                "held_pages": inode.extents.held_pages if inode.extents is not None else 0,
                "entries": None if inode.entries is None else
                inode.entries.to_value(lambda child: child.id),
            }
        return {"max_inodes": self.max_inodes, "quotas": self.quotas.to_value(),
                "atime": [self.file_atime, self.dir_atime], "xattr_bytes": self.xattr_bytes,
                "orphans": self._orphans, "extra_links": self._extra_links,
                "next_id": self._next_id, "root": self.root.id,
                "inodes": [inode_value(inode) for inode in self.inodes.values()]}

    @classmethod
    def from_value(cls, value, slot_of):
        """The namespace of to_value(); *slot_of*(id) gives each slot."""
        ns = cls.__new__(cls)
        ns.max_inodes = value["max_inodes"]
        ns.quotas = Quotas.from_value(value["quotas"])
        ns.file_atime, ns.dir_atime = value["atime"]
        ns.xattr_bytes, ns._orphans = value["xattr_bytes"], value["orphans"]
        ns._extra_links, ns._next_id = value["extra_links"], value["next_id"]
        ns.inodes = {}
        for record in value["inodes"]:
            fields = dict(zip(INODE_FIELDS, record["fields"]))
            inode = Inode(fields["id"], fields["mode"], fields["uid"], fields["gid"])
            for field, held in fields.items():
                setattr(inode, field, held)
            ns.inodes[inode.id] = inode
        for record in value["inodes"]:
            inode = ns.inodes[record["fields"][0]]
            parent = record["parent"]
            inode.parent = ns.inodes[parent] if parent is not None else None
            target = record["target"]
            inode.target = bytes.fromhex(target) if target is not None else None
            if record["xattrs"] is not None:
                inode.xattrs = {bytes.fromhex(n): bytes.fromhex(v) for n, v in record["xattrs"]}
            if record["chunks"] is not None:
                for index, slot in record["chunks"]:
                    inode.extents.add(index, slot_of(slot))
                inode.extents.held_pages = record["held_pages"]
            if record["entries"] is not None:
                inode.entries = Entries.from_value(record["entries"], ns.inodes.__getitem__)
        ns.root = ns.inodes[value["root"]]
        return ns

    def follow_mount_flags(self, flags):
        """Take the atime rules from the kernel's flags for the mount: the
        kernel leaves atime to a FUSE daemon, and on tmpfs the VFS keeps it
        still on a read-only mount."""
        rule = "noatime" if {"ro", "noatime"} & set(flags) else \
            "relatime" if "relatime" in flags else "strictatime"
        self.file_atime = rule
        self.dir_atime = "noatime" if "nodiratime" in flags else rule

    @property
    def used_inodes(self):
        """Inodes as tmpfs counts them: one for each inode that has a name
        or has never had one (O_TMPFILE), and one for each extra hard link.

        An unlinked inode stays until the kernel forgets it, which it does
        a little later; counting it would make nr_inodes fill up for a
        moment after every unlink.
        """
        return len(self.inodes) - self._orphans + self._extra_links

    @property
    def free_space(self):
        """Bytes left in the inode budget, for inodes and xattrs; with no
        limit (max_inodes 0, as tmpfs's nr_inodes=0), no limit."""
        if not self.max_inodes:
            return math.inf
        return self.max_inodes * BOGO_INODE_SIZE - self.used_inodes * BOGO_INODE_SIZE \
            - self.xattr_bytes

    @property
    def free_inodes(self):
        """What df shows as free inodes: the budget left, in inodes; 0 with
        no limit, as tmpfs shows it."""
        if not self.max_inodes:
            return 0
        return max(0, self.free_space // BOGO_INODE_SIZE)

    @property
    def charged_inodes(self):
        """The budget in use, in inodes: what a smaller nr_inodes must fit."""
        return self.used_inodes + -(-self.xattr_bytes // BOGO_INODE_SIZE)

    def set_xattr(self, inode, name, value):
        """Set an xattr, charging it first, as tmpfs does: a replaced value
        is given back only once the new one fits."""
        cost = xattr_space(name, value)
        self._check_room(cost)
        if inode.xattrs is None:
            inode.xattrs = {}
        old = inode.xattrs.get(name)
        inode.xattrs[name] = value
        self.xattr_bytes += cost - (xattr_space(name, old) if old is not None else 0)
        inode.touch(modified=False)

    def remove_xattr(self, inode, name):
        """Remove an xattr and give its space back; ENODATA if it is not set."""
        try:
            value = inode.xattrs.pop(name)
        except (KeyError, AttributeError):
            raise fail(errno.ENODATA) from None
        self.xattr_bytes -= xattr_space(name, value)
        inode.touch(modified=False)

    def __getitem__(self, id):
        try:
            return self.inodes[id]
        except KeyError:
            raise fail(errno.ESTALE) from None

    def lookup(self, parent, name):
        if len(name) > NAME_MAX:
            raise fail(errno.ENAMETOOLONG)
        if name == b".":
            return parent
        if name == b"..":
            return parent.parent
        try:
            return parent.entries[name]
        except KeyError:
            raise fail(errno.ENOENT) from None

    def create(self, parent, name, mode, uid, gid, rdev=0, target=None, xattrs=None,
               caller=None):
        """Make a new inode named *name* in *parent*, with *xattrs* (a dict,
        such as its inherited ACLs), charged with it, and to the quotas of
        uid and gid, which *caller* (a pid) may pass.  With *name* None it
        gets no name (O_TMPFILE): link() may give it its first."""
        if name is not None:
            self._check_new_name(parent, name)
        elif parent.nlink == 0:
            raise fail(errno.ENOENT)
        inodeflags.check_addition(parent.flags)
        cost = sum(xattr_space(key, value) for key, value in (xattrs or {}).items())
        self._check_room(BOGO_INODE_SIZE + cost)
        if parent.mode & stat.S_ISGID:
            # As tmpfs does: inherit the group, and directories the bit.
            gid = parent.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        inode = self._new(mode, uid, gid, rdev, caller)
        inode.flags = inodeflags.inherited(parent.flags)
        if xattrs:
            inode.xattrs = dict(xattrs)
            self.xattr_bytes += cost
        inode.target = target
        if target is not None:
            inode.size = len(target)
        if name is not None:
            self._attach(parent, name, inode)
        return inode

    def link(self, inode, parent, name):
        if inode.is_dir:
            raise fail(errno.EPERM)
        if inode.nlink == 0 and inode.parent is not None:
            # As the VFS: of the inodes with no name, only one that never
            # had one (O_TMPFILE) may get one.
            raise fail(errno.ENOENT)
        self._check_new_name(parent, name)
        inodeflags.check_addition(parent.flags)
        inodeflags.check_unchanged(inode.flags)
        if inode.nlink > 0:
            self._check_room(BOGO_INODE_SIZE)
        self._attach(parent, name, inode)
        inode.touch(modified=False)

    def unlink(self, parent, name):
        inode = self.lookup(parent, name)
        self._check_removal(parent, inode)
        if inode.is_dir:
            raise fail(errno.EISDIR)
        self._detach(parent, name, inode)
        return inode

    def rmdir(self, parent, name):
        if name == b".":
            raise fail(errno.EINVAL)
        if name == b"..":
            raise fail(errno.ENOTEMPTY)
        inode = self.lookup(parent, name)
        self._check_removal(parent, inode)
        if not inode.is_dir:
            raise fail(errno.ENOTDIR)
        if inode.entries:
            raise fail(errno.ENOTEMPTY)
        self._detach(parent, name, inode)
        return inode

    def rename(self, old_parent, old_name, new_parent, new_name, flags=0,
               owner: tuple[int, int] = (0, 0),
               caller=None):
        """Rename with rename(2)'s rules; return an inode that lost its name.
        RENAME_WHITEOUT leaves overlayfs's whiteout in the old name: a
        character device 0:0 of the caller (pid *caller*, ids *owner*)."""
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) or \
                flags & RENAME_EXCHANGE and flags != RENAME_EXCHANGE:
            raise fail(errno.EINVAL)
        if len(new_name) > NAME_MAX:
            raise fail(errno.ENAMETOOLONG)
        inode = self.lookup(old_parent, old_name)
        target = new_parent.entries.get(new_name)
        if inode.is_dir and self._is_ancestor(inode, new_parent):
            raise fail(errno.EINVAL)
        if flags & RENAME_EXCHANGE:
            if target is None:
                raise fail(errno.ENOENT)
            if target.is_dir and self._is_ancestor(target, old_parent):
                raise fail(errno.EINVAL)
            self._check_removal(old_parent, inode)
            self._check_removal(new_parent, target)
            self._exchange(old_parent, old_name, inode, new_parent, new_name, target)
            return None
        if target is inode:
            return None
        if target is not None and flags & RENAME_NOREPLACE:
            raise fail(errno.EEXIST)
        self._check_removal(old_parent, inode)
        if target is None:
            inodeflags.check_addition(new_parent.flags)
        else:
            self._check_removal(new_parent, target)
        if flags & RENAME_WHITEOUT:
            self._check_room(BOGO_INODE_SIZE)
            self.quotas.check_inode(*owner, caller)
        if target is not None:
            if inode.is_dir and not target.is_dir:
                raise fail(errno.ENOTDIR)
            if target.is_dir:
                if not inode.is_dir:
                    raise fail(errno.EISDIR)
                if target.entries:
                    raise fail(errno.ENOTEMPTY)
            self._detach(new_parent, new_name, target)
        self._move(old_parent, old_name, inode, new_parent, new_name)
        if flags & RENAME_WHITEOUT:
            self.create(old_parent, old_name, stat.S_IFCHR, *owner, caller=caller)
        return target

    def chown(self, inode, uid, gid, caller=None):
        """Give *inode* a new owner and group, moving its quota charges, or
        EDQUOT where they have no room and *caller* may not pass."""
        self.quotas.transfer(*self._quota_charges(inode), (inode.uid, inode.gid), (uid, gid),
                             caller)
        inode.uid, inode.gid = uid, gid

    def set_quota_limits(self, limits):
        """Take a remount's quota limits (options.MountOptions.quotas)."""
        self.quotas.set_limits(limits, ((inode.uid, inode.gid, *self._quota_charges(inode))
                                        for inode in self.inodes.values()))

    @staticmethod
    def _quota_charges(inode: Inode) -> tuple[int, int]:
        """(pages, inodes) that *inode* is charged: its data, and itself
        unless it lost its last name (as _detach uncharges it)."""
        pages = inode.extents.held_pages if inode.extents is not None else 0
        return pages, int(inode.nlink > 0 or inode.parent is None)

    def path_of(self, inode):
        """A path that names *inode* now, or None if it has no name.

        It searches each directory on the way up, so it is for messages,
        not for any request's work.
        """
        parts = []
        while inode is not self.root:
            parent = inode.parent
            name = next((name for name, child in parent.entries.items() if child is inode),
                        None) if parent is not None else None
            if name is None:
                return None
            parts.append(name)
            inode = parent
        return b"/" + b"/".join(reversed(parts))

    def drop_if_unused(self, inode):
        """Forget an inode that has neither names nor kernel references."""
        if inode.nlink == 0 and inode.lookups <= 0 and inode.id in self.inodes:
            del self.inodes[inode.id]
            if inode.parent is not None:  # not an O_TMPFILE never named
                self._orphans -= 1
            else:
                self.quotas.uncharge_inode(inode.uid, inode.gid)
            self.xattr_bytes -= sum(xattr_space(name, value)
                                    for name, value in (inode.xattrs or {}).items())
            return True
        return False

    def _new(self, mode, uid, gid, rdev=0, caller=None):
        self.quotas.charge_inode(uid, gid, caller)
        inode = Inode(self._next_id, mode, uid, gid, rdev)
        self._next_id += 1
        self.inodes[inode.id] = inode
        return inode

    def _check_room(self, cost):
        """ENOSPC unless *cost* bytes fit in the inode budget."""
        if self.free_space < cost:
            raise fail(errno.ENOSPC)

    @staticmethod
    def _check_removal(parent, inode):
        """As the VFS's may_delete: neither the directory nor the inode may
        be append-only or immutable."""
        inodeflags.check_unchanged(parent.flags)
        inodeflags.check_unchanged(inode.flags)

    def _check_new_name(self, parent, name):
        if len(name) > NAME_MAX:
            raise fail(errno.ENAMETOOLONG)
        if parent.nlink == 0:
            raise fail(errno.ENOENT)
        if name in (b".", b"..") or name in parent.entries:
            raise fail(errno.EEXIST)

    def _attach(self, parent, name, inode):
        parent.entries[name] = inode
        # For a file, the directory of its latest name: path_of() starts there.
        inode.parent = parent
        if inode.is_dir:
            parent.nlink += 1
        else:
            self._extra_links += inode.nlink > 0
            inode.nlink += 1
        parent.touch()

    def _detach(self, parent, name, inode):
        """Remove a name, and with the last one the inode from the count."""
        del parent.entries[name]
        if inode.is_dir:
            parent.nlink -= 1
            inode.nlink = 0
        else:
            inode.nlink -= 1
            self._extra_links -= inode.nlink > 0
        if inode.nlink == 0:
            self._orphans += 1
            self.quotas.uncharge_inode(inode.uid, inode.gid)
        inode.touch(modified=False)
        parent.touch()

    def _move(self, old_parent, old_name, inode, new_parent, new_name):
        """Rename: the inode's link count and the inode count stay as they are."""
        del old_parent.entries[old_name]
        new_parent.entries[new_name] = inode
        if inode.is_dir and old_parent is not new_parent:
            old_parent.nlink -= 1
            new_parent.nlink += 1
        inode.parent = new_parent
        inode.touch(modified=False)
        old_parent.touch()
        new_parent.touch()

    def _exchange(self, old_parent, old_name, inode, new_parent, new_name, target):
        old_parent.entries[old_name] = target
        new_parent.entries[new_name] = inode
        for moved, parent in ((inode, new_parent), (target, old_parent)):
            if moved.parent is not parent:
                if moved.is_dir:
                    moved.parent.nlink -= 1
                    parent.nlink += 1
                moved.parent = parent
            moved.touch(modified=False)
        old_parent.touch()
        new_parent.touch()

    @staticmethod
    def _is_ancestor(inode, node):
        """True if *inode* is *node* or one of its ancestors."""
        while True:
            if node is inode:
                return True
            if node.parent is node:
                return False
            node = node.parent
