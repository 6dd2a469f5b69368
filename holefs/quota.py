"""User and group quotas, as tmpfs keeps them (Linux 6.6 on).

Every user and every group gets the mount's default hard limits: bytes of
file data (counted by the page, as st_blocks shows it) and inodes.  As in
the kernel's quota code, an inode is charged to its owner and group when
it is made and until it has no name (hard links are not charged; tmpfs
keeps the charge of an unlinked file until it is closed, which holefs
cannot tell from the kernel's cached reference), pages as the file holds
them until it is freed, and a chown moves both to the new owner, refused
with EDQUOT if that owner has no room for them.  A caller with CAP_SYS_RESOURCE
passes every limit.  FUSE has no quotactl(2), so there are no per-id
limits and no grace times: only the defaults, which a remount may change.

Use is counted for the kinds turned on only, so that a mount without
quotas pays nothing for them; a remount that turns a kind on counts what
each id holds then.
"""

from __future__ import annotations

import dataclasses
import errno
import heapq
import math
import os
from collections.abc import Callable, Collection

from .credentials import CAP_SYS_RESOURCE, has_capability
from .extents import PAGE

KINDS = ("user", "group")
OPTION_PREFIX = {"user": "usrquota", "group": "grpquota"}
REPORTED = 100  # ids in status, which must fit in one xattr value


@dataclasses.dataclass(frozen=True)
class Limits:
    """The hard limits that every id of one kind gets; 0 means none."""
    bytes: int = 0
    inodes: int = 0

    def describe(self, kind):
        prefix = OPTION_PREFIX[kind]
        return [prefix] + [f"{prefix}_{name}_hardlimit={value}" for name, value in
                           (("block", self.bytes), ("inode", self.inodes)) if value]


class OverQuota(OSError):
    """A user's or group's hard limit is reached; *why* says whose."""

    def __init__(self, why):
        super().__init__(errno.EDQUOT, os.strerror(errno.EDQUOT))
        self.why = why


@dataclasses.dataclass(frozen=True)
class Room:
    """How many more pages a file's owners may hold, and whose limit says so."""
    pages: float
    why: str = ""


UNLIMITED = Room(math.inf)


def caller_is_exempt(pid):
    return has_capability(pid, CAP_SYS_RESOURCE)


