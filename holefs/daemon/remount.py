"""Live reconfiguration: `mount -o remount,...` and `holefs remount`.

The holefs command asks by ioctl on the mount's root (holefs/control.py):
first whether the options would be refused, then, once it has given the
kernel the mount's flags (ro, nosuid, noatime...) by mount(2), to apply
them.  The kernel tells who asks: only root or the mount's owner (the
daemon's uid) may remount.  A refusal is answered with its reason, and
logged for the journal of `systemctl reload`.

size=, ram= and nr_inodes= change at once.  When ram= shrinks below what
RAM holds, the coldest chunks move to spill a batch at a time, with trio
serving requests between batches, and the remount returns when RAM fits.
Remounts are served one at a time, in the order they came.
"""

import errno
import logging
import os
import time

import pyfuse3
import trio

from .. import control
from .. import options as mount_options
from ..credentials import caller_uid
from ..extents import PAGE
from ..mounttable import mount_flags, options_in_force
from ..status import human
from ..tiers import open_spill_tier
from .sdnotify import notify, reloading

log = logging.getLogger("holefs")

SPILL_BATCH = 32
"""Chunks (2 MiB) moved to spill between two yields to trio: about 4 ms of
work (measured: 176 MiB in 0.35 s with 128), which bounds how long a
request waits behind a ram= shrink."""
BATCH_GAP = 0.001
"""Seconds between two batches.  trio's other tasks would run in a bare
yield, but the shim's threads, waiting for the lock that each batch holds,
need time to wake and take it.  Measured, 176 MiB moved under a busy
client: without the gap 0.15 s, the client's slowest loop 81 ms; with it
0.25 s, and 2-5 ms."""
REMOUNTS_WAITING = 16


class Refused(Exception):
    """A remount that cannot happen: the errno for setxattr, and why."""

    def __init__(self, code, why):
        super().__init__(why)
        self.errno = code


