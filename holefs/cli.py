"""The holefs command: mount, remount, umount, status and punch."""

import argparse
import errno
import importlib.metadata
import json
import logging
import logging.handlers
import os
import sys

from . import control
from . import options as mount_options
from .logtext import SafeFormatter
from .mounttable import (
    is_stale,
    mount8_last_atime_wins,
    mounted_on,
    options_in_force,
    set_flags,
    unmount,
)
from .release import NotOnHolefs, release
from .status import format_file_status, format_mount_status, read_status

MOUNT_HELP = f"""\
options (-o, comma-separated, as for tmpfs):
  size=SIZE       total data, RAM plus spill: bytes (decimal, 0x hex or
                  0-led octal) with a k/m/g/t/p/e suffix,
                  or % of RAM (default 50%)
  nr_inodes=N     most inodes and extra hard links (default: RAM pages / 2);
                  xattrs share its budget of N KiB, as on tmpfs
  mode=MODE       octal mode of the root directory (default 1777)
  uid=, gid=      owner of the root directory (default: the caller)
  ram=SIZE        most file data kept in RAM (default: size=); data beyond it
                  goes to the spill file, least recently used first
  spill=DIR       directory on local disk for the spill file, which is
                  private and unnamed (default {mount_options.DEFAULT_SPILL});
                  used only when ram= is below size=
  allow_other     let other users in (root, or user_allow_other in
                  /etc/fuse.conf); default_permissions is always on
  reserve         a file that grows (ftruncate, a write past EOF) takes all
                  its new space at once, so a full filesystem fails that call
                  with ENOSPC instead of a later writeback from a shared
                  mapping; files are then not sparse (use it for /dev/shm)
  writeback_cache let the kernel's page cache take writes and hand them to
                  holefs later, as a disk filesystem's does: small writes
                  no longer wait for the daemon; what does not fit is
                  reported by fsync, msync and close (default off)
  bdi_max_ratio=N let this mount's unwritten pages hold N percent of the
                  kernel's dirty limit, not FUSE's strict 1%: writers through
                  mappings and the writeback cache are not held to the
                  daemon's pace, but a writer in a small memory cgroup may be
                  OOM-killed, as on tmpfs (as root; default: FUSE's 1%)
  fsname=NAME     source name shown by df and mount (default holefs)
  threads=N       threads that serve reads, writes and punches, so that
                  several programs are served at once (default 2; 0: one
                  thread serves everything)
  debug           log at debug level, including every request that fails
  usrquota, grpquota, quota   user, group or both quotas, as on tmpfs:
                  each user (group) gets these limits; EDQUOT beyond them
  usrquota_block_hardlimit=SIZE, usrquota_inode_hardlimit=N
  grpquota_block_hardlimit=SIZE, grpquota_inode_hardlimit=N
                  the limits on each user's (group's) data and inodes
  nr_blocks=N     tmpfs's other spelling of size=, in 4 KiB pages
  noswap          all data in RAM, none spilled: ram= is size=
  size=0, nr_inodes=0   no limit, as on tmpfs
  huge=, mpol=, inode64, lazytime   accepted from tmpfs, with no effect here
  ro, nosuid, nodev, noexec, noatime, sync ...   passed to the kernel

examples:
  holefs mount /mnt/pool -o size=4G,ram=1G
  mount -t fuse.holefs none /mnt/pool -o size=1G,nosuid,nodev
  fstab:  none /mnt/pool fuse.holefs size=1G,ram=256M,nosuid,nodev 0 0
  mount -o remount,size=8G /mnt/pool      (see holefs remount --help)
"""

REMOUNT_HELP = """\
size=, nr_blocks=, ram=, nr_inodes=, noswap, and the quotas and their
limits change a running mount, and spill=DIR turns spill on if it is not
on yet.  What is not named stays as it is.  Shrinking ram= moves the
coldest data to spill while files stay in use, and returns once RAM fits.
The mount's flags change too, as root: ro and rw, nosuid, nodev, noexec,
sync, and noatime, relatime or strictatime; ro waits for the data to be
written back, and is refused while a file is open for writing.  Refused,
with the reason, as tmpfs refuses: size= or nr_inodes= below what is in
use, and what only a new mount can change (mode=, uid=, gid=, fsname=,
reserve, writeback_cache, bdi_max_ratio=, allow_other).
Only root and the user who mounted it may remount.

examples:
  holefs remount /mnt/pool -o size=8G,ram=2G
  mount -o remount,size=8G /mnt/pool
  mount -o remount,ro /mnt/pool
  systemctl reload holefs@mnt-pool    # after editing /etc/holefs/mnt-pool.conf
"""