class Quotas:
    """What each user and each group holds, and the limits on it.

    Invariant: for each kind in `limits`, use[kind][id] is [pages,
    inodes] summed over the inodes that id owns (kind "user") or whose
    group it is ("group"), and an id that holds nothing has no entry; the
    kinds turned off have none.  The namespace charges inodes, the data
    handlers pages, both under the mount's lock (state.py).
    """

    def __init__(self, limits: dict[str, Limits] | None = None,
                 exempt: Callable[[int | None], bool] = caller_is_exempt) -> None:
        self.limits = dict(limits or {})  # kind -> Limits, for the kinds turned on
        self.use: dict[str, dict[int, list[int]]] = {kind: {} for kind in KINDS}
        self._exempt = exempt  # of a caller's pid: CAP_SYS_RESOURCE

    def to_value(self):
        return {"limits": {kind: [lim.bytes, lim.inodes] for kind, lim in self.limits.items()},
                "use": {kind: [[id, *held] for id, held in use.items()]
                        for kind, use in self.use.items()}}

    @classmethod
    def from_value(cls, value):
        quotas = cls({kind: Limits(*lim) for kind, lim in value["limits"].items()})
        quotas.use = {kind: {id: [pages, inodes] for id, pages, inodes in use}
                      for kind, use in value["use"].items()}
        return quotas

    def set_limits(self, limits, holdings):
        """Take new limits; a kind turned on counts *holdings*, an iterable
        of (uid, gid, pages, inodes) for every inode."""
        turned_on = limits.keys() - self.limits.keys()
        self.limits = dict(limits)
        for kind in KINDS:
            if kind not in limits or kind in turned_on:
                self.use[kind] = {}
        if turned_on:
            for uid, gid, pages, inodes in holdings:
                self._add(uid, gid, pages, inodes, kinds=turned_on)

    def check_inode(self, uid: int, gid: int, caller: int | None) -> None:
        """OverQuota (EDQUOT) unless uid and gid have room for one more inode."""
        self._check(uid, gid, 0, 1, caller)

    def charge_inode(self, uid: int, gid: int, caller: int | None) -> None:
        """One more inode for uid and gid, or OverQuota."""
        self.check_inode(uid, gid, caller)
        self._add(uid, gid, 0, 1)

    def uncharge_inode(self, uid: int, gid: int) -> None:
        self._add(uid, gid, 0, -1)

    def charge_pages(self, uid: int, gid: int, pages: int) -> None:
        """Pages that a file of uid and gid now holds more (or fewer, if
        negative); the limit was checked by page_room()."""
        if pages and self.limits:
            self._add(uid, gid, pages, 0)

    def page_room(self, uid: int, gid: int, wanted: int, caller: int | None) -> Room:
        """The pages that a file of uid and gid may take: UNLIMITED, unless
        a limit leaves fewer than *wanted* and the caller is not exempt."""
        if not self.limits:
            return UNLIMITED
        rooms = [Room(limits.bytes // PAGE - self._held(kind, id)[0],
                      f"{kind} {id}'s {OPTION_PREFIX[kind]}_block_hardlimit={limits.bytes}")
                 for kind, id, limits in self._limited(uid, gid) if limits.bytes]
        room = min(rooms, key=lambda r: r.pages, default=UNLIMITED)
        if room.pages >= wanted or self._exempt(caller):
            return UNLIMITED
        return Room(max(room.pages, 0), room.why)

    def transfer(self, pages: int, inodes: int, old: tuple[int, int], new: tuple[int, int],
                 caller: int | None) -> None:
        """Move an inode's charges, *pages* and *inodes* (1, or 0 once it
        has no name), from owners *old* (uid, gid) to *new*, or OverQuota if
        a new owner has no room for them."""
        gained = [(kind, new_id) for kind, old_id, new_id in zip(KINDS, old, new)
                  if old_id != new_id]
        if not gained:
            return
        self._check(*new, pages, inodes, caller, only=gained)
        self._add(*old, -pages, -inodes)
        self._add(*new, pages, inodes)

    def report(self):
        """For status: by kind, the limits (None if off), how many ids hold
        something, and the REPORTED ids that hold the most, in bytes and
        inodes."""
        return {kind: {"limits": dataclasses.asdict(self.limits[kind])
                       if kind in self.limits else None,
                       "ids": len(self.use[kind]),
                       "use": {str(id): {"bytes": pages * PAGE, "inodes": inodes}
                               for id, (pages, inodes) in heapq.nlargest(
                                   REPORTED, self.use[kind].items(), key=lambda i: i[1])}}
                for kind in KINDS}

    def _limited(self, uid, gid):
        return [(kind, id, self.limits[kind]) for kind, id in zip(KINDS, (uid, gid))
                if kind in self.limits]

    def _held(self, kind, id):
        return self.use[kind].get(id, (0, 0))

    def _check(self, uid: int, gid: int, pages: int, inodes: int, caller: int | None,
               only: list[tuple[str, int]] | None = None) -> None:
        for kind, id, limits in self._limited(uid, gid):
            if only is not None and (kind, id) not in only:
                continue
            held_pages, held_inodes = self._held(kind, id)
            prefix = OPTION_PREFIX[kind]
            # Only what grows is checked: a limit lowered below the use in
            # force refuses more, and nothing else.
            over = (f"{prefix}_block_hardlimit={limits.bytes}"
                    if pages and limits.bytes and (held_pages + pages) * PAGE > limits.bytes
                    else f"{prefix}_inode_hardlimit={limits.inodes}"
                    if inodes and limits.inodes and held_inodes + inodes > limits.inodes
                    else None)
            if over and not self._exempt(caller):
                raise OverQuota(f"{kind} {id}'s {over}")

    def _add(self, uid: int, gid: int, pages: int, inodes: int,
             kinds: Collection[str] | None = None) -> None:
        """Count for *kinds*, by default those turned on."""
        for kind, id in zip(KINDS, (uid, gid)):
            if kind not in (self.limits if kinds is None else kinds):
                continue
            held = self.use[kind].setdefault(id, [0, 0])
            held[0] += pages
            held[1] += inodes
            if held == [0, 0]:
                del self.use[kind][id]
