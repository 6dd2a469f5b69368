"""The extent map and the store, without a mount."""

import os

import pytest

from holefs.extents import CHUNK, PAGE, ExtentMap, Slot, fitting_end, pages_covered, pages_touched
from holefs.tiers import NoSpace, Store, open_ram_tier, open_spill_tier


def held_map(*runs):
    """A map holding (and having written) each (offset, length) run."""
    emap = ExtentMap()
    for offset, length in runs:
        for piece in emap.pieces(offset, length):
            slot = piece.slot or Slot(None, piece.index)
            if piece.slot is None:
                emap.add(piece.index, slot)
            emap.hold(slot, piece.start, piece.start + piece.length, written=True)
    return emap


def test_page_masks():
    assert pages_touched(0, 1) == 0b1
    assert pages_touched(PAGE - 1, PAGE + 1) == 0b11
    assert pages_touched(5, 5) == 0
    assert pages_covered(1, 2 * PAGE) == 0b10
    assert pages_covered(0, PAGE - 1) == 0
    assert pages_covered(0, CHUNK) == (1 << 16) - 1


def test_fitting_end_stops_at_the_page_that_does_not_fit():
    assert fitting_end(0, 10, 3 * PAGE, 1) == PAGE
    assert fitting_end(0b10, 10, 3 * PAGE, 1) == 2 * PAGE  # page 1 is held already
    assert fitting_end(0, 10, 3 * PAGE, 0) == 10
    assert fitting_end(0, 10, 3 * PAGE, 5) == 3 * PAGE


def test_pieces_split_at_chunk_boundaries():
    emap = ExtentMap()
    pieces = list(emap.pieces(CHUNK - 10, 20))
    assert [(p.index, p.start, p.length, p.slot) for p in pieces] == \
        [(0, CHUNK - 10, 10, None), (1, 0, 10, None)]


def test_holding_counts_pages_once():
    emap = held_map((10, 100), (50, PAGE))
    assert emap.held_pages == 2
    assert emap.new_pages(0, 3 * PAGE) == 1
    assert emap.new_pages(CHUNK - 1, 2) == 2
    assert emap.new_pages(0, 0) == 0


