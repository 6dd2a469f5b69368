"""Several processes write, punch and read one file at once.

holefs serves reads, writes and punches from several threads, and each
request runs whole under one lock (see holefs/daemon/fs.py); these tests are the
evidence from the outside.  Workers are forked processes with their own
descriptors, so the kernel sends their requests to the daemon
concurrently.  Each test runs with everything in RAM, with a RAM budget so
small that chunks move to the spill file while other workers use them,
and with more serving threads than this machine has CPUs, and with none
but trio's.
"""

import multiprocessing
import os
import random

import pytest
import trio

from holefs._fallocate import fallocate
from holefs.extents import CHUNK

from support import MiB, assert_serves

PUNCH = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
TIMEOUT = 300  # generous: a worker that takes longer is hung, not slow

MOUNT_OPTIONS = {"ram": "size=256M", "spill": "size=256M,ram=256k,spill={spill}",
                 "spill, 8 threads": "size=256M,ram=256k,spill={spill},threads=8",
                 "spill, trio's thread alone": "size=256M,ram=256k,spill={spill},threads=0",
                 "spill, writeback cache": "size=256M,ram=256k,spill={spill},writeback_cache"}

# Disjoint test: odd-sized regions, so neighbours share chunks and pages.
REGION = 200_003
REGION_WORKERS = 6
ITERATIONS = 400

# Overlap test: writers fill ranges with their own byte, punchers zero ranges.
SHARED = 512 * 1024
WRITERS, PUNCHERS, READERS = 4, 2, 2


@pytest.fixture(params=sorted(MOUNT_OPTIONS))
def mount(request, mount_holefs, tmp_path):
    return mount_holefs(MOUNT_OPTIONS[request.param].format(spill=tmp_path))


def run_workers(calls):
    """Run (function, args) pairs in forked processes at once; their results."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(len(calls)) as pool:
        pending = [pool.apply_async(fn, args) for fn, args in calls]
        return [p.get(timeout=TIMEOUT) for p in pending]


def random_range(rng, length, most=3 * CHUNK):
    offset = rng.randrange(length)
    return offset, rng.randint(1, min(length - offset, most))


def region_worker(path, index, seed):
    """Write, punch and read only our region, checking every read exactly.

    Returns what the region must finally hold.
    """
    rng = random.Random(seed)
    start = index * REGION
    model = bytearray(REGION)
    fd = os.open(path, os.O_RDWR)
    try:
        for i in range(ITERATIONS):
            offset, n = random_range(rng, REGION)
            r = rng.random()
            if r < 0.45:
                buf = rng.randbytes(n)
                assert os.pwrite(fd, buf, start + offset) == n
                model[offset:offset + n] = buf
            elif r < 0.65:
                fallocate(fd, PUNCH, start + offset, n)
                model[offset:offset + n] = bytes(n)
            elif r < 0.7:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            else:
                got = os.pread(fd, n, start + offset)
                assert got == model[offset:offset + n], \
                    f"worker {index}, iteration {i}: read of [{offset}, +{n}) differs"
    finally:
        os.close(fd)
    return bytes(model)


def test_disjoint_ranges_hold_what_their_writer_left(mount):
    path = mount / "shared"
    path.write_bytes(b"")
    os.truncate(path, REGION * REGION_WORKERS)
    finals = run_workers([(region_worker, (str(path), i, i)) for i in range(REGION_WORKERS)])
    for cached in (True, False):
        if not cached:
            drop_cache(path)
        data = path.read_bytes()
        assert len(data) == REGION * REGION_WORKERS
        for i, want in enumerate(finals):
            assert data[i * REGION:(i + 1) * REGION] == want, \
                f"region {i} lost writes or punches (page cache: {cached})"
    assert_serves(mount)


def drop_cache(path):
    """Make the next reads come from the daemon, not the page cache."""
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def filler(path, value, seed):
    """Fill random ranges with one byte, *value*; return which bytes we covered."""
    rng = random.Random(seed)
    covered = bytearray(SHARED)
    fd = os.open(path, os.O_RDWR)
    try:
        for _ in range(ITERATIONS):
            offset, n = random_range(rng, SHARED, most=128 * 1024)
            if value:
                assert os.pwrite(fd, bytes([value]) * n, offset) == n
            else:
                fallocate(fd, PUNCH, offset, n)
            covered[offset:offset + n] = b"\1" * n
    finally:
        os.close(fd)
    return covered


def reader(path, seed):
    """Read while the others write: every byte must be a written value or zero.

    Returns how many reads it checked.
    """
    rng = random.Random(seed)
    possible = bytes(range(WRITERS + 1))
    fd = os.open(path, os.O_RDONLY)
    try:
        for i in range(ITERATIONS):
            offset, n = random_range(rng, SHARED, most=128 * 1024)
            got = os.pread(fd, n, offset)
            assert len(got) == n, f"read {i}: {len(got)} bytes of {n}: the size changed"
            assert not got.translate(None, possible), f"read {i}: a byte nobody wrote"
            if i % 20 == 0:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return ITERATIONS


def test_overlapping_ranges_hold_one_of_the_written_values(mount):
    """Each byte ends as the value of a writer that covered it, or zero if
    a punch covered it or nobody wrote it: no lost writes, no stray bytes."""
    path = mount / "shared"
    path.write_bytes(b"")
    os.truncate(path, SHARED)
    calls = [(filler, (str(path), w + 1, w)) for w in range(WRITERS)]
    calls += [(filler, (str(path), 0, 100 + p)) for p in range(PUNCHERS)]
    calls += [(reader, (str(path), 200 + r)) for r in range(READERS)]
    results = run_workers(calls)
    written, punched = results[:WRITERS], results[WRITERS:WRITERS + PUNCHERS]
    assert results[WRITERS + PUNCHERS:] == [ITERATIONS] * READERS
    cached = path.read_bytes()
    drop_cache(path)
    data = path.read_bytes()
    assert data == cached, "the page cache and the daemon disagree"
    for offset, value in enumerate(data):
        if value:
            ok = value <= WRITERS and written[value - 1][offset]
        else:
            ok = any(p[offset] for p in punched) or not any(w[offset] for w in written)
        assert ok, f"byte {offset} is {value}, which no writer or punch left there"
    assert_serves(mount)


async def test_sixteen_clients_at_once_each_keep_their_own_data(mount_holefs, tmp_path):
    """Clients driven from one trio test, each in a thread of its own:
    writes through spill, punches and reads interleave, and every client
    reads back exactly what it left."""
    m = mount_holefs(f"size=256M,ram=1M,spill={tmp_path}")

    def client(i):
        path = m / f"client{i}"
        data = bytearray(os.urandom(2 * MiB))
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for offset in range(0, len(data), 256 * 1024):
                os.pwrite(fd, data[offset:offset + 256 * 1024], offset)
            fallocate(fd, PUNCH, i * 4096, 64 * 1024)
            data[i * 4096:i * 4096 + 64 * 1024] = bytes(64 * 1024)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            return os.pread(fd, len(data) + 1, 0) == data
        finally:
            os.close(fd)

    results = {}

    async def run(i):
        results[i] = await trio.to_thread.run_sync(client, i)

    async with trio.open_nursery() as nursery:
        for i in range(16):
            nursery.start_soon(run, i)
    assert results == dict.fromkeys(range(16), True)
    assert m.status()["spill_used"] > 0
