"""One mount's served state, and its one lock (passthrough_hp's struct Fs
is the model).  Operations, FastPath and Remount are adapters over it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from ..extents import PAGE
from ..namespace import Namespace
from ..options import MountOptions
from ..tiers import Store, Tier

log = logging.getLogger("holefs")


class MountState:
    """The state that a mount's requests read and change.

    Fields, all guarded by *lock* unless said otherwise:
      ns       the namespace: inodes, names, xattrs, quotas, lookup counts.
      store    the pages: the RAM and spill tiers and the slots of each
               file's map.  Invariant: store.used <= store.limit.
      options  the options in force, replaced whole by remount() and never
               changed in place.  Invariant: store's limits and ns's limits
               are the ones it gives.
      bdi      the mount's backing device in sysfs (daemon/bdi.py), set
               once after INIT and read without the lock.

    The lock rule: take the GIL first, then *lock*; hold it for one request,
    or one batch of a long one (a punch of more than PUNCH_BATCH, moving RAM
    to spill after ram= shrank), and never across an await.  A spliced READ
    reply goes out under it, because a slot must not be reused before the
    kernel holds its pages (READ REPLIES in _shim.c); every other reply
    goes out after it is let go.
    """

    def __init__(self, ns: Namespace, store: Store, options: MountOptions) -> None:
        self.ns = ns
        self.store = store
        self.options = options
        self.bdi: str | None = None
        self.lock = threading.Lock()

    def remount(self, new: MountOptions, spill: Tier | None, flags: Iterable[str]) -> None:
        """Put *new* options in force, with *spill* if they turn spill on,
        under the lock, whatever changed since they were planned without
        it: ValueError, and nothing changed, if what is in use now exceeds
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
