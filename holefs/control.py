"""The holefs command's channel to its daemon: ioctls on the mount's root.

An ioctl reaches the daemon where an xattr would not, on a read-only
mount, and its reply carries a refusal's reason back to the one caller
that asked.  Each request is the option text, NUL-terminated, in a buffer
of TEXT_MAX bytes; the reply is the ioctl's result, 0 or an errno, with
the reason in the same buffer.  The shim hands every ioctl of
CONTROL_TYPE to the daemon's control handler (holefs/daemon/_shim.c).
"""

import errno
import fcntl
import os

CONTROL_TYPE = ord("H")
TEXT_MAX = 4096


def _iowr(number):
    """_IOWR(CONTROL_TYPE, number, char[TEXT_MAX]), as asm-generic encodes it
    (x86, arm and the others that Debian's holefs runs on)."""
    return (3 << 30) | (TEXT_MAX << 16) | (CONTROL_TYPE << 8) | number


REMOUNT = _iowr(1)
"""Apply the options: size=, ram= and nr_inodes= change, and the daemon
takes the mount's flags anew from the kernel."""
CHECK_REMOUNT = _iowr(2)
"""Whether REMOUNT of the same text would be refused, changing nothing."""


def ask(mountpoint, command, text):
    """Send *command* with the option *text* to the daemon of *mountpoint*;
    raise OSError with the daemon's reason if it refuses."""
    encoded = os.fsencode(text)
    if b"\0" in encoded:
        raise OSError(errno.EINVAL, "the options hold a NUL")
    if len(encoded) >= TEXT_MAX:
        raise OSError(errno.E2BIG, f"the options are {len(encoded)} bytes; at most "
                                   f"{TEXT_MAX - 1} fit")
    buffer = bytearray(TEXT_MAX)
    buffer[:len(encoded)] = encoded
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = fcntl.ioctl(fd, command, buffer, True)
    except OSError as e:
        if e.errno == errno.ENOTTY:
            raise OSError(e.errno, "the daemon serving it is older than this holefs command; "
                                   "it takes new options once mounted again") from None
        raise
    finally:
        os.close(fd)
    if result:
        reason = buffer.partition(b"\0")[0].decode(errors="replace")
        raise OSError(result, reason or os.strerror(result))


def reply(pending, code=0, reason=""):
    """Answer a control ioctl: *code* 0 or an errno, and why."""
    pending.answer(code, os.fsencode(reason)[:TEXT_MAX - 1] + b"\0")
