"""The sparse extent map of one file.

A file's data is cut into chunks of CHUNK bytes.  The map holds only the
chunks that were written or reserved, each with the storage location that
the tiers gave it; every other chunk is a hole.  The map does no I/O: it
answers questions about ranges and tells its caller which locations to
free, so that it can be tested without a mount.
"""

import bisect

CHUNK = 64 * 1024
"""The allocation unit.  Large enough that a 1 MiB request touches 16
chunks, small enough that a punch gives back memory at a fine grain (the
tiers also punch partial chunks, so RAM is freed page by page)."""


class Piece:
    """One chunk's share of a byte range."""

    __slots__ = ("index", "start", "length", "location")

    def __init__(self, index, start, length, location):
        self.index = index        # chunk number in the file
        self.start = start        # offset of the piece inside the chunk
        self.length = length
        self.location = location  # the tiers' location, or None for a hole


class ExtentMap:
    """Maps chunk numbers to storage locations."""

    __slots__ = ("chunks", "_sorted")

    def __init__(self):
        self.chunks = {}
        self._sorted = None  # sorted chunk numbers, rebuilt after a change

    def __len__(self):
        return len(self.chunks)

    def __iter__(self):
        return iter(self.chunks.items())

    def set(self, index, location):
        if index not in self.chunks:
            self._sorted = None
        self.chunks[index] = location

    def pieces(self, offset, length):
        """Split [offset, offset+length) into per-chunk pieces."""
        chunks = self.chunks
        end = offset + length
        while offset < end:
            index, start = divmod(offset, CHUNK)
            size = min(CHUNK - start, end - offset)
            yield Piece(index, start, size, chunks.get(index))
            offset += size

    def missing(self, offset, length):
        """Count the chunks of a range that are holes."""
        if length <= 0:
            return 0
        first = offset // CHUNK
        last = (offset + length - 1) // CHUNK
        present = sum(1 for i in self._indices_between(first, last + 1))
        return last - first + 1 - present

    def cut(self, offset, length):
        """Remove whole chunks inside a range.

        Returns the locations of the removed chunks, and the pieces of
        partially covered chunks that are allocated and must be zeroed.
        """
        end = offset + length
        first_whole = -(-offset // CHUNK)
        end_whole = end // CHUNK
        freed = [self.chunks.pop(i)
                 for i in list(self._indices_between(first_whole, end_whole))]
        if freed:
            self._sorted = None
        partial = []
        if first_whole > end_whole:
            # The range lies inside a single chunk.
            partial.append(next(self.pieces(offset, length)))
        else:
            if offset < first_whole * CHUNK:
                partial.append(next(self.pieces(offset, first_whole * CHUNK - offset)))
            if end > end_whole * CHUNK:
                partial.append(next(self.pieces(end_whole * CHUNK, end - end_whole * CHUNK)))
        return freed, [p for p in partial if p.location is not None]

    def truncate(self, size):
        """Drop everything at or past *size*; like cut() up to infinity."""
        first_whole = -(-size // CHUNK)
        freed = [self.chunks.pop(i)
                 for i in [i for i in self.chunks if i >= first_whole]]
        if freed:
            self._sorted = None
        partial = []
        if size % CHUNK:
            piece = next(self.pieces(size, CHUNK - size % CHUNK))
            if piece.location is not None:
                partial.append(piece)
        return freed, partial

    def clear(self):
        """Forget every chunk and return their locations."""
        freed = list(self.chunks.values())
        self.chunks.clear()
        self._sorted = None
        return freed

    def seek_data(self, offset):
        """The first offset >= *offset* inside an allocated chunk, or None."""
        index = offset // CHUNK
        if index in self.chunks:
            return offset
        keys = self._keys()
        i = bisect.bisect_left(keys, index)
        return keys[i] * CHUNK if i < len(keys) else None

    def seek_hole(self, offset):
        """The first offset >= *offset* that is not in an allocated chunk."""
        index = offset // CHUNK
        if index not in self.chunks:
            return offset
        keys = self._keys()
        i = bisect.bisect_left(keys, index)
        while i + 1 < len(keys) and keys[i + 1] == keys[i] + 1:
            i += 1
        return (keys[i] + 1) * CHUNK

    def _keys(self):
        if self._sorted is None:
            self._sorted = sorted(self.chunks)
        return self._sorted

    def _indices_between(self, first, end):
        """Allocated chunk numbers in [first, end), cheaply for small ranges."""
        if end - first <= len(self.chunks):
            return (i for i in range(first, end) if i in self.chunks)
        keys = self._keys()
        return keys[bisect.bisect_left(keys, first):bisect.bisect_left(keys, end)]
