"""Where file data lives: a RAM tier, a spill tier, and the store over both.

Each tier is one sparse file cut into CHUNK-sized slots.  The RAM tier is a
memfd, so its pages are shmem that the daemon never maps: freeing a page
is a FALLOC_FL_PUNCH_HOLE on the memfd, which hands it straight back to the
kernel, whatever Python's allocator does.  The spill tier is an unnamed
O_TMPFILE on local disk, punched the same way, so its blocks go back to the
disk, and all of it when the daemon dies.

Space is counted by the page (see extents.py): size= caps the pages held
in both tiers, ram= those held in RAM, and a quota.Room those that one
request may add to its file.
"""

from __future__ import annotations

import collections
import errno
import heapq
import os
from collections.abc import Iterable, Iterator
from typing import Any

from ._fallocate import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, fallocate
from .extents import (
    CHUNK,
    PAGE,
    PAGES_PER_CHUNK,
    Cut,
    ExtentMap,
    Piece,
    Slot,
    fitting_end,
    pages_covered,
    pages_touched,
)
from .quota import UNLIMITED, OverQuota, Room

PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


class NoSpace(OSError):
    """The filesystem (size=) or the spill disk is full; *why* says which."""

    def __init__(self, why: str) -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.why = why


class Tier:
    """A sparse file of CHUNK-sized slots, handed out lowest first."""

    GROWTH = 64                   # slots the file grows by, sparse

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name          # "ram" or "spill", as status shows it
        self.pages = 0            # pages held by the slots here
        self._free: list[int] = []  # heap of freed slot numbers below _high
        self._high = 0            # slot numbers from here up were never used
        self._sized = 0           # slots below this lie within the file's size

    def alloc(self) -> int:
        """A free slot number; the slot reads as zeros."""
        if self._free:
            return heapq.heappop(self._free)
        if self._high == self._sized:
            # Every slot handed out lies within the file, so that a splice of
            # any part of it reads to its end: a short one would end a
            # spliced READ reply early, which the kernel takes for EOF.
            os.ftruncate(self.fd, (self._sized + self.GROWTH) * CHUNK)
            self._sized += self.GROWTH
        self._high += 1
        return self._high - 1

    def release(self, numbers: Iterable[int]) -> None:
        """Give slots' memory or disk blocks back and make them reusable.

        Slots are handed out lowest first, so a file's chunks tend to lie
        side by side: each run of adjacent slots is punched at once, which
        makes freeing a large range a few calls rather than one per chunk.
        """
        numbers = sorted(numbers)
        start = 0
        for i, number in enumerate(numbers):
            if i + 1 == len(numbers) or numbers[i + 1] != number + 1:
                self.punch(numbers[start], 0, (number - numbers[start] + 1) * CHUNK)
                start = i + 1
            heapq.heappush(self._free, number)

    def punch(self, number: int, start: int, length: int) -> None:
        fallocate(self.fd, PUNCH, number * CHUNK + start, length)

    def read_into(self, view: memoryview, number: int, start: int) -> None:
        os.preadv(self.fd, [view], number * CHUNK + start)

    def write(self, number: int, start: int, data: Any) -> None:
        """Write *data*: bytes, or what has splice_into(fd, offset), as the
        daemon's Spliced data still in its pipe."""
        at = number * CHUNK + start
        # A full disk under the spill file fails here, before any map change.
        done = data.splice_into(self.fd, at) if hasattr(data, "splice_into") else \
            os.pwrite(self.fd, data, at)
        if done != len(data):
            raise OSError(errno.ENOSPC, "short write to a storage tier")

    def to_value(self) -> dict[str, Any]:
        """Which slots are in use, as a value; the data stays in the file."""
        return {"pages": self.pages, "free": sorted(self._free), "high": self._high,
                "sized": self._sized}

    def restore(self, value: dict[str, Any]) -> None:
        """Take the slots of to_value(), over the same file."""
        self.pages, self._high, self._sized = value["pages"], value["high"], value["sized"]
        self._free = list(value["free"])  # sorted: a heap already

    def allocated_bytes(self) -> int:
        return os.fstat(self.fd).st_blocks * 512

    def close(self) -> None:
        os.close(self.fd)

    def free_pages(self) -> int:
        """Pages that the filesystem under this tier can still take."""
        st = os.fstatvfs(self.fd)
        return st.f_bavail * st.f_frsize // PAGE


