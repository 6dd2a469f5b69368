"""Start-up and shut-down of a holefs daemon.

`serve` builds the storage, mounts, tells whoever waits (the parent
process, or systemd) that the mount is live, and runs pyfuse3's loop in a
trio nursery beside a signal handler and a status reporter.  An exit stack
makes sure the mount goes away however serving ends.
"""

import contextlib
import logging
import os
import signal
import stat
import sys

import pyfuse3
import trio

from ..extents import PAGE
from ..logtext import quoted
from ..mounttable import filesystem_type, holders, is_stale, mount_flags, unmount
from ..namespace import Namespace
from ..quota import Quotas
from ..state import MountState
from ..tiers import Store, open_ram_tier, open_spill_tier
from . import PYFUSE3_BEFORE_SHIM, _shim, bdi, handover
from .fs import CACHE_TIMEOUT, Operations
from .sdnotify import notify

log = logging.getLogger("holefs")

STATUS_INTERVAL = 5.0


class MountError(Exception):
    """A mount that cannot happen; the message is one line for the user."""


def check_mountpoint(path):
    """Refuse a mountpoint that is missing, not a directory, or in use."""
    if is_stale(path):
        raise MountError(f"{path}: a stale mount is still there; "
                         f"run 'holefs umount {path}' first")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"{path}: no such directory") from None
    except OSError as e:
        raise MountError(f"{path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"{path}: not a directory")
    if os.path.ismount(path):
        raise MountError(f"{path}: something is already mounted there")


def build_store(options):
    """The RAM tier, and the spill tier when ram= is below size=."""
    ram = open_ram_tier()
    spill = None
    if options.spills:
        try:
            spill = open_spill_tier(options.spill)
        except OSError as e:
            raise MountError(e.strerror) from None
    return Store(options.size // PAGE, options.ram // PAGE, ram, spill)


def spill_warnings(options, spill):
    """What a user should hear about the spill directory at mount time."""
    fstype = filesystem_type(options.spill)
    if fstype in ("tmpfs", "ramfs"):
        yield (f"spill directory {options.spill} is on {fstype}: "
               "spilled data stays in memory")
    beyond, free = options.size - options.ram, spill.free_pages() * PAGE
    if beyond > free:
        yield (f"size= leaves {beyond >> 20} MiB beyond ram=, but {options.spill} has "
               f"{free >> 20} MiB free: writes will fail with ENOSPC before size= is reached")


async def _tune_bdi(ops, mountpoint):
    """Find the mount's bdi and set it up (holefs/bdi.py).  The stat runs in
    a thread because this daemon answers it, and only after INIT."""
    try:
        dev = (await trio.to_thread.run_sync(os.stat, mountpoint)).st_dev
    except OSError as e:
        log.debug("cannot find the mount's bdi: %s", e)
        return
    ops.state.bdi = bdi.of_device(dev)
    bdi.tune(ops.state.bdi, ops.state.options.bdi_max_ratio)


def status_line(ops):
    """The usage line for systemd's STATUS=, read under the mount's lock
    like any request."""
    with ops.state.lock:
        usage = ops.usage()
    mib = 1 << 20
    return (f"used {usage['used'] // mib} MiB of {usage['size'] // mib} MiB; "
            f"RAM {usage['ram_used'] // mib}/{usage['ram_budget'] // mib} MiB; "
            f"spill {usage['spill_used'] // mib} MiB; "
            f"inodes {usage['inodes_used']}")


async def _report_status(ops):
    """Keep systemd's STATUS= line current while serving."""
    while True:
        notify("STATUS=" + status_line(ops))
        await trio.sleep(STATUS_INTERVAL)


async def _unmount_on_signal(mountpoint):
    """On SIGTERM, SIGINT or SIGHUP, do what umount(8) does: unmount, unless
    the mount is busy; then say so, and go on serving, rather than detach
    the mount from the programs that hold files in it."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s received, unmounting", signal.Signals(signum).name)
            # In a thread: the kernel may ask this daemon to write back pages.
            why = await trio.to_thread.run_sync(unmount, mountpoint)
            if why is None:
                notify("STOPPING=1")
                return  # the kernel ends the session, and pyfuse3.main() returns
            if "busy" in why:
                why = busy_message(mountpoint, await trio.to_thread.run_sync(holders, mountpoint))
                if os.environ.get("NOTIFY_SOCKET"):
                    why += ("; if systemd is stopping the unit, it kills holefs when "
                            "TimeoutStopSec= runs out, and they get ENOTCONN then")
            log.warning("not unmounted, still serving: %s", why)


def busy_message(mountpoint, users):
    """Why a busy mount stays, for the journal: who holds it, with how many
    files (where /proc lets holefs see), and how to force it."""
    held = ", ".join(f"{quoted(command)}[{pid}] ({count} file{'s' * (count != 1)})"
                     for pid, (command, count) in sorted(users.items()))
    who = f"held by {held}" if held else \
        f"files are open there ('fuser -vm {mountpoint}' as root names who holds them)"
    return (f"{mountpoint} is busy, {who}; signal again once they are closed, or detach "
            f"it now with 'holefs umount -l {mountpoint}', which serves them until they close")


async def _run(ops, mountpoint):
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_unmount_on_signal, mountpoint)
        nursery.start_soon(_report_status, ops)
        nursery.start_soon(_tune_bdi, ops, mountpoint)
        nursery.start_soon(ops.remount.serve)
        nursery.start_soon(ops.handover.serve)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def serve(mountpoint, options, on_ready=lambda: None):
    """Mount *mountpoint* and serve it until unmounted or signalled."""
    mountpoint = os.path.abspath(mountpoint)
    check_mountpoint(mountpoint)
    store = build_store(options)
    for option, why in options.no_effect:
        log.warning("option %s has no effect: %s", option, why)
    if store.spill is not None:
        for warning in spill_warnings(options, store.spill):
            log.warning("%s", warning)
    namespace = Namespace(options.nr_inodes, options.mode, options.uid, options.gid,
                          Quotas(options.quotas))
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        ops = _session(MountState(namespace, store, options, _shim.invalidate_attributes),
                       mountpoint, mountpoint, stack)
        _serve(ops, mountpoint, on_ready,
               f"mounted {mountpoint} (size {options.size >> 20} MiB, RAM "
               f"{options.ram >> 20} MiB, spill {options.spill if store.spill else 'off'})")


def take_over(mountpoint, pid, on_ready=lambda: None):
    """Serve the mount at *mountpoint* in place of daemon *pid*, which hands
    it over (holefs/daemon/handover.py), until unmounted or signalled."""
    mountpoint = os.path.abspath(mountpoint)
    try:
        received = handover.receive(pid)
        ns, store, options = received.load()
    except handover.Refused as e:
        raise MountError(f"{mountpoint}: {e}") from None
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        _shim.take_over(received.init_request)
        try:
            ops = _session(MountState(ns, store, options, _shim.invalidate_attributes),
                           f"/dev/fd/{received.fuse_fd}", mountpoint, stack)
            if _shim.settled() != received.settled:
                raise MountError(f"{mountpoint}: this holefs settles {_shim.settled()} with "
                                 f"the kernel, where pid {pid} settled {received.settled}")
        except MountError as e:
            received.refuse(str(e))
            raise
        try:
            received.accept()
        except (OSError, handover.Refused) as e:
            raise MountError(f"{mountpoint}: {e}") from None
        _shim.resume(received.queued)
        _serve(ops, mountpoint, on_ready,
               f"took {mountpoint} over from pid {pid} ({ns.used_inodes} inodes, "
               f"{store.used * PAGE >> 20} MiB used)")


def _session(state, fuse_mountpoint, mountpoint, stack):
    """The Operations over *state*, with pyfuse3's session on
    *fuse_mountpoint*: the mountpoint, or /dev/fd/N for the connection that
    a successor takes over."""
    ops = Operations(state, mountpoint)
    _shim.install(ops.fast, state.options.threads, CACHE_TIMEOUT,
                  state.options.writeback_cache)
    sys.unraisablehook = _log_unraisable
    try:
        pyfuse3.init(ops, fuse_mountpoint, state.options.fuse_options())
    except RuntimeError:
        raise MountError(f"{mountpoint}: the FUSE mount failed "
                         "(see the message from fusermount3 above)") from None
    stack.callback(_close_session, ops.handover)
    if not _shim.engaged():
        raise MountError(shim_not_engaged(_shim.libfuse(), PYFUSE3_BEFORE_SHIM))
    state.ns.follow_mount_flags(mount_flags(mountpoint))
    return ops


def _serve(ops, mountpoint, on_ready, started):
    """Tell whoever waits that the mount is served, and serve it."""
    on_ready()
    log.info("%s", started)
    notify("READY=1\nSTATUS=" + status_line(ops))
    trio.run(_run, ops, mountpoint)
    if ops.handover.successor is None:
        log.info("unmounted %s", mountpoint)
    else:
        log.info("%s is served by pid %d now", mountpoint, ops.handover.successor)


def shim_not_engaged(libfuse, pyfuse3_first):
    """Why pyfuse3's session bypassed the shim, in one line for the user.

    *libfuse* is what `_shim.libfuse()` tells of the library loaded.
    """
    entry_points = libfuse["entry_points"]
    if pyfuse3_first:
        cause = "pyfuse3 was loaded before holefs, so it called libfuse directly"
    else:
        cause = f"pyfuse3 called neither {' nor '.join(entry_points)}"
        missing = [name for name, found in entry_points.items() if not found]
        if missing:
            cause += f" (this libfuse has no {' and no '.join(missing)})"
    return (f"the C shim did not engage with libfuse {libfuse['version']}: {cause}; "
            "without it there is no fallocate or SEEK_HOLE")


def _log_unraisable(unraisable):
    """A handler that the shim called failed with a bug: log it, then go on."""
    log.error("%s in %r", unraisable.exc_type.__name__, unraisable.object,
              exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback))


def _close_session(handover):
    """Unmount and close; libfuse skips the unmount if it already happened.
    A daemon that handed its mount over leaves it to the successor."""
    if handover.successor is not None:
        pyfuse3.close(unmount=False)
        return
    notify("STOPPING=1")
    pyfuse3.close(unmount=True)