class Remount:
    """Serves the remount ioctls of one mount."""

    def __init__(self, state, mountpoint):
        self.state = state
        self.mountpoint = mountpoint
        self._token = None  # trio's, once serve() runs
        self._send, self._waiting = trio.open_memory_channel(REMOUNTS_WAITING)
        self._under_way = False  # a remount taken from the queue, not yet answered

    def submit(self, pending, inode, cmd, data, uid, pid):
        """The shim's control handler, on any thread: refuse at once what
        is not a remount by root or the owner, and queue the rest for
        serve()."""
        if cmd not in (control.REMOUNT, control.CHECK_REMOUNT) or inode != pyfuse3.ROOT_INODE:
            raise OSError(errno.ENOTTY, "not a holefs control request")
        text = os.fsdecode(data.partition(b"\0")[0])
        uid = caller_uid(uid, pid)
        if uid not in (0, os.getuid()):
            self._refuse(pending, uid, Refused(
                errno.EPERM, f"only root or the mount's owner (uid {os.getuid()}) may "
                             f"remount it, not uid {uid}"))
        elif self._token is None:
            raise OSError(errno.EAGAIN, "not serving yet")
        else:
            self._token.run_sync_soon(self._queue, pending, cmd == control.CHECK_REMOUNT,
                                      text, uid)

    def _queue(self, pending, check, text, uid):
        try:
            self._send.send_nowait((pending, check, text, uid))
        except trio.WouldBlock:
            control.reply(pending, errno.EAGAIN, f"{REMOUNTS_WAITING} remounts are waiting "
                                                 "already; try again")

    async def serve(self):
        """Serve the queued remounts in order, so that no two interleave."""
        self._token = trio.lowlevel.current_trio_token()
        async for pending, check, text, uid in self._waiting:
            self._under_way = True
            try:
                await self._remount(text, check)
            except Refused as e:
                self._refuse(pending, uid, e)
            except Exception:
                log.exception("remount of %s failed", self.mountpoint)
                control.reply(pending, errno.EIO, "holefs failed; its log says why")
            else:
                control.reply(pending)
            finally:
                self._under_way = False

    @property
    def busy(self):
        """Whether a remount is queued or under way: a hand-over is refused then."""
        return self._under_way or self._send.statistics().current_buffer_used > 0

    def _refuse(self, pending, uid, refusal):
        log.warning("remount of %s by uid %d refused: %s", self.mountpoint, uid, refusal)
        control.reply(pending, refusal.errno, str(refusal))

    async def _remount(self, text, check):
        # Planned without the lock, and the mount table read so: the kernel
        # may be waiting for this daemon while it answers, and opening a
        # spill file takes its time; the shim's threads serve meanwhile.
        in_force, flags = options_in_force(self.mountpoint), mount_flags(self.mountpoint)
        new, spill = self._plan(text, in_force)
        if check:
            if spill is not None:
                spill.close()
            return
        notify(reloading())
        try:
            with self.state.lock:
                self.state.remount(new, spill, flags)
        except ValueError as e:  # what is in use grew since the plan
            if spill is not None:
                spill.close()
            notify("READY=1")
            raise Refused(errno.EINVAL, str(e)) from None
        self._say_remounted(new, flags)
        try:
            await self._spill_excess()
        finally:
            notify("READY=1")

    def _plan(self, text, in_force):
        """The new options, and a spill tier if they turn spill on; refuse
        what does not fit what is in use, as tmpfs refuses (EINVAL).  Read
        without the lock: MountState.remount checks again under it."""
        state = self.state
        store, current = state.store, state.options
        try:
            new = mount_options.remount(current, text, in_force)
        except mount_options.OptionError as e:
            raise Refused(errno.EINVAL, str(e)) from None
        if new.size // PAGE < store.used:
            raise Refused(errno.EINVAL, f"size={human(new.size)} is less than the "
                                        f"{human(store.used * PAGE)} in use")
        if store.spill is not None and new.spill != current.spill:
            raise Refused(errno.EINVAL, f"spill={new.spill}: the spill file is open in "
                                        f"{current.spill} and stays there until unmounted")
        # RAM holds at most what is in use, which fits size=; so RAM beyond
        # ram= means that ram= < size=, and spill is on.
        excess = store.ram.pages - new.ram // PAGE
        spill = None
        if new.spills and store.spill is None:
            try:
                spill = open_spill_tier(new.spill)
            except OSError as e:
                in_ram = f"; ram={human(new.ram)} is less than the " \
                    f"{human(store.ram.pages * PAGE)} in RAM" if excess > 0 else ""
                raise Refused(errno.EINVAL, f"ram= below size= turns spill on, which "
                                            f"failed: {e.strerror}{in_ram}") from None
        tier = spill or store.spill
        if excess > 0 and tier.free_pages() < excess:
            if spill is not None:
                spill.close()
            raise Refused(errno.ENOSPC, f"ram={human(new.ram)} would move "
                                        f"{human(excess * PAGE)} to spill, but {new.spill} "
                                        f"has {human(tier.free_pages() * PAGE)} free")
        return new, spill

    def _say_remounted(self, new, flags):
        if new.debug:
            logging.getLogger().setLevel(logging.DEBUG)
        for option, why in new.no_effect:
            log.warning("option %s has no effect: %s", option, why)
        log.info("remounted %s: %s", self.mountpoint, new.describe(flags))

    async def _spill_excess(self):
        """Move the coldest chunks to spill until RAM fits ram= again, a
        batch at a time, serving requests in between."""
        store = self.state.store
        if store.ram.pages <= store.ram_budget:
            return
        started, moved = time.monotonic(), 0
        log.info("ram=%s: moving %s from RAM to spill", human(store.ram_budget * PAGE),
                 human((store.ram.pages - store.ram_budget) * PAGE))
        while store.ram.pages > store.ram_budget:
            try:
                with self.state.lock:  # held for one batch, never across an await
                    step = store.spill_excess(SPILL_BATCH)
            except OSError as e:
                raise Refused(e.errno, f"moving RAM to spill stopped: {e.strerror}; "
                                       f"{human(store.ram.pages * PAGE)} is in RAM") from None
            if not step:
                break
            moved += step
            await trio.sleep(BATCH_GAP)
        log.info("ram=%s reached: moved %s to spill in %.2f s",
                 human(store.ram_budget * PAGE), human(moved * PAGE),
                 time.monotonic() - started)
