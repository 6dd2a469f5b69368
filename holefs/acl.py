"""POSIX ACLs as the VFS keeps them in step with the mode.

With FUSE_POSIX_ACL the kernel checks access against the ACLs that holefs
stores, but leaves the rest to the daemon: the mode follows an access ACL
that is set, a chmod changes the ACL's mask, and a new inode inherits its
directory's default ACL in place of the umask.  These are the rules of
fs/posix_acl.c (posix_acl_update_mode, posix_acl_chmod, posix_acl_create),
on the xattr form that the kernel sends: a version, then (tag, perm, id)
entries sorted by tag and id.

Nothing here knows about FUSE; errors are OSError with the caller's errno.
"""

import errno
import stat
import struct

ACCESS = b"system.posix_acl_access"
DEFAULT = b"system.posix_acl_default"

VERSION = 2
HEADER = struct.Struct("<I")
ENTRY = struct.Struct("<HHI")
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF


def _invalid(why):
    return OSError(errno.EINVAL, f"invalid ACL: {why}")


def parse(value):
    """The entries [(tag, perm, id)] of an ACL in xattr form, checked as
    posix_acl_valid() checks them."""
    if len(value) < HEADER.size or (len(value) - HEADER.size) % ENTRY.size:
        raise _invalid("size")
    if HEADER.unpack_from(value)[0] != VERSION:
        raise _invalid("version")
    entries = list(ENTRY.iter_unpack(value[HEADER.size:]))
    tags = [tag for tag, _, _ in entries]
    if any(perm & ~0o7 for _, perm, _ in entries):
        raise _invalid("permission bits")
    if any(tag not in (USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER) for tag in tags):
        raise _invalid("tag")
    for tag in (USER_OBJ, GROUP_OBJ, OTHER):
        if tags.count(tag) != 1:
            raise _invalid("needs one owner, one group and one other entry")
    if tags.count(MASK) > 1 or (USER in tags or GROUP in tags) and MASK not in tags:
        raise _invalid("named entries need one mask")
    named = [(tag, id) for tag, _, id in entries if tag in (USER, GROUP)]
    if entries != sorted(entries, key=lambda e: (e[0], e[2] if e[0] in (USER, GROUP) else 0)) \
            or len(set(named)) != len(named):
        raise _invalid("entries out of order or repeated")
    return entries


def build(entries):
    """The xattr form of *entries*."""
    return HEADER.pack(VERSION) + b"".join(ENTRY.pack(*entry) for entry in entries)


def is_minimal(entries):
    """An ACL that the mode says in full: owner, group and other only."""
    return len(entries) == 3


def _classes(entries):
    """The entries that stand for the owner, group and other classes: the
    mask, where there is one, stands for the group."""
    by_tag = {tag: i for i, (tag, _, _) in enumerate(entries) if tag != USER and tag != GROUP}
    return by_tag[USER_OBJ], by_tag.get(MASK, by_tag[GROUP_OBJ]), by_tag[OTHER]


def mode_of(entries, mode):
    """*mode* with its permission bits taken from an access ACL."""
    owner, group, other = (entries[i][1] for i in _classes(entries))
    return mode & ~0o777 | owner << 6 | group << 3 | other


def chmod(entries, mode):
    """An access ACL after chmod to *mode*: the class entries follow it."""
    entries = list(entries)
    for i, shift in zip(_classes(entries), (6, 3, 0)):
        tag, _, id = entries[i]
        entries[i] = (tag, mode >> shift & 0o7, id)
    return entries


def inherit(default, mode):
    """What a new inode of *mode* gets from its directory's default ACL
    (posix_acl_create): its mode, and its access ACL, or None where the
    mode says it all.  The umask does not apply."""
    entries = list(default)
    owner, group, other = _classes(entries)
    for i, shift in ((owner, 6), (group, 3), (other, 0)):
        tag, perm, id = entries[i]
        entries[i] = (tag, perm & mode >> shift, id)
    mode = mode_of(entries, mode)
    return mode, None if is_minimal(entries) else build(entries)


def set_access(value, mode, keeps_setgid):
    """Setting an access ACL: the new mode, and the value to store, or
    None where the ACL is only the mode (posix_acl_update_mode).  Without
    *keeps_setgid* (the caller neither in the file's group nor holding
    CAP_FSETID), set-group-ID is cleared, as on any filesystem."""
    entries = parse(value)
    mode = mode_of(entries, mode)
    if not keeps_setgid:
        mode &= ~stat.S_ISGID
    return mode, None if is_minimal(entries) else value


def new_inode(parent_default, mode, umask):
    """The mode and the access and default ACLs (None: none) of an inode
    of *mode* made in a directory whose default ACL is *parent_default*.
    Without one the umask applies; a symlink takes neither."""
    if stat.S_ISLNK(mode):
        return mode, None, None
    if parent_default is None:
        return mode & ~umask, None, None
    new_mode, access = inherit(parse(parent_default), mode)
    return new_mode, access, parent_default if stat.S_ISDIR(mode) else None
