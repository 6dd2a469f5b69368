"""A live hand-over of a mount to a successor daemon (`holefs restart`).

The serving daemon listens on a Unix socket in the abstract namespace,
named for its pid; each side checks the other's credentials (SO_PEERCRED).
The exchange, a line each, with the state and the descriptors between:

  successor  HANDOVER 1
  daemon     pauses (the shim's workers stop reading the fd, the requests
             queued and not yet served come out), writes its state as a
             value under the lock (holefs/snapshot.py), and sends
             "STATE <length>" with the FUSE connection and the tier files
             by SCM_RIGHTS, then the value as JSON
  successor  "TAKEN", or "REFUSED <reason>" if it cannot serve that state
  daemon     "GONE", and it exits without unmounting; on anything else (a
             refusal, EOF, a timeout) it resumes, and says why in its log
  successor  serves, only once it has read "GONE"

So at no moment do two daemons serve the mount.  Meanwhile the kernel
keeps new requests waiting, and the processes that make them only wait.
"""

import json
import logging
import os
import socket
import struct

import pyfuse3
import trio

from .. import snapshot
from ..tiers import Tier
from . import _shim

log = logging.getLogger("holefs")

PROTOCOL = b"HANDOVER 1"
ANSWER_TIMEOUT = 60.0  # for the successor to read the state and settle INIT
HELLO_TIMEOUT = 5.0  # before the pause, trio's thread waits this long at most
LINE_MAX = 4096


def address(pid):
    return f"\0holefs-handover-{pid}"


def peer(sock):
    """(pid, uid, gid) of the process at the other end."""
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               struct.calcsize("3i")))


class Refused(Exception):
    """A hand-over that did not happen, with the reason, for the user."""


class Handover:
    """The serving side: one hand-over at a time, from serve()'s task.

    Once a successor is accepted, the exchange runs on trio's thread,
    blocking it: nothing is served then anyway, and nothing may change
    the state between the value and the successor's answer."""

    def __init__(self, state, remount):
        self.state = state
        self.remount = remount
        self.successor = None  # its pid, once it took over: exit, unmount nothing

    async def serve(self):
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            try:
                await listener.bind(address(os.getpid()))
            except OSError as e:  # another process holds the name: it gets nothing
                log.warning("no hand-over to a successor (holefs restart) possible: "
                            "the socket %r: %s", address(os.getpid())[1:], e.strerror)
                return
            listener.listen(1)
            while self.successor is None:
                conn, _ = await listener.accept()
                with socket.socket(fileno=conn.detach()) as sock:
                    sock.settimeout(ANSWER_TIMEOUT)
                    try:
                        self._offer(sock)
                    except (OSError, Refused) as e:
                        log.warning("hand-over not made: %s; serving on", e)
                    except Exception:
                        log.exception("hand-over not made (a bug); serving on")
        pyfuse3.terminate()

    def _offer(self, sock):
        pid, uid, _ = peer(sock)
        if uid not in (0, os.getuid()):
            sock.sendall(b"REFUSED only root or the mount's owner may take it over\n")
            raise Refused(f"uid {uid} (pid {pid}) asked to take the mount over")
        sock.settimeout(HELLO_TIMEOUT)
        hello = read_line(sock)
        sock.settimeout(ANSWER_TIMEOUT)
        if hello != PROTOCOL:
            sock.sendall(b"REFUSED this holefs speaks " + PROTOCOL + b"\n")
            raise Refused(f"pid {pid} asked for {hello[:80]!r}")
        if self.remount.busy:
            sock.sendall(b"REFUSED a remount is in progress; try again\n")
            raise Refused("a remount is in progress")
        try:
            queued = _shim.pause()
        except RuntimeError as e:
            sock.sendall(b"REFUSED the daemon cannot pause: %s\n" % str(e).encode())
            raise Refused(f"cannot pause: {e}") from None
        try:
            with self.state.lock:
                payload = json.dumps({
                    "state": snapshot.dump(self.state.ns, self.state.store, self.state.options),
                    "init_request": _shim.init_request().hex(),
                    "settled": _shim.settled(),
                    "queued": [request.hex() for request in queued],
                }).encode()
            store = self.state.store
            fds = [_shim.connection_fd(), store.ram.fd] + \
                ([store.spill.fd] if store.spill is not None else [])
            socket.send_fds(sock, [b"STATE %d\n" % len(payload)], fds)
            sock.sendall(payload)
            answer = read_line(sock)
            if answer != b"TAKEN":
                raise Refused(f"pid {pid} answered: {answer.decode(errors='replace')}")
            sock.sendall(b"GONE\n")
        except BaseException:
            _shim.resume(queued)
            raise
        self.successor = pid
        log.info("handed over to pid %d, with %d requests queued", pid, len(queued))


class Received:
    """The successor's side: what the serving daemon handed over, and the
    socket to answer it on."""

    def __init__(self, sock, value, fds):
        self.sock = sock
        self.fuse_fd = fds[0]
        self.fds = fds
        self.init_request = bytes.fromhex(value["init_request"])
        self.settled = value["settled"]
        self.queued = [bytes.fromhex(request) for request in value["queued"]]
        self.value = value["state"]

    def load(self):
        """(ns, store, options) over the tier files, or Refused."""
        ram = Tier(self.fds[1], "ram")
        spill = Tier(self.fds[2], "spill") if len(self.fds) > 2 else None
        try:
            return snapshot.load(self.value, ram, spill)
        except snapshot.Unreadable as e:
            self.refuse(str(e))
            raise Refused(str(e)) from None

    def refuse(self, why):
        try:
            self.sock.sendall(b"REFUSED " + why.encode() + b"\n")
        except OSError:
            pass  # it is gone, and serves on or not as it decided
        self.sock.close()

    def accept(self):
        """Tell the daemon that this one serves from now; Refused unless it
        answers that it is gone."""
        self.sock.sendall(b"TAKEN\n")
        answer = read_line(self.sock)
        self.sock.close()
        if answer != b"GONE":
            raise Refused(f"the old daemon did not let go ({answer!r}); it serves on")


def receive(pid):
    """Ask daemon *pid* to hand its mount over to this process: Received,
    or Refused with the reason."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(ANSWER_TIMEOUT)
    try:
        sock.connect(address(pid))
    except OSError as e:
        sock.close()
        raise Refused(f"pid {pid} takes no hand-over ({e.strerror}): a holefs from before "
                      "restart existed, or no holefs") from None
    if peer(sock)[0] != pid:
        sock.close()
        raise Refused(f"the hand-over socket of pid {pid} is held by another process")
    sock.sendall(PROTOCOL + b"\n")
    message, fds, _, _ = socket.recv_fds(sock, LINE_MAX, 3, socket.MSG_CMSG_CLOEXEC)
    line, _, rest = message.partition(b"\n")
    words = line.split()
    if words[:1] != [b"STATE"] or len(words) != 2 or not words[1].isdigit():
        for fd in fds:
            os.close(fd)
        sock.close()
        raise Refused(line.removeprefix(b"REFUSED ").decode(errors="replace"))
    length = int(words[1])
    payload = bytearray(rest)
    while len(payload) < length:
        chunk = sock.recv(min(length - len(payload), 1 << 20))
        if not chunk:
            raise Refused("the old daemon closed the connection mid-state")
        payload += chunk
    return Received(sock, json.loads(payload), fds)


def read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk or len(data) > LINE_MAX:
            break
        data += chunk
    return data.rstrip(b"\n")
