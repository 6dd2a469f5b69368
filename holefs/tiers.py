"""Where file data lives: a RAM tier, a spill tier, and the store over both.

Each tier is one sparse file cut into CHUNK-sized slots.  The RAM tier is a
memfd, so its pages are shmem that the daemon never maps: freeing a slot is
a FALLOC_FL_PUNCH_HOLE on the memfd, which hands the pages straight back to
the kernel, whatever Python's allocator does.  The spill tier is an
unnamed O_TMPFILE on local disk, punched the same way, so its blocks go back
to the disk, and all of it when the daemon dies.

A location is an int: a RAM slot is >= 0, a spill slot s is stored as ~s.
"""

import collections
import errno
import heapq
import os

from . import _shim
from ._shim import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from .extents import CHUNK

PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


class NoSpace(OSError):
    """The filesystem (size=) or the spill disk is full; *why* says which."""

    def __init__(self, why):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.why = why


class Tier:
    """A sparse file of CHUNK-sized slots, handed out lowest first."""

    def __init__(self, fd, capacity):
        self.fd = fd
        self.capacity = capacity  # slots
        self.used = 0
        self._free = []           # heap of freed slots below _high
        self._high = 0            # slots at or above this were never used

    def alloc(self):
        """Return a free slot (all zeros), or None when the tier is full."""
        if self._free:
            slot = heapq.heappop(self._free)
        elif self._high < self.capacity:
            slot = self._high
            self._high += 1
        else:
            return None
        self.used += 1
        return slot

    def release(self, slot):
        """Return a slot's memory or disk blocks and make it reusable."""
        self.zero(slot, 0, CHUNK)
        heapq.heappush(self._free, slot)
        self.used -= 1

    def zero(self, slot, start, length):
        _shim.fallocate(self.fd, PUNCH, slot * CHUNK + start, length)

    def holds_data(self, slot):
        """False while a slot is all hole, as a reserved chunk is until written."""
        try:
            return os.lseek(self.fd, slot * CHUNK, os.SEEK_DATA) < (slot + 1) * CHUNK
        except OSError as e:
            if e.errno == errno.ENXIO:
                return False
            raise

    def read_into(self, view, slot, start):
        os.preadv(self.fd, [view], slot * CHUNK + start)

    def write(self, slot, start, data):
        # A full disk under the spill file fails here, before any map change.
        done = os.pwrite(self.fd, data, slot * CHUNK + start)
        if done != len(data):
            raise OSError(errno.ENOSPC, "short write to a storage tier")

    def allocated_bytes(self):
        return os.fstat(self.fd).st_blocks * 512


def open_ram_tier(capacity):
    fd = os.memfd_create("holefs-ram", os.MFD_CLOEXEC)
    os.ftruncate(fd, capacity * CHUNK)
    return Tier(fd, capacity)


def open_spill_tier(directory, capacity):
    """Create the private spill file in *directory* and prove it can punch.

    Raises OSError with a message fit for the user when it cannot.
    """
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise OSError(e.errno, f"spill directory {directory}: {os.strerror(e.errno)}") from None
    try:
        os.pwrite(fd, b"\xff" * 4096, 0)
        _shim.fallocate(fd, PUNCH, 0, 4096)
    except OSError as e:
        os.close(fd)
        raise OSError(e.errno, f"spill directory {directory} cannot punch holes: "
                      f"{os.strerror(e.errno)}") from None
    return Tier(fd, capacity)


