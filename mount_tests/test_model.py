"""A model-based random test: the real mount against a byte-exact model.

Each run draws operations from random.Random(seed): writes anywhere,
including far past EOF, also with O_APPEND and copy_file_range; reads;
truncates up and down; every fallocate mode that holefs supports;
MAP_SHARED writes and reads; SEEK_DATA/SEEK_HOLE; reopen with and without
O_TRUNC; rename, link and unlink, with descriptors left open on unlinked
files; and dropping the page cache, so that reads reach the daemon.  The
same operations go to an in-memory model in which hard links share one
bytearray, and the two are compared all along: bytes, sizes, st_blocks page
by page, SEEK_DATA/SEEK_HOLE, and df -i after every operation.

It runs in these modes: everything in RAM; a 64 KiB RAM budget that sends
nearly every chunk through the spill file and back; a filesystem of 2 MiB
that the files overfill; the same under -o reserve; and the spill, full and
reserve modes again under -o writeback_cache.  In the full modes a write
may come up short or fail with ENOSPC, and the model keeps what the call
said was written; a mapped write that did not fit must be reported by
msync, and the model then adopts what reads back, which must be, page by
page, the new bytes or the old.  Under the writeback cache write(2) takes
everything, each write is fsynced at once, and an fsync that says ENOSPC is
treated as msync's.  So a loss that no call reported shows as a
difference.  Under reserve (with no punches, which give space back) only a
call that needs pages beyond those reserved may fail: one that grows a
file, or one into what a failed writeback past EOF left unreserved.

CI runs a few seeds.  To run millions of operations locally:

    HOLEFS_MODEL_SEEDS=0-999 HOLEFS_MODEL_OPS=2000 \\
        /opt/holefs/bin/pytest -q mount_tests/test_model.py

HOLEFS_MODEL_SEEDS takes '7', '0-999' or '1,5,20-30'.  A failure names the
mode, the seed and the operation index, lists the last operations, and
prints the command that replays that one case.
"""

import collections
import contextlib
import errno
import mmap
import os
import random

import pytest

from holefs._fallocate import fallocate
from holefs.extents import CHUNK

from support import MiB, drop_page_cache

PAGE = 4096
BLOCKS_PER_PAGE = PAGE // 512
MAX_SIZE = 8 * MiB  # files stay below this, so that a run stays fast
NAMES = ["a", "b", "c", "d/e", "d/f"]  # d/ makes some renames cross directories
KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE = 0x01, 0x02, 0x10
FALLOC_MODES = [0, KEEP_SIZE, PUNCH_HOLE | KEEP_SIZE, ZERO_RANGE, ZERO_RANGE | KEEP_SIZE]
MOUNT_OPTIONS = {"ram": "size=256M", "spill": "size=256M,ram=64k,spill={spill}",
                 "full": "size=2M,ram=512k,spill={spill}",
                 "reserve": "size=2M,ram=512k,spill={spill},reserve",
                 # trio's thread alone reads requests, without the shim's workers
                 "no-workers": "size=256M,ram=64k,spill={spill},threads=0",
                 "writeback-cache": "size=256M,ram=64k,spill={spill},writeback_cache",
                 "full-writeback-cache": "size=2M,ram=512k,spill={spill},writeback_cache",
                 "reserve-writeback-cache":
                     "size=2M,ram=512k,spill={spill},reserve,writeback_cache"}
MAX_OPEN = 4


def parse_seeds(text):
    """'7', '0-999' or '1,5,20-30' -> a list of seeds."""
    seeds = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


SEEDS = parse_seeds(os.environ.get("HOLEFS_MODEL_SEEDS", "0-2"))
OPS = int(os.environ.get("HOLEFS_MODEL_OPS", "300"))


