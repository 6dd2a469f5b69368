"""sd_notify: telling systemd that the mount is ready, reloading or stopping."""

import logging
import os
import socket
import time

log = logging.getLogger("holefs")


def notify(message):
    """Send one sd_notify message, if systemd is listening."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError as e:
            log.warning("cannot notify systemd: %s", e)


def reloading():
    """The message that starts a reload; systemd 253's notify-reload wants
    the clock with it, and older ones ignore it."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
