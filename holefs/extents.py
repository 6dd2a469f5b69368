"""The sparse extent map of one file, and the slots that hold its chunks.

A file's data is cut into chunks of CHUNK bytes: the unit in which data is
addressed and moved between tiers.  The map holds a Slot for each chunk
that holds any page; every other chunk is a hole.  A slot knows, page by
page, what it holds, because space is counted by the page, as tmpfs counts
it:
  - a *held* page counts in st_blocks, df and size=: it was written, or
    reserved by fallocate;
  - a *written* page has had data put in it; a held page that was never
    written reads as zeros and is a hole to SEEK_DATA, as a fallocated page
    is on tmpfs.

The map does no I/O: it answers questions about ranges and tells its
caller which slots and ranges to free, so that it can be tested without a
mount.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

CHUNK = 64 * 1024
"""The unit of addressing and of eviction.  Large enough that a 1 MiB
request touches 16 chunks; space is still counted and freed by the page."""

PAGE = 4096
PAGES_PER_CHUNK = CHUNK // PAGE


def pages_touched(start: int, end: int) -> int:
    """The mask of the pages of a chunk that [start, end) overlaps."""
    if end <= start:
        return 0
    return (1 << ((end - 1) // PAGE + 1)) - (1 << (start // PAGE))


def pages_covered(start: int, end: int) -> int:
    """The mask of the pages of a chunk that lie wholly inside [start, end)."""
    first, last = -(-start // PAGE), end // PAGE
    return (1 << last) - (1 << first) if last > first else 0


def fitting_end(held: int, start: int, stop: int, room: float) -> int:
    """Where the longest prefix of [start, stop) ends in which at most *room*
    pages are not in the mask *held* yet: how far a write may go."""
    end = start
    while end < stop:
        if not held >> (end // PAGE) & 1:
            if room == 0:
                break
            room -= 1
        end = min((end // PAGE + 1) * PAGE, stop)
    return end


class Slot:
    """The storage of one chunk: where it is, what it holds, who uses it.

    The tiers give it a place (a tier and a slot number in it), which
    changes when the chunk moves between RAM and spill; maps refer to the
    Slot, so a move touches no map.  *owners* counts the maps that refer
    to it; the slot is freed when the last lets go.
    """

    __slots__ = ("tier", "number", "held", "written", "owners")

    def __init__(self, tier: Any, number: int) -> None:
        self.tier = tier  # a tiers.Tier; typed Any, as the map below the tiers imports none
        self.number = number
        self.held = 0      # mask of pages counted as used
        self.written = 0   # mask of pages with data; a subset of held
        self.owners = 1

    @property
    def pages(self) -> int:
        return self.held.bit_count()


class Piece:
    """One chunk's share of a byte range."""

    __slots__ = ("index", "start", "length", "slot")

    def __init__(self, index: int, start: int, length: int, slot: Slot | None) -> None:
        self.index = index        # chunk number in the file
        self.start = start        # offset of the piece inside the chunk
        self.length = length
        self.slot = slot          # the chunk's Slot, or None for a hole


class Cut:
    """What a punch or truncate did to one slot: its tier must punch
    [start, start+length), or free the whole slot if *emptied*."""

    __slots__ = ("slot", "start", "length", "dropped", "emptied")

    def __init__(self, slot: Slot, start: int, length: int, dropped: int,
                 emptied: bool) -> None:
        self.slot = slot
        self.start = start
        self.length = length
        self.dropped = dropped    # pages that no longer count as held
        self.emptied = emptied