class Store:
    """Allocates chunks in RAM up to a budget, spilling the coldest to disk."""

    def __init__(self, limit, ram, spill=None):
        self.limit = limit        # chunks in all, from size=
        self.ram = ram
        self.spill = spill
        self._lru = collections.OrderedDict()  # RAM slot -> (extent map, index)

    @property
    def used(self):
        return self.ram.used + (self.spill.used if self.spill else 0)

    def read(self, emap, offset, length):
        buf = bytearray(length)
        view = memoryview(buf)
        pos = 0
        for piece in emap.pieces(offset, length):
            loc = piece.location
            if loc is not None:
                tier, slot = self._resolve(loc)
                tier.read_into(view[pos:pos + piece.length], slot, piece.start)
            pos += piece.length
        return buf

    def write(self, emap, offset, data):
        """Write *data*; return how much fit.  Raise NoSpace if nothing did."""
        view = memoryview(data)
        pos = 0
        for piece in emap.pieces(offset, len(data)):
            try:
                loc = piece.location
                if loc is None:
                    loc = self._allocate(emap, piece.index)
                tier, slot = self._resolve(loc)
                tier.write(slot, piece.start, view[pos:pos + piece.length])
            except OSError:
                # Out of room, under size= or on the spill disk: a short
                # write if anything fit, as write(2) promises.
                if pos:
                    return pos
                raise
            pos += piece.length
        return pos

    def reserve(self, emap, offset, length, zero=False):
        """Allocate every hole chunk of the range, all or nothing.

        With *zero*, also zero what is already allocated there, in place,
        so that the tier gives back those pages or blocks.
        """
        if self.used + emap.missing(offset, length) > self.limit:
            raise NoSpace("size= is reached")
        for piece in emap.pieces(offset, length):
            if piece.location is None:
                self._allocate(emap, piece.index)
            elif zero:
                tier, slot = self._resolve(piece.location)
                tier.zero(slot, piece.start, piece.length)

    def punch(self, emap, offset, length):
        freed, partial = emap.cut(offset, length)
        self._release(freed, partial)

    def truncate(self, emap, size):
        freed, partial = emap.truncate(size)
        self._release(freed, partial)

    def free_all(self, emap):
        self._release(emap.clear(), ())

    def describe(self, emap, size):
        """The file's map as runs of ram, spill and hole, for holefs status."""
        runs = []
        pos = 0

        def add(kind, start, end):
            if end <= start:
                return
            if runs and runs[-1][0] == kind and runs[-1][2] == start:
                runs[-1][2] = end
            else:
                runs.append([kind, start, end])

        for index, location in sorted(emap):
            start = index * CHUNK
            add("hole", pos, start)
            add("ram" if location >= 0 else "spill", start, start + CHUNK)
            pos = start + CHUNK
        add("hole", pos, size)
        return [{"where": kind, "start": start, "length": end - start}
                for kind, start, end in runs]

    def _resolve(self, location):
        if location >= 0:
            self._lru.move_to_end(location)
            return self.ram, location
        return self.spill, ~location

    def _allocate(self, emap, index):
        if self.used >= self.limit:
            raise NoSpace("size= is reached")
        slot = self.ram.alloc()
        if slot is None:
            slot = self._evict()
        self._lru[slot] = (emap, index)
        emap.set(index, slot)
        return slot

    def _evict(self):
        """Move the least recently used RAM chunk to the spill tier."""
        if self.spill is None:
            raise NoSpace("ram= is full and there is no spill")
        target = self.spill.alloc()
        if target is None:
            raise NoSpace("the spill file is full")
        slot, (owner, index) = next(iter(self._lru.items()))
        # A fresh spill slot is a hole already: copy only what was written.
        if self.ram.holds_data(slot):
            data = os.pread(self.ram.fd, CHUNK, slot * CHUNK)
            try:
                self.spill.write(target, 0, data)
            except OSError as e:
                self.spill.release(target)
                raise NoSpace(f"the spill disk refused: {e.strerror}") from None
        del self._lru[slot]
        owner.set(index, ~target)
        self.ram.zero(slot, 0, CHUNK)
        return slot

    def _release(self, freed, partial):
        for loc in freed:
            if loc >= 0:
                del self._lru[loc]
                self.ram.release(loc)
            else:
                self.spill.release(~loc)
        for piece in partial:
            tier, slot = self._resolve(piece.location)
            tier.zero(slot, piece.start, piece.length)