def open_ram_tier() -> Tier:
    return Tier(os.memfd_create("holefs-ram", os.MFD_CLOEXEC), "ram")


def open_spill_tier(directory: str) -> Tier:
    """Create the private spill file in *directory* and prove it can punch.

    Raises OSError with a message fit for the user when it cannot.
    """
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise OSError(e.errno, f"spill directory {directory}: {e.strerror}") from None
    try:
        os.pwrite(fd, b"\xff" * PAGE, 0)
        fallocate(fd, PUNCH, 0, PAGE)
    except OSError as e:
        os.close(fd)
        raise OSError(e.errno, f"spill directory {directory} cannot punch holes: "
                      f"{e.strerror}") from None
    return Tier(fd, "spill")


def written_runs(slot: Slot) -> Iterator[tuple[int, int]]:
    """(start, length) of each run of written pages in a slot, in bytes."""
    mask, page = slot.written, 0
    while mask:
        skip = (mask & -mask).bit_length() - 1
        mask >>= skip
        page += skip
        run = (~mask & (mask + 1)).bit_length() - 1
        yield page * PAGE, run * PAGE
        mask >>= run
        page += run


class Store:
    """Holds pages in RAM up to a budget, spilling the coldest chunks to disk
    and bringing them back when there is room again.

    Invariants: used <= limit, except that resize() never lowers limit below
    used.  RAM may hold more than ram_budget only after a resize() lowered
    it, until spill_excess() has moved the rest; meanwhile a request makes
    room for its own pages only (_make_room).  The caller serializes every
    call (the daemon's MountState.lock).
    """

    def __init__(self, limit: int, ram_budget: int, ram: Tier,
                 spill: Tier | None = None) -> None:
        self.limit = limit            # pages in all, from size=
        self.ram_budget = ram_budget  # pages in RAM, from ram=
        self.ram = ram
        self.spill = spill
        self._lru: collections.OrderedDict[Slot, None] = collections.OrderedDict()  # coldest first

    def lru_order(self) -> list[Slot]:
        """The slots in RAM, coldest first."""
        return list(self._lru)

    def restore_lru_order(self, slots: Iterable[Slot]) -> None:
        self._lru = collections.OrderedDict.fromkeys(slots)

    def resize(self, limit: int, ram_budget: int, spill: Tier | None = None) -> None:
        """New size= and ram= in pages, and a spill tier if one is new; RAM
        over the new budget stays until spill_excess() moves it."""
        if limit < self.used:
            raise ValueError(f"{limit} pages is less than the {self.used} in use")
        if spill is not None:
            if self.spill is not None:
                raise ValueError("the store has a spill tier already")
            self.spill = spill
        self.limit, self.ram_budget = limit, ram_budget

    def close(self) -> None:
        """Close the tiers, which gives all their memory and blocks back."""
        for tier in (self.ram, self.spill):
            if tier is not None:
                tier.close()

    @property
    def used(self) -> int:
        return self.ram.pages + (self.spill.pages if self.spill else 0)

    def available(self) -> int:
        """Pages that can still be written: the room under size=, unless RAM's
        room plus the spill disk's free space is less."""
        room = self.ram_budget - self.ram.pages
        if self.spill is not None:
            room += self.spill.free_pages()
        return max(0, min(self.limit - self.used, room))

    def read(self, emap: ExtentMap, offset: int, length: int) -> bytearray:
        buf = bytearray(length)
        view = memoryview(buf)
        pos = 0
        for piece in emap.pieces(offset, length):
            slot = piece.slot
            if slot is not None:
                self._use(slot, 0)
                slot.tier.read_into(view[pos:pos + piece.length], slot.number, piece.start)
            pos += piece.length
        return buf

    def segments(self, emap: ExtentMap, offset: int,
                 length: int) -> list[tuple[int, int, int]]:
        """Where the bytes of [offset, offset+length) lie: (fd, position,
        length) in the tier files, fd -1 for a hole, neighbours merged."""
        out: list[tuple[int, int, int]] = []
        for piece in emap.pieces(offset, length):
            slot = piece.slot
            if slot is None:
                fd, pos = -1, 0
            else:
                self._use(slot, 0)
                fd, pos = slot.tier.fd, slot.number * CHUNK + piece.start
            if out and out[-1][0] == fd and (fd < 0 or sum(out[-1][1:]) == pos):
                fd, pos, length = out.pop()
                out.append((fd, pos, length + piece.length))
            else:
                out.append((fd, pos, piece.length))
        return out

    def write(self, emap: ExtentMap, offset: int, data: Any, quota: Room = UNLIMITED) -> int:
        """Write *data*, adding at most quota.pages pages; return how much
        fit.  Raise NoSpace or OverQuota if nothing did.  *data* is bytes,
        or the daemon's Spliced data, which is taken in order."""
        view = data if hasattr(data, "splice_into") else memoryview(data)
        pos = 0
        added = 0
        for piece in emap.pieces(offset, len(data)):
            start, stop = piece.start, piece.start + piece.length
            held = piece.slot.held if piece.slot else 0
            size_room = self.limit - self.used
            room = min(size_room, quota.pages - added)
            if room < PAGES_PER_CHUNK:
                stop = fitting_end(held, start, stop, room)
            try:
                if stop == start:
                    raise NoSpace("size= is reached") if size_room <= room else \
                        OverQuota(quota.why)
                new_pages = (pages_touched(start, stop) & ~held).bit_count()
                slot = self._slot_for(emap, piece, new_pages)
                slot.tier.write(slot.number, start, view[pos:pos + stop - start])
            except OSError:
                # Out of room, under size= or on the spill disk: a short
                # write if anything fit, as write(2) promises.
                if pos:
                    return pos
                raise
            new = emap.hold(slot, start, stop, written=True)
            slot.tier.pages += new
            added += new
            pos += stop - start
            if stop < piece.start + piece.length:
                return pos
        return pos

    def reserve(self, emap: ExtentMap, offset: int, length: int, zero: bool = False,
                quota: Room = UNLIMITED) -> None:
        """Hold every page of the range, all or nothing, adding at most
        quota.pages pages.

        With *zero*, also zero what is written there, in place, so that the
        tier gives back those pages or blocks.
        """
        new_pages = emap.new_pages(offset, length)
        if self.used + new_pages > self.limit:
            raise NoSpace("size= is reached")
        if new_pages > quota.pages:
            raise OverQuota(quota.why)
        for piece in emap.pieces(offset, length):
            start, stop = piece.start, piece.start + piece.length
            held = piece.slot.held if piece.slot else 0
            slot = self._slot_for(emap, piece, (pages_touched(start, stop) & ~held).bit_count())
            if zero and slot.written:
                # Whole pages become reserved again; partial ones hold zeros.
                slot.written &= ~pages_covered(start, stop)
                slot.tier.punch(slot.number, start, stop - start)
            slot.tier.pages += emap.hold(slot, start, stop, written=False)

    def punch(self, emap: ExtentMap, offset: int, length: int) -> None:
        self._apply(emap.cut(offset, length))

    def truncate(self, emap: ExtentMap, size: int) -> None:
        self._apply(emap.truncate(size))

    def free_all(self, emap: ExtentMap) -> None:
        self._release([slot for slot in emap.clear() if self._let_go(slot, slot.pages)])

    def describe(self, emap: ExtentMap, size: int) -> list[dict[str, Any]]:
        """The file's map as runs of ram, spill and hole, page by page."""
        runs: list[list[Any]] = []  # [where, start, end]

        def add(kind, start, end):
            if end <= start:
                return
            if runs and runs[-1][0] == kind and runs[-1][2] == start:
                runs[-1][2] = end
            else:
                runs.append([kind, start, end])

        pos = 0
        for index, slot in sorted(emap):
            for page in range(CHUNK // PAGE):
                if slot.held >> page & 1:
                    start = index * CHUNK + page * PAGE
                    add("hole", pos, start)
                    add(slot.tier.name, start, start + PAGE)
                    pos = start + PAGE
        add("hole", pos, size)
        return [{"where": kind, "start": start, "length": end - start}
                for kind, start, end in runs]

    def _slot_for(self, emap: ExtentMap, piece: Piece, new_pages: int) -> Slot:
        """The slot that takes *new_pages* more pages of *piece*: its own,
        or a fresh one in RAM; RAM is made room for, by eviction if need be."""
        slot = piece.slot
        if slot is None:
            self._make_room(new_pages)
            slot = Slot(self.ram, self.ram.alloc())
            self._lru[slot] = None
            emap.add(piece.index, slot)
        else:
            self._use(slot, new_pages)
        return slot

    def _use(self, slot: Slot, new_pages: int) -> None:
        """Note an access: a RAM slot becomes the hottest; a spilled one comes
        back to RAM if RAM has room for it, without evicting anything."""
        if slot.tier is self.ram:
            self._lru.move_to_end(slot)
            self._make_room(new_pages)
        elif self.ram.pages + slot.pages + new_pages <= self.ram_budget:
            self._move(slot, self.ram)
            self._lru[slot] = None

    def spill_excess(self, chunks: int) -> int:
        """Move up to *chunks* of the coldest chunks to spill while RAM holds
        more than ram=, which a remount lowered; return the pages moved."""
        moved = 0
        for _ in range(chunks):
            if self.ram.pages <= self.ram_budget or not self._lru:
                break
            assert self.spill is not None, "RAM over ram= with no spill"
            slot = next(iter(self._lru))
            self._move(slot, self.spill)
            moved += slot.pages
        return moved

    def _make_room(self, pages: int) -> None:
        """Evict the coldest RAM chunks until *pages* more fit in the budget.

        While RAM holds more than the budget (ram= shrank, and spill_excess
        is catching up), room is made for *pages* only, so that no request
        waits for the whole excess to move.
        """
        ceiling = max(self.ram_budget, self.ram.pages)
        while self.ram.pages + pages > ceiling:
            if self.spill is None:
                raise NoSpace("ram= is full and there is no spill")
            if not self._lru:
                raise NoSpace("ram= is smaller than one request")
            try:
                self._move(next(iter(self._lru)), self.spill)
            except OSError as e:
                raise NoSpace(f"the spill disk refused: {e.strerror}") from None

    def _move(self, slot: Slot, tier: Tier) -> None:
        """Copy a slot's written pages into *tier* and free its old place."""
        number = tier.alloc()
        try:
            for start, length in written_runs(slot):
                tier.write(number, start, os.pread(slot.tier.fd, length,
                                                   slot.number * CHUNK + start))
        except OSError:
            tier.release([number])
            raise
        if slot.tier is self.ram:
            del self._lru[slot]
        old_tier, old_number = slot.tier, slot.number
        slot.tier, slot.number = tier, number
        old_tier.pages -= slot.pages
        tier.pages += slot.pages
        old_tier.release([old_number])

    def _apply(self, cuts: list[Cut]) -> None:
        emptied: list[Slot] = []
        for cut in cuts:
            if cut.emptied:
                if self._let_go(cut.slot, cut.dropped):
                    emptied.append(cut.slot)
            else:
                cut.slot.tier.pages -= cut.dropped
                cut.slot.tier.punch(cut.slot.number, cut.start, cut.length)
        self._release(emptied)

    def _let_go(self, slot: Slot, pages: int) -> bool:
        """A map no longer holds *pages* of a slot; say whether that was its
        last owner, whose place the caller must then _release."""
        slot.tier.pages -= pages
        slot.owners -= 1
        if slot.owners:
            return False
        if slot.tier is self.ram:
            del self._lru[slot]
        return True

    def _release(self, slots: list[Slot]) -> None:
        """Free the places of slots that no map holds any more."""
        for tier in (self.ram, self.spill):
            numbers = [slot.number for slot in slots if slot.tier is tier]
            if tier is not None and numbers:
                tier.release(numbers)