def pages(start, end):
    """The pages that the byte range [start, end) touches."""
    return set(range(start // PAGE, -(-end // PAGE))) if end > start else set()


class File:
    """The model of one inode: its bytes, and the pages it holds.

    A page is held, and counts in st_blocks, once written or reserved, as on
    tmpfs; a punch or truncate lets go of the pages it wholly covers.  After
    a mapped write that msync said did not fit, it is not known which of its
    pages were stored: those are *maybe* held until some call settles them.
    Under -o reserve, *reserve* is set, and growing a file holds its new pages.
    """

    def __init__(self, reserve=False):
        self.data = bytearray()
        self.held = set()
        self.maybe = set()
        self.reserve = reserve

    def hold(self, start, end):
        touched = pages(start, end)
        self.held |= touched
        self.maybe -= touched

    def let_go(self, start, end):
        covered = set(range(-(-start // PAGE), end // PAGE)) if end > start else set()
        self.held -= covered
        self.maybe -= covered

    def grow(self, end):
        if self.reserve and end > len(self.data):
            self.hold(len(self.data), end)

    def write(self, offset, buf):
        self.grow(offset + len(buf))
        self.hold(offset, offset + len(buf))
        if offset > len(self.data):
            self.data.extend(bytes(offset - len(self.data)))
        self.data[offset:offset + len(buf)] = buf

    def write_unsure(self, offset, buf):
        """Take bytes read back after a write-back failed in part."""
        if offset + len(buf) > len(self.data):
            self.data.extend(bytes(offset + len(buf) - len(self.data)))
        self.data[offset:offset + len(buf)] = buf
        self.maybe |= pages(offset, offset + len(buf)) - self.held

    def resize(self, size):
        if size <= len(self.data):
            del self.data[size:]
            self.let_go(size, max(self.held | self.maybe | {0}) * PAGE + PAGE)
        else:
            self.grow(size)
            self.data.extend(bytes(size - len(self.data)))

    def zero(self, offset, end):
        end = min(end, len(self.data))
        if offset < end:
            self.data[offset:end] = bytes(end - offset)

    def fallocate(self, mode, offset, length):
        end = offset + length
        if mode & PUNCH_HOLE:
            self.zero(offset, end)
            self.let_go(offset, end)
            return
        if not mode & KEEP_SIZE:
            self.grow(end)
        self.hold(offset, end)
        if mode & ZERO_RANGE:
            self.zero(offset, end)
        if not mode & KEEP_SIZE and end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))

    def block_bounds(self):
        """What st_blocks may be: the held pages, and perhaps the unsure ones."""
        return len(self.held) * BLOCKS_PER_PAGE, len(self.held | self.maybe) * BLOCKS_PER_PAGE


def first_difference(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"first difference at +{i}: got {a:#04x}, want {b:#04x}"
    return f"length {len(got)}, want {len(want)}"


class Run:
    """One seeded sequence of operations against a mount and the model."""

    def __init__(self, root, rng, mode):
        self.root = root
        self.rng = rng
        self.full = mode.startswith(("full", "reserve"))  # the files overfill the mount
        self.reserve = mode.startswith("reserve")
        # The page cache holds writes: they are stored, and count in
        # st_blocks, once written back, and fail at fsync if they do not fit.
        self.written_back_later = mode.endswith("writeback-cache")
        self.falloc_modes = [m for m in FALLOC_MODES if not (self.reserve and m & PUNCH_HOLE)]
        self.files = {}                          # name -> File; links share one
        self.open = []                           # [fd, File, label]
        self.history = collections.deque(maxlen=12)

    def path(self, name):
        return self.root / name

    def note(self, text):
        self.history.append(text)

    # Choosing arguments ---------------------------------------------------

    def offset(self, size):
        """Often near EOF or a chunk edge, sometimes far past EOF."""
        rng = self.rng
        r = rng.random()
        if r < 0.3:
            offset = rng.randrange(size + 1)
        elif r < 0.55:
            offset = rng.randrange(size // CHUNK + 2) * CHUNK + rng.randint(-3, 3)
        elif r < 0.75:
            offset = size + rng.randint(-4096, 4096)
        else:
            offset = rng.randrange(MAX_SIZE)
        return min(max(offset, 0), MAX_SIZE - 1)

    def length(self, offset):
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            n = rng.randint(1, 4096)
        elif r < 0.7:
            n = rng.randint(1, 3 * CHUNK)
        elif r < 0.85:
            n = CHUNK * rng.randint(1, 8)
        else:
            n = rng.randint(1, MiB)
        return min(n, MAX_SIZE - offset)

    def payload(self, n):
        """Random bytes, or now and then zeros, which must still read back."""
        return bytes(n) if self.rng.random() < 0.1 else self.rng.randbytes(n)

    @contextlib.contextmanager
    def target(self):
        """An open descriptor from the pool, or a fresh one on a name."""
        if self.open and self.rng.random() < 0.6:
            fd, f, label = self.rng.choice(self.open)
            yield fd, f, label
            return
        name = self.rng.choice(NAMES)
        f = self.files.setdefault(name, File(self.reserve))
        fd = os.open(self.path(name), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            yield fd, f, name
        finally:
            os.close(fd)

    # Running out of room ---------------------------------------------------

    @staticmethod
    def needs_room(f, offset, end):
        """Whether storing [offset, end) may take pages: under reserve, only
        past EOF, or where a write-back that did not fit left a hole."""
        return end > len(f.data) or not pages(offset, end) <= f.held

    @contextlib.contextmanager
    def may_fill(self, needs_room):
        """ENOSPC, which only the full modes expect, changes nothing at all;
        under reserve only a call that *needs room* may get it."""
        try:
            yield
        except OSError as e:
            if not (self.full and e.errno == errno.ENOSPC and (needs_room or not self.reserve)):
                raise
            self.note("  -> ENOSPC")

    def fitted(self, done, asked, needs_room):
        """How much of a write happened: all of it, or in the full modes what
        fit; under reserve only a write that needs room may come short (the
        kernel splits writes, and the part past EOF may not fit).  Under the
        writeback cache, write(2) stores into the page cache and takes all."""
        may_be_short = self.full and not self.written_back_later and \
            (needs_room or not self.reserve)
        assert done == asked or may_be_short, f"short write: {done} of {asked}"
        if done < asked:
            self.note(f"  -> short: {done} of {asked}")
        return done

    @contextlib.contextmanager
    def written_back(self, fd, f, offset, end):
        """Under the writeback cache, fsync what the body wrote to [offset,
        end) and the model took; if that says ENOSPC, take instead what
        reads back, as after a mapped write."""
        if not self.written_back_later:
            yield
            return
        data, held, maybe = bytearray(f.data), set(f.held), set(f.maybe)
        needs_room = self.needs_room(f, offset, end)
        yield
        with self.may_fill(needs_room):
            try:
                os.fsync(fd)
            except OSError:
                new = bytes(f.data[offset:end])
                f.data, f.held, f.maybe = data, held, maybe
                self.adopt_unwritten(fd, f, offset, new)
                raise

    def adopt_unwritten(self, fd, f, offset, new):
        """After msync or fsync said ENOSPC: take into the model what reads
        back, which must be, in each page, what was written or what was
        there (zeros past EOF, where the kernel has moved the size)."""
        drop_page_cache()
        for other, g, _ in self.open:  # each descriptor hears of an error once
            if g is f and other != fd:
                with contextlib.suppress(OSError):
                    os.fsync(other)
        assert os.fstat(fd).st_size == max(len(f.data), offset + len(new)), \
            f"size {os.fstat(fd).st_size} after ENOSPC"
        reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)  # fd may be write-only
        try:
            got = os.pread(reader, len(new), offset)
        finally:
            os.close(reader)
        old = bytes(f.data[offset:offset + len(new)]).ljust(len(new), b"\0")
        start = offset
        # Under reserve, what lies within the old size has its pages and is
        # kept, so a page may also turn from new to old at the old EOF.
        eof = min(max(len(f.data) - offset, 0), len(new))
        split = new[:eof] + old[eof:]
        while start < offset + len(new):
            end = min((start // PAGE + 1) * PAGE, offset + len(new))
            piece = got[start - offset:end - offset]
            sources = {source[start - offset:end - offset] for source in (new, old, split)}
            assert piece in sources, \
                f"after ENOSPC, bytes {start}-{end} are neither the new nor the old"
            start = end
        f.write_unsure(offset, got)

    # Operations -----------------------------------------------------------

    def op_write(self):
        with self.target() as (fd, f, label):
            offset = self.offset(len(f.data))
            buf = self.payload(self.length(offset))
            self.note(f"pwrite {label} offset={offset} length={len(buf)}")
            needs_room = self.needs_room(f, offset, offset + len(buf))
            with self.written_back(fd, f, offset, offset + len(buf)), self.may_fill(needs_room):
                f.write(offset, buf[:self.fitted(os.pwrite(fd, buf, offset), len(buf),
                                                 needs_room)])

    def op_read(self):
        with self.target() as (fd, f, label):
            offset = self.offset(len(f.data))
            n = self.length(offset)
            self.note(f"pread {label} offset={offset} length={n}")
            got, want = os.pread(fd, n, offset), bytes(f.data[offset:offset + n])
            assert got == want, f"pread differs: {first_difference(got, want)}"

    def op_append(self):
        name = self.rng.choice(NAMES)
        f = self.files.setdefault(name, File(self.reserve))
        buf = self.payload(self.length(len(f.data)))
        self.note(f"O_APPEND write {name} length={len(buf)}")
        fd = os.open(self.path(name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        offset = len(f.data)
        try:
            with self.written_back(fd, f, offset, offset + len(buf)), \
                    self.may_fill(needs_room=True):
                f.write(offset, buf[:self.fitted(os.write(fd, buf), len(buf), needs_room=True)])
        finally:
            os.close(fd)

    def op_copy_range(self):
        """copy_file_range: the kernel splices it into reads and writes."""
        with self.target() as (src_fd, src, src_label), \
                self.target() as (dst_fd, dst, dst_label):
            if src is dst:
                self.note(f"copy_file_range {src_label} -> {dst_label}: one file, skipped")
                return
            src_off, dst_off = self.offset(len(src.data)), self.offset(len(dst.data))
            n = self.length(max(src_off, dst_off))
            self.note(f"copy_file_range {src_label}@{src_off} -> {dst_label}@{dst_off} "
                      f"length={n}")
            want = bytes(src.data[src_off:src_off + n])
            needs_room = self.needs_room(dst, dst_off, dst_off + len(want))
            with self.written_back(dst_fd, dst, dst_off, dst_off + len(want)), \
                    self.may_fill(needs_room):
                done = self.fitted(os.copy_file_range(src_fd, dst_fd, n, src_off, dst_off),
                                   len(want), needs_room)
                if done:
                    dst.write(dst_off, want[:done])

    def op_truncate(self):
        with self.target() as (fd, f, label):
            size = len(f.data)
            size = min(MAX_SIZE, self.rng.choice([
                0, self.rng.randrange(size + 1), size + 1, self.rng.randrange(MAX_SIZE),
                self.rng.randrange(size // CHUNK + 2) * CHUNK]))
            self.note(f"ftruncate {label} {size}")
            with self.may_fill(needs_room=size > len(f.data)):
                os.ftruncate(fd, size)
                f.resize(size)

    def op_fallocate(self):
        with self.target() as (fd, f, label):
            mode = self.rng.choice(self.falloc_modes)
            offset = self.offset(len(f.data))
            n = self.length(offset)
            self.note(f"fallocate {label} mode={mode:#x} offset={offset} length={n}")
            needs_room = not mode & PUNCH_HOLE and self.needs_room(f, offset, offset + n)
            with self.may_fill(needs_room):
                fallocate(fd, mode, offset, n)
                f.fallocate(mode, offset, n)

    def mapped(self, fd, f):
        """A MAP_SHARED mapping of the whole file (None if it is empty)."""
        if not f.data:
            return contextlib.nullcontext()
        return mmap.mmap(fd, len(f.data), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def op_mmap_write(self):
        with self.target() as (fd, f, label):
            with self.mapped(fd, f) as m:
                if m is None:
                    self.note(f"mmap write {label}: empty, skipped")
                    return
                offset = self.rng.randrange(len(f.data))
                buf = self.payload(min(self.length(offset), len(f.data) - offset))
                self.note(f"mmap write {label} offset={offset} length={len(buf)}")
                m[offset:offset + len(buf)] = buf
                stored = False
                with self.may_fill(self.needs_room(f, offset, offset + len(buf))):
                    m.flush()
                    stored = True
            if stored:
                f.write(offset, buf)
            else:
                self.adopt_unwritten(fd, f, offset, buf)

    def op_mmap_read(self):
        with self.target() as (fd, f, label), self.mapped(fd, f) as m:
            if m is None:
                self.note(f"mmap read {label}: empty, skipped")
                return
            offset = self.rng.randrange(len(f.data))
            n = self.length(offset)
            self.note(f"mmap read {label} offset={offset} length={n}")
            got, want = m[offset:offset + n], bytes(f.data[offset:offset + n])
            assert got == want, f"mmap read differs: {first_difference(got, want)}"

    def op_seek(self):
        with self.target() as (fd, f, label):
            offset = self.offset(len(f.data))
            self.note(f"SEEK_DATA/SEEK_HOLE {label} offset={offset}")
            check_seek(fd, f, offset)

    def op_open(self):
        name = self.rng.choice(NAMES)
        trunc = self.rng.random() < 0.2
        self.note(f"open {name}{' O_TRUNC' if trunc else ''}")
        fd = os.open(self.path(name), os.O_RDWR | os.O_CREAT | (os.O_TRUNC if trunc else 0))
        f = self.files.setdefault(name, File(self.reserve))
        if trunc:  # as on tmpfs, also of an empty file with space reserved past EOF
            f.resize(0)
        self.open.append([fd, f, f"fd{fd}({name})"])
        if len(self.open) > MAX_OPEN:
            self.op_close()

    def op_close(self):
        if self.open:
            fd, _, label = self.open.pop(self.rng.randrange(len(self.open)))
            self.note(f"close {label}")
            os.close(fd)

    def op_rename(self):
        if not self.files:
            return
        old, new = self.rng.choice(sorted(self.files)), self.rng.choice(NAMES)
        self.note(f"rename {old} -> {new}")
        os.rename(self.path(old), self.path(new))
        if self.files.get(new) is not self.files[old]:
            # Links to one inode: rename(2) does nothing at all.
            self.files[new] = self.files.pop(old)

    def op_link(self):
        if not self.files:
            return
        old, new = self.rng.choice(sorted(self.files)), self.rng.choice(NAMES)
        self.note(f"link {old} -> {new}")
        if new in self.files:
            with pytest.raises(FileExistsError):
                os.link(self.path(old), self.path(new))
        else:
            os.link(self.path(old), self.path(new))
            self.files[new] = self.files[old]

    def op_unlink(self):
        if not self.files:
            return
        name = self.rng.choice(sorted(self.files))
        self.note(f"unlink {name}")
        os.unlink(self.path(name))
        del self.files[name]

    def op_drop_cache(self):
        """Forget cached pages, so that the next reads come from the daemon."""
        with self.target() as (fd, f, label):
            self.note(f"drop page cache of {label}")
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def op_check(self):
        """Compare every name and open descriptor with the model."""
        self.note("full check")
        for d in (self.root, self.root / "d"):
            want = {n.rpartition("/")[2] for n in self.files if self.path(n).parent == d}
            got = set(os.listdir(d)) - {"d"}
            assert got == want, f"{d} lists {sorted(got)}, model {sorted(want)}"
        inodes = {}
        for name, f in self.files.items():
            st = os.stat(self.path(name))
            links = sum(1 for g in self.files.values() if g is f)
            assert inodes.setdefault(id(f), st.st_ino) == st.st_ino, f"{name}: inode differs"
            assert st.st_nlink == links, f"{name}: st_nlink {st.st_nlink}, want {links}"
            with open(self.path(name), "rb") as fh:
                check_file(name, fh.fileno(), f, st)
        assert len(set(inodes.values())) == len(inodes), "two model files share an inode"
        for fd, f, label in self.open:
            st = os.fstat(fd)
            if not any(g is f for g in self.files.values()):
                assert st.st_nlink == 0, f"{label}: unlinked but st_nlink {st.st_nlink}"
            check_file(label, fd, f, st)

    WEIGHTS = {op_write: 20, op_append: 3, op_copy_range: 3, op_read: 10,
               op_truncate: 5, op_fallocate: 10,
               op_mmap_write: 5, op_mmap_read: 5, op_seek: 8, op_open: 6, op_close: 4,
               op_rename: 4, op_link: 3, op_unlink: 3, op_drop_cache: 4, op_check: 2}

    def step(self):
        ops, weights = zip(*self.WEIGHTS.items())
        self.rng.choices(ops, weights)[0](self)
        self.check_counts()

    def check_counts(self):
        """df -i counts the root, d/ and each name of a file, as tmpfs
        charges hard links; st_blocks of every file, named or open, counts
        its pages (under the writeback cache, once written back)."""
        if self.written_back_later:
            for name in self.files:
                fd = os.open(self.path(name), os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            for fd, _, _ in self.open:  # and those that lost their names
                os.fsync(fd)
        st = os.statvfs(self.root)
        names = len(self.files)
        assert st.f_files - st.f_ffree == 2 + names, \
            f"df -i says {st.f_files - st.f_ffree} inodes used, model {2 + names}"
        for label, st, f in [(name, os.stat(self.path(name)), f)
                             for name, f in self.files.items()] + \
                [(label, os.fstat(fd), f) for fd, f, label in self.open]:
            least, most = f.block_bounds()
            assert least <= st.st_blocks <= most, \
                f"{label}: st_blocks {st.st_blocks}, want {least}" + \
                (f" to {most}" if most > least else "")

    def close(self):
        for fd, _, _ in self.open:
            os.close(fd)
        self.open.clear()


def check_file(label, fd, f, st):
    """The size and every byte of one file (check_counts does st_blocks)."""
    assert st.st_size == len(f.data), f"{label}: size {st.st_size}, want {len(f.data)}"
    got = os.pread(fd, len(f.data) + 1, 0)
    assert got == f.data, f"{label}: contents differ: {first_difference(got, f.data)}"


def check_seek(fd, f, offset):
    """What SEEK_DATA and SEEK_HOLE may answer, given the bytes and pages.

    They work at page grain, as on tmpfs: a page that is not held is a
    hole, a page with a nonzero byte is data, and a reserved page that was
    never written (which the model does not tell from a written one of
    zeros) may be either.
    """
    data, size = f.data, len(f.data)
    results = {}
    for whence in (os.SEEK_DATA, os.SEEK_HOLE):
        try:
            results[whence] = os.lseek(fd, offset, whence)
        except OSError as e:
            assert e.errno == errno.ENXIO, f"lseek {whence}: {e}"
            results[whence] = None
    data_at, hole_at = results[os.SEEK_DATA], results[os.SEEK_HOLE]
    if offset >= size:
        assert data_at is None and hole_at is None, "no ENXIO at or past EOF"
        return
    assert hole_at is not None and offset <= hole_at <= size, f"SEEK_HOLE gave {hole_at}"
    assert hole_at in (offset, size) or hole_at % PAGE == 0, f"SEEK_HOLE gave {hole_at}"
    assert hole_at == size or data[hole_at] == 0, f"SEEK_HOLE gave {hole_at}, not zero there"
    if offset // PAGE not in f.held | f.maybe:
        assert hole_at == offset, f"SEEK_HOLE gave {hole_at} in a page that holds nothing"
    skipped_to = size if data_at is None else data_at
    assert offset <= skipped_to <= size, f"SEEK_DATA gave {data_at}"
    assert skipped_to in (offset, size) or skipped_to % PAGE == 0, f"SEEK_DATA gave {data_at}"
    assert data.count(0, offset, skipped_to) == skipped_to - offset, \
        f"SEEK_DATA gave {data_at} and skipped nonzero bytes"
    if data_at is not None:
        assert data_at // PAGE in f.held | f.maybe, \
            f"SEEK_DATA gave {data_at}, a page held by none"


@pytest.mark.parametrize("mode,seed", [(mode, seed) for mode in MOUNT_OPTIONS for seed in SEEDS],
                         ids=str)
def test_model(mount_holefs, tmp_path, mode, seed):
    m = mount_holefs(MOUNT_OPTIONS[mode].format(spill=tmp_path))
    (m / "d").mkdir()
    run = Run(m.path, random.Random(seed), mode)
    index = -1
    try:
        for index in range(OPS):  # noqa: B007 (named in the failure's message)
            run.step()
        index = OPS
        run.op_check()
    except Exception as e:
        where = "final check" if index == OPS else f"op {index}"
        raise AssertionError(
            f"model test failed: mode={mode} seed={seed} {where}: {type(e).__name__}: {e}\n"
            f"last operations:\n  " + "\n  ".join(run.history) + "\n"
            f"reproduce: HOLEFS_MODEL_SEEDS={seed} HOLEFS_MODEL_OPS={OPS} "
            f"/opt/holefs/bin/pytest -q 'mount_tests/test_model.py::test_model[{mode}-{seed}]'"
        ) from e
    finally:
        run.close()