class ExtentMap:
    """Maps chunk numbers to Slots, and counts the pages they hold."""

    __slots__ = ("chunks", "held_pages", "_sorted")

    def __init__(self) -> None:
        self.chunks: dict[int, Slot] = {}
        self.held_pages = 0
        self._sorted: list[int] | None = None  # sorted chunk numbers, rebuilt after a change

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[tuple[int, Slot]]:
        return iter(self.chunks.items())

    def add(self, index: int, slot: Slot) -> None:
        """Give the hole at chunk *index* a slot, which holds nothing yet."""
        self.chunks[index] = slot
        self._sorted = None

    def hold(self, slot: Slot, start: int, end: int, written: bool) -> int:
        """Count the pages of [start, end) in *slot* as held, and as written
        if *written*; return how many were not held before."""
        mask = pages_touched(start, end)
        new = (mask & ~slot.held).bit_count()
        slot.held |= mask
        if written:
            slot.written |= mask
        self.held_pages += new
        return new

    def pieces(self, offset: int, length: int) -> Iterator[Piece]:
        """Split [offset, offset+length) into per-chunk pieces."""
        chunks = self.chunks
        end = offset + length
        while offset < end:
            index, start = divmod(offset, CHUNK)
            size = min(CHUNK - start, end - offset)
            yield Piece(index, start, size, chunks.get(index))
            offset += size

    def new_pages(self, offset: int, length: int) -> int:
        """How many pages of the range are not held yet."""
        if length <= 0:
            return 0
        first, end = offset // PAGE, -(-(offset + length) // PAGE)
        held = 0
        for index in self._indices_between(offset // CHUNK, (offset + length - 1) // CHUNK + 1):
            base = index * CHUNK
            start, stop = max(offset, base) - base, min(offset + length, base + CHUNK) - base
            held += (pages_touched(start, stop) & self.chunks[index].held).bit_count()
        return end - first - held

    def cut(self, offset: int, length: int) -> list[Cut]:
        """Stop holding the pages wholly inside a range; list, per slot, the
        range its tier must punch (which zeroes the partly covered pages)."""
        end = offset + length
        cuts = []
        for index in list(self._indices_between(offset // CHUNK, (end - 1) // CHUNK + 1)):
            slot, base = self.chunks[index], index * CHUNK
            start, stop = max(offset, base) - base, min(end, base + CHUNK) - base
            dropped_mask = pages_covered(start, stop) & slot.held
            slot.held &= ~dropped_mask
            slot.written &= slot.held
            dropped = dropped_mask.bit_count()
            self.held_pages -= dropped
            if not slot.held:
                del self.chunks[index]
                self._sorted = None
            cuts.append(Cut(slot, start, stop - start, dropped, not slot.held))
        return cuts

    def truncate(self, size: int) -> list[Cut]:
        """Drop everything past *size*: cut() up to the last chunk."""
        keys = self._keys()
        if not keys or size >= (keys[-1] + 1) * CHUNK:
            return []
        return self.cut(size, (keys[-1] + 1) * CHUNK - size)

    def clear(self) -> list[Slot]:
        """Forget every chunk and return their slots."""
        slots = list(self.chunks.values())
        self.chunks.clear()
        self.held_pages = 0
        self._sorted = None
        return slots

    def seek_data(self, offset: int) -> int | None:
        """The first offset >= *offset* in a written page, or None."""
        keys = self._keys()
        for i in range(bisect.bisect_left(keys, offset // CHUNK), len(keys)):
            index = keys[i]
            written = self.chunks[index].written
            if index == offset // CHUNK:
                written &= ~((1 << (offset % CHUNK // PAGE)) - 1)
            if written:
                page = (written & -written).bit_length() - 1
                return max(offset, index * CHUNK + page * PAGE)
        return None

    def seek_hole(self, offset: int) -> int:
        """The first offset >= *offset* that is not in a written page."""
        index = offset // CHUNK
        page = offset % CHUNK // PAGE
        while index in self.chunks:
            unwritten = ~self.chunks[index].written & ~((1 << page) - 1)
            unwritten &= (1 << PAGES_PER_CHUNK) - 1
            if unwritten:
                first = (unwritten & -unwritten).bit_length() - 1
                return max(offset, index * CHUNK + first * PAGE)
            index, page = index + 1, 0
        return max(offset, index * CHUNK)

    def _keys(self) -> list[int]:
        if self._sorted is None:
            self._sorted = sorted(self.chunks)
        return self._sorted

    def _indices_between(self, first: int, end: int) -> Iterable[int]:
        """Chunk numbers in [first, end) that have a slot, cheaply for small ranges."""
        if end - first <= len(self.chunks):
            return (i for i in range(first, end) if i in self.chunks)
        keys = self._keys()
        return keys[bisect.bisect_left(keys, first):bisect.bisect_left(keys, end)]