COMMANDS = ("mount", "remount", "restart", "umount", "status", "punch")


def parse_size(text):
    try:
        return mount_options.parse_size("size", text)
    except mount_options.OptionError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: give a number with an optional k, m, g, t or p "
            "suffix") from None


def build_parser():
    parser = argparse.ArgumentParser(
        prog="holefs",
        description="A tmpfs-like FUSE filesystem whose hole punches give memory back.")
    parser.add_argument("--version", action="version",
                        version=f"holefs {importlib.metadata.version('holefs')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = sub.add_parser(
        "mount", help="mount a new holefs", description="Mount a new holefs. "
        "Without -f, returns once the mount is live.",
        epilog=MOUNT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    mount.add_argument("mountpoint")
    mount.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                       help="mount options, see below; given more than once, they add up")
    mount.add_argument("-f", "--foreground", action="store_true",
                       help="serve in the foreground (for systemd), logging to stderr")
    mount.add_argument("--debug", action="store_true", help="same as -o debug")

    remount = sub.add_parser(
        "remount", help="change the size, RAM, inodes or flags of a running mount",
        description="Change the options of a running holefs, as "
        "`mount -o remount,OPTIONS` does.", epilog=REMOUNT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    remount.add_argument("mountpoint")
    remount.add_argument("-o", dest="options", action="append", required=True,
                         metavar="OPTIONS", help="options to change, as for mount; "
                         "given more than once, they add up")
    # mount(8) gives its helper every flag to leave in force: a flag that
    # it leaves out is off.
    remount.add_argument("--from-mount", action="store_true", help=argparse.SUPPRESS)

    restart = sub.add_parser(
        "restart", help="hand a running mount over to a new daemon, losing nothing",
        description="Start a daemon of the installed holefs that takes the running "
        "mount over: its files, data, open files and mappings stay as they are, and "
        "requests made meanwhile wait, then complete.  The old daemon serves on if "
        "the new one cannot take over, and this says why.")
    restart.add_argument("mountpoint")
    restart.add_argument("-f", "--foreground", action="store_true",
                         help="serve in the foreground, logging to stderr")
    restart.add_argument("--debug", action="store_true", help="log at debug level")

    umount = sub.add_parser("umount", help="unmount, also after the daemon died",
                            description="Unmount a holefs. Also cleans up a stale "
                            "mount whose daemon was killed.  Refuses anything that "
                            "is not a holefs.")
    umount.add_argument("mountpoint")
    umount.add_argument("-l", "--lazy", action="store_true",
                        help="detach now, even while files are open (umount -l)")

    status = sub.add_parser(
        "status", help="show where a mount's or a file's memory is",
        description="For a mountpoint: size, use, RAM, spill and inodes. "
        "For a file: its map of RAM, spill and holes.")
    status.add_argument("path")
    status.add_argument("--json", action="store_true", help="print JSON")

    punch = sub.add_parser(
        "punch", help="free a range of a file (fallocate PUNCH_HOLE)",
        description="Free a byte range of a file so that it reads as zeros.")
    punch.add_argument("path")
    punch.add_argument("offset", type=parse_size, help="start, e.g. 4096 or 1M")
    punch.add_argument("length", type=parse_size, help="length, e.g. 64k or 1G")
    punch.add_argument("--zero", action="store_true",
                       help="zero the range but keep it allocated (FALLOC_FL_ZERO_RANGE); "
                       "this allocates the holes in it, so it can fail with ENOSPC")
    punch.add_argument("--any-fs", action="store_true",
                       help="punch a file that is not on holefs too (it gives no memory "
                       "back there, only zeros)")
    return parser


def fstab_form(argv):
    """mount.fuse3 runs `holefs SOURCE MOUNTPOINT -o OPTIONS`: make it a
    mount, or a remount if OPTIONS say remount."""
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-") and len(argv) >= 2:
        source, rest = argv[0], argv[1:]
        options = rest[rest.index("-o") + 1:][:1] if "-o" in rest else []
        if options and "remount" in options[0].split(","):
            return ["remount", "--from-mount", *rest]
        if source != "none" and "-o" in rest:
            i = rest.index("-o") + 1
            if i < len(rest) and "fsname=" not in rest[i]:
                rest[i] += f",fsname={source}"
        return ["mount", *rest]
    return argv


def main(argv=None):
    argv = fstab_form(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        return {"mount": cmd_mount, "remount": cmd_remount, "restart": cmd_restart,
                "umount": cmd_umount, "status": cmd_status,
                "punch": cmd_punch}[args.command](args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`holefs status | head -1`): no traceback,
        # and none either when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def fail(message, status=1):
    print(f"holefs: {message}", file=sys.stderr)
    return status


def log_file(mountpoint):
    """Where a background daemon logs when there is no syslog to log to:
    /var/log/holefs for root, ~/.local/state/holefs for others, one file a
    mount, named like its systemd unit."""
    name = os.path.abspath(mountpoint).strip("/").replace("/", "-") or "-"
    if os.geteuid() == 0:
        directory = "/var/log/holefs"
    else:
        directory = os.path.join(os.environ.get("XDG_STATE_HOME")
                                 or os.path.expanduser("~/.local/state"), "holefs")
    return os.path.join(directory, f"{name}.log")


def setup_logging(debug, detached_from=None):
    """Log to stderr; a daemon *detached_from* its mount command logs to
    syslog, or, where nothing listens on /dev/log, to its log_file()."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    form = "%(levelname)s %(message)s"
    if detached_from and os.path.exists("/dev/log"):
        syslog = logging.handlers.SysLogHandler("/dev/log")
        syslog.ident = f"holefs[{os.getpid()}]: "
        handler = syslog
    elif detached_from:
        path = log_file(detached_from)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            handler = logging.FileHandler(path)
            form = f"%(asctime)s holefs[{os.getpid()}]: {form}"
        except OSError:
            pass  # nowhere to write: a daemon that serves beats one that logs
    handler.setFormatter(SafeFormatter(form))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def cmd_mount(args):
    try:
        opts = mount_options.parse(",".join(args.options))
    except mount_options.OptionError as e:
        return fail(f"mount: {e}", 2)
    opts.debug = opts.debug or args.debug
    from .daemon.mount import MountError, serve  # the shim, then pyfuse3

    return _daemon("mount", args.mountpoint, opts.debug, args.foreground,
                   lambda on_ready: serve(args.mountpoint, opts, on_ready), MountError)


def cmd_restart(args):
    mountpoint, why = holefs_mounted_on("restart", args.mountpoint)
    if why:
        return fail(why)
    try:
        pid = read_status(mountpoint)["pid"]
    except OSError as e:
        return fail(f"restart: {args.mountpoint}: {e.strerror}")
    unit = systemd_unit(pid)
    if unit:
        return fail(f"restart: {mountpoint}: served by {unit}, which a hand-over would "
                    "leave stopped; holefs cannot yet hand over through systemd")
    from .daemon.mount import MountError, take_over

    return _daemon("restart", mountpoint, args.debug, args.foreground,
                   lambda on_ready: take_over(mountpoint, pid, on_ready), MountError)


def systemd_unit(pid):
    """The systemd service that process *pid* runs in, or None."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            paths = dict(line.rstrip("\n").split(":", 2)[1:] for line in f)
    except (OSError, ValueError):
        return None
    unit = paths.get("", paths.get("name=systemd", "")).rpartition("/")[2]
    return unit if unit.endswith(".service") and not unit.startswith("user@") else None


def _daemon(command, mountpoint, debug, foreground, serve, MountError):
    """Run *serve*(on_ready) in the foreground, or in a daemon forked for
    it, and return once it reports the mount served, or why not."""
    if foreground:
        setup_logging(debug)
        try:
            serve(lambda: None)
        except MountError as e:
            return fail(f"{command}: {e}")
        return 0
    return _in_background(command, mountpoint, debug, serve, MountError)


def _in_background(command, mountpoint, debug, serve, MountError):
    """Fork a daemon; return once it reports the mount live, or why not."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        if message == "ok":
            return 0
        if not message:
            os.waitpid(pid, 0)
            message = "the daemon exited before the mount was live"
        return fail(f"{command}: {message}")

    os.close(read_end)
    os.setsid()
    setup_logging(debug)

    def detach():
        os.write(write_end, b"ok")
        os.close(write_end)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        setup_logging(debug, detached_from=mountpoint)

    status = 0
    try:
        serve(detach)
    except MountError as e:
        os.write(write_end, str(e).encode())
        status = 1
    except BaseException:
        logging.getLogger("holefs").exception("daemon failed")
        status = 1
    os._exit(status)


def holefs_mounted_on(command, path):
    """The mountpoint *path* names, or the one-line reason it is not a holefs's."""
    mountpoint = os.path.realpath(path)
    fstype = mounted_on(mountpoint)
    if fstype is None:
        return None, f"{command}: {path}: not mounted"
    if fstype != "fuse.holefs":
        return None, f"{command}: {path}: not a holefs mount (it is {fstype})"
    return mountpoint, None


def cmd_remount(args):
    mountpoint, why = holefs_mounted_on("remount", args.mountpoint)
    if why:
        return fail(why)
    text = ",".join(args.options)
    try:
        remount(mountpoint, text, whole=args.from_mount)
    except OSError as e:
        hint = "; only root and the user who mounted it may remount it" \
            if e.errno == errno.EACCES else ""  # FUSE let the caller not even open it
        return fail(f"remount: {args.mountpoint}: {e.strerror}{hint}")
    return 0


def remount(mountpoint, text, whole=False):
    """As tmpfs does it in one mount(2): the daemon checks the options, the
    kernel takes the flags, and the daemon applies the rest; the flags go
    back if that fails.  With *whole*, *text* names every flag to keep."""
    control.ask(mountpoint, control.CHECK_REMOUNT, text)
    in_force = options_in_force(mountpoint)
    before = mount_options.kernel_flags(in_force, "")
    after = mount_options.kernel_flags(set() if whole else in_force, text,
                                       last_atime_wins=mount8_last_atime_wins())
    if after != before:
        try:
            set_flags(mountpoint, after)
        except OSError as e:
            raise OSError(e.errno, flags_refused(e)) from None
    try:
        control.ask(mountpoint, control.REMOUNT, text)
    except OSError:
        if after != before:
            set_flags(mountpoint, before)
        raise


def flags_refused(error):
    """Why the kernel refused the mount's new flags, as the caller can act."""
    if error.errno == errno.EBUSY:
        return "a file is open for writing there, so it cannot be made read-only"
    if error.errno == errno.EPERM:
        return "only root (CAP_SYS_ADMIN) may change the mount's flags"
    return f"the kernel refused the mount's flags: {error.strerror}"


def cmd_umount(args):
    mountpoint, why = holefs_mounted_on("umount", args.mountpoint)
    if why:
        return fail(why)

    # A dead daemon's mount can only be detached.
    reason = unmount(mountpoint, lazy=args.lazy or is_stale(mountpoint))
    if reason is None:
        return 0
    hint = "; close what uses it, or give -l" if "busy" in reason else ""
    return fail(f"umount: {args.mountpoint}: {reason}{hint}")


def cmd_status(args):
    try:
        s = read_status(args.path)
    except OSError as e:
        hint = f"; its daemon is gone: run 'holefs umount {args.path}'" \
            if e.errno == errno.ENOTCONN else ""
        return fail(f"status: {args.path}: {e.strerror}{hint}")
    if args.json:
        print(json.dumps(s, indent=2))
    elif "map" in s:
        print(format_file_status(s))
    else:
        print(format_mount_status(s))
    return 0


def cmd_punch(args):
    try:
        release(args.path, args.offset, args.length, zero=args.zero, any_fs=args.any_fs)
    except NotOnHolefs as e:
        return fail(f"punch: {args.path}: {e.strerror}; --any-fs punches it anyway")
    except (OSError, ValueError) as e:
        return fail(f"punch: {args.path}: {getattr(e, 'strerror', None) or e}")
    return 0
