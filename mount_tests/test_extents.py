"""The extent map and the store, without a mount."""

import os

import pytest

from holefs.extents import CHUNK, ExtentMap
from holefs.tiers import NoSpace, Store, open_ram_tier, open_spill_tier


def test_pieces_split_at_chunk_boundaries():
    emap = ExtentMap()
    pieces = list(emap.pieces(CHUNK - 10, 20))
    assert [(p.index, p.start, p.length, p.location) for p in pieces] == \
        [(0, CHUNK - 10, 10, None), (1, 0, 10, None)]


def test_cut_frees_whole_chunks_and_reports_partial_ones():
    emap = ExtentMap()
    for i in range(4):
        emap.set(i, 100 + i)
    freed, partial = emap.cut(CHUNK // 2, 2 * CHUNK)
    assert freed == [101]
    assert [(p.index, p.start, p.length, p.location) for p in partial] == \
        [(0, CHUNK // 2, CHUNK // 2, 100), (2, 0, CHUNK // 2, 102)]
    assert sorted(i for i, _ in emap) == [0, 2, 3]


def test_cut_inside_one_chunk():
    emap = ExtentMap()
    emap.set(0, 7)
    freed, partial = emap.cut(10, 20)
    assert freed == []
    assert [(p.start, p.length) for p in partial] == [(10, 20)]


def test_cut_skips_holes_in_partial_chunks():
    emap = ExtentMap()
    emap.set(1, 5)
    freed, partial = emap.cut(10, CHUNK)
    assert freed == []
    assert [(p.index, p.start, p.length) for p in partial] == [(1, 0, 10)]
    assert len(emap) == 1


def test_truncate_drops_everything_past_the_end():
    emap = ExtentMap()
    for i in (0, 1, 5, 900):
        emap.set(i, i)
    freed, partial = emap.truncate(CHUNK + 1)
    assert sorted(freed) == [5, 900]
    assert [(p.index, p.start, p.length) for p in partial] == [(1, 1, CHUNK - 1)]


def test_missing_counts_holes():
    emap = ExtentMap()
    emap.set(1, 0)
    assert emap.missing(0, 3 * CHUNK) == 2
    assert emap.missing(CHUNK, 1) == 0
    assert emap.missing(0, 0) == 0


def test_seek_data_and_hole():
    emap = ExtentMap()
    for i in (2, 3, 7):
        emap.set(i, i)
    assert emap.seek_data(0) == 2 * CHUNK
    assert emap.seek_data(2 * CHUNK + 5) == 2 * CHUNK + 5
    assert emap.seek_hole(2 * CHUNK) == 4 * CHUNK
    assert emap.seek_data(4 * CHUNK) == 7 * CHUNK
    assert emap.seek_data(8 * CHUNK) is None
    assert emap.seek_hole(CHUNK) == CHUNK
    emap.cut(3 * CHUNK, CHUNK)
    assert emap.seek_hole(2 * CHUNK) == 3 * CHUNK


@pytest.fixture
def store():
    return Store(limit=16, ram=open_ram_tier(16))


def test_read_of_a_hole_is_zeros_and_allocates_nothing(store):
    emap = ExtentMap()
    assert store.read(emap, 12345, 3 * CHUNK) == bytes(3 * CHUNK)
    assert len(emap) == 0 and store.used == 0


def test_write_allocates_only_what_it_touches(store):
    emap = ExtentMap()
    assert store.write(emap, 5 * CHUNK + 10, b"abc") == 3
    assert [i for i, _ in emap] == [5]
    assert store.read(emap, 5 * CHUNK + 9, 5) == b"\0abc\0"
    assert store.ram.allocated_bytes() == 4096  # one page of the memfd


def test_punch_frees_memfd_pages(store):
    emap = ExtentMap()
    store.write(emap, 0, os.urandom(4 * CHUNK))
    assert store.ram.allocated_bytes() == 4 * CHUNK
    store.punch(emap, CHUNK, 2 * CHUNK)
    assert store.ram.allocated_bytes() == 2 * CHUNK
    assert store.used == 2
    store.punch(emap, 0, 4096)  # part of a chunk: its page goes, the chunk stays
    assert store.ram.allocated_bytes() == 2 * CHUNK - 4096
    assert store.read(emap, 0, 4096) == bytes(4096)


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
    assert store.ram._high == 1


def test_write_that_does_not_fit_writes_what_fits():
    store = Store(limit=2, ram=open_ram_tier(2))
    emap = ExtentMap()
    assert store.write(emap, 0, b"z" * (3 * CHUNK)) == 2 * CHUNK
    with pytest.raises(NoSpace):
        store.write(emap, 2 * CHUNK, b"z")
    with pytest.raises(NoSpace):
        store.reserve(emap, 0, 3 * CHUNK)
    assert store.used == 2


def test_reserve_is_all_or_nothing():
    store = Store(limit=3, ram=open_ram_tier(3))
    emap = ExtentMap()
    store.write(emap, 0, b"a")
    with pytest.raises(NoSpace):
        store.reserve(emap, CHUNK, 3 * CHUNK)
    assert store.used == 1
    store.reserve(emap, 0, 3 * CHUNK)
    assert store.used == 3
    assert store.read(emap, 0, 2) == b"a\0"


def test_reserved_chunks_go_to_spill_without_taking_disk(tmp_path):
    spill = open_spill_tier(str(tmp_path), 8)
    store = Store(limit=8, ram=open_ram_tier(2), spill=spill)
    emap = ExtentMap()
    store.write(emap, 0, b"w" * 10)
    store.reserve(emap, 0, 8 * CHUNK)
    assert spill.used == 6
    assert spill.allocated_bytes() == CHUNK, "only the written chunk was copied"
    assert store.read(emap, 0, 11) == b"w" * 10 + b"\0"