def test_cut_lets_go_of_whole_pages_and_punches_the_rest():
    emap = held_map((0, 2 * CHUNK))
    cuts = emap.cut(PAGE // 2, CHUNK)
    assert [(c.start, c.length, c.dropped, c.emptied) for c in cuts] == \
        [(PAGE // 2, CHUNK - PAGE // 2, 15, False), (0, PAGE // 2, 0, False)]
    assert emap.held_pages == 32 - 15
    cuts = emap.cut(0, CHUNK)
    assert [(c.dropped, c.emptied) for c in cuts] == [(1, True)]
    assert [index for index, _ in emap] == [1]


def test_truncate_drops_everything_past_the_end():
    emap = held_map((0, 2 * CHUNK), (900 * CHUNK, 1))
    cuts = emap.truncate(CHUNK + 1)
    assert [(c.start, c.length, c.dropped, c.emptied) for c in cuts] == \
        [(1, CHUNK - 1, 15, False), (0, CHUNK, 1, True)]
    assert emap.held_pages == 17


def test_seek_data_and_hole_at_page_grain():
    emap = held_map((2 * CHUNK + PAGE, 2 * PAGE), (3 * CHUNK, CHUNK), (7 * CHUNK, 1))
    assert emap.seek_data(0) == 2 * CHUNK + PAGE
    assert emap.seek_data(2 * CHUNK + PAGE + 5) == 2 * CHUNK + PAGE + 5
    assert emap.seek_hole(2 * CHUNK + PAGE) == 2 * CHUNK + 3 * PAGE
    assert emap.seek_hole(3 * CHUNK) == 4 * CHUNK
    assert emap.seek_data(4 * CHUNK) == 7 * CHUNK
    assert emap.seek_hole(7 * CHUNK) == 7 * CHUNK + PAGE
    assert emap.seek_data(8 * CHUNK) is None
    assert emap.seek_hole(CHUNK) == CHUNK


def test_reserved_pages_are_holes_to_seek_data():
    emap = ExtentMap()
    slot = Slot(None, 0)
    emap.add(0, slot)
    emap.hold(slot, 0, 4 * PAGE, written=False)
    emap.hold(slot, 2 * PAGE, 2 * PAGE + 1, written=True)
    assert emap.held_pages == 4
    assert emap.seek_data(0) == 2 * PAGE
    assert emap.seek_hole(2 * PAGE) == 3 * PAGE


@pytest.fixture
def store():
    store = Store(limit=256, ram_budget=256, ram=open_ram_tier())
    yield store
    store.close()


def test_read_of_a_hole_is_zeros_and_allocates_nothing(store):
    emap = ExtentMap()
    assert store.read(emap, 12345, 3 * CHUNK) == bytes(3 * CHUNK)
    assert len(emap) == 0 and store.used == 0


def test_write_holds_only_the_pages_it_touches(store):
    emap = ExtentMap()
    assert store.write(emap, 5 * CHUNK + 10, b"abc") == 3
    assert [i for i, _ in emap] == [5]
    assert store.read(emap, 5 * CHUNK + 9, 5) == b"\0abc\0"
    assert store.used == emap.held_pages == 1
    assert store.ram.allocated_bytes() == PAGE


def test_punch_frees_memfd_pages(store):
    emap = ExtentMap()
    store.write(emap, 0, os.urandom(4 * CHUNK))
    assert store.ram.allocated_bytes() == 4 * CHUNK
    store.punch(emap, CHUNK, 2 * CHUNK)
    assert store.ram.allocated_bytes() == 2 * CHUNK
    assert store.used == 2 * CHUNK // PAGE
    store.punch(emap, 0, PAGE)  # part of a chunk: its page goes, the chunk stays
    assert store.ram.allocated_bytes() == 2 * CHUNK - PAGE
    assert store.used == 2 * CHUNK // PAGE - 1
    assert store.read(emap, 0, PAGE) == bytes(PAGE)


def test_segments_name_where_a_range_lies_and_read_as_read_does(store):
    """What a spliced READ reply sends: the tier file's pieces, holes as
    fd -1, neighbours merged; each reads back what Store.read gives."""
    emap = ExtentMap()
    store.write(emap, 0, os.urandom(2 * CHUNK))      # two adjacent slots
    store.write(emap, 4 * CHUNK + 7, b"tail")        # a slot written at its start only
    segments = store.segments(emap, 100, 5 * CHUNK)
    fd = store.ram.fd
    assert segments == [(fd, 100, 2 * CHUNK - 100), (-1, 0, 2 * CHUNK),
                        (fd, 2 * CHUNK, CHUNK), (-1, 0, 100)]
    pieces = b"".join(bytes(n) if f < 0 else os.pread(f, n, at) for f, at, n in segments)
    assert pieces == store.read(emap, 100, 5 * CHUNK)  # the tier is sized past every slot


def test_truncate_then_extend_reads_zeros(store):
    emap = ExtentMap()
    store.write(emap, 0, b"x" * (CHUNK + 100))
    store.truncate(emap, 10)
    assert store.read(emap, 0, CHUNK + 100) == b"x" * 10 + bytes(CHUNK + 90)
    assert store.used == 1


def test_freed_slots_are_reused_and_zeroed(store):
    a, b = ExtentMap(), ExtentMap()
    store.write(a, 0, b"secret" * 100)
    store.free_all(a)
    store.write(b, 100, b"y")
    assert store.read(b, 0, 600) == bytes(100) + b"y" + bytes(499)
    assert store.ram._high == 1 and store.used == 1


def test_write_that_does_not_fit_writes_the_pages_that_fit():
    store = Store(limit=3, ram_budget=3, ram=open_ram_tier())
    emap = ExtentMap()
    assert store.write(emap, 100, b"z" * (5 * PAGE)) == 3 * PAGE - 100
    with pytest.raises(NoSpace):
        store.write(emap, 3 * PAGE, b"z")
    store.write(emap, 0, b"y" * 100)  # held pages take more data
    with pytest.raises(NoSpace):
        store.reserve(emap, 0, 4 * PAGE)
    assert store.used == 3


def test_reserve_is_all_or_nothing():
    store = Store(limit=3, ram_budget=3, ram=open_ram_tier())
    emap = ExtentMap()
    store.write(emap, 0, b"a")
    with pytest.raises(NoSpace):
        store.reserve(emap, PAGE, 3 * PAGE)
    assert store.used == 1
    store.reserve(emap, 0, 3 * PAGE)
    assert store.used == 3
    assert store.read(emap, 0, 2) == b"a\0"


@pytest.fixture
def spilling(tmp_path):
    """A store of 64 pages, 32 of them in RAM."""
    store = Store(limit=64, ram_budget=32, ram=open_ram_tier(),
                  spill=open_spill_tier(str(tmp_path)))
    yield store
    store.close()


def test_resize_keeps_what_is_in_use_and_lets_ram_catch_up(spilling):
    emap = ExtentMap()
    spilling.write(emap, 0, b"r" * 2 * CHUNK)       # 32 pages, all in RAM
    with pytest.raises(ValueError):
        spilling.resize(31, 32)
    spilling.resize(64, 16)
    assert spilling.ram.pages == 32                  # over the budget, until moved
    spilling.write(emap, 2 * CHUNK, b"n")            # one chunk goes: room for its page
    assert (spilling.ram.pages, spilling.spill.pages) == (17, 16)
    while spilling.spill_excess(1):
        pass
    assert spilling.ram.pages <= 16 and spilling.read(emap, 0, 2 * CHUNK) == b"r" * 2 * CHUNK


def test_close_gives_the_tiers_back(tmp_path):
    store = Store(limit=64, ram_budget=32, ram=open_ram_tier(),
                  spill=open_spill_tier(str(tmp_path)))
    fds = [store.ram.fd, store.spill.fd]
    store.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_the_coldest_chunk_spills_and_only_its_written_pages_are_copied(spilling):
    hot, cold = ExtentMap(), ExtentMap()
    spilling.write(cold, 0, b"c" * 10)
    spilling.reserve(cold, 0, CHUNK)
    spilling.write(hot, 0, b"h" * CHUNK)
    spilling.write(hot, CHUNK, b"h")             # 33 pages: the cold chunk spills
    assert spilling.ram.pages == 17 and spilling.spill.pages == 16
    assert spilling.spill.allocated_bytes() == PAGE
    assert spilling.read(cold, 0, 11) == b"c" * 10 + b"\0"


def test_a_spilled_chunk_comes_back_when_ram_has_room(spilling):
    a, b = ExtentMap(), ExtentMap()
    spilling.write(a, 0, b"a" * CHUNK)
    spilling.write(b, 0, b"b" * 2 * CHUNK)         # a spills
    assert spilling.spill.pages == 16
    assert spilling.read(a, 0, 1) == b"a"          # no room: read in place
    assert spilling.spill.pages == 16
    spilling.free_all(b)
    assert spilling.read(a, 0, 1) == b"a"          # room: back to RAM
    assert spilling.spill.pages == 0 and spilling.ram.pages == 16
    assert spilling.spill.allocated_bytes() == 0
    assert spilling.read(a, 0, CHUNK) == b"a" * CHUNK
